"""Paced sending and the ack-latency figures of the latency runs.

Owns the schedule of a paced run (bursts of ``burst`` records, ``rate`` records/s on average)
and the arithmetic of its summary. Bursts are due at absolute times from the start, so a late
burst is followed at once by the next one and the offered load stays the target's unless the
sender cannot keep up; how late the worst burst started says whether it could.

Latency is measured per record from just before its send() to its completion (a future's
done-callback, a delivery callback) and taken from the intended load, not a closed loop:
the sender never waits for acks. Percentiles are nearest-rank, over the records sent after a
warm-up (the first second by default): a client's first records wait for its connection to
the partition leaders and, with idempotence, for its producer id (librdkafka's first half
second of records measured ~0.5 s), which says nothing about the steady state the target is
about. The 99th percentile over every record is reported beside it.

Pure but for the clock and the waiting function passed in; imports only the stdlib.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Pace", "latency_summary", "percentile", "run_paced"]

# The load counts as achieved when the sender offered at least this share of the target rate.
_ACHIEVED_SHARE = 0.98


@dataclass(frozen=True)
class Pace:
    rate: int  # records per second offered
    burst: int  # records sent back to back at each due time

    @property
    def interval_s(self) -> float:
        return self.burst / self.rate


def run_paced(
    pace: Pace,
    count: int,
    send_burst: Callable[[int, int], None],
    wait: Callable[[float], None],
    clock: Callable[[], float],
) -> float:
    """Call ``send_burst(first, end)`` for records ``first..end-1``, one burst per interval,
    calling ``wait(seconds)`` until each is due. Returns the lateness of the latest burst (s)."""
    start = clock()
    latest = 0.0
    for index, first in enumerate(range(0, count, pace.burst)):
        due = start + index * pace.interval_s
        now = clock()
        while now < due:
            wait(due - now)
            now = clock()
        latest = max(latest, now - due)
        send_burst(first, min(first + pace.burst, count))
    return latest


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values: the smallest value with at least ``q`` of
    the values at or below it."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def latency_summary(
    pace: Pace,
    sent_at: Sequence[float],
    done_at: Sequence[float],
    latest_s: float,
    warmup_s: float = 1.0,
) -> dict:
    """Figures of one paced run; ``done_at[i]`` is 0.0 for a record that never completed.
    Percentiles cover records sent ``warmup_s`` or later after the first one."""
    pairs = list(zip(sent_at, done_at, strict=True))
    steady_from = sent_at[0] + warmup_s if sent_at else 0.0
    everything = sorted(done - sent for sent, done in pairs if done)
    ordered = sorted(done - sent for sent, done in pairs if done and sent >= steady_from)
    span = sent_at[-1] - sent_at[0] if len(sent_at) > 1 else 0.0
    achieved = (len(sent_at) - 1) / span if span > 0 else 0.0
    ms = 1000.0
    return {
        "offered_rate": pace.rate,
        "burst": pace.burst,
        "achieved_rate": achieved,
        "achieved": achieved >= _ACHIEVED_SHARE * pace.rate,
        "latest_burst_ms": latest_s * ms,
        "completed": len(everything),
        "warmup_s": warmup_s,
        "measured": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * ms,
        "p99_ms": percentile(ordered, 0.99) * ms,
        "p999_ms": percentile(ordered, 0.999) * ms,
        "max_ms": (ordered[-1] if ordered else math.nan) * ms,
        "p99_all_ms": percentile(everything, 0.99) * ms,
    }
