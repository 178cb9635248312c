"""Checks of a loaded configuration that need more than the schema: the TLS files open.

``kpd check-config`` and ``kpd run`` call ``security_problems`` so that a missing CA file or a
wrong key passphrase is one clear config error at start, not a worker that fails to boot.
"""

from __future__ import annotations

from daemon.net.from_config import tls_context
from daemon.net.tls import TlsConfigError
from daemon.settings.model import ProducerSettings

__all__ = ["security_problems"]


def security_problems(producer: ProducerSettings) -> list[str]:
    """What keeps the TLS settings from working, one line each (empty when they work)."""
    try:
        tls_context(producer)
    except TlsConfigError as exc:
        return [f"kafka.{exc}"]
    return []
