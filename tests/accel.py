"""Both implementations of the accelerated loops, for tests parametrized over them.

``compiled()`` is the C extension imported directly (whatever KPD_PURE_PYTHON says, so the
golden tests check it even in a run that forces the daemon's pure path); a machine where it
was not built fails ``tests/unit/test_accel.py`` rather than skipping the C side silently.
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
