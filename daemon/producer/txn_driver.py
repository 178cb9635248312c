"""Exactly-once sending: the sender's batches in transactions, one open at a time.

``TransactionalCompletion`` is the sender's completion policy in exactly-once mode (see
``completion.py``; the sender is built with it). Owns the bookkeeping of the open transaction
— the batches Kafka acknowledged in it (held, with their offsets, until the commit), the
batches to send again after an abort, its size and age — and drives the
``TransactionManager`` from the sender's loop (``prepare``), changing its state only through
the manager's own methods:

* a partition's batches are drained only once AddPartitionsToTxn added it to the
  transaction (Java's Sender does the same);
* every ``transaction.interval.ms``, at ``transaction.max.bytes`` or when a flush waits, the
  transaction commits: nothing new is drained, the in-flight requests and the transaction's
  own retries finish, then EndTxn(commit); only then do its records get their outcomes, so a
  record is reported delivered only once committed, and ring space is released only then;
* an abortable error (a batch lost its sequence state, AddPartitionsToTxn failed, a batch
  finally failed) waits for the in-flight requests, sends EndTxn(abort), gets a new epoch
  and puts every held batch back in its partition queue, to be committed in a fresh
  transaction. A batch the broker rejected for itself (too large, invalid) is failed, as the
  Java producer fails it; the others are replayed instead of failed;
* a refused epoch (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED) is such an abort too: the
  coordinator aborted the transaction itself — it outlived ``transaction.timeout.ms``, as
  through a broker outage — or another producer took the id. The manager's next
  InitProducerId and the transaction's age tell (KIP-588, ``transactions.py``): a timeout,
  and the transaction is replayed under the new epoch (one log line,
  ``transaction_recoveries``); a fence, and it is fatal;
* a fatal error (fenced by another producer with the same id, not authorized) fails every
  record the engine holds and every record appended later, with that error: the worker
  writes nothing more, and says so in its log, metrics and status.

Owned by the engine's event loop; no locking.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Protocol

from daemon.kafka.errors import Action, ErrorCode, Persistence, error_name
from daemon.producer.accumulator import Accumulator, PartitionQueue
from daemon.producer.batch import ProducerBatch
from daemon.producer.completion import OutcomeReporter, TransactionStats, Turn
from daemon.producer.counters import ProducerCounters
from daemon.producer.outcomes import BatchOutcome, DeliveryFailure
from daemon.producer.transactions import (
    EPOCH_REFUSED,
    FATAL_CODES,
    MarkerDenied,
    TransactionAbortable,
    TransactionFatal,
    TransactionManager,
    TransactionRetriable,
    TxnState,
)

__all__ = ["CommitMarks", "TransactionalCompletion"]

log = logging.getLogger(__name__)


# What the commit marker says (TransactionManager.commit_marker): the offset's metadata, for an
# operator who finds the group; kpd reads the offset alone (tansu keeps no metadata).
_MARKER_METADATA = "kpd exactly-once commit marker (not a consumer position)"


class CommitMarks(Protocol):
    """Journals what a commit delivers before its EndTxn, under a marker the transaction
    itself commits (the worker's ``commit_marks``): a restart after a kill between the
    coordinator's commit and its answer can then tell that the commit happened."""

    group: str  # the consumer group whose offset is the marker

    def committing(
        self, outcomes: list[BatchOutcome], partitions: Collection[tuple[str, int]]
    ) -> tuple[int, str, int]:
        """Journal the outcomes the commit would give; the marker's (token, topic, partition),
        one of ``partitions``."""

    def committed(self) -> None:
        """The commit's outcomes went out (or it aborted): forget the journaled ones."""


class TransactionalCompletion:
    """Records complete when their transaction commits (the ``Completion`` of exactly-once)."""

    def __init__(
        self,
        *,
        manager: TransactionManager,
        interval_s: float,
        max_bytes: int,
        accumulator: Accumulator,
        counters: ProducerCounters,
        reporter: OutcomeReporter,
        marks: CommitMarks | None = None,
    ) -> None:
        self.manager = manager
        self._marks = marks
        self._initialized = asyncio.Event()  # the first InitProducerId is done
        self._interval_s = interval_s
        self._max_bytes = max_bytes
        self._acc = accumulator
        self._counters = counters
        self._reporter = reporter
        self._acked: list[tuple[ProducerBatch, int, int]] = []  # (batch, base offset, time)
        self._replay: list[ProducerBatch] = []  # back in the queues after the abort
        self.number = 0  # of the open (or next) transaction; batches carry it when sent
        self._bytes = 0
        self._started = 0.0
        self._commit_sent = False  # an EndTxn(commit) went out without a clear answer yet
        # The error code of the abort being recovered from until the next epoch is granted
        # (0: none, or an abort with no broker error behind it).
        self._recovering = ErrorCode.NONE

    def stats(self) -> TransactionStats:
        m = self.manager
        error = None if m.fatal is None else str(m.fatal)
        return TransactionStats(m.transactional_id, m.state.value, m.producer_id, m.epoch, error)

    @property
    def transactional_id(self) -> str:
        return self.manager.transactional_id

    # ---- the sender's loop ---------------------------------------------------------------

    async def prepare(self, now: float, in_flight: int, flushing: bool, stopping: bool) -> Turn:
        """Move the transaction on; SEND when the sender may drain (``drainable``), BACK_OFF
        when the coordinator could not be reached (the loop must come back by itself: an
        abort waits for no record to wake it)."""
        try:
            sendable = await self._step(now, in_flight, flushing, stopping)
        except TransactionRetriable:
            return Turn.BACK_OFF  # the coordinator is unreachable: again after the backoff
        return Turn.SEND if sendable else Turn.HOLD

    async def _step(self, now: float, in_flight: int, flushing: bool, stopping: bool) -> bool:
        m = self.manager
        try:
            if m.state is TxnState.FATAL:
                self._fail_all(m.fatal)
                return False
            if m.state is TxnState.ABORTING:
                return await self._abort(in_flight)
            if m.state is TxnState.UNINITIALIZED:
                if in_flight:
                    return False
                await self._initialize()
            if m.state is TxnState.IN_TRANSACTION and self._commit_due(now, flushing, stopping):
                m.begin_commit()
            if m.state is TxnState.COMMITTING:
                return await self._commit(in_flight, now)
            await self._add_partitions(now)
            return True
        except TransactionAbortable as exc:
            m.begin_abort(str(exc), exc.code)
            return False
        except TransactionFatal as exc:
            m.fail(exc)
            self._fail_all(exc)
            return False

    def next_due(self, now: float) -> float | None:
        """Seconds until the open transaction is due to commit by age."""
        if self.manager.state is not TxnState.IN_TRANSACTION:
            return None
        return max(0.0, self._started + self._interval_s - now)

    def needs_turn(self) -> bool:
        return True  # a transaction commits, aborts or replays at the turns after answers

    def drainable(self, queues: list[PartitionQueue]) -> list[PartitionQueue]:
        return [pq for pq in queues if self._may_drain(pq)]

    def _may_drain(self, pq: PartitionQueue) -> bool:
        m = self.manager
        if m.state is TxnState.IN_TRANSACTION:
            return (pq.topic, pq.partition) in m.partitions
        if m.state is TxnState.COMMITTING:  # only the transaction's own retries
            return bool(pq.batches) and pq.batches[0].transaction == self.number
        return False

    def stamp(self, batch: ProducerBatch, pq: PartitionQueue) -> None:
        m = self.manager
        batch.build(m.producer_id, m.epoch, self._acc.assign_sequence(batch, pq))
        batch.transaction = self.number
        self._bytes += batch.size_in_bytes

    def _commit_due(self, now: float, flushing: bool, stopping: bool) -> bool:
        return (
            flushing
            or stopping
            or self._bytes >= self._max_bytes
            or now - self._started >= self._interval_s
        )

    async def _initialize(self) -> None:
        m = self.manager
        first = m.producer_id < 0
        await m.initialize()  # batches are stamped with its producer id and epoch
        self._initialized.set()
        self._acc.reset_sequences()
        if not first:
            self._counters.epoch_bumps += 1  # after an abort: the replay goes under it
        cause, self._recovering = self._recovering, ErrorCode.NONE
        if cause in EPOCH_REFUSED:
            self._counters.transaction_recoveries[error_name(cause)] += 1
            log.warning(
                "%s: recovered from %s: the coordinator had aborted the transaction itself (it "
                "was open longer than transaction.timeout.ms = %d ms, e.g. through a broker "
                "outage); producer id %d epoch %d by %s; the aborted transaction's records "
                "go again in a new one",
                m.transactional_id, error_name(cause), m.settings.timeout_ms,
                m.producer_id, m.epoch, m.recovered_by,
            )  # fmt: skip

    async def _add_partitions(self, now: float) -> None:
        m = self.manager
        wanted = [
            (pq.topic, pq.partition)
            for pq in self._acc.queues()
            if pq.batches and (pq.topic, pq.partition) not in m.partitions
        ]
        if not wanted:
            return
        opening = m.state is TxnState.READY
        await m.add_partitions(wanted)
        if opening:
            self._started = now

    async def _commit(self, in_flight: int, now: float) -> bool:
        if in_flight or any(
            b.transaction == self.number for pq in self._acc.queues() for b in pq.batches
        ):
            return True  # the transaction's last answers and retries first
        self._commit_sent = True
        marks = self._marks
        if marks is not None and self._acked:
            outcomes = [BatchOutcome(b.topic, b.partition, b.tokens, offset, ts, None)
                        for b, offset, ts in self._acked]  # fmt: skip
            token, topic, partition = marks.committing(outcomes, self.manager.partitions)
            try:
                await self.manager.commit_marker(marks.group, topic, partition, token,
                                                 _MARKER_METADATA)  # fmt: skip
            except MarkerDenied as exc:
                self._no_marks(str(exc))
        await self.manager.end(commit=True)
        self._commit_sent = False
        counters = self._counters
        counters.transactions_committed += 1
        counters.transaction_commit_time.observe(asyncio.get_running_loop().time() - now)
        counters.transaction_records.observe(sum(b.record_count for b, _, _ in self._acked))
        acked, self._acked = self._acked, []
        for batch, base_offset, timestamp in acked:
            self._acc.release(batch)
            self._reporter.delivered(batch, base_offset, timestamp)
        if marks is not None:
            marks.committed()  # after the reports: their done-journal runs are published
        self._next_transaction()
        return True

    async def committed_marker(self, group: str, topic: str, partition: int) -> int:
        """``group``'s committed offset of (``topic``, ``partition``) (-1: none, or the group
        denied), asked once this producer's first InitProducerId fenced its predecessor's
        epoch: the coordinator has then completed or aborted whatever that predecessor was
        committing."""
        await self._initialized.wait()
        try:
            offset, _ = await self.manager.committed_marker(group, topic, partition)
        except MarkerDenied as exc:
            self._no_marks(str(exc))
            return -1
        return offset

    def _no_marks(self, why: str) -> None:
        """Go on without commit markers (as before they existed: a kill between the
        coordinator's commit and its answer writes that transaction twice)."""
        if self._marks is not None:
            self._marks.committed()  # what it journaled will never be confirmed
            self._marks = None
        log.warning("%s: %s; transactions commit without a marker, so a kill between a "
                    "commit and its answer writes that transaction twice",
                    self.transactional_id, why)  # fmt: skip

    async def _abort(self, in_flight: int) -> bool:
        if in_flight:
            return False  # every answer of the transaction first
        await self.manager.end(commit=False)
        # Read after EndTxn(abort): its refusal may be what revealed a refused epoch.
        self._recovering = self.manager.abort_cause
        self._commit_sent = False  # any EndTxn(commit) was answered, or the abort overrides it
        self._counters.transactions_aborted += 1
        replay = [b for b, _, _ in self._acked] + self._replay
        self._acked, self._replay = [], []
        # Never-answered and retrying batches of the aborted transaction are still queued.
        self._acc.replay_aborted(replay)
        for pq in self._acc.queues():
            for batch in pq.batches:
                batch.transaction = -1
        log.info(
            "%s: transaction aborted; %d batches go again in a new one",
            self.manager.transactional_id,
            len(replay),
        )
        self._next_transaction()
        await self._initialize()  # a new epoch: the replay starts at sequence 0
        return True

    def _next_transaction(self) -> None:
        self.number += 1
        self._bytes = 0

    # ---- answers (called by the sender) --------------------------------------------------

    def acked(self, batch: ProducerBatch, base_offset: int, timestamp: int) -> None:
        """Kafka appended the batch; it is delivered once the transaction commits."""
        self._acc.hold(batch)
        if self.manager.state in (TxnState.ABORTING, TxnState.FATAL):
            self._replay.append(batch)
        else:
            self._acked.append((batch, base_offset, timestamp))

    def failed(self, batch: ProducerBatch, code: int, message: str, kind: Action) -> bool:
        """A batch's error inside a transaction; True when handled here, False when the
        sender's own retry applies (a retriable error while the transaction is healthy)."""
        m = self.manager
        if code in EPOCH_REFUSED:
            # The coordinator aborted our transaction (timed out) or we are fenced: abort, and
            # the next epoch says which. The batch was not appended: replay it.
            self._acc.hold(batch)
            self._replay.append(batch)
            self._abort_open(f"{batch.topic}-{batch.partition}: {error_name(code)}", code)
            return True
        if code in FATAL_CODES or kind is Action.FATAL:
            self._acc.hold(batch)
            self._replay.append(batch)
            error = TransactionFatal(code, f"{m.transactional_id}: Produce: {error_name(code)}")
            m.fail(error)
            self._fail_all(error)
            return True
        if m.state in (TxnState.ABORTING, TxnState.FATAL) or kind is Action.BUMP_EPOCH:
            # The transaction is lost anyway, or this batch lost its sequence state: replay.
            self._acc.hold(batch)
            self._replay.append(batch)
            self._abort_open(f"{batch.topic}-{batch.partition}: {error_name(code)} {message}", code)
            return True
        return False

    def need_new_epoch(self, why: str) -> None:
        # ``failed`` already replays a BUMP_EPOCH batch; a transaction renews its epoch by
        # aborting (the abort ends with InitProducerId).
        self._abort_open(why)

    def gave_up(self, batch: ProducerBatch, why: str) -> None:
        # The broker rejected this batch for itself; its records are failed as Java fails
        # them, and the rest of the transaction is replayed in a new one.
        self._abort_open(why)

    def expired(self, batch: ProducerBatch, why: str) -> None:
        if batch.transaction >= 0:  # sent in this transaction: its sequence is used
            self._abort_open(why)

    def _abort_open(self, why: str, code: int = ErrorCode.NONE) -> None:
        """An abortable error: abort the open transaction once its answers are in (an abort
        under way takes the error as one more cause)."""
        m = self.manager
        if m.state in (
            TxnState.IN_TRANSACTION, TxnState.COMMITTING, TxnState.READY, TxnState.ABORTING
        ):  # fmt: skip
            m.begin_abort(why, code)

    # ---- closing -------------------------------------------------------------------------

    async def close(self, in_flight: int, timeout_s: float = 5.0) -> None:
        """The engine closes: abort an open transaction now rather than let it hold back
        read_committed consumers until transaction.timeout.ms. Only with nothing in flight:
        a Produce landing after the abort could leave a transaction open instead."""
        m = self.manager
        if in_flight or m.state not in (
            TxnState.IN_TRANSACTION,
            TxnState.COMMITTING,
            TxnState.ABORTING,
        ):
            return
        try:
            async with asyncio.timeout(timeout_s):
                await m.end(commit=False)
        except (TimeoutError, TransactionRetriable, TransactionAbortable, TransactionFatal) as exc:
            log.warning("%s: could not abort at close: %s", m.transactional_id, exc)

    def fail_held(self, reason: str) -> list[ProducerBatch]:
        """Close without time left: the batches the transaction holds, to be failed (their
        transaction never commits)."""
        held = [b for b, _, _ in self._acked] + self._replay
        self._acked, self._replay = [], []
        for batch in held:
            self._acc.release(batch)
        return held

    # ---- fatal ---------------------------------------------------------------------------

    def _fail_all(self, error: TransactionFatal | None) -> None:
        """Fail every record the engine holds that is not in flight. Records of the open
        transaction were aborted by whoever fenced us (NOT_PERSISTED), unless our EndTxn
        (commit) may have gone through."""
        code = error.code if error is not None else ErrorCode.NONE
        name = error.name if error is not None else "TRANSACTION_FATAL"
        held = [b for b, _, _ in self._acked] + self._replay
        self._acked, self._replay = [], []
        # Only an EndTxn(commit) that went out and was never answered (code 0) may have
        # committed; a clear fatal answer to it means the commit did not happen.
        unanswered = error is None or error.code == ErrorCode.NONE
        in_doubt = Persistence.POSSIBLY_PERSISTED if self._commit_sent and unanswered else None
        for batch in held:
            self._acc.release(batch)
            failure = DeliveryFailure(
                code, name, f"{error}; this worker writes nothing more",
                in_doubt or Persistence.NOT_PERSISTED,
            )  # fmt: skip
            self._reporter.failed(batch, failure)
        for batch in self._acc.abort_queued():
            failure = DeliveryFailure(
                code, name, f"{error}; this worker writes nothing more",
                Persistence.NOT_PERSISTED,
            )  # fmt: skip
            self._reporter.failed(batch, failure)
