"""A worker's outcomes as report runs: what a client reads of its records' fates.

Pure: builds ``ReportRun``\\ s from batch outcomes (delivered with offsets, failed with a kpd
error code and persistence, kept in the ring at shutdown) and groups them into reports-ring
entries of bounded size; turns an outcome into a done-journal run and back (the first outcome
of records a predecessor had done). Must not import rings, asyncio or the process layer.
"""

from __future__ import annotations

from daemon.producer import outcomes
from daemon.producer.outcomes import BatchOutcome, DeliveryFailure
from daemon.wire.ring_entry import seq_runs
from daemon.worker.done_journal import DoneRun
from kpd.protocol import REPORT_RUN_FIXED_BYTES, ReportRun
from kpd.protocol.base import KpdErrorCode, Persistence, Status

__all__ = ["chunks", "done_run_of", "kept_runs", "recorded_outcome", "run_of"]

# Bytes of report runs per reports-ring entry: well below half of the smallest reports ring
# the config allows (64 KiB), the largest entry a ring takes, even for a burst of failures
# whose runs carry messages.
_ENTRY_BUDGET = 16 * 1024


def chunks(runs: list[ReportRun]):
    """The runs in groups whose encoded size stays within ``_ENTRY_BUDGET``."""
    chunk: list[ReportRun] = []
    size = 0
    for run in runs:
        run_size = REPORT_RUN_FIXED_BYTES + len(run.message) * 4  # UTF-8 at most 4 bytes/char
        if chunk and size + run_size > _ENTRY_BUDGET:
            yield chunk
            chunk, size = [], 0
        chunk.append(run)
        size += run_size
    if chunk:
        yield chunk


_KEPT_MESSAGE = (
    "kpd stopped before Kafka acknowledged this record; it stays in kpd's ring file and is "
    "produced when kpd starts again (resending it would duplicate it)"
)


def kept_runs(
    base_seq: int, partition: int, seq_offsets: bytes | None, index: int, count: int
) -> list[ReportRun]:
    """FAILED SHUTTING_DOWN POSSIBLY_PERSISTED runs for records ``index .. index + count``."""
    if seq_offsets is None:
        spans = [(index, count)]
    else:
        spans = [(offset, k) for offset, _, k in seq_runs(seq_offsets, index, count)]
    return [
        ReportRun(
            base_seq + first,
            k,
            Status.FAILED,
            partition,
            -1,
            -1,
            KpdErrorCode.SHUTTING_DOWN,
            0,
            Persistence.POSSIBLY_PERSISTED,
            _KEPT_MESSAGE,
        )
        for first, k in spans
    ]


def run_of(
    first_seq: int, count: int, offset_in_batch: int, outcome: BatchOutcome, assigned_ts: int
) -> ReportRun:
    """The run of ``count`` records of ``outcome``'s batch from ``offset_in_batch`` on."""
    if outcome.error is not None:
        return _failed_run(first_seq, count, outcome.partition, outcome.error)
    base = outcome.base_offset + offset_in_batch if outcome.base_offset >= 0 else -1
    # LogAppendTime when the topic uses it, else the CreateTime kpd assigned.
    timestamp = outcome.timestamp if outcome.timestamp >= 0 else assigned_ts
    return ReportRun(first_seq, count, Status.DELIVERED, outcome.partition, base, timestamp)


def _failed_run(first_seq: int, count: int, partition: int, error: DeliveryFailure) -> ReportRun:
    if error.code == outcomes.DELIVERY_TIMEOUT:
        code, kafka_code = KpdErrorCode.DELIVERY_TIMEOUT, 0
    elif error.code == outcomes.PRODUCER_CLOSED:
        code, kafka_code = KpdErrorCode.SHUTTING_DOWN, 0
    elif error.code < 0:
        code, kafka_code = KpdErrorCode.INTERNAL_ERROR, 0
    else:
        code, kafka_code = KpdErrorCode.KAFKA_ERROR, error.code
    return ReportRun(
        first_seq,
        count,
        Status.FAILED,
        partition,
        -1,
        -1,
        code,
        kafka_code,
        error.persistence,
        str(error)[:1000],
    )


def done_run_of(
    end_pos: int, seal: int, index: int, count: int, offset_in_batch: int, outcome: BatchOutcome
) -> DoneRun:
    """The done-journal run of records ``index .. index + count`` of the entry ending at
    ``end_pos``, ``offset_in_batch`` records into ``outcome``'s batch."""
    error = outcome.error
    if error is not None:
        return DoneRun(end_pos, seal, index, count, error.code, -1, -1, 1, int(error.persistence))
    base = outcome.base_offset + offset_in_batch if outcome.base_offset >= 0 else -1
    return DoneRun(end_pos, seal, index, count, 0, base, outcome.timestamp, 0, 0)


_RECORDED_MESSAGE = "the first outcome, recorded before a kill of kpd; not produced again"


def recorded_outcome(topic: str, partition: int, run: DoneRun) -> BatchOutcome:
    """A journaled run's first outcome as the outcome of a batch that starts at ``run``'s
    first record (``run_of`` with offset 0 then gives its report run)."""
    error = None
    if run.failed:
        error = DeliveryFailure(run.code, f"error {run.code}", _RECORDED_MESSAGE,
                                Persistence(run.persistence))  # fmt: skip
    return BatchOutcome(topic, partition, [], run.base_offset, run.timestamp, error)
