"""kpd-client's compiled accelerator, chosen once at import: the C extension ``kpd._accel``
or nothing.

Owns the one decision "C or pure Python" for the client's hot loops that have a compiled
twin (``kpd.murmur2``, the plain records-section checks of ``kpd.protocol.records``): each
imports ``native`` from here and falls back to its own pure-Python code when it is None.

``KPD_PURE_PYTHON=1`` in the environment forces the pure path (the daemon reads the same
switch for its own accelerator); an extension that was not built (clients/python/setup.py:
the build is optional) does too. ``IMPLEMENTATION`` says which one runs, and why.

The C code is pure like the codecs it speeds up: no I/O, no clock, no global state. Must not
import anything of kpd: every module of it may import this one.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["IMPLEMENTATION", "PURE_ENV", "native"]

PURE_ENV = "KPD_PURE_PYTHON"


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return None, f"pure Python ({PURE_ENV}={os.environ[PURE_ENV]})"
    try:
        from kpd import _accel
    except ImportError as exc:  # not built on this machine: the pure path is complete
        return None, f"pure Python (C extension not built: {exc})"
    return _accel, "C"


native, IMPLEMENTATION = _load()
