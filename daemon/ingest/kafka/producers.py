"""Idempotent producers of the Kafka listener: kpd's producer ids, the sequence checks a
broker makes, and the batches kpd took, on the dedupe journal the kpd socket's protocol v2
sessions use too (``daemon.ingest.dedupe``), so a resend is recognised after a kill -9.

kpd poses as the broker, so it hands out producer ids and epochs (InitProducerId) and checks
each batch's sequence per (producer id, epoch, topic, partition) as a broker's
``ProducerStateManager`` does (``ProducerStateEntry.findDuplicateBatch``,
``ProducerAppendInfo.checkSequence``), keeping the last ``BATCHES_KEPT`` batches of each
(Kafka keeps 5: a client has at most 5 requests in flight per partition with idempotence on):

* an older epoch                                    -> INVALID_PRODUCER_EPOCH (47)
* a newer epoch must start at sequence 0            -> else OUT_OF_ORDER_SEQUENCE_NUMBER (45)
* the same (base sequence, count) as a kept batch   -> a duplicate: answered with that batch's
  first outcome (waiting for it if the first is still in flight), never produced again
* the next sequence (wrapping at 2**31-1, like ``DefaultRecordBatch.incrementSequence``)
                                                    -> a new batch
* anything else                                     -> OUT_OF_ORDER_SEQUENCE_NUMBER (45)
* a producer id kpd never issued (or forgot)        -> UNKNOWN_PRODUCER_ID (59)

A batch is *admitting* from its check until its first ring entry is staged or it is refused
(it may wait in ``Admission.admit`` for ring space): a resend arriving meanwhile (the client
reconnected after its request timed out) is a duplicate of it, and the next batch follows it.

Write-ahead: a batch's *taken* line is journaled when its first entry is staged and is in the
file before that entry is published (``Admission.before_publish``), tagged with where the
entry ends in its ring. A kill -9 between the two leaves a line whose entry no ring holds: the
next start withdraws it (``withdraw_unpublished``: its end is past the ring's published
``write_pos``), so the client's resend is new. With the line after the publish, a kill between
the two left a batch in a ring that the next listener did not know, and took again.

The journal: one window per (producer id, epoch, topic, partition), keyed
``kafka:<pid>:<epoch>:<partition>:<topic>``, holds the batches taken, each one range of its
sequence numbers unwrapped to a u64 (so a producer that wraps past 2**31-1 keeps ascending
ranges), tagged with the ring sequence number of its first record (the workers' reports come
back by it) and where its first entry ends (``taken``); its outcome runs are ``[error code,
base offset, log-append time]``. The window
forgets all but the newest ``BATCHES_KEPT`` batches. A producer id is the window
``kafka-id:<pid>:<epoch>`` (no ranges), touched at each use: an id that never had a batch is
forgotten after ``UNUSED_ID_EXPIRY_S`` (a process that initialised and left), every window
after the journal's expiry (``socket.kafka_producer_expiry``, Kafka's
``producer.id.expiration.ms``). Ids are the wall clock in µs at issue, at least one above
every id known, so no id is issued twice, also across restarts.

Owned by the listener on ingest's event loop; no locks. Must not import the listener.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from daemon.ingest.dedupe import DedupeJournal, Piece
from daemon.kafka.errors import ErrorCode

__all__ = ["BATCHES_KEPT", "UNUSED_ID_EXPIRY_S", "ProducerRegistry", "SequenceCheck"]

BATCHES_KEPT = 5
# A client asks for its id right before producing; one unused this long was left behind.
UNUSED_ID_EXPIRY_S = 600.0
_EXPIRY_SCAN_S = 60.0  # look for expired ids at most this often (a scan of every window)
_MAX_EPOCH = 0x7FFF  # Kafka bumps to a new producer id when the epoch would pass Short.MAX
_SEQ_MOD = 1 << 31  # Kafka sequences wrap from Integer.MAX_VALUE to 0
_ID_PREFIX = "kafka-id:"
_BATCH_PREFIX = "kafka:"

# One partition's answer: (error code, base offset, log-append time).
Outcome = tuple[int, int, int]


class SequenceCheck(NamedTuple):
    """``error`` non-zero: refuse the batch with it. Else ``key`` and ``first`` (the batch's
    unwrapped first sequence number) name it; ``resend``: it was taken (or is admitting)
    already, so it is answered with its first outcome, never taken again."""

    error: int = 0
    key: str = ""
    first: int = 0
    resend: bool = False


def _id_key(producer_id: int, epoch: int) -> str:
    return f"{_ID_PREFIX}{producer_id}:{epoch}"


def _batch_key(producer_id: int, epoch: int, topic: str, partition: int) -> str:
    return f"{_BATCH_PREFIX}{producer_id}:{epoch}:{partition}:{topic}"


def _producer_of(key: str) -> tuple[int, int]:
    """(producer id, epoch) of an id or batch window's key."""
    pid, epoch = key.split(":", 3)[1:3]
    return int(pid), int(epoch)


