"""The record accumulator: per-partition queues of batches (Java ``RecordAccumulator``).

Owns every batch that is not in flight, the per-partition drain state (in-flight count,
sequence numbers, recovery after a failure) and the ``buffer.memory`` accounting. It decides
*what* may be sent to a broker now; the sender decides *when* and does the I/O.

Ordering rules (why they are safe):
* A partition sends at most one batch per request, oldest first; a retried batch goes back in
  front of never-sent ones, in its original drain order.
* With idempotence, a partition that must retry stops draining until all its in-flight batches
  came back; then its queued batches are re-sequenced from the lowest failed sequence. The
  broker rejected everything after a gap with OUT_OF_ORDER_SEQUENCE_NUMBER, so those batches
  were not written and can take the same (or, after a split, new) sequence numbers; an
  in-doubt batch keeps its own, so the broker deduplicates it if it had been written.
* Without idempotence and with ``max.in.flight.requests.per.connection`` = 1, a partition with
  a batch in flight is muted, as Java's ``guaranteeMessageOrder``.

Owned by the engine's event loop; no locking.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from daemon.kafka.records import BatchBuilder, increment_sequence
from daemon.producer.batch import ProducerBatch

__all__ = ["Accumulator", "AccumulatorSettings", "PartitionQueue"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccumulatorSettings:
    """Built only from the validated config (``engine.accumulator_settings``): no defaults."""

    batch_size: int
    linger_s: float
    buffer_memory: int
    max_request_size: int
    compression: int  # codec id of compression.type
    compression_level: int | None
    idempotent: bool
    guarantee_order: bool  # non-idempotent with one request in flight: mute partitions
    transactional: bool  # batches carry the transactional attribute bit


class PartitionQueue:
    """Batches of one partition, oldest first, plus its drain state."""

    __slots__ = (
        "batches",
        "in_flight",
        "next_order",
        "next_sequence",
        "partition",
        "recovering",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.batches: collections.deque[ProducerBatch] = collections.deque()
        self.in_flight: list[ProducerBatch] = []  # sent, awaiting an answer; oldest first
        self.next_order = 0
        self.next_sequence = 0  # idempotence: base sequence of the next batch drained
        self.recovering = False  # a batch must be retried: drain nothing until in_flight == 0


class Accumulator:
    def __init__(self, settings: AccumulatorSettings, wake: Callable[[float | None], None]) -> None:
        self._settings = settings
        # Tells the sender a batch was opened or sealed (once per batch): wake(None) means it
        # may be sendable now, wake(t) that it becomes sendable by linger at loop time t.
        self._wake = wake
        self._queues: dict[tuple[str, int], PartitionQueue] = {}
        self.buffer_used = 0  # bytes appended and not yet completed
        self._flushes = 0  # flush() calls waiting (begin_flush/end_flush): linger is ignored

    # ---- appending (the per-record hot path) -------------------------------------------

    def queue(self, topic: str, partition: int) -> PartitionQueue:
        key = (topic, partition)
        pq = self._queues.get(key)
        if pq is None:
            pq = self._queues[key] = PartitionQueue(topic, partition)
        return pq

    def append(
        self,
        pq: PartitionQueue,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        token: Any,
        now: float,
        opened: float | None = None,
    ) -> int:
        """Append one record to the partition's open batch; returns the bytes it took.
        ``opened``: when a batch this opens starts to linger (default ``now``)."""
        batches = pq.batches
        batch = batches[-1] if batches else None
        if batch is None or batch.sealed:
            batch = self._new_batch(pq, now, opened)
        size = batch.builder.append(timestamp, key, value, headers)
        batch.tokens.append(token)
        batch.buffer_bytes += size
        self.buffer_used += size
        if batch.builder.size_in_bytes >= self._settings.batch_size:
            batch.sealed = True
            self._wake(None)
        return size

    def append_packed(
        self,
        pq: PartitionQueue,
        timestamp: int,
        data,
        key_lens,
        value_lens,
        pos: int,
        token: int,
        now: float,
        opened: float | None = None,
        timestamps=None,
    ) -> int:
        """Append packed records (see ``BatchBuilder.append_packed``) whose tokens are
        ``token``, ``token + 1``, …; returns the bytes they took. ``opened`` as ``append``'s.
        With ``timestamps`` (one per record, -1: none), each record has its own and
        ``timestamp`` is the default (``BatchBuilder.append_stamped``)."""
        batch_size = self._settings.batch_size
        batches = pq.batches
        added_total = 0
        index, count = 0, len(key_lens)
        while index < count:
            batch = batches[-1] if batches else None
            if batch is None or batch.sealed:
                batch = self._new_batch(pq, now, opened)
            builder = batch.builder
            if timestamps is None:
                end, pos, added = builder.append_packed(
                    timestamp, data, key_lens, value_lens, index, pos, batch_size
                )
            else:
                end, pos, added = builder.append_stamped(
                    timestamp, timestamps, data, key_lens, value_lens, index, pos, batch_size
                )
            batch.tokens.extend(range(token + index, token + end))
            batch.buffer_bytes += added
            added_total += added
            index = end
            if builder.size_in_bytes >= batch_size:
                batch.sealed = True
                self._wake(None)
        self.buffer_used += added_total
        return added_total

    def send_now(self, pq: PartitionQueue) -> None:
        """The partition's open batch is sendable now, without waiting for linger; it stays
        open, so what is appended before the sender can take it (a full in-flight window)
        joins it: no wait when idle, coalescing when busy."""
        batches = pq.batches
        if batches and not batches[-1].due_now:
            batches[-1].due_now = True
            self._wake(None)

    def _new_batch(self, pq: PartitionQueue, now: float, opened: float | None) -> ProducerBatch:
        s = self._settings
        builder = BatchBuilder(s.compression, s.compression_level, s.transactional)
        batch = ProducerBatch(
            pq.topic, pq.partition, builder, now if opened is None else opened, now
        )
        pq.batches.append(batch)
        self._wake(self._linger_deadline(batch) if len(pq.batches) == 1 else None)
        return batch

    def _linger_deadline(self, head: ProducerBatch) -> float | None:
        """When a newly opened head batch becomes sendable by linger alone, or None when
        something may make it sendable sooner (a flush, a nearly full buffer) or a turn of
        the sender is wanted now anyway (a transaction adds its partition at once)."""
        s = self._settings
        if self._flushes or s.transactional or self._buffer_pressed():
            return None
        return head.created + s.linger_s

    # ---- flushing ----------------------------------------------------------------------

    def begin_flush(self) -> None:
        """Someone waits for everything to be sent: ignore linger until ``end_flush``."""
        self._flushes += 1

    def end_flush(self) -> None:
        self._flushes -= 1

    @property
    def flushing(self) -> bool:
        return self._flushes > 0

    # ---- draining ----------------------------------------------------------------------

    def queues(self) -> Iterator[PartitionQueue]:
        return iter(self._queues.values())

    def has_queued(self) -> bool:
        """Whether some partition has a batch not in flight (open, ready or retrying)."""
        for pq in self._queues.values():  # noqa: SIM110 (a loop, not any(): no generator)
            if pq.batches:
                return True
        return False

    def drain(
        self,
        queues: list[PartitionQueue],
        now: float,
        stamp: Callable[[ProducerBatch, PartitionQueue], None],
    ) -> list[ProducerBatch]:
        """Take at most one batch from each queue, up to ``max.request.size`` in all — once
        some queue's head is ready, as Java's ``RecordAccumulator.drain``.

        Readiness is per broker, not per partition: when one head is ready (full, lingered,
        flushing) the request goes anyway, so every other queue's head rides along in it
        even before its own linger ends. Waiting for each partition's own linger instead
        spends a request, and an in-flight slot, per partition: at 10k records/s over 12
        partitions the slots filled and batches waited for them, five times linger.ms.

        ``stamp`` assigns producer identity/sequence and builds the batch (the sender knows the
        producer id). The first batch is always taken so an oversized batch still gets sent
        and answered (MESSAGE_TOO_LARGE -> split) instead of blocking its partition forever.
        """
        if not any(self._sendable_head(pq, now) is not None for pq in queues):
            return []
        taken: list[ProducerBatch] = []
        size = 0
        limit = self._settings.max_request_size
        for pq in queues:
            batch = self._drainable_head(pq, now)
            if batch is None:
                continue
            if batch.order < 0:
                batch.order = pq.next_order
                pq.next_order += 1
            stamp(batch, pq)
            batch_bytes = batch.size_in_bytes
            if taken and size + batch_bytes > limit:
                break
            pq.batches.popleft()
            pq.in_flight.append(batch)
            batch.attempts += 1
            batch.sent_at = now
            size += batch_bytes
            taken.append(batch)
        return taken

    def _drainable_head(self, pq: PartitionQueue, now: float) -> ProducerBatch | None:
        """The head batch if it may join a request now, whatever its linger says."""
        if not pq.batches:
            return None
        if pq.in_flight and (pq.recovering or self._settings.guarantee_order):
            return None
        batch = pq.batches[0]
        if batch.retry_at > now:
            return None
        return batch

    def _sendable_head(self, pq: PartitionQueue, now: float) -> ProducerBatch | None:
        """The head batch if it alone makes a request worth sending now (ready)."""
        batch = self._drainable_head(pq, now)
        if batch is None:
            return None
        if batch.sealed or batch.due_now or len(pq.batches) > 1 or self._flushes:
            return batch
        if batch.created + self._settings.linger_s <= now or self._buffer_pressed():
            return batch
        return None

    def _buffer_pressed(self) -> bool:
        # Like Java's "exhausted" readiness: with the buffer nearly full, waiting for linger
        # only blocks appenders, so send what there is.
        return self.buffer_used >= self._settings.buffer_memory * 0.9

    def next_ready_in(self, now: float) -> float | None:
        """Seconds until some queued batch becomes sendable by time alone (None: no such batch)."""
        due_now, soonest = self.next_deadline_in(now)
        return 0.0 if due_now else soonest

    def next_deadline_in(self, now: float) -> tuple[bool, float | None]:
        """``(some head batch is sendable by time now, seconds until the soonest head that is
        not yet)``: ``next_ready_in`` split, so a head that is due but cannot go (window
        full, no connection) does not hide the linger deadlines of the other queues."""
        due_now = False
        soonest: float | None = None
        linger = self._settings.linger_s
        for pq in self._queues.values():
            if not pq.batches:
                continue
            batch = pq.batches[0]
            if batch.retry_at > now:
                due = batch.retry_at
            else:
                due = now if batch.due_now else batch.created + linger
            # Compared as ``_sendable_head`` does (due <= now), never as now - created >=
            # linger: the two round differently, and a head due here but not there was taken
            # for "due but cannot go" and waited the 50 ms recheck instead of going.
            if due <= now:
                due_now = True
                continue
            wait = due - now
            if soonest is None or wait < soonest:
                soonest = wait
        return due_now, soonest

    def assign_sequence(self, batch: ProducerBatch, pq: PartitionQueue) -> int:
        """The batch's base sequence, assigning the partition's next one when it has none."""
        if batch.base_sequence < 0:
            base = pq.next_sequence
            pq.next_sequence = increment_sequence(base, batch.record_count)
            return base
        return batch.base_sequence

    # ---- answers -----------------------------------------------------------------------

    def completed(self, batch: ProducerBatch) -> None:
        """The batch's request is over and the batch leaves the engine: delivered or finally
        failed. Its bytes return to ``buffer.memory``."""
        self._queues[(batch.topic, batch.partition)].in_flight.remove(batch)
        self.buffer_used -= batch.buffer_bytes

    def hold(self, batch: ProducerBatch) -> None:
        """The batch's request is over but a transaction keeps the batch, and its bytes in
        ``buffer.memory``, until it commits (then ``release``) or aborts (then
        ``replay_aborted``)."""
        self._queues[(batch.topic, batch.partition)].in_flight.remove(batch)

    def release(self, batch: ProducerBatch) -> None:
        """A batch on no queue and not in flight (held, expired or aborted) leaves the engine:
        its bytes return to ``buffer.memory``."""
        self.buffer_used -= batch.buffer_bytes

    def replay_aborted(self, batches: list[ProducerBatch]) -> None:
        """Put held batches (of an aborted transaction) back in front of their partitions'
        never-sent batches, in drain order, to be sent again under a new epoch."""
        for batch in sorted(batches, key=lambda b: b.order):
            pq = self._queues[(batch.topic, batch.partition)]
            batch.retry_at = 0.0
            batch.base_sequence = -1
            batch.in_doubt = False
            batch.transaction = -1
            position = 0
            for queued in pq.batches:
                if queued.order < 0 or queued.order > batch.order:
                    break
                position += 1
            pq.batches.insert(position, batch)
        self._wake(None)

    def schedule_retry(self, batch: ProducerBatch, retry_at: float, recover: bool) -> None:
        """Put an in-flight batch back for retry, in front of never-sent batches, in drain
        order. ``recover``: hold the partition until all its in-flight batches are back."""
        pq = self._queues[(batch.topic, batch.partition)]
        pq.in_flight.remove(batch)
        batch.retry_at = retry_at
        batches = pq.batches
        position = 0
        for queued in batches:
            if queued.order < 0 or queued.order > batch.order:
                break
            position += 1
        batches.insert(position, batch)
        if recover:
            pq.recovering = True

    def replace(self, batch: ProducerBatch, parts: list[ProducerBatch], retry_at: float) -> None:
        """Swap an in-flight batch for the smaller batches it was split into (same order)."""
        pq = self._queues[(batch.topic, batch.partition)]
        for part in parts:  # forward: equal drain order, so each lands after the previous
            part.order = batch.order
            part.retry_at = retry_at
            self.buffer_used += part.buffer_bytes
            pq.in_flight.append(part)
            self.schedule_retry(part, retry_at, recover=True)
        self.completed(batch)

    def finish_recovery(self, pq: PartitionQueue) -> None:
        """All in-flight batches of a recovering partition are back: re-sequence its queue.

        The lowest sequence among queued batches is where the broker expects us to continue
        (everything from there on was rejected or is in doubt and kept its own numbers).
        """
        pq.recovering = False
        sequenced = [b.base_sequence for b in pq.batches if b.base_sequence >= 0]
        if not sequenced:
            return
        pq.next_sequence = min(sequenced)
        for batch in pq.batches:
            batch.base_sequence = -1

    def reset_sequences(self) -> None:
        """A new producer id/epoch: every partition starts again at sequence 0 (KIP-360)."""
        for pq in self._queues.values():
            pq.next_sequence = 0
            pq.recovering = False
            for batch in pq.batches:
                batch.base_sequence = -1

    def abort_queued(self) -> list[ProducerBatch]:
        """Remove and return every queued batch (close with a deadline passed)."""
        aborted = []
        for pq in self._queues.values():
            while pq.batches:
                batch = pq.batches.popleft()
                self.release(batch)
                aborted.append(batch)
        return aborted

    def take_expired(self, now: float, delivery_timeout_s: float) -> list[ProducerBatch]:
        """Remove and return queued batches older than ``delivery.timeout.ms``.

        Only the head run of each queue can be that old (batches queue in creation order and
        retries go back to the front), so the scan stops at the first young batch.
        """
        expired = []
        for pq in self._queues.values():
            batches = pq.batches
            while batches and now - batches[0].created >= delivery_timeout_s:
                if pq.recovering and pq.in_flight:
                    break  # re-sequencing is pending; let the in-flight answers land first
                batch = batches.popleft()
                self.release(batch)
                expired.append(batch)
        return expired

    def next_expiry_in(self, now: float, delivery_timeout_s: float) -> float | None:
        """Seconds until ``take_expired`` would take something (None: nothing queued it
        could take). Only each queue's head can expire first; see ``take_expired``."""
        oldest = None
        for pq in self._queues.values():
            batches = pq.batches
            if batches and not (pq.recovering and pq.in_flight):
                created = batches[0].created
                if oldest is None or created < oldest:
                    oldest = created
        return None if oldest is None else oldest + delivery_timeout_s - now

    def is_oldest_in_flight(self, batch: ProducerBatch) -> bool:
        """True when no earlier batch of the same partition is still in flight."""
        pq = self._queues[(batch.topic, batch.partition)]
        return all(other.order >= batch.order for other in pq.in_flight)
