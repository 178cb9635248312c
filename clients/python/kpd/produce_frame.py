"""One PRODUCE frame of the client: its records while it fills, its outcomes once reported.

Owns ``ProduceFrame``, the unit the client's cost is paid in. While open it holds the records as
plain lists (the session appends to them on send()'s hot path and ``encoding`` lays them out
at seal time). Once sealed it is in flight, and its records' outcomes are stored PER RUN, not
per record: a settlement ``(lo, hi, kind, data)`` says "records lo..hi-1 of this frame ended
so", and a record's RecordMetadata or DeliveryError is computed only when its future is asked
(``outcome``). Completing a frame is therefore O(runs), whatever its record count, and finding
a record's run is O(1): the frame's only run, or, once a second run came, the run number noted
per record in ``owner`` (an int array filled a slice per run, in C).

Thread-safety: settlements are only appended, each as one finished tuple, before ``owner``
points at it, so a reader on another thread sees a record either pending or settled, never
half-settled (the GIL makes list.append and a slice assignment atomic). ``callbacks``,
``watchers`` and everything else are guarded by whoever serialises the session (the sync
Producer's lock; the asyncio loop).

Must not import sockets, threads or asyncio, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

from array import array

from kpd.common import Completions, make_metadata
from kpd.errors import DeliveryError
from kpd.future import OutcomeSource
from kpd.protocol import Persistence, ReportRun, Status
from kpd.protocol.produce import FIXED_RECORD_BYTES, encode_produce_frame

__all__ = ["ENDED", "PENDING", "REPORTED", "WRITTEN", "ProduceFrame"]

PENDING = object()  # outcome() of a record without a result yet

# Settlement kinds: what ``data`` of a settlement (lo, hi, kind, data) is.
REPORTED = 0  # data: the ReportRun that covered the records
WRITTEN = 1  # data: None. Acks "none": the frame was written, no report will come
ENDED = 2  # data: (code, persistence, message). The connection ended first


_ZERO = array("i", [0])


def _unowned(count: int) -> array:
    return _ZERO * count


def _owned_by(number: int, count: int) -> array:
    return array("i", [number]) * count


class ProduceFrame(OutcomeSource):
    """Records for one (topic, partition) of one connection: open, then sealed, then settled.
    Its records' futures read their outcomes from it (``future.OutcomeSource``).

    ``hub`` is how a future waits (see ``future.Hub``); the session passes the adapter's.
    """

    __slots__ = (
        "all_delivered",
        "any_failed",
        "base_seq",
        "callback_futures",
        "callbacks",
        "count",
        "deadline",
        "errors",
        "header_blobs",
        "hub",
        "keys",
        "more_callbacks",
        "owner",
        "partition",
        "per_record",
        "remaining",
        "sealed",
        "settlements",
        "size",
        "timestamps",
        "topic",
        "values",
        "waiters",
        "watchers",
    )

    def __init__(self, topic: str, partition: int, size: int, deadline: float, hub) -> None:
        self.topic = topic
        self.partition = partition  # -1: kpd chooses
        self.deadline = deadline  # linger: sealed by then at the latest
        self.hub = hub
        # --- open: owned by the session, appended by ProducerSession.add --------------------
        self.keys: list | None = []
        self.values: list | None = []
        self.timestamps: dict[int, int] | None = None  # index -> timestamp, only where given
        self.header_blobs: dict[int, bytes] | None = None  # index -> encoded headers
        self.size = size  # exact bytes the frame would have if sealed now
        # Column bytes every further record costs: key and value lengths, plus a timestamp
        # (8) and a header length (4) once any record of the frame has one.
        self.per_record = FIXED_RECORD_BYTES
        self.sealed = False
        # --- sealed: in flight -------------------------------------------------------------
        self.base_seq = -1
        self.count = 0
        self.settlements: list[tuple[int, int, int, object]] = []  # first settlement wins
        self.remaining = 0  # records without an outcome
        self.any_failed = False  # some record's outcome is a DeliveryError
        # Every record has its outcome and none failed: what a future's done() and
        # exception() answer at once (OutcomeSource), without finding the record's run.
        self.all_delivered = False
        # Per record, the number (1-based) of the settlement that gave it its outcome, 0 while
        # pending; made at the second settlement (one run covering the frame needs none).
        self.owner: array | None = None
        self.errors: dict[int, DeliveryError] | None = None  # built on demand, then kept
        # While records are pending: index -> fn, and index -> the future fn is for. Two
        # dicts, not a (fn, future) pair in a list per record: an app that adds a callback to
        # every record (paced senders, reactive apps) would allocate two objects the cycle
        # collector tracks per record, and collections would come every ~230 records.
        self.callbacks: dict[int, object] | None = None
        self.callback_futures: dict[int, object] | None = None
        self.more_callbacks: list[tuple] | None = None  # (index, fn, future): a 2nd, 3rd, ...
        self.watchers: list[tuple] | None = None  # (lo, hi, fn, arg) until lo..hi-1 settle
        self.waiters: list | None = None  # asyncio futures of awaiting coroutines

    # --- open ---------------------------------------------------------------------------------

    def add_columns(self, timestamp: int | None, blob: bytes) -> int:
        """Bytes the timestamp/headers of the next record add beyond ``per_record`` (which
        already counts the columns the frame has): its header blob, and the whole column
        when this record is the first to use it (-1 timestamps, 0 header lengths for the
        earlier records, its own entry included)."""
        index = len(self.keys)
        added = len(blob)
        if timestamp is not None and self.timestamps is None:
            added += 8 * (index + 1)
        if blob and self.header_blobs is None:
            added += 4 * (index + 1)
        return added

    def store_columns(self, index: int, timestamp: int | None, blob: bytes) -> None:
        """Record ``index``'s timestamp/headers (after add_columns said they fit)."""
        if timestamp is not None:
            if self.timestamps is None:
                self.timestamps = {}
                self.per_record += 8
            self.timestamps[index] = timestamp
        if blob:
            if self.header_blobs is None:
                self.header_blobs = {}
                self.per_record += 4
            self.header_blobs[index] = blob

    def seal(self, topic_bytes: bytes, base_seq: int) -> bytes:
        """Number the records from ``base_seq``, return the frame, drop the record bytes."""
        self.sealed = True
        self.base_seq = base_seq
        self.count = self.remaining = len(self.keys)
        data = encode_produce_frame(
            topic_bytes,
            self.partition,
            base_seq,
            self.keys,
            self.values,
            self.timestamps,
            self.header_blobs,
        )
        self.keys = self.values = self.header_blobs = None
        return data

    # --- in flight ----------------------------------------------------------------------------

    def settle(self, lo: int, hi: int, kind: int, data, done: Completions) -> int:
        """Records lo..hi-1 ended as ``kind``/``data`` unless they already had an outcome (a
        record keeps its first). Returns how many got one now.

        O(1) Python steps per run: the per-record work is C-level slice arithmetic."""
        if hi <= lo:
            return 0
        settlements = self.settlements
        if not settlements:
            fresh = hi - lo
            settlements.append((lo, hi, kind, data))
        else:
            owner = self.owner
            if owner is None:  # a second run: from now on note each record's run
                owner = _unowned(self.count)
                first_lo, first_hi = settlements[0][:2]
                owner[first_lo:first_hi] = _owned_by(1, first_hi - first_lo)
                self.owner = owner  # published filled, for readers on other threads
            fresh = owner[lo:hi].count(0)
            if not fresh:
                return 0
            settlements.append((lo, hi, kind, data))
            number = len(settlements)
            if fresh == hi - lo:
                owner[lo:hi] = _owned_by(number, hi - lo)
            else:  # overlaps an earlier run (a duplicate report): that one keeps its records
                for index in range(lo, hi):
                    if not owner[index]:
                        owner[index] = number
        self.remaining -= fresh
        if kind == ENDED or (kind == REPORTED and data.status is Status.FAILED):
            self.any_failed = True
        elif not self.remaining and not self.any_failed:
            self.all_delivered = True  # published last: its records' outcomes are all stored
        if self.callbacks:
            self._collect_callbacks(lo, hi, done)
        if self.watchers:
            self._collect_watchers(done)
        done.frames.append(self)
        return fresh

    def _collect_callbacks(self, lo: int, hi: int, done: Completions) -> None:
        # A callback is only registered while its record is pending, so one inside lo..hi
        # belongs to a record that just got its outcome. Walk the smaller of the two.
        callbacks, futures = self.callbacks, self.callback_futures
        fns, arguments = done.callbacks, done.arguments
        if hi - lo <= len(callbacks):
            indexes = [i for i in range(lo, hi) if i in callbacks]
        else:
            indexes = [i for i in callbacks if lo <= i < hi]
        for index in indexes:
            fns.append(callbacks.pop(index))
            arguments.append(futures.pop(index))
        if self.more_callbacks:
            keep = []
            for entry in self.more_callbacks:
                if lo <= entry[0] < hi:
                    done.add(entry[1], entry[2])
                else:
                    keep.append(entry)
            self.more_callbacks = keep

    def _collect_watchers(self, done: Completions) -> None:
        keep = []
        for watcher in self.watchers:
            if self.range_settled(watcher[0], watcher[1]):
                done.add(watcher[2], watcher[3])
            else:
                keep.append(watcher)
        self.watchers = keep

    def add_callback(self, index: int, fn, future) -> None:
        """Keep ``fn`` to call with ``future`` once record ``index`` settles (caller holds
        the hub lock and checked it is pending). Callbacks of a record run in the order
        added."""
        if self.callbacks is None:
            self.callbacks, self.callback_futures = {}, {}
        if index in self.callbacks:
            # Rare: a record's second callback. Collected after the first, in order.
            if self.more_callbacks is None:
                self.more_callbacks = []
            self.more_callbacks.append((index, fn, future))
            return
        self.callbacks[index] = fn
        self.callback_futures[index] = future

    def watch(self, lo: int, hi: int, fn, arg) -> None:
        """Have ``fn(arg)`` run (as a done-callback) once records lo..hi-1 all have their
        outcome (caller holds the hub lock and checked they have not)."""
        if self.watchers is None:
            self.watchers = []
        self.watchers.append((lo, hi, fn, arg))

    def settled(self, index: int) -> bool:
        owner = self.owner
        if owner is not None:
            return owner[index] != 0
        # At most two runs before ``owner`` exists; a plain loop: any(<genexpr>) costs ~3x.
        for lo, hi, _, _ in self.settlements:  # noqa: SIM110
            if lo <= index < hi:
                return True
        return False

    def range_settled(self, lo: int, hi: int) -> bool:
        """True when each of records lo..hi-1 has its outcome."""
        if self.remaining == 0 and self.settlements:
            return True
        owner = self.owner
        if owner is not None:
            return owner[lo:hi].count(0) == 0
        return any(first <= lo and hi <= end for first, end, _, _ in self.settlements)

    def _run_of(self, index: int):
        """The settlement ``(lo, hi, kind, data)`` that gave record ``index`` its outcome."""
        owner = self.owner
        if owner is not None:
            number = owner[index]
            return self.settlements[number - 1] if number else None
        for run in self.settlements:
            if run[0] <= index < run[1]:
                return run
        return None

    def outcome(self, index: int):
        """Record ``index``'s RecordMetadata or DeliveryError, or PENDING."""
        run = self._run_of(index)
        if run is None:
            return PENDING
        kind, data = run[2], run[3]
        if kind == REPORTED and data.status is not Status.FAILED:
            return self._delivered(index, data)
        if kind == WRITTEN:
            return make_metadata(self.topic, self.partition, -1, self._stamp(index))
        return self._error(index, kind, data)

    def error(self, index: int) -> DeliveryError | None:
        """Record ``index``'s DeliveryError, None if it was delivered (it must be settled):
        ``exception()`` without building a RecordMetadata."""
        run = self._run_of(index)
        kind, data = run[2], run[3]
        if kind == WRITTEN or (kind == REPORTED and data.status is not Status.FAILED):
            return None
        return self._error(index, kind, data)

    def failures_in(self, lo: int, hi: int) -> list[tuple[int, DeliveryError]]:
        """``(index, DeliveryError)`` for the failed records among lo..hi-1 (all settled),
        found per failed run: delivered runs cost nothing."""
        failures = []
        owner = self.owner
        for number, (first, end, kind, data) in enumerate(self.settlements, 1):
            if kind == WRITTEN or (kind == REPORTED and data.status is not Status.FAILED):
                continue
            for index in range(max(first, lo), min(end, hi)):
                if owner is None or owner[index] == number:
                    failures.append((index, self._error(index, kind, data)))
        return failures

    def _delivered(self, index: int, run: ReportRun):
        # Record first_seq+i of a run got offset base_offset+i (protocol section 7).
        offset = run.base_offset
        if offset >= 0:
            offset += self.base_seq + index - run.first_seq
        stamp = run.timestamp if run.timestamp >= 0 else self._stamp(index)
        return make_metadata(self.topic, run.partition, offset, stamp)

    def _stamp(self, index: int) -> int:
        return -1 if self.timestamps is None else self.timestamps.get(index, -1)

    def _error(self, index: int, kind: int, data) -> DeliveryError:
        # Built once per record and kept, so result() and exception() agree on the object.
        errors = self.errors
        if errors is None:
            errors = self.errors = {}
        error = errors.get(index)
        if error is None:
            if kind == REPORTED:
                error = DeliveryError(data.error, data.kafka_error, data.persistence, data.message)
            else:
                code, persistence, message = data
                error = DeliveryError(code, 0, persistence, message)
            errors[index] = error
        return error


def ended_data(code: int, message: str, written: bool) -> tuple[int, Persistence, str]:
    """The ENDED settlement data for a frame when the connection ends: a written frame's records
    may be in Kafka, an unwritten one's are not."""
    if written:
        return (
            code,
            Persistence.POSSIBLY_PERSISTED,
            message + "; the record was sent and may have been delivered",
        )
    return code, Persistence.NOT_PERSISTED, message + "; the record was never sent"