class ProducerRegistry:
    """Producer ids, epochs and taken batches, in ``journal`` (which this registry owns)."""

    def __init__(self, journal: DedupeJournal, clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self._clock = clock
        self._epochs: dict[int, int] = {}  # producer id -> current epoch
        self._next_id = 1
        # Ring sequence number of each taken batch's first record -> (count, key, first), for
        # the reports; ``_starts`` holds its keys ascending.
        self._by_ring_seq: dict[int, tuple[int, str, int]] = {}
        self._starts: list[int] = []
        # Batches between their check and their publish (or refusal), by key: {first: end}.
        self._admitting: dict[str, dict[int, int]] = {}
        self._next_scan = clock() + _EXPIRY_SCAN_S
        self._reindex()

    # ---- InitProducerId --------------------------------------------------------------------

    def init_producer(self, producer_id: int = -1, epoch: int = -1) -> tuple[int, int]:
        """A (producer id, epoch) for an InitProducerId request. A known id with its current
        epoch gets the epoch bumped (KIP-360) and its sequences reset; anything else a new id."""
        self._maybe_expire()
        if producer_id >= 0 and self._epochs.get(producer_id) == epoch and epoch < _MAX_EPOCH:
            self._forget_epoch(producer_id, epoch)
            epoch += 1
        else:
            producer_id = max(self._next_id, int(self._clock() * 1_000_000))
            epoch = 0
        self._next_id = producer_id + 1
        self._epochs[producer_id] = epoch
        self.journal.touch(_id_key(producer_id, epoch))
        return producer_id, epoch

    def expire(self) -> int:
        """Forget the ids idle past their expiry (module docstring); how many."""
        self._next_scan = self._clock() + _EXPIRY_SCAN_S
        journal = self.journal
        horizon = self._clock() - UNUSED_ID_EXPIRY_S
        producing = {_producer_of(key) for key in self._batch_keys()}
        unused = [
            key for key, window in journal.windows.items()
            if key.startswith(_ID_PREFIX) and window.touched < horizon
            and _producer_of(key) not in producing
        ]  # fmt: skip
        for key in unused:
            journal.drop(key)
        journal.expire()
        before = len(self._epochs)
        self._reindex()
        return before - len(self._epochs)

    # ---- sequences -------------------------------------------------------------------------

    def check(self, producer_id: int, epoch: int, topic: str, partition: int,
              base_sequence: int, count: int) -> SequenceCheck:  # fmt: skip
        current = self._epochs.get(producer_id)
        if current is None:
            return SequenceCheck(ErrorCode.UNKNOWN_PRODUCER_ID)
        if epoch < current:
            return SequenceCheck(ErrorCode.INVALID_PRODUCER_EPOCH)
        self.journal.touch(_id_key(producer_id, epoch))
        key = _batch_key(producer_id, epoch, topic, partition)
        window = self.journal.window(key)
        # A duplicate: the same first sequence number and count as a kept or admitting batch
        # (the window may hold up to twice BATCHES_KEPT: ``taken`` forgets in steps).
        expected = -1  # one past the newest batch's last sequence number
        if window is not None:
            for taken in window.ranges[-BATCHES_KEPT:]:
                if taken.first % _SEQ_MOD == base_sequence and taken.count == count:
                    return SequenceCheck(key=key, first=taken.first, resend=True)
                expected = max(expected, taken.first + taken.count)
        for first, end in self._admitting.get(key, {}).items():
            if first % _SEQ_MOD == base_sequence and end - first == count:
                return SequenceCheck(key=key, first=first, resend=True)
            expected = max(expected, end)
        if expected < 0:
            if base_sequence == 0:
                return SequenceCheck(key=key, first=0)
            return SequenceCheck(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        if base_sequence == expected % _SEQ_MOD:
            return SequenceCheck(key=key, first=expected)
        return SequenceCheck(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)

    def admitting(self, check: SequenceCheck, count: int) -> None:
        """A new batch goes into ``Admission.admit``: until ``taken`` or ``refused``, a resend
        of it is a duplicate and the next batch follows it."""
        self._admitting.setdefault(check.key, {})[check.first] = check.first + count

    def refused(self, check: SequenceCheck) -> None:
        """The admitting batch was not taken (admission refused it): its sequence is free."""
        self._done_admitting(check)

    def taken(self, check: SequenceCheck, count: int, tag: int | list[int]) -> None:
        """The admitting batch's first ring entry is staged: journaled before it is published
        (module docstring). ``tag``: the ring sequence number of its first record, or
        ``[ring seq, ring index, entry end position, worker count, ring capacity]`` — where the
        entry is, so that a next start can tell whether it was ever published."""
        self._done_admitting(check)
        journal = self.journal
        journal.taken(check.key, check.first, count, tag=tag)
        self._index(tag, count, check.key, check.first)
        window = journal.window(check.key)
        # Forgotten in steps, down to BATCHES_KEPT once twice as many are kept: a journal line
        # per BATCHES_KEPT batches, not one per batch; ``check`` looks at the newest only.
        if window is not None and len(window.ranges) > 2 * BATCHES_KEPT:
            gone = window.ranges[: len(window.ranges) - BATCHES_KEPT]
            for old in gone:
                self._unindex(_ring_seq(old.tag))
            journal.forget_below(check.key, window.ranges[-BATCHES_KEPT].first)

    def lookup(self, check: SequenceCheck, count: int) -> list[Piece]:
        """What the journal knows of a resent batch: its outcome pieces, None while pending."""
        return self.journal.lookup(check.key, check.first, count)

    def ring_seq_of(self, check: SequenceCheck) -> int:
        """The ring sequence number of a taken batch's first record."""
        window = self.journal.window(check.key)
        return next(_ring_seq(r.tag) for r in window.ranges if r.first == check.first)

    def withdraw_unpublished(self, published: Callable[[int, int, int, int], bool]) -> int:
        """At a start, before any batch is taken: withdraw each taken batch without an outcome
        whose first entry was never published — its line was written, then ingest was killed
        before the publish — so the client's resend is new, as it is to Kafka. ``published(ring
        index, end position, worker count, ring capacity)`` says whether that entry's end is
        within what the ring published (True when the rings are not the ones the line names).
        Returns how many were withdrawn."""
        gone = []
        for key, taken in self.journal.ranges():
            tag = taken.tag
            if (key.startswith(_BATCH_PREFIX) and isinstance(tag, list) and not taken.resolved
                    and not taken.runs and not published(*tag[1:5])):  # fmt: skip
                gone.append((key, taken.first, taken.count, tag[0]))
        for key, first, count, ring_seq in gone:
            self.journal.withdraw(key, first, count)
            self._unindex(ring_seq)
        return len(gone)

    # ---- outcomes (from the workers' reports, by ring sequence number) --------------------

    def resolved(self, ring_seq: int, count: int, outcome: Outcome) -> None:
        """The outcome of the ``count`` records from ``ring_seq`` (part of a taken batch)."""
        found = self._find(ring_seq)
        if found is not None:
            key, first = found
            self.journal.resolved(key, first, count, list(outcome))

    def unawaited(self, ring_seq: int, count: int, outcome: Outcome, persisted: bool) -> None:
        """The outcome of ``count`` records from ``ring_seq`` that no client waits for (it
        left, or an earlier listener took the batch before a kill), kept for the resend that
        may come: delivered -> resolved; a whole batch failed and never written -> withdrawn
        (its resend is new); any other failure may have been written (``persisted``: a
        draining worker keeps the records for the next start, an in-doubt request): the
        batch stays pending for a later report."""
        if not outcome[0]:
            self.resolved(ring_seq, count, outcome)
            return
        taken = self._by_ring_seq.get(ring_seq)
        if not persisted and taken is not None and taken[0] == count:
            self.withdrawn(ring_seq)

    def withdrawn(self, ring_seq: int) -> None:
        """The batch from ``ring_seq`` failed as a whole and was never produced (NOT_PERSISTED,
        no outcome journaled): no longer taken, so its resend is new, as in Kafka."""
        found = self._by_ring_seq.get(ring_seq)
        if found is not None:
            count, key, first = found
            self.journal.withdraw(key, first, count)
            self._unindex(ring_seq)

    def highest_ring_seq(self) -> int:
        """One past the largest ring sequence number a taken batch uses (0 if none)."""
        return max((start + n for start, (n, _, _) in self._by_ring_seq.items()), default=0)

    def stats(self) -> tuple[int, int]:
        """(producer ids known, (producer, partition) windows kept)."""
        return len(self._epochs), sum(1 for _ in self._batch_keys())

    def close(self) -> None:
        self.journal.close()

    # ---- state -----------------------------------------------------------------------------

    def _batch_keys(self):
        return (key for key in self.journal.windows if key.startswith(_BATCH_PREFIX))

    def _done_admitting(self, check: SequenceCheck) -> None:
        admitting = self._admitting.get(check.key)
        if admitting is not None:
            admitting.pop(check.first, None)
            if not admitting:
                del self._admitting[check.key]

    def _find(self, ring_seq: int) -> tuple[str, int] | None:
        """(key, unwrapped sequence number) of the record at ``ring_seq``, if taken."""
        index = bisect.bisect_right(self._starts, ring_seq) - 1
        if index < 0:
            return None
        start = self._starts[index]
        count, key, first = self._by_ring_seq[start]
        if ring_seq >= start + count:
            return None
        return key, first + ring_seq - start

    def _index(self, tag: Any, count: int, key: str, first: int) -> None:
        ring_seq = _ring_seq(tag)
        if ring_seq is not None and ring_seq not in self._by_ring_seq:
            self._by_ring_seq[ring_seq] = (count, key, first)
            bisect.insort(self._starts, ring_seq)

    def _unindex(self, ring_seq: Any) -> None:
        if self._by_ring_seq.pop(ring_seq, None) is not None:
            self._starts.pop(bisect.bisect_left(self._starts, ring_seq))

    def _reindex(self) -> None:
        """Rebuild what derives from the journal's windows: epochs and the ring index."""
        self._epochs.clear()
        self._by_ring_seq.clear()
        self._starts.clear()
        for key in self.journal.windows:
            if key.startswith((_ID_PREFIX, _BATCH_PREFIX)):
                pid, epoch = _producer_of(key)
                self._epochs[pid] = max(epoch, self._epochs.get(pid, epoch))
                self._next_id = max(self._next_id, pid + 1)
        for key, taken in self.journal.ranges():
            if key.startswith(_BATCH_PREFIX):
                self._index(taken.tag, taken.count, key, taken.first)

    def _forget_epoch(self, producer_id: int, epoch: int) -> None:
        """A bumped epoch: the old epoch's windows go (the new one restarts at sequence 0)."""
        gone = [k for k in self.journal.windows
                if k.startswith((_ID_PREFIX, _BATCH_PREFIX))
                and _producer_of(k) == (producer_id, epoch)]  # fmt: skip
        for key in gone:
            self.journal.drop(key)
        self._reindex()

    def _maybe_expire(self) -> None:
        if self._clock() >= self._next_scan:
            self.expire()


def _ring_seq(tag: Any) -> int | None:
    """The ring sequence number in a taken batch's tag (``ProducerRegistry.taken``)."""
    if isinstance(tag, int):
        return tag
    if isinstance(tag, list) and tag and isinstance(tag[0], int):
        return tag[0]
    return None
