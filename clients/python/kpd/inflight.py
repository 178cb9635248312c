"""Frames sealed on one connection whose records do not all have a result, by sequence number.

Owns the bookkeeping between "this frame went out" and "each of its records has a result":
matching REPORT runs to frames (runs may split a frame or span several, in any order —
protocol §7), settling acks-"none" frames once written, and failing what is left when the
connection ends with the right persistence. Work is per run and per frame, never per record:
the frames store outcomes per run (``ProduceFrame.settle``). Pure; the session calls it.

Must not import sockets, threads or asyncio, nor kpd's engines.
"""

from __future__ import annotations

from bisect import bisect_right

from kpd.common import Completions
from kpd.produce_frame import ENDED, REPORTED, WRITTEN, ProduceFrame, ended_data
from kpd.protocol import KpdErrorCode, ReportRun, Status

__all__ = ["InFlight"]

# FAILED codes after which the partition count should be asked again (protocol §8).
_REFRESH_CODES = (KpdErrorCode.INVALID_PARTITION, KpdErrorCode.UNKNOWN_TOPIC)


class InFlight:
    def __init__(self) -> None:
        self._frames: dict[int, ProduceFrame] = {}  # base_seq -> frame
        self._seqs: list[int] = []  # the keys of _frames, ascending (framed in order)
        self.written_below = 0  # every record below this sequence number was written
        self.unmatched = 0  # report records with no open future: acks "none", or duplicates

    def __bool__(self) -> bool:
        return bool(self._seqs)

    def lowest_seq(self, default: int) -> int:
        """The first record still without a result, or ``default`` if there is none."""
        return self._seqs[0] if self._seqs else default

    def add(self, frame: ProduceFrame) -> None:
        self._frames[frame.base_seq] = frame
        self._seqs.append(frame.base_seq)

    def written(self, end_seq: int, settle: bool, done: Completions) -> None:
        """Frames below ``end_seq`` are written; with ``settle`` (acks "none") they are done:
        no report will come for them."""
        self.written_below = max(self.written_below, end_seq)
        while settle and self._seqs and self._seqs[0] < end_seq:
            frame = self._frames.pop(self._seqs.pop(0))
            frame.settle(0, frame.count, WRITTEN, None, done)

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
        matched = 0
        for frame in frames:
            base = frame.base_seq
            lo, hi = max(first - base, 0), min(end - base, frame.count)
            matched += frame.settle(lo, hi, REPORTED, run, done)
            if frame.remaining <= 0:
                self._forget(frame)
        self.unmatched += run.count - matched
        if run.status is Status.FAILED and run.error in _REFRESH_CODES:
            return {frame.topic for frame in frames}
        return set()

    def _forget(self, frame: ProduceFrame) -> None:
        if self._frames.pop(frame.base_seq, None) is not None:
            del self._seqs[bisect_right(self._seqs, frame.base_seq) - 1]

    def rewind_written(self, seq: int) -> None:
        """Frames from ``seq`` on will be written again (a draining kpd refused them)."""
        self.written_below = min(self.written_below, seq)

    def fail_written(self, code: int, message: str, done: Completions) -> None:
        """The connection ended and the producer reconnects: frames written on it may be in
        Kafka (POSSIBLY_PERSISTED); the unwritten ones stay, to be sent on the next one."""
        seqs = self._seqs
        data = ended_data(code, message, True)
        while seqs and seqs[0] < self.written_below:
            frame = self._frames.pop(seqs.pop(0))
            frame.settle(0, frame.count, ENDED, data, done)

    def fail_all(self, code: int, message: str, done: Completions) -> None:
        """The connection ended: written records may be in Kafka, the others are not."""
        for base in self._seqs:
            frame = self._frames[base]
            data = ended_data(code, message, base < self.written_below)
            frame.settle(0, frame.count, ENDED, data, done)
        self._frames.clear()
        self._seqs.clear()
