"""What send_bulk() returns: one ``BulkFuture`` for many records, and their results.

Owns the bulk side of the future protocol. A bulk's records are appended to the connection's
frames like send()'s, grouped per partition, so they land in a few ``pieces``: ``(frame, lo,
hi)``, records lo..hi-1 of a ``produce_frame.ProduceFrame``. The future holds only those pieces —
no object per record — so a bulk of 10,000 records costs the app one future, and knowing it
is done is O(pieces). Per-record outcomes are computed when asked (``BulkResult``), from the
frames' runs; ``order`` maps the pieces' records back to the order the app gave them.

Waiting goes through the frames' ``Hub`` as for ``RecordFuture`` (one Condition for the sync
Producer; the event loop for the AsyncProducer). Done-callbacks are one per bulk: each piece
still pending gets a frame watcher that counts down, and the last one runs the callbacks.

Must not import sockets, threads or asyncio, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate

from kpd.errors import DeliveryError
from kpd.future import run_callback

__all__ = ["BulkError", "BulkFuture", "BulkResult", "RefusedPiece", "refused_bulk"]


class RefusedPiece:
    """The frame of records that failed in send_bulk() itself (e.g. one too large for any
    frame): settled from the start, with ``failure`` as every record's outcome."""

    __slots__ = ("failure",)

    def __init__(self, failure: DeliveryError) -> None:
        self.failure = failure

    def outcome(self, index: int) -> DeliveryError:
        return self.failure

    def error(self, index: int) -> DeliveryError:
        return self.failure

    def range_settled(self, lo: int, hi: int) -> bool:
        return True

    def failures_in(self, lo: int, hi: int) -> list[tuple[int, DeliveryError]]:
        return [(index, self.failure) for index in range(lo, hi)]


class BulkFuture:
    """The future of a bulk of records: a BulkResult once each has its outcome; BulkError
    (carrying the same BulkResult) if any record failed.

    ``pieces``: ``(frame, lo, hi)`` in the order their records were queued. ``order``: None
    when that is the order the app gave (one partition, or keyless), else a function giving,
    for each queued position, the app's index (computed only when results are read).
    """

    __slots__ = ("_callbacks", "_count", "_hub", "_next", "_order", "_pending", "_pieces")

    def __init__(
        self, pieces: list[tuple], count: int, hub, order: Callable[[], list] | None = None
    ) -> None:
        self._pieces = pieces
        self._count = count
        self._hub = hub
        self._order = order
        self._next = 0  # pieces before this one are known to be settled (never unsettle)
        self._callbacks: list | None = None  # the app's done-callbacks while pending
        self._pending = 0  # pieces whose watcher has not fired yet

    def __len__(self) -> int:
        return self._count

    def done(self) -> bool:
        pieces, index = self._pieces, self._next
        while index < len(pieces):
            frame, lo, hi = pieces[index]
            if not frame.range_settled(lo, hi):
                break
            index += 1
        self._next = index
        return index == len(pieces)

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        """Always False: queued records cannot be taken back."""
        return False

    def result(self, timeout: float | None = None) -> BulkResult:
        """Every record's outcome, once all have one. Raises BulkError if any failed (its
        ``result`` has them all), TimeoutError if some are still pending after ``timeout``."""
        self._wait(timeout)
        result = BulkResult(self)
        if result.failures:
            raise BulkError(result)
        return result

    def exception(self, timeout: float | None = None) -> BulkError | None:
        """The BulkError if any record failed, None if all were delivered."""
        self._wait(timeout)
        result = BulkResult(self)
        return BulkError(result) if result.failures else None

    def add_done_callback(self, fn: Callable[[BulkFuture], object]) -> None:
        """Call ``fn(future)`` once every record has its outcome: now if they have (on this
        thread), else on the client's I/O thread (sync) or the event loop (asyncio)."""
        if not self.done():
            with self._hub.lock:
                if not self.done():
                    self._register(fn)
                    return
        run_callback(fn, self)

    def _register(self, fn: Callable) -> None:
        # Under the hub lock, so no piece settles between the check and its watcher.
        if self._callbacks is not None:
            self._callbacks.append(fn)
            return
        self._callbacks = [fn]
        for frame, lo, hi in self._pieces[self._next :]:
            if not frame.range_settled(lo, hi):
                self._pending += 1
                frame.watch(lo, hi, BulkFuture._piece_done, self)

    def _piece_done(self) -> None:
        # A frame watcher, run like a done-callback: one adapter thread, outside the lock.
        self._pending -= 1
        if self._pending == 0:
            callbacks, self._callbacks = self._callbacks, None
            for fn in callbacks:
                run_callback(fn, self)

    def _wait(self, timeout: float | None) -> None:
        if not self.done():
            self._hub.wait(self.done, timeout)
            if not self.done():
                raise TimeoutError(f"records still without a result after {timeout} s")

    def __await__(self):
        while not self.done():
            frame = self._pieces[self._next][0]
            yield from self._hub.waiter(frame).__await__()
        return self.result()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<BulkFuture {self._count} records {state}>"


def refused_bulk(error: DeliveryError, count: int) -> BulkFuture:
    """A bulk future whose records all failed before any was queued."""
    return BulkFuture([(RefusedPiece(error), 0, count)] if count else [], count, None)


class BulkResult(Sequence):
    """The outcomes of a bulk's records, in the order the app gave them: ``result[i]`` is
    record i's RecordMetadata or DeliveryError (built when asked). ``failures`` lists
    ``(i, DeliveryError)`` for the records that failed, found from the frames' report runs
    without looking at each delivered record."""

    def __init__(self, future: BulkFuture) -> None:
        self._pieces = future._pieces
        self._count = future._count
        self._order = future._order
        self._where: list[int] | None = None  # app index -> queued position, when reordered
        self._starts = [0, *accumulate(hi - lo for _, lo, hi in self._pieces)]
        self.failures = self._find_failures()

    @property
    def delivered(self) -> int:
        return self._count - len(self.failures)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("bulk record index out of range")
        position = index if self._order is None else self._positions()[index]
        piece = bisect_right(self._starts, position) - 1
        frame, lo, _ = self._pieces[piece]
        return frame.outcome(lo + position - self._starts[piece])

    def _positions(self) -> list[int]:
        if self._where is None:
            where = [0] * self._count
            for position, index in enumerate(self._order()):
                where[index] = position
            self._where = where
        return self._where

    def _find_failures(self) -> list[tuple[int, DeliveryError]]:
        failures = []
        order = None
        for (frame, lo, hi), start in zip(self._pieces, self._starts, strict=False):
            for index, error in frame.failures_in(lo, hi):
                position = start + index - lo
                if self._order is not None:
                    order = order or self._order()
                    position = order[position]
                failures.append((position, error))
        failures.sort(key=lambda failure: failure[0])
        return failures


class BulkError(Exception):
    """Some records of a bulk failed. ``failures``: ``(index, DeliveryError)`` in the order
    the app gave the records; ``result``: every record's outcome (a BulkResult)."""

    def __init__(self, result: BulkResult) -> None:
        self.result = result
        self.failures = result.failures
        index, first = self.failures[0]
        super().__init__(
            f"{len(self.failures)} of {len(result)} records failed; record {index}: {first}"
        )
