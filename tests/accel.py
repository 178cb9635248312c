"""Both implementations of the accelerated loops, for tests parametrized over them.

``compiled()`` is the daemon's C extension and ``compiled_client()`` kpd-client's, each
imported directly (whatever KPD_PURE_PYTHON says, so the
golden tests check it even in a run that forces the daemon's pure path); a machine where it
was not built fails its golden tests rather than skipping the C side silently.
"""

from __future__ import annotations

import pytest

IMPLEMENTATIONS = ("C", "pure Python")


def compiled():
    try:
        from daemon.accel import _accel
    except ImportError as exc:
        pytest.fail(f"the C accelerator is not built ({exc}): pip install -e . builds it")
    return _accel


def compiled_client():
    """kpd-client's C extension (murmur2, the records-section checks)."""
    try:
        from kpd import _accel
    except ImportError as exc:
        pytest.fail(f"kpd-client's C accelerator is not built ({exc}): pip install -e "
                    "clients/python builds it")  # fmt: skip
    return _accel


def use_send_path(monkeypatch, implementation: str) -> None:
    """Make the Producers built from now on use ``implementation``'s twins of send()'s hot
    path — the appender, the record future, the plain section encoder — whatever
    KPD_PURE_PYTHON chose at import (kpd.accel chooses once per process)."""
    import kpd.appender
    import kpd.framer
    import kpd.future
    import kpd.protocol.records

    if implementation == "C":
        native = compiled_client()
        appender, future = native.Appender, native.RecordFuture
    else:
        native, appender, future = None, kpd.appender.AppenderPython, kpd.future.RecordFuturePython
    monkeypatch.setattr(kpd.framer, "Appender", appender)
    for module in (kpd.appender, kpd.framer, kpd.future):
        monkeypatch.setattr(module, "RecordFuture", future)
    monkeypatch.setattr(kpd.protocol.records, "native", native)
