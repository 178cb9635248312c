"""How a sent batch completes: the sender's one mode-dependent collaborator.

The sender drains, sends and classifies answers the same way in every mode; what differs is
what an answer *means* for the records, and that is one object per mode, given to the
``Sender`` when it is built (Java's ``Sender`` is built with its ``TransactionManager``):

* ``IdempotentCompletion`` (this module): a batch is complete when Kafka acknowledges it.
  With ``enable.idempotence`` it also owns the producer id and epoch (``ProducerIdentity``)
  and bumps the epoch when a partition's sequence numbers became unusable (KIP-360); without
  idempotence it has no identity to keep (the plain at-least-once producer).
* ``TransactionalCompletion`` (``txn_driver.py``): a batch is complete when its transaction
  commits; errors abort and replay the transaction instead of bumping the epoch.

``Completion`` is the contract the sender relies on; ``OutcomeReporter`` is how either side
reports records failed or delivered. Owned by the engine's event loop; no locking. Must not
import the sender or the engine.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from daemon.kafka.errors import Action
from daemon.net.errors import BrokerConnectionError
from daemon.net.pool import BrokerPool
from daemon.producer.accumulator import Accumulator, PartitionQueue
from daemon.producer.batch import ProducerBatch
from daemon.producer.counters import ProducerCounters
from daemon.producer.identity import ProducerIdentity, ProducerIdError
from daemon.producer.metadata import MetadataManager
from daemon.producer.outcomes import PRODUCER_CLOSED, BatchOutcome, DeliveryFailure

__all__ = ["Completion", "IdempotentCompletion", "OutcomeReporter", "TransactionStats", "Turn"]

log = logging.getLogger(__name__)


class Turn(enum.Enum):
    """What the sender's loop may do this turn, as the completion says (``prepare``)."""

    SEND = "send"  # drain what is ready
    HOLD = "hold"  # drain nothing; wait as usual for answers, batches or deadlines
    BACK_OFF = "back_off"  # drain nothing; try again after retry.backoff.ms


@dataclass(frozen=True, slots=True)
class TransactionStats:
    """Exactly-once mode's state for metrics and ``/status``."""

    transactional_id: str
    state: str
    producer_id: int
    epoch: int
    error: str | None  # the fatal error, once fatal


class OutcomeReporter:
    """Counts and reports records delivered or failed through the engine's outcome callback."""

    def __init__(self, counters: ProducerCounters, emit: Callable[[BatchOutcome], None]) -> None:
        self._counters = counters
        self._emit = emit

    def delivered(self, batch: ProducerBatch, base_offset: int, timestamp: int) -> None:
        """The batch's records are delivered (the sender counted them when Kafka acked)."""
        topic, partition = batch.topic, batch.partition
        self._emit(BatchOutcome(topic, partition, batch.tokens, base_offset, timestamp, None))

    def failed(self, batch: ProducerBatch, error: DeliveryFailure) -> None:
        """Count and report a batch's records failed (the batch is already off its queue)."""
        self._counters.records_failed[error.name] += batch.record_count
        # PRODUCER_CLOSED: the engine's owner decides what becomes of them (kpd's worker
        # keeps them in its ring for the next start and logs that), so no failure warning.
        level = logging.DEBUG if error.code == PRODUCER_CLOSED else logging.WARNING
        log.log(
            level,
            "%s-%d: %d records failed: %s",
            batch.topic, batch.partition, batch.record_count, error,
        )  # fmt: skip
        self._emit(BatchOutcome(batch.topic, batch.partition, batch.tokens, -1, -1, error))


class Completion(Protocol):
    """What the sender asks of its mode. Every method runs on the engine's event loop."""

    @property
    def transactional_id(self) -> str | None:
        """The ProduceRequest's transactional id (None outside exactly-once mode)."""

    async def prepare(self, now: float, in_flight: int, flushing: bool, stopping: bool) -> Turn:
        """Called once per loop turn before draining: get an identity, move a transaction on."""

    def next_due(self, now: float) -> float | None:
        """Seconds until the completion needs a loop turn by time alone (None: never)."""

    def needs_turn(self) -> bool:
        """Whether an answer that leaves no batch queued still needs a turn of the sender
        (``prepare`` has something to do: an epoch to bump, a transaction to move on)."""

    def drainable(self, queues: list[PartitionQueue]) -> list[PartitionQueue]:
        """The queues whose head batches may go out now (re-asked per drain of a broker)."""

    def stamp(self, batch: ProducerBatch, pq: PartitionQueue) -> None:
        """Give a batch being drained its producer id, epoch and sequence, and build it."""

    def acked(self, batch: ProducerBatch, base_offset: int, timestamp: int) -> None:
        """Kafka appended the batch (the sender counted it sent)."""

    def failed(self, batch: ProducerBatch, code: int, message: str, kind: Action) -> bool:
        """A batch's error answer; True when handled here, False when the sender's own
        retry-or-fail decision applies."""

    def need_new_epoch(self, why: str) -> None:
        """The broker lost or rejected this producer's sequence state (BUMP_EPOCH)."""

    def gave_up(self, batch: ProducerBatch, why: str) -> None:
        """A sent batch finally failed: its sequence number is used and never written."""

    def expired(self, batch: ProducerBatch, why: str) -> None:
        """A queued batch passed delivery.timeout.ms and was failed."""

    def fail_held(self, reason: str) -> list[ProducerBatch]:
        """Close without time left: batches acknowledged but not complete, to be failed."""

    async def close(self, in_flight: int) -> None:
        """The engine closes (the sender has stopped)."""

    def stats(self) -> TransactionStats | None:
        """The transaction's state for metrics and ``/status`` (None outside exactly-once)."""


