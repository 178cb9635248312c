"""The producer engine of one worker: Kafka's producer semantics over asyncio.

Wires the accumulator, sender, metadata and connection pool together and is the one API the
rest of kpd uses: ``append`` (synchronous, the per-record hot path), ``wait_for_buffer``,
``flush`` and ``close``. Every appended record gets exactly one outcome through ``on_outcome``,
delivered per batch. Knows nothing of rings, processes or the kpd socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.config import ProducerSettings
from daemon.kafka.compression import codec_id
from daemon.net.from_config import connection_settings, reconnect_policy
from daemon.net.pool import BrokerPool
from daemon.producer.accumulator import Accumulator, AccumulatorSettings, PartitionQueue
from daemon.producer.batch import ProducerBatch
from daemon.producer.completion import (
    Completion,
    IdempotentCompletion,
    OutcomeReporter,
    TransactionStats,
)
from daemon.producer.counters import ProducerCounters
from daemon.producer.metadata import ClusterView, MetadataManager, TopicView
from daemon.producer.outcomes import BatchOutcome
from daemon.producer.resend import ResendBatch, ResendResult, resend_batches
from daemon.producer.sender import Sender, SenderSettings
from daemon.producer.transactions import TransactionManager, TransactionSettings
from daemon.producer.txn_channel import DirectChannel
from daemon.producer.txn_driver import CommitMarks, TransactionalCompletion

__all__ = [
    "EngineStats",
    "ProducerEngine",
    "accumulator_settings",
    "sender_settings",
]

log = logging.getLogger(__name__)


def accumulator_settings(settings: ProducerSettings) -> AccumulatorSettings:
    """The accumulator's settings from the validated config (their one source)."""
    return AccumulatorSettings(
        batch_size=settings.batch_size,
        linger_s=settings.linger_ms / 1000,
        buffer_memory=settings.buffer_memory,
        max_request_size=settings.max_request_size,
        compression=codec_id(settings.compression),
        compression_level=settings.compression_level,
        idempotent=settings.enable_idempotence,
        guarantee_order=not settings.enable_idempotence and settings.max_in_flight == 1,
        transactional=settings.transactional,
    )


def sender_settings(settings: ProducerSettings) -> SenderSettings:
    """The sender's settings from the validated config (their one source)."""
    return SenderSettings(
        acks=settings.acks,
        retries=settings.retries,
        retry_backoff_s=settings.retry_backoff_ms / 1000,
        retry_backoff_max_s=settings.retry_backoff_max_ms / 1000,
        request_timeout_ms=settings.request_timeout_ms,
        delivery_timeout_s=settings.delivery_timeout_ms / 1000,
        max_in_flight=settings.max_in_flight,
        idempotent=settings.enable_idempotence,
    )


@dataclass(slots=True)
class EngineStats:
    """A snapshot of the engine's live numbers that are not in ``ProducerCounters``: what
    metrics and ``/status`` read, so nobody reaches into the engine's parts."""

    buffer_used: int = 0
    buffer_total: int = 0
    in_flight: int = 0
    pending: int = 0
    brokers: dict[int, bool] = field(default_factory=dict)  # node id -> connected
    # Of the brokers not connected, those whose connection attempts fail (the rest are idle).
    brokers_failing: frozenset[int] = frozenset()
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    auth_failures: dict[str, int] = field(default_factory=dict)  # BrokerAuthError.reason -> n
    auth_error: str | None = None  # the latest TLS/SASL refusal, until a connection succeeds
    reauthentications: int = 0  # KIP-368 logins on open connections that succeeded
    metadata_refreshes: int = 0
    metadata_refresh_failures: int = 0
    transaction: TransactionStats | None = None  # exactly-once mode only


