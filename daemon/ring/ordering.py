"""Memory ordering of the rings' shared indices: the one place that decides how they are read
and written, and refuses to run where that would be wrong.

The ring protocol needs, across two processes on two cores: an entry's bytes visible before
the ``write_pos`` that covers them (release on publish, acquire on read), the consumer's reads
done before the ``release_pos`` that frees them, and the store -> load order of the wake-up
protocol (``wakeup``). Two ways to get them:

* the C accelerator's ``SharedWords`` (``daemon.accel``): seq_cst atomic loads and stores,
  correct on every CPU, arm64 (Graviton) included — what kpd uses when it is built;
* plain aligned 8-byte loads and stores through a ``memoryview`` cast to ``"Q"``: correct
  only on a CPU with total store order (x86-64), where the hardware keeps stores in order and
  loads in order. On a weakly-ordered CPU (arm64, POWER, RISC-V) a consumer could read an
  entry's bytes from before the producer wrote them, so kpd refuses to start there without
  the accelerator rather than corrupt records now and then.

Knows nothing of ring layout or Kafka; ``region`` calls ``shared_words`` for its header.
"""

from __future__ import annotations

import platform
from types import ModuleType

from daemon.accel import native

__all__ = ["TOTAL_STORE_ORDER", "MemoryOrderingError", "ordering_of", "shared_words"]

# platform.machine() values of CPUs whose plain loads and stores are ordered enough (TSO).
TOTAL_STORE_ORDER = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


class MemoryOrderingError(RuntimeError):
    """The rings' memory ordering cannot be guaranteed on this machine."""


def ordering_of(machine: str | None = None, compiled: ModuleType | None = native) -> str:
    """How ring indices are accessed here: "C11 atomics" or "x86-64 TSO"; raises
    MemoryOrderingError where neither applies. ``machine`` and ``compiled`` default to this
    machine and the accelerator as imported; tests pass others."""
    if compiled is not None:
        return "C11 atomics"
    machine = platform.machine() if machine is None else machine
    if machine.lower() in TOTAL_STORE_ORDER:
        return "x86-64 TSO"
    raise MemoryOrderingError(
        f"kpd's shared-memory rings need release/acquire ordering, which plain Python "
        f"memory access does not give on this {machine} CPU (not total store order); "
        "the C accelerator gives it but is not active here (KPD_PURE_PYTHON set, or "
        "daemon/accel/_accel.c not built: install with a C compiler and Python headers, "
        "then `pip install .` again)"
    )


def shared_words(view: memoryview, machine: str | None = None, compiled=native):
    """The u64 words of ``view`` (8-aligned), indexable and assignable, with the ordering
    ``ordering_of`` names. ``release()`` gives the buffer back."""
    ordering_of(machine, compiled)
    if compiled is not None:
        return compiled.SharedWords(view)
    return view.cast("Q")
