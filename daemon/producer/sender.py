"""The sender: turns ready batches into ProduceRequests, one per broker, and acts on answers.

Owns the requests in flight and the retry decisions. Per loop turn it
expires batches past ``delivery.timeout.ms``, drains every broker that has a ready connection
and a free in-flight slot (one request per broker carrying the ready batches of all the
partitions it leads, like Java's ``Sender.sendProducerData``), then sleeps until the next
batch is due or something wakes it (a batch sealed, a response that leaves a batch queued or
the completion something to do, new metadata). The sleep is
one future woken by ``wake`` or by one TimerHandle armed for the earliest deadline (a batch's
linger or retry, a delivery timeout, the completion's next due time), re-armed only when the
earliest deadline moves earlier: no timer per turn and no periodic backstop.

Answers are handled in the transport callback, batch by batch, through ``kafka.errors``'
classify: success, retry (with exponential backoff and jitter, KIP-580), refresh metadata and
retry, split (MESSAGE_TOO_LARGE), bump the epoch (KIP-360), or fail with a persistence status.

What differs by mode — idempotent or transactional — is the ``Completion`` the sender is built
with (``completion.py``): it gets the producer identity, stamps batches, and says what an
answer means for the records (complete now, or at the transaction's commit). The sender has
no mode branches of its own. Time comes from an injected clock (the event loop's by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemon.kafka import messages
from daemon.kafka.errors import Action, ErrorCode, Persistence, classify, error_name
from daemon.net.errors import BrokerConnectionError, RequestTimedOutError
from daemon.net.pool import BrokerPool
from daemon.producer.accumulator import Accumulator, PartitionQueue
from daemon.producer.batch import ProducerBatch
from daemon.producer.completion import Completion, OutcomeReporter, Turn
from daemon.producer.counters import LatencyHistogram, ProducerCounters
from daemon.producer.metadata import MetadataManager
from daemon.producer.outcomes import DELIVERY_TIMEOUT, PRODUCER_CLOSED, DeliveryFailure
from daemon.producer.splitting import split_batch

__all__ = ["Sender", "SenderSettings"]

log = logging.getLogger(__name__)

# How long a batch that is due but could not go waits at most for a recheck (see _next_wait).
_BLOCKED_RECHECK_S = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderSettings:
    """Built only from the validated config (``engine.sender_settings``): no defaults."""

    acks: int
    retries: int
    retry_backoff_s: float
    retry_backoff_max_s: float
    request_timeout_ms: int
    delivery_timeout_s: float
    max_in_flight: int
    idempotent: bool


class Sender:
    def __init__(
        self,
        settings: SenderSettings,
        accumulator: Accumulator,
        metadata: MetadataManager,
        pool: BrokerPool,
        counters: ProducerCounters,
        reporter: OutcomeReporter,
        completion: Completion,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        on_written: Callable[[list[ProducerBatch]], None] | None = None,
        on_answered: Callable[[], None] | None = None,
    ) -> None:
        self._s = settings
        self._on_written = on_written  # before each Produce request is written (the engine's)
        self._on_answered = on_answered  # after each answer's outcomes were reported
        self._acc = accumulator
        self._metadata = metadata
        self._pool = pool
        self._counters = counters
        self._reporter = reporter
        self._completion = completion
        self._rng = rng or random.Random()
        self._clock = clock  # None: the running loop's time, from start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = False  # wake() came while no sleep was pending: the next one returns
        self._sleeping: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the loop time the armed timer fires at
        self._requests_in_flight: dict[int, int] = {}  # broker id -> produce requests
        self._drain_start: dict[int, int] = {}  # broker id -> rotation for fairness
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = loop.time
        self._task = loop.create_task(self._run())

    def wake(self, due: float | None = None) -> None:
        """Run a turn now; with ``due`` (loop time: a batch that is sendable by linger only
        then), have the sleeping turn's timer fire by then instead — that turn takes the
        batch or arms for it, so the open of each batch at 1k records/s is not a turn of
        its own (a turn at the open would only arm the same timer)."""
        sleeping = self._sleeping
        if sleeping is None:
            self._woken = True  # mid-turn: its wait is computed after this
        elif sleeping.done():
            return  # woken already: that turn sees the batch
        elif due is None:
            sleeping.set_result(None)
        else:
            # ``due`` is on the sender's clock (the accumulator's); the timer runs on the
            # loop's. They are one clock in the daemon, not under a test's fake clock, where
            # taking one for the other armed the timer for a time that had not yet come.
            loop = self._loop
            self._arm(loop, loop.time() + (due - self._clock()))

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def requests_in_flight(self) -> int:
        return sum(self._requests_in_flight.values())

    # ---- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        clock = self._clock
        completion = self._completion
        while True:
            self._woken = False
            now = clock()
            self._expire(now)
            turn = await completion.prepare(
                now, self.requests_in_flight, self._acc.flushing, self._stopping
            )
            if turn is Turn.BACK_OFF:
                await self._sleep(self._s.retry_backoff_s)
                continue
            if turn is Turn.SEND:
                self._send_ready(now)
            # Deadlines are judged at the drain's own ``now``: judged at a later reading, a
            # head that became due after the drain looked (the loop's clock ticked while the
            # turn ran) looked "due but blocked" and waited the 50 ms recheck — one batch in
            # twelve at 10k records/s. Now it is due in <= 0 s and the next turn takes it.
            wait = self._next_wait(now)
            due = completion.next_due(now)
            if due is not None:
                wait = due if wait is None else min(wait, due)
            if wait is not None:
                wait -= clock() - now
            await self._sleep(wait)

    async def _sleep(self, seconds: float | None) -> None:
        if self._woken or (seconds is not None and seconds <= 0):
            return
        loop = self._loop
        if seconds is not None:
            self._arm(loop, loop.time() + seconds)
        self._sleeping = sleeping = loop.create_future()
        try:
            await sleeping
        finally:
            self._sleeping = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Have the timer fire by ``when``: a timer already armed for then or earlier stays
        (waking early only costs a turn that re-arms), a later one is moved."""
        timer = self._timer
        if timer is not None:
            if self._timer_at <= when:
                return
            timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # One hop through the loop's ready queue before the turn: an appender woken by its
        # own timer for the same deadline (kpd's worker reads its ring then) runs first,
        # whichever timer the loop fired first, so what it appends rides along in this turn.
        self._loop.call_soon(self.wake)

    def _next_wait(self, now: float) -> float | None:
        # The soonest of: a head batch's linger or retry deadline, the delivery timeout of the
        # oldest queued batch, and, only while some batch is due but could not go (window
        # full, no connection, no leader, a partition recovering), a recheck. Answers,
        # connections and metadata wake the sender in those cases; the recheck bounds what a
        # wake that never comes would cost, as the old per-turn 50 ms backstop did.
        due_now, wait = self._acc.next_deadline_in(now)
        expiry = self._acc.next_expiry_in(now, self._s.delivery_timeout_s)
        if expiry is not None:
            # Floor at 1 ms: a head that take_expired just kept must not make a spin.
            expiry = max(expiry, 0.001)
            wait = expiry if wait is None else min(wait, expiry)
        if due_now:
            wait = _BLOCKED_RECHECK_S if wait is None else min(wait, _BLOCKED_RECHECK_S)
        return wait

    # ---- sending -----------------------------------------------------------------------

    def _send_ready(self, now: float) -> None:
        by_broker: dict[int, list[PartitionQueue]] = {}
        view = self._metadata.view
        missing_leader = False
        for pq in self._acc.queues():
            if pq.recovering and not pq.in_flight:
                self._acc.finish_recovery(pq)
            if not pq.batches:
                continue
            leader = view.leader(pq.topic, pq.partition)
            if leader < 0:
                missing_leader = True
                continue
            by_broker.setdefault(leader, []).append(pq)
        if missing_leader:
            self._metadata.request_update()
        for broker, queues in by_broker.items():
            self._send_to(broker, queues, now)

    def _send_to(self, broker: int, queues: list[PartitionQueue], now: float) -> None:
        conn = self._pool.get(broker)
        if conn is None:
            return
        start = self._drain_start.get(broker, 0) % len(queues)
        queues = queues[start:] + queues[:start]
        self._drain_start[broker] = start + 1
        completion = self._completion
        while self._requests_in_flight.get(broker, 0) < self._s.max_in_flight:
            queues = completion.drainable(queues)  # re-asked per drain: a partition's head changes
            ready = time.monotonic()  # the stage trace's "batch ready" (the loop's clock is ms)
            batches = self._acc.drain(queues, now, completion.stamp)
            if not batches:
                return
            self._send_request(broker, conn, batches, now, ready)

    def _send_request(
        self, broker: int, conn, batches: list[ProducerBatch], now: float, ready: float
    ) -> None:
        topics: dict[str, list[dict]] = {}
        records = 0
        counters = self._counters
        for batch in batches:
            topics.setdefault(batch.topic, []).append(
                {"index": batch.partition, "records": batch.payload}
            )
            count = batch.record_count
            records += count
            if batch.attempts > 1:
                counters.retries += 1
            else:
                counters.stage_batch.observe(now - batch.appended, count)
        body = {
            "transactional_id": self._completion.transactional_id,
            "acks": self._s.acks,
            "timeout_ms": self._s.request_timeout_ms,
            "topic_data": [
                {"name": name, "partition_data": parts} for name, parts in topics.items()
            ],
        }
        counters.requests_sent += 1
        counters.records_per_request.observe(records)
        if self._on_written is not None:
            self._on_written(batches)
        try:
            future = conn.send(
                messages.PRODUCE,
                conn.version_for(messages.PRODUCE),
                body,
                expect_response=self._s.acks != 0,
            )
        except BrokerConnectionError as exc:
            self._connection_failed(broker, batches, exc, now)
            return
        if future is None:  # acks=0: the broker never answers; offsets are unknown
            for batch in batches:
                self._succeed(batch, -1, -1, now)
            return
        written = time.monotonic()
        counters.stage_write.observe(written - ready, records)
        self._requests_in_flight[broker] = self._requests_in_flight.get(broker, 0) + 1
        future.add_done_callback(
            lambda f: self._on_answer(broker, batches, f, now, written, records)
        )

    # ---- answers -----------------------------------------------------------------------

    def _on_answer(
        self,
        broker: int,
        batches: list[ProducerBatch],
        future,
        sent: float,
        written: float,
        records: int,
    ) -> None:
        self._counters.stage_broker.observe(time.monotonic() - written, records)
        self._requests_in_flight[broker] -= 1
        now = self._clock()
        self._latency(broker).observe(now - sent)
        exc = future.exception()
        if exc is not None:
            self._connection_failed(broker, batches, exc, now)
        else:
            results = {}
            for topic in future.result()["responses"]:
                for p in topic["partition_responses"]:
                    results[(topic["name"], p["index"])] = p
            for batch in batches:
                result = results.get((batch.topic, batch.partition))
                if result is None:
                    lost = ErrorCode.NETWORK_EXCEPTION
                    self._retry_or_fail(batch, lost, "no answer for partition", now)
                else:
                    self._on_partition_result(batch, result, now)
        # A turn only when the answer may have made something sendable (a free in-flight
        # slot, a partition unmuted, a retry queued) or the completion moves on at turns (an
        # epoch bump, a transaction): at ~1 record batch per request, most answers leave
        # nothing queued, and a turn then only re-arms nothing (a turn per request saved).
        if self._acc.has_queued() or self._completion.needs_turn():
            self.wake()
        if self._on_answered is not None:
            self._on_answered()

    def _latency(self, broker: int) -> LatencyHistogram:
        histogram = self._counters.request_latency.get(broker)
        if histogram is None:
            histogram = self._counters.request_latency[broker] = LatencyHistogram()
        return histogram

    def _connection_failed(self, broker: int, batches, exc: BaseException, now: float) -> None:
        timed_out = isinstance(exc, RequestTimedOutError)
        code = ErrorCode.REQUEST_TIMED_OUT if timed_out else ErrorCode.NETWORK_EXCEPTION
        sent = getattr(exc, "request_sent", True)
        for batch in batches:
            self._retry_or_fail(batch, code, str(exc), now, written=sent)
        self._metadata.request_update()

    def _on_partition_result(self, batch: ProducerBatch, result: dict, now: float) -> None:
        code = result["error_code"]
        if code == ErrorCode.NONE:
            self._succeed(batch, result["base_offset"], result.get("log_append_time_ms", -1), now)
            return
        self._counters.errors_by_code[error_name(code)] += 1
        message = result.get("error_message") or ""
        self._retry_or_fail(batch, code, message, now)

    def _retry_or_fail(
        self, batch: ProducerBatch, code: int, message: str, now: float, *, written: bool = True
    ) -> None:
        """Retry ``batch`` or fail it for ``code``. ``written`` is False when the request
        never left kpd (the connection refused it): then this attempt cannot have appended
        anything, whatever ``classify(code)`` says of the code in general."""
        action = classify(code)
        kind = action.action
        if kind is not Action.SUCCESS and self._completion.failed(batch, code, message, kind):
            return
        if written and action.persistence is Persistence.POSSIBLY_PERSISTED:
            # The broker may have appended the batch (REQUEST_TIMED_OUT waiting for replicas,
            # NOT_ENOUGH_REPLICAS_AFTER_APPEND…): whatever later attempts answer, a final
            # failure must say so, as a lost connection does.
            batch.in_doubt = True
        if kind is Action.SUCCESS:  # DUPLICATE_SEQUENCE_NUMBER: written before; offset unknown
            self._succeed(batch, -1, -1, now)
            return
        if kind is Action.REFRESH_AND_RETRY:
            self._metadata.request_update()
        if kind is Action.SPLIT and batch.record_count > 1:
            self._split(batch, now)
            return
        if kind is Action.BUMP_EPOCH and self._s.idempotent:
            out_of_order = code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
            if not out_of_order or self._acc.is_oldest_in_flight(batch):
                # Not merely following an earlier failed batch: the sequence state is lost.
                why = f"{batch.topic}-{batch.partition}: {error_name(code)}"
                self._completion.need_new_epoch(why)
            kind = Action.RETRY
        if kind in (Action.RETRY, Action.REFRESH_AND_RETRY) and self._may_retry(batch, now):
            backoff = self._backoff(batch.attempts)
            log.debug(
                "%s-%d: %s (%s); retry %d of %d records in %.0f ms",
                batch.topic, batch.partition, error_name(code), message,
                batch.attempts, batch.record_count, backoff * 1000,
            )  # fmt: skip
            self._acc.schedule_retry(batch, now + backoff, self._s.idempotent)
            return
        if batch.in_doubt:
            persistence = Persistence.POSSIBLY_PERSISTED
        else:
            persistence = action.persistence if written else Persistence.NOT_PERSISTED
        if kind in (Action.RETRY, Action.REFRESH_AND_RETRY):
            message = f"{message} (gave up after {batch.attempts} attempts)".strip()
        self._acc.completed(batch)
        self._reporter.failed(batch, DeliveryFailure(code, error_name(code), message, persistence))
        self._completion.gave_up(batch, f"{batch.topic}-{batch.partition}: {error_name(code)}")

    def _may_retry(self, batch: ProducerBatch, now: float) -> bool:
        if self._stopping:
            return False
        return batch.attempts <= self._s.retries and (
            now - batch.created < self._s.delivery_timeout_s
        )

    def _backoff(self, attempts: int) -> float:
        # KIP-580: exponential from retry.backoff.ms to retry.backoff.max.ms, ±20% jitter.
        base = self._s.retry_backoff_s * (2 ** max(0, attempts - 1))
        return min(self._s.retry_backoff_max_s, base) * self._rng.uniform(0.8, 1.2)

    def _split(self, batch: ProducerBatch, now: float) -> None:
        parts = split_batch(batch)
        self._counters.batch_splits += 1
        log.info(
            "%s-%d: batch of %d records too large; split into %d",
            batch.topic,
            batch.partition,
            batch.record_count,
            len(parts),
        )
        self._acc.replace(batch, parts, now)

    # ---- outcomes ----------------------------------------------------------------------

    def _succeed(self, batch: ProducerBatch, base_offset: int, timestamp: int, now: float) -> None:
        counters = self._counters
        count, size = batch.record_count, batch.size_in_bytes
        counters.records_sent += count
        counters.batches_sent += 1
        counters.bytes_sent += size
        counters.batch_bytes.observe(size)
        counters.queue_time.observe(batch.sent_at - batch.created, count)
        self._completion.acked(batch, base_offset, timestamp)

    def _expire(self, now: float) -> None:
        for batch in self._acc.take_expired(now, self._s.delivery_timeout_s):
            persistence = (
                Persistence.POSSIBLY_PERSISTED if batch.in_doubt else Persistence.NOT_PERSISTED
            )
            waited = (now - batch.created) * 1000
            message = (
                f"expiring {batch.record_count} record(s) for {batch.topic}-{batch.partition}: "
                f"{waited:.0f} ms has passed since batch creation"
            )
            if self._pool.auth_error is not None:
                # Say why nothing got through: the cause an operator has to fix.
                message += f"; kpd cannot connect: {self._pool.auth_error}"
            error = DeliveryFailure(DELIVERY_TIMEOUT, "DELIVERY_TIMEOUT", message, persistence)
            self._reporter.failed(batch, error)
            self._completion.expired(batch, f"{batch.topic}-{batch.partition}: delivery timeout")

    def fail_queued(self, reason: str) -> None:
        """Close without time left: fail everything still queued (never sent or retrying),
        and in exactly-once mode what the uncommitted transaction holds."""
        for batch in self._completion.fail_held(reason):
            failure = DeliveryFailure(
                PRODUCER_CLOSED, "PRODUCER_CLOSED", f"{reason}; its transaction never committed",
                Persistence.NOT_PERSISTED,
            )  # fmt: skip
            self._reporter.failed(batch, failure)
        for batch in self._acc.abort_queued():
            persistence = (
                Persistence.POSSIBLY_PERSISTED if batch.in_doubt else Persistence.NOT_PERSISTED
            )
            self._reporter.failed(
                batch, DeliveryFailure(PRODUCER_CLOSED, "PRODUCER_CLOSED", reason, persistence)
            )