class ProducerEngine:
    """One engine per worker. Create, ``await start()``, ``append`` records, ``await close()``."""

    def __init__(
        self,
        settings: ProducerSettings,
        on_outcome: Callable[[BatchOutcome], None],
        rng: random.Random | None = None,
        on_written: Callable[[list[ProducerBatch]], None] | None = None,
        commit_marks: CommitMarks | None = None,
        on_answered: Callable[[], None] | None = None,
    ) -> None:
        """``on_written``: called with a Produce request's batches just before it is written
        (stamped: producer id, epoch, sequence), e.g. to journal what goes in flight.
        ``on_answered``: called once a Produce answer's outcomes were all passed to
        ``on_outcome`` (one call per answer, however many batches it settled).
        ``commit_marks``: exactly-once mode's commit journal (``txn_driver.CommitMarks``)."""
        self.settings = settings
        self.counters = ProducerCounters()
        self._on_outcome_cb = on_outcome
        rng = rng or random.Random()
        self._pool = BrokerPool(
            connection_settings(settings, client_id=settings.client_id, carries_produce=True),
            reconnect_policy(settings),
            self._on_connection_change,
            rng,
        )
        self.metadata = MetadataManager(
            list(settings.bootstrap_servers),
            self._pool,
            settings.metadata_max_age_ms / 1000,
            settings.retry_backoff_ms / 1000,
            self._on_metadata,
        )
        self._accumulator = Accumulator(accumulator_settings(settings), self._wake_sender)
        self._linger_s = settings.linger_ms / 1000
        self._accepted_ms: int | None = None  # see accepted_at
        reporter = OutcomeReporter(self.counters, self._on_outcome)
        self._txn_channel: DirectChannel | None = None
        self._completion: Completion = (
            self._transactional_completion(settings, reporter, commit_marks)
            if settings.transactional
            else IdempotentCompletion(
                idempotent=settings.enable_idempotence,
                transaction_timeout_ms=settings.transaction_timeout_ms,
                accumulator=self._accumulator,
                metadata=self.metadata,
                pool=self._pool,
                counters=self.counters,
                reporter=reporter,
            )
        )
        self._sender = Sender(
            sender_settings(settings),
            self._accumulator,
            self.metadata,
            self._pool,
            self.counters,
            reporter,
            self._completion,
            rng,
            on_written=on_written,
            on_answered=on_answered,
        )
        self._buffer_freed = asyncio.Event()
        self._flush_waiters: list[asyncio.Future] = []
        self.pending_records = 0  # appended, no outcome yet
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _transactional_completion(
        self, settings: ProducerSettings, reporter: OutcomeReporter, marks: CommitMarks | None
    ) -> TransactionalCompletion:
        """Exactly-once mode: the sender writes in transactions of ``transactional_id``."""
        self._txn_channel = DirectChannel(
            settings.bootstrap_servers,
            connection_settings(settings, client_id=settings.client_id, carries_produce=False),
        )
        manager = TransactionManager(
            TransactionSettings(
                settings.transactional_id,
                settings.transaction_timeout_ms,
                settings.retry_backoff_ms / 1000,
            ),
            self._txn_channel,
        )
        return TransactionalCompletion(
            manager=manager,
            interval_s=settings.transaction_interval_ms / 1000,
            max_bytes=settings.transaction_max_bytes,
            accumulator=self._accumulator,
            counters=self.counters,
            reporter=reporter,
            marks=marks,
        )

    def stats(self) -> EngineStats:
        pool = self._pool
        brokers = dict.fromkeys(pool.known(), False)
        for node_id, _ in pool.ready():
            brokers[node_id] = True
        return EngineStats(
            buffer_used=self._accumulator.buffer_used,
            buffer_total=self.settings.buffer_memory,
            in_flight=self._sender.requests_in_flight,
            pending=self.pending_records,
            brokers=brokers,
            brokers_failing=frozenset(pool.failing()),
            connects=pool.connects,
            connect_failures=pool.connect_failures,
            disconnects=pool.disconnects,
            auth_failures=dict(pool.auth_failures),
            auth_error=pool.auth_error,
            reauthentications=pool.reauthentications,
            metadata_refreshes=self.metadata.refreshes,
            metadata_refresh_failures=self.metadata.refresh_failures,
            transaction=self._completion.stats(),
        )

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.metadata.start()
        self._sender.start()

    async def close(self, timeout_s: float | None = None) -> None:
        """Flush what was appended, then fail whatever is left after ``timeout_s``."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush(timeout_s)
        except TimeoutError:
            log.warning("close: %d records undelivered at the deadline", self.pending_records)
        self._sender.fail_queued("producer closed before these records could be sent")
        await self._sender.stop()
        await self._completion.close(self._sender.requests_in_flight)
        await self.metadata.close()
        if self._txn_channel is not None:
            await self._txn_channel.close()
        # Closing the connections fails the requests still unanswered; their callbacks report
        # those records POSSIBLY_PERSISTED (the sender is stopping, so it does not retry).
        await self._pool.close()
        await asyncio.sleep(0)

    async def committed_marker(self, group: str, topic: str, partition: int) -> int:
        """Exactly-once mode: ``group``'s committed offset of (``topic``, ``partition``)
        (-1: none), once the first InitProducerId fenced the predecessor (``txn_driver``)."""
        completion = self._completion
        if not isinstance(completion, TransactionalCompletion):
            raise RuntimeError("commit markers exist in exactly-once mode only")
        return await completion.committed_marker(group, topic, partition)

    async def resend(self, batches: list[ResendBatch]) -> list[ResendResult]:
        """Send batches a predecessor wrote, as they are (already stamped with its producer id
        and sequences), and say which the broker had (``resend.resend_batches``). Call after
        ``start`` and before appending: it runs beside the sender, which has nothing yet."""
        s = self.settings
        results = await resend_batches(
            batches,
            pool=self._pool,
            metadata=self.metadata,
            acks=s.acks,
            request_timeout_ms=s.request_timeout_ms,
            retry_backoff_s=s.retry_backoff_ms / 1000,
            deadline_s=s.delivery_timeout_ms / 1000,
        )
        for batch, result in zip(batches, results, strict=True):
            self.counters.resent_records[result.verdict.value] += batch.record_count
        return results

    # ---- the hot path ------------------------------------------------------------------

    def queue(self, topic: str, partition: int) -> PartitionQueue:
        """The append target for one partition; callers cache it to skip a dict lookup.

        A topic seen here for the first time joins the metadata request: a worker is handed
        records for partitions it never looked up, and Metadata v1+ with an empty topic list
        means "no topics" (some brokers answer all topics; Kafka and librdkafka's mock do not).
        """
        self.metadata.want(topic)
        return self._accumulator.queue(topic, partition)

    def append(
        self,
        queue: PartitionQueue,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any = (),
        token: Any = None,
    ) -> bool:
        """Append one record; False (nothing appended) when ``buffer.memory`` is used up —
        the caller then awaits ``wait_for_buffer`` and tries again, or gives up."""
        acc = self._accumulator
        if acc.buffer_used >= self.settings.buffer_memory:
            return False
        now = self._loop.time()
        acc.append(queue, timestamp_ms, key, value, headers, token, now, self._opened(now))
        self.pending_records += 1
        return True

    def append_packed(
        self,
        queue: PartitionQueue,
        timestamp_ms: int,
        data,
        key_lens,
        value_lens,
        pos: int,
        token: int,
        timestamps=None,
    ) -> bool:
        """Append packed records sharing one timestamp and no headers (see
        ``BatchBuilder.append_packed``) with tokens ``token``, ``token + 1``, …; with
        ``timestamps``, one per record (-1: ``timestamp_ms``), see ``append_stamped``. False
        (nothing appended) when ``buffer.memory`` is used up; one call may overshoot it, by
        design: a worker hands over whole ring entries, and its ring already bounds their
        size."""
        acc = self._accumulator
        if acc.buffer_used >= self.settings.buffer_memory:
            return False
        now = self._loop.time()
        opened = self._opened(now)
        acc.append_packed(
            queue, timestamp_ms, data, key_lens, value_lens, pos, token, now, opened, timestamps
        )
        self.pending_records += len(key_lens)
        return True

    def send_now(self, topic: str, partition: int) -> None:
        """The partition's open batch is sendable at once, whatever ``linger.ms`` says: its
        records were batched by their source already (a Kafka client's linger.ms)."""
        acc = self._accumulator
        acc.send_now(acc.queue(topic, partition))

    def accepted_at(self, received_ms: int) -> None:
        """The records appended next were accepted (by ingest) at ``received_ms``, wall clock:
        a batch they open lingers from then — at most ``linger.ms`` before now — not from
        the append, so records that waited in a ring (a busy worker reading it late) do not
        linger twice. Java's linger counts from ``send()``; ingest's acceptance is kpd's."""
        self._accepted_ms = received_ms

    def _opened(self, now: float) -> float | None:
        accepted_ms = self._accepted_ms
        if accepted_ms is None:
            return None
        waited = time.time() - accepted_ms / 1000
        return now - min(max(waited, 0.0), self._linger_s)

    def linger_deadline(self) -> float | None:
        """While some batch lingers and none is due: the loop time by which records
        appended from now on lose nothing of their linger — the soonest head batch's deadline
        (its linger, or a retry's backoff), but no later than ``linger.ms`` from now, when a
        record accepted now is due. None otherwise."""
        now = self._loop.time()
        due_now, soonest = self._accumulator.next_deadline_in(now)
        if due_now or soonest is None:
            return None
        return now + min(soonest, self._linger_s)

    async def wait_for_buffer(self, timeout_s: float) -> bool:
        """Wait until buffer space is free; False after ``timeout_s`` (max.block.ms)."""
        deadline = self._loop.time() + timeout_s
        while self._accumulator.buffer_used >= self.settings.buffer_memory:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            self._buffer_freed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._buffer_freed.wait()
            except TimeoutError:
                return False
        return True

    # ---- flush -------------------------------------------------------------------------

    async def flush(self, timeout_s: float | None = None) -> None:
        """Send everything appended so far without waiting for linger, and wait for all of it
        to have an outcome. Raises TimeoutError after ``timeout_s``.

        Waits for the engine to be empty, so records appended during the flush are waited
        for too (Java waits only for the earlier ones); a worker flushes once it stops reading.
        """
        if self.pending_records == 0:
            return
        waiter = self._loop.create_future()
        self._flush_waiters.append(waiter)
        self._accumulator.begin_flush()
        self._sender.wake()
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        finally:
            self._accumulator.end_flush()
            if waiter in self._flush_waiters:
                self._flush_waiters.remove(waiter)

    # ---- callbacks ---------------------------------------------------------------------

    def _on_outcome(self, outcome: BatchOutcome) -> None:
        self.pending_records -= len(outcome.tokens)
        self._on_outcome_cb(outcome)
        if not self._buffer_freed.is_set():
            self._buffer_freed.set()
        if self._flush_waiters and self.pending_records == 0:
            for waiter in self._flush_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._flush_waiters.clear()

    def _wake_sender(self, due: float | None) -> None:
        self._sender.wake(due)

    def _on_connection_change(self, node_id: int, connected: bool) -> None:
        self.metadata.connection_changed(connected)
        self._sender.wake()

    def _on_metadata(self, view: ClusterView) -> None:
        self._sender.wake()

    # ---- metadata helpers for callers that partition themselves -------------------------

    async def topic(self, name: str, timeout_s: float | None = None) -> TopicView:
        wait = self.settings.max_block_ms / 1000 if timeout_s is None else timeout_s
        return await self.metadata.wait_for_topic(name, wait)