class IdempotentCompletion:
    """Records complete when Kafka acknowledges them; with idempotence, one producer identity
    whose epoch is bumped (a fresh producer id, KIP-360) when sequence numbers break."""

    def __init__(
        self,
        *,
        idempotent: bool,
        transaction_timeout_ms: int,
        accumulator: Accumulator,
        metadata: MetadataManager,
        pool: BrokerPool,
        counters: ProducerCounters,
        reporter: OutcomeReporter,
    ) -> None:
        self._idempotent = idempotent
        self._transaction_timeout_ms = transaction_timeout_ms  # sent in InitProducerId
        self._acc = accumulator
        self._metadata = metadata
        self._pool = pool
        self._counters = counters
        self._reporter = reporter
        self.identity = ProducerIdentity()
        self._bump_needed = False  # a new epoch before anything more is drained

    @property
    def transactional_id(self) -> str | None:
        return None

    def stats(self) -> None:
        return None  # only exactly-once mode has state of its own to show

    async def prepare(self, now: float, in_flight: int, flushing: bool, stopping: bool) -> Turn:
        if not self._idempotent or not (self._bump_needed or not self.identity.known):
            return Turn.SEND
        if in_flight:
            # Keep handling answers; no new drains happen while the bump is pending.
            return Turn.HOLD
        return Turn.SEND if await self._initialize() else Turn.BACK_OFF

    async def _initialize(self) -> bool:
        """Get a producer id, or a fresh one (the epoch bump) now that nothing is in flight."""
        conn = self._pool.any_ready()
        if conn is None:
            self._metadata.request_update()
            return False
        had_identity = self.identity.known
        try:
            await self.identity.initialize(conn, self._transaction_timeout_ms)
        except (BrokerConnectionError, ProducerIdError) as exc:
            log.warning("cannot get a producer id from %s: %s", conn.address, exc)
            return False
        if had_identity:
            self._counters.epoch_bumps += 1
            log.warning(
                "producer epoch bumped: id %d epoch %d; sequence numbers restart at 0",
                self.identity.producer_id,
                self.identity.epoch,
            )
        self._acc.reset_sequences()
        self._bump_needed = False
        return True

    def next_due(self, now: float) -> float | None:
        return None

    def needs_turn(self) -> bool:
        return self._bump_needed  # bumped once nothing is in flight, not at the next append

    def drainable(self, queues: list[PartitionQueue]) -> list[PartitionQueue]:
        return queues

    def stamp(self, batch: ProducerBatch, pq: PartitionQueue) -> None:
        if self._idempotent:
            sequence = self._acc.assign_sequence(batch, pq)
            batch.build(self.identity.producer_id, self.identity.epoch, sequence)
        else:
            batch.build(-1, -1, -1)

    def acked(self, batch: ProducerBatch, base_offset: int, timestamp: int) -> None:
        self._acc.completed(batch)
        self._reporter.delivered(batch, base_offset, timestamp)

    def failed(self, batch: ProducerBatch, code: int, message: str, kind: Action) -> bool:
        return False  # every error goes through the sender's retry-or-fail decision

    def need_new_epoch(self, why: str) -> None:
        self._bump_needed = True

    def gave_up(self, batch: ProducerBatch, why: str) -> None:
        self._sequence_lost(batch)

    def expired(self, batch: ProducerBatch, why: str) -> None:
        self._sequence_lost(batch)

    def _sequence_lost(self, batch: ProducerBatch) -> None:
        if self._idempotent and batch.base_sequence >= 0:
            # Later batches of this partition carry sequences after the failed one's: the
            # broker would reject them as out of order, so start a new epoch (KIP-360).
            self._bump_needed = True

    def fail_held(self, reason: str) -> list[ProducerBatch]:
        return []  # nothing waits for a commit

    async def close(self, in_flight: int) -> None:
        return None
