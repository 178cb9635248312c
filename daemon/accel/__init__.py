"""kpd's compiled accelerator, chosen once at import: the C extension ``_accel`` or nothing.

Owns the one decision "C or pure Python" for every unit that has a compiled twin of a hot
loop (``kafka.records``, ``ingest.routing``, ``ring.region``): each imports
``native`` from here and falls back to its own pure-Python code when it is None. The process
layer logs ``IMPLEMENTATION`` at start ("accelerator: C" / "accelerator: pure Python (why)").

``KPD_PURE_PYTHON=1`` in the environment forces the pure path (the test suite runs a daemon
that way); an extension that was not built (see setup.py: the build is optional) does too.
The switch is kpd-client's (``kpd.accel.PURE_ENV``), whose own accelerator (murmur2, the
records-section checks) it governs as well.

The C code is pure like the codecs it speeds up: no I/O, no clock, no global state. Must not
import anything of the daemon (every layer may import it); of kpd-client only ``kpd.accel``.
"""

from __future__ import annotations

import os
from types import ModuleType

from kpd.accel import PURE_ENV

__all__ = ["IMPLEMENTATION", "PURE_ENV", "native"]


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return None, f"pure Python ({PURE_ENV}={os.environ[PURE_ENV]})"
    try:
        from daemon.accel import _accel
    except ImportError as exc:  # not built on this machine: the pure path is complete
        return None, f"pure Python (C extension not built: {exc})"
    return _accel, "C"


native, IMPLEMENTATION = _load()
