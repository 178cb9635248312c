"""kpd's version, from the installed package's metadata (pyproject.toml's ``version``).

One place for it: ``kpd --version``, the start log line, the ``kpd_build_info`` metric and the
``server_name`` of the socket protocol's WELCOME read it here. Imports nothing of kpd.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["VERSION"]


def _version() -> str:
    try:
        return metadata.version("kpd")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


VERSION = _version()
