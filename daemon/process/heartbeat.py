"""Child heartbeats: a child's event loop proves it still turns; the supervisor acts on silence.

Each child runs ``beat`` as a task of the very loop that does its work, so a loop stalled by a
deadlock, an endless loop or SIGSTOP stops beating (a thread would beat on through a stalled
loop). A beat is one ``BEAT`` line on the stdout pipe the child already reports on (READY,
QUIESCED, STOPPED): one small write per interval, nothing per record, no extra descriptor.

The supervisor (``Child``) notes when each beat arrives. A child silent for longer than
``supervisor.heartbeat_timeout`` is hung: the supervisor asks it for a stack dump
(``STACK_DUMP_SIGNAL``, which ``arm_stack_dump`` hands to ``faulthandler``: it writes every
thread's Python stack to stderr, the daemon's log, even while the loop is stuck in Python
code), gives it ``DUMP_GRACE_S`` to write it, kills it with SIGKILL and lets the usual restart
bring a replacement; the ring keeps whatever it had not been acknowledged for.

Must not import the supervisor or anything that runs records.
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys
from collections.abc import Callable

__all__ = [
    "BEAT",
    "DUMP_GRACE_S",
    "STACK_DUMP_SIGNAL",
    "arm_stack_dump",
    "beat",
    "beat_interval_s",
    "silence_shown_after_s",
]

BEAT = "BEAT"
STACK_DUMP_SIGNAL = signal.SIGUSR2
DUMP_GRACE_S = 1.0  # after the dump request, before SIGKILL


def beat_interval_s(timeout_s: float) -> float:
    """How often a child beats: several beats per timeout, at most one a second (idle cost)."""
    return min(1.0, timeout_s / 5)


def silence_shown_after_s(timeout_s: float) -> float:
    """From how long a silence ``kpd status`` says NOT RESPONDING: three beats missed."""
    return 3 * beat_interval_s(timeout_s)


async def beat(say: Callable[[str], None], timeout_s: float) -> None:
    """Say BEAT every interval, from the loop this task runs on, until cancelled."""
    interval = beat_interval_s(timeout_s)
    while True:
        say(BEAT)
        await asyncio.sleep(interval)


def arm_stack_dump() -> None:
    """STACK_DUMP_SIGNAL writes every thread's stack to stderr and the child runs on."""
    faulthandler.register(STACK_DUMP_SIGNAL, file=sys.stderr, all_threads=True, chain=False)
