"""Plain counters the engine bumps; the process layer turns them into Prometheus metrics.

The engine never calls prometheus_client: a multiprocess ``inc()`` takes a lock and writes an
mmap, too dear per record. Counters are bumped once per batch or per request and read by the
process layer on an interval. Owned by the engine's event loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["STAGE_BOUNDS", "LatencyHistogram", "ProducerCounters"]

# Seconds; Prometheus-style cumulative "le" bounds.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The per-record stage trace (kpd_record_stage_seconds): 50 µs to 10 s, finer at the bottom
# than LATENCY_BOUNDS, where the in-process stages are.
STAGE_BOUNDS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
SIZE_BOUNDS = (256, 1024, 4096, 16384, 65536, 262144, 1048576)
COUNT_BOUNDS = (1, 10, 100, 1000, 10000, 100000)


@dataclass(slots=True)
class LatencyHistogram:
    bounds: tuple[float, ...] = LATENCY_BOUNDS
    buckets: list[int] = field(default_factory=list)  # per bound, non-cumulative, +Inf last
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        # The first bound >= value ("le"), len(bounds) for +Inf: one C call, not a Python
        # loop over up to 17 bounds (observed per ring entry, per outcome run, per batch).
        self.buckets[bisect_left(self.bounds, value)] += times
        self.count += times
        self.total += value * times


@dataclass(slots=True)
class ProducerCounters:
    records_sent: int = 0
    records_failed: Counter = field(default_factory=Counter)  # by error name
    bytes_sent: int = 0
    batches_sent: int = 0
    batch_bytes: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(SIZE_BOUNDS))
    requests_sent: int = 0
    records_per_request: LatencyHistogram = field(
        default_factory=lambda: LatencyHistogram(COUNT_BOUNDS)
    )
    queue_time: LatencyHistogram = field(default_factory=LatencyHistogram)
    request_latency: dict[int, LatencyHistogram] = field(default_factory=dict)  # by broker id
    # The stage trace's producer stages, per record (observed per batch, weighted by its
    # records): the batch's age when drained for a request (its oldest record's wait:
    # "worker took it -> batch ready"), drained -> request written, written -> answer read.
    stage_batch: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(STAGE_BOUNDS))
    stage_write: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(STAGE_BOUNDS))
    stage_broker: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(STAGE_BOUNDS))
    retries: int = 0
    batch_splits: int = 0
    epoch_bumps: int = 0
    # Records of batches a killed predecessor had in flight, resent under its producer id at
    # adoption, by ``resend.Verdict`` value (appended / duplicate / forgotten).
    resent_records: Counter = field(default_factory=Counter)
    errors_by_code: Counter = field(default_factory=Counter)  # broker error names seen
    # Exactly-once mode only.
    transactions_committed: int = 0
    transactions_aborted: int = 0
    # Aborts the coordinator made itself (a transaction past transaction.timeout.ms) that
    # kpd recovered from under a new epoch, by the error that revealed them.
    transaction_recoveries: Counter = field(default_factory=Counter)
    # Records of a killed predecessor's last commit whose EndTxn answer it never read, by what
    # the commit's marker said at adoption: "committed" (reported from the commit journal,
    # not produced again) or "aborted" (produced again) — ``commit_marks``.
    commit_window_records: Counter = field(default_factory=Counter)
    transaction_commit_time: LatencyHistogram = field(default_factory=LatencyHistogram)
    transaction_records: LatencyHistogram = field(
        default_factory=lambda: LatencyHistogram(COUNT_BOUNDS)
    )
