"""Records framed on one connection and still without a result, by sequence number.

Owns the bookkeeping between "this frame went out" and "each of its records has a result":
matching REPORT runs to futures (runs may split a frame or span several, in any order —
protocol §7), settling acks-"none" frames once written, and failing what is left when the
connection ends with the right persistence. Pure; the session calls it.

Must not import sockets, threads or asyncio, nor kpd's engines.
"""

from __future__ import annotations

from bisect import bisect_right

from daemon.client.common import Completions, make_metadata
from daemon.client.errors import DeliveryError
from daemon.ingest.codec import KpdErrorCode, Persistence, ReportRun, Status

__all__ = ["InFlight"]

# FAILED codes after which the partition count should be asked again (protocol §8).
_REFRESH_CODES = (KpdErrorCode.INVALID_PARTITION, KpdErrorCode.UNKNOWN_TOPIC)


class _Frame:
    """A framed batch; ``handles[i]`` is record base_seq+i's future, None once settled.
    ``timestamps`` maps record index -> the timestamp it was sent with (only when given)."""

    __slots__ = ("base_seq", "handles", "partition", "remaining", "timestamps", "topic")

    def __init__(self, topic: str, partition: int, base_seq: int, handles: list, timestamps):
        self.topic = topic
        self.partition = partition  # -1: kpd chooses
        self.base_seq = base_seq
        self.handles = handles
        self.timestamps = timestamps
        self.remaining = len(handles)


class InFlight:
    def __init__(self) -> None:
        self._frames: dict[int, _Frame] = {}  # base_seq -> frame
        self._seqs: list[int] = []  # the keys of _frames, ascending (framed in order)
        self.written_below = 0  # every record below this sequence number was written
        self.unmatched = 0  # report records with no open future: acks "none", or duplicates

    def __bool__(self) -> bool:
        return bool(self._seqs)

    def lowest_seq(self, default: int) -> int:
        """The first record still without a result, or ``default`` if there is none."""
        return self._seqs[0] if self._seqs else default

    def add(self, topic: str, partition: int, base_seq: int, handles: list, timestamps) -> None:
        self._frames[base_seq] = _Frame(topic, partition, base_seq, handles, timestamps)
        self._seqs.append(base_seq)

    def written(self, end_seq: int, settle: bool, done: Completions) -> None:
        """Frames below ``end_seq`` are written; with ``settle`` (acks "none") they are done:
        no report will come for them."""
        self.written_below = max(self.written_below, end_seq)
        while settle and self._seqs and self._seqs[0] < end_seq:
            frame = self._frames.pop(self._seqs.pop(0))
            stamps = frame.timestamps or {}
            for i, handle in enumerate(frame.handles):
                done.handles.append(handle)
                done.results.append(
                    make_metadata(frame.topic, frame.partition, -1, stamps.get(i, -1))
                )

    def apply(self, run: ReportRun, done: Completions) -> set[str]:
        """Settle the records of ``run``; returns topics whose partition count to refresh."""
        first, end = run.first_seq, run.first_seq + run.count
        seqs = self._seqs
        # A run may span several frames (kpd merges consecutive records of one partition).
        index = max(bisect_right(seqs, first) - 1, 0)
        frames = []
        while index < len(seqs) and seqs[index] < end:
            frames.append(self._frames[seqs[index]])
            index += 1
        matched = sum(self._settle(frame, run, done) for frame in frames)
        self.unmatched += run.count - matched
        if run.status is Status.FAILED and run.error in _REFRESH_CODES:
            return {frame.topic for frame in frames}
        return set()

    def _settle(self, frame: _Frame, run: ReportRun, done: Completions) -> int:
        first = run.first_seq
        lo = max(first - frame.base_seq, 0)
        hi = min(first + run.count - frame.base_seq, len(frame.handles))
        handles, stamps = frame.handles, frame.timestamps
        failed = run.status is Status.FAILED
        settled = 0
        for i in range(lo, hi):
            handle = handles[i]
            if handle is None:
                continue  # a second report for one record: keep the first
            handles[i] = None
            settled += 1
            done.handles.append(handle)
            if failed:
                error = DeliveryError(run.error, run.kafka_error, run.persistence, run.message)
                done.results.append(error)
                continue
            # Record first_seq+i of a run got offset base_offset+i (protocol §7).
            offset = run.base_offset
            if offset >= 0:
                offset += frame.base_seq + i - first
            stamp = run.timestamp
            if stamp < 0 and stamps:
                stamp = stamps.get(i, -1)
            done.results.append(make_metadata(frame.topic, run.partition, offset, stamp))
        frame.remaining -= settled
        if frame.remaining <= 0 and frame.base_seq in self._frames:
            del self._frames[frame.base_seq]
            del self._seqs[bisect_right(self._seqs, frame.base_seq) - 1]
        return settled

    def fail_all(self, code: int, message: str, done: Completions) -> None:
        """The connection ended: written records may be in Kafka, the others are not."""
        for base in self._seqs:
            frame = self._frames[base]
            written = base < self.written_below
            if written:
                persistence = Persistence.POSSIBLY_PERSISTED
                detail = "; the record was sent and may have been delivered"
            else:
                persistence = Persistence.NOT_PERSISTED
                detail = "; the record was never sent"
            for handle in frame.handles:
                if handle is not None:
                    done.handles.append(handle)
                    done.results.append(DeliveryError(code, 0, persistence, message + detail))
        self._frames.clear()
        self._seqs.clear()
