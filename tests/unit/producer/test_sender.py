"""The sender's retry and fail decisions: every action of ``kafka.errors.classify`` as the
sender applies it, plus lost connections, delivery timeouts and retries running out.

The sender runs its real loop with the real accumulator and ``IdempotentCompletion``, over a
fake pool of two brokers whose connections record each ProduceRequest and let the test answer
it (``fakes.py``). Time is a ``FakeClock``: backoffs and delivery timeouts pass only when the
test moves it. Error codes are looked up by name in the error table, never written as numbers.
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from daemon.kafka.errors import Persistence, code_of
from daemon.net.errors import BrokerConnectionError, RequestTimedOutError
from daemon.producer.accumulator import Accumulator
from daemon.producer.completion import IdempotentCompletion, OutcomeReporter
from daemon.producer.counters import ProducerCounters
from daemon.producer.engine import accumulator_settings, sender_settings
from daemon.producer.metadata import ClusterView, TopicView
from daemon.producer.outcomes import BatchOutcome
from daemon.producer.sender import Sender
from tests.unit.producer.fakes import (
    FakeClock,
    FakeConnection,
    FakeMetadata,
    FakePool,
    SentRequest,
    config,
    in_loop,
)
from tests.waiting import wait_for_async

TOPIC = "t"
# RecordBatch v2 (Kafka docs/implementation.html): producerId int64, producerEpoch int16 and
# baseSequence int32 follow baseOffset 8, batchLength 4, partitionLeaderEpoch 4, magic 1,
# crc 4, attributes 2, lastOffsetDelta 4, baseTimestamp 8 and maxTimestamp 8 bytes.
PRODUCER_FIELDS = struct.Struct(">qhi")
PRODUCER_FIELDS_OFFSET = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8


def producer_fields(request: SentRequest) -> tuple[int, int, int]:
    """(producerId, producerEpoch, baseSequence) of the request's only batch."""
    (topic,) = request.body["topic_data"]
    (part,) = topic["partition_data"]
    return PRODUCER_FIELDS.unpack_from(part["records"], PRODUCER_FIELDS_OFFSET)


class Rig:
    """One sender over fake brokers 1 and 2; partition 0 of ``TOPIC`` is led by broker 1."""

    def __init__(self, clock=None, **overrides) -> None:
        settings = config(**{"linger_ms": 0, **overrides})
        self.settings = settings
        self.clock = clock or FakeClock()
        self.brokers = {1: FakeConnection(1), 2: FakeConnection(2)}
        self.pool = FakePool(*self.brokers.values())
        self.metadata = FakeMetadata(self._view(leader=1))
        self.counters = ProducerCounters()
        self.outcomes: list[BatchOutcome] = []
        self.acc = Accumulator(accumulator_settings(settings), self._wake)
        reporter = OutcomeReporter(self.counters, self.outcomes.append)
        completion = IdempotentCompletion(
            idempotent=settings.enable_idempotence,
            transaction_timeout_ms=settings.transaction_timeout_ms,
            accumulator=self.acc,
            metadata=self.metadata,
            pool=self.pool,
            counters=self.counters,
            reporter=reporter,
        )
        self.sender = Sender(
            sender_settings(settings),
            self.acc,
            self.metadata,
            self.pool,
            self.counters,
            reporter,
            completion,
            random.Random(17),
            self.clock,
            on_answered=lambda: self.answered.append(len(self.outcomes)),
        )
        self.answered: list[int] = []  # at each on_answered: the outcomes reported by then
        self._started = False

    @staticmethod
    def _view(leader: int) -> ClusterView:
        brokers = {1: ("127.0.0.1", 9001), 2: ("127.0.0.1", 9002)}
        return ClusterView(brokers, {TOPIC: TopicView(TOPIC, 0, (leader,))})

    def _wake(self, due: float | None) -> None:
        if self._started:
            self.sender.wake(due)

    async def __aenter__(self) -> Rig:
        self.sender.start()
        self._started = True
        return self

    async def __aexit__(self, *exc) -> None:
        await self.sender.stop()

    def append(self, *tokens, size: int = 10) -> None:
        pq = self.acc.queue(TOPIC, 0)
        for token in tokens:
            self.acc.append(pq, 1_700_000_000_000, None, bytes(size), (), token, self.clock())

    def move_leader(self, leader: int) -> None:
        self.metadata.view = self._view(leader)
        self.sender.wake()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sender.wake()

    async def request(self, number: int, broker: int = 1) -> SentRequest:
        """The ``number``-th ProduceRequest (1-based) to ``broker``, once it was sent."""
        conn = self.brokers[broker]
        await wait_for_async(lambda: len(conn.produced) >= number)
        return conn.produced[number - 1]

    async def answer(
        self, number: int, code: int = 0, base_offset: int = 0, broker: int = 1
    ) -> SentRequest:
        """Answer the ``number``-th request with ``code``, once the sender has handled it."""
        return await self._settle(number, broker, lambda r: r.answer(code, base_offset))

    async def lose(self, number: int, exc: BaseException, broker: int = 1) -> SentRequest:
        """Fail the ``number``-th request as a lost connection does."""
        return await self._settle(number, broker, lambda r: r.lose(exc))

    async def _settle(self, number: int, broker: int, settle) -> SentRequest:
        request = await self.request(number, broker)
        before = self.answers_handled()
        settle(request)
        await wait_for_async(lambda: self.answers_handled() > before)
        return request

    def answers_handled(self) -> int:
        # The sender times every answer (or lost request) it handles, as it handles it.
        return sum(latency.count for latency in self.counters.request_latency.values())

    async def outcome(self) -> BatchOutcome:
        await wait_for_async(lambda: self.outcomes)
        (outcome,) = self.outcomes
        return outcome

    def past_backoff(self) -> None:
        """Move time past any retry backoff (at most retry.backoff.max.ms, +20% jitter)."""
        self.advance(self.settings.retry_backoff_max_ms / 1000 * 1.2 + 0.001)


# ---- SUCCESS -----------------------------------------------------------------------------


@in_loop
async def test_success_reports_the_offsets_and_returns_the_buffer():
    async with Rig() as rig:
        rig.append("a", "b")
        await rig.answer(1, 0, base_offset=40)
        outcome = await rig.outcome()
    assert (outcome.tokens, outcome.base_offset, outcome.error) == (["a", "b"], 40, None)
    assert rig.counters.records_sent == 2 and rig.acc.buffer_used == 0
    assert producer_fields(rig.brokers[1].produced[0]) == (7001, 0, 0)


@in_loop
async def test_each_answer_calls_on_answered_once_after_its_outcomes_were_reported():
    # The worker flushes its reports there: once per answer, with all of its batches in.
    async with Rig() as rig:
        rig.append("a")
        await rig.answer(1, 0, base_offset=40)
        rig.append("b")
        await rig.answer(2, code_of("NOT_ENOUGH_REPLICAS"))  # retriable: no outcome yet
        rig.past_backoff()
        await rig.answer(3, 0, base_offset=41)
    assert rig.answered == [1, 1, 2]


@in_loop
async def test_duplicate_sequence_number_counts_as_delivered_with_an_unknown_offset():
    async with Rig() as rig:
        rig.append("a")
        await rig.answer(1, code_of("DUPLICATE_SEQUENCE_NUMBER"), base_offset=40)
        outcome = await rig.outcome()
    assert (outcome.base_offset, outcome.error) == (-1, None)


@in_loop
async def test_acks_0_reports_delivery_without_waiting_for_an_answer():
    async with Rig(acks=0, enable_idempotence=False) as rig:
        rig.append("a")
        request = await rig.request(1)
        outcome = await rig.outcome()
    assert request.future is None and (outcome.base_offset, outcome.error) == (-1, None)


# ---- RETRY and REFRESH_AND_RETRY -----------------------------------------------------------


@in_loop
async def test_retriable_error_resends_the_same_bytes_after_the_backoff_only():
    async with Rig() as rig:
        rig.append("a")
        first = await rig.answer(1, code_of("NOT_ENOUGH_REPLICAS"))
        pq = rig.acc.queue(TOPIC, 0)
        assert len(pq.batches) == 1  # back in its queue, waiting for its time
        assert pq.batches[0].retry_at > rig.clock() and len(rig.brokers[1].produced) == 1
        rig.past_backoff()
        second = await rig.answer(2, 0, base_offset=7)
        outcome = await rig.outcome()
    assert second.partitions == first.partitions and producer_fields(second) == (7001, 0, 0)
    assert outcome.base_offset == 7 and rig.counters.retries == 1
    assert rig.metadata.updates_requested == 0  # NOT_ENOUGH_REPLICAS: the leader is right


@in_loop
async def test_not_leader_refreshes_metadata_and_retries_at_the_new_leader():
    async with Rig() as rig:
        rig.append("a")
        await rig.answer(1, code_of("NOT_LEADER_OR_FOLLOWER"))
        await wait_for_async(lambda: rig.metadata.updates_requested == 1)
        rig.move_leader(2)
        rig.past_backoff()
        await rig.answer(1, base_offset=3, broker=2)
        outcome = await rig.outcome()
    assert outcome.error is None and outcome.base_offset == 3


@in_loop
async def test_retries_exhausted_fails_with_the_last_error_and_the_attempts():
    async with Rig(retries=1) as rig:
        rig.append("a")
        await rig.answer(1, code_of("NOT_ENOUGH_REPLICAS"))
        rig.past_backoff()
        await rig.answer(2, code_of("NOT_ENOUGH_REPLICAS"))
        outcome = await rig.outcome()
    error = outcome.error
    assert error.name == "NOT_ENOUGH_REPLICAS" and "gave up after 2 attempts" in error.message
    assert error.persistence is Persistence.NOT_PERSISTED


@in_loop
async def test_a_possibly_written_attempt_makes_the_final_failure_possibly_persisted():
    # REQUEST_TIMED_OUT in an answer: the broker may have appended before the ack wait ended.
    async with Rig(retries=1) as rig:
        rig.append("a")
        await rig.answer(1, code_of("REQUEST_TIMED_OUT"))
        rig.past_backoff()
        await rig.answer(2, code_of("NOT_ENOUGH_REPLICAS"))
        outcome = await rig.outcome()
    assert outcome.error.persistence is Persistence.POSSIBLY_PERSISTED


@in_loop
async def test_retriable_error_past_the_delivery_timeout_fails_instead_of_retrying():
    async with Rig(delivery_timeout_ms=5000, request_timeout_ms=1000, linger_ms=0) as rig:
        rig.append("a")
        request = await rig.request(1)
        rig.clock.advance(6.0)
        request.answer(code_of("NOT_ENOUGH_REPLICAS"))
        outcome = await rig.outcome()
    assert "gave up after 1 attempts" in outcome.error.message


# ---- lost connections ----------------------------------------------------------------------


@in_loop
async def test_lost_connection_retries_and_a_later_failure_is_possibly_persisted():
    async with Rig(retries=1) as rig:
        rig.append("a")
        await rig.lose(1, BrokerConnectionError("reset by peer"))
        await wait_for_async(lambda: rig.metadata.updates_requested >= 1)
        rig.past_backoff()
        await rig.answer(2, code_of("INVALID_RECORD"))
        outcome = await rig.outcome()
    assert outcome.error.name == "INVALID_RECORD"
    assert outcome.error.persistence is Persistence.POSSIBLY_PERSISTED


@in_loop
async def test_request_timeout_is_reported_as_request_timed_out_once_retries_run_out():
    async with Rig(retries=0) as rig:
        rig.append("a")
        await rig.lose(1, RequestTimedOutError("no answer in 30000 ms"))
        outcome = await rig.outcome()
    assert outcome.error.name == "REQUEST_TIMED_OUT"
    assert outcome.error.persistence is Persistence.POSSIBLY_PERSISTED


@in_loop
async def test_a_request_never_written_leaves_its_batch_not_persisted():
    async with Rig(retries=0) as rig:
        rig.brokers[1].refuse_send = BrokerConnectionError("closed", request_sent=False)
        rig.append("a")
        outcome = await rig.outcome()
    assert outcome.error.name == "NETWORK_EXCEPTION"
    assert outcome.error.persistence is Persistence.NOT_PERSISTED


# ---- FAIL, FATAL and unknown codes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "persistence"),
    [
        ("INVALID_RECORD", Persistence.NOT_PERSISTED),  # FAIL
        ("CLUSTER_AUTHORIZATION_FAILED", Persistence.NOT_PERSISTED),  # FATAL
        ("UNKNOWN_SERVER_ERROR", Persistence.POSSIBLY_PERSISTED),  # FAIL, may be written
    ],
)
@in_loop
async def test_non_retriable_error_fails_the_batch_and_bumps_the_epoch(name, persistence):
    async with Rig() as rig:
        rig.append("a")
        await rig.answer(1, code_of(name))
        outcome = await rig.outcome()
        assert (outcome.error.name, outcome.error.persistence) == (name, persistence)
        # The failed batch's sequence is used and never written: the next batch goes under a
        # new producer id (KIP-360), starting at sequence 0.
        rig.append("b")
        assert producer_fields(await rig.request(2)) == (7002, 0, 0)
    assert rig.counters.epoch_bumps == 1


@in_loop
async def test_unknown_error_code_fails_possibly_persisted_with_a_name_showing_the_code():
    async with Rig() as rig:
        rig.append("a")
        await rig.answer(1, 9999)  # a code newer than the error table
        outcome = await rig.outcome()
    assert outcome.error.name == "UNKNOWN_ERROR_CODE_9999"
    assert outcome.error.persistence is Persistence.POSSIBLY_PERSISTED


@in_loop
async def test_without_idempotence_a_failure_bumps_nothing_and_batches_carry_no_sequence():
    async with Rig(enable_idempotence=False, acks=1, max_in_flight=1) as rig:
        rig.append("a")
        request = await rig.answer(1, code_of("INVALID_RECORD"))
        await rig.outcome()
    assert producer_fields(request) == (-1, -1, -1)
    assert rig.counters.epoch_bumps == 0 and rig.brokers[1].producer_ids_given == 0


# ---- SPLIT ---------------------------------------------------------------------------------


@in_loop
async def test_message_too_large_splits_the_batch_and_delivers_the_halves_in_order():
    async with Rig() as rig:
        rig.append("a", "b", "c")
        await rig.answer(1, code_of("MESSAGE_TOO_LARGE"))
        rig.past_backoff()
        await rig.answer(2, 0, base_offset=10)
        rig.past_backoff()
        await rig.answer(3, 0, base_offset=12)
        await wait_for_async(lambda: len(rig.outcomes) == 2)
    assert [(o.tokens, o.base_offset) for o in rig.outcomes] == [(["a", "b"], 10), (["c"], 12)]
    assert rig.counters.batch_splits == 1 and rig.acc.buffer_used == 0


@in_loop
async def test_message_too_large_on_one_record_fails_it_not_persisted():
    async with Rig() as rig:
        rig.append("a")
        await rig.answer(1, code_of("MESSAGE_TOO_LARGE"))
        outcome = await rig.outcome()
    assert outcome.error.name == "MESSAGE_TOO_LARGE"
    assert outcome.error.persistence is Persistence.NOT_PERSISTED


# ---- BUMP_EPOCH ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["UNKNOWN_PRODUCER_ID", "OUT_OF_ORDER_SEQUENCE_NUMBER", "INVALID_PRODUCER_EPOCH"]
)
@in_loop
async def test_lost_sequence_state_retries_the_batch_under_a_new_producer_id(name):
    async with Rig() as rig:
        rig.append("a")
        await rig.answer(1, code_of(name))
        rig.past_backoff()
        retry = await rig.answer(2, 0, base_offset=5)
        outcome = await rig.outcome()
    assert producer_fields(retry) == (7002, 0, 0)
    assert outcome.error is None and rig.counters.epoch_bumps == 1


@in_loop
async def test_out_of_order_behind_an_earlier_batch_in_flight_retries_without_a_bump():
    # Batch b was rejected only because batch a, still unanswered, comes before it.
    async with Rig(batch_size=100) as rig:
        rig.append("a", size=60)
        rig.append("b", size=60)
        await rig.request(2)
        await rig.answer(2, code_of("OUT_OF_ORDER_SEQUENCE_NUMBER"))
        pq = rig.acc.queue(TOPIC, 0)
        assert pq.batches and pq.recovering  # b waits until a is answered
        first = await rig.answer(1, 0, base_offset=0)
        rig.past_backoff()
        await rig.answer(3, 0, base_offset=1)
        await wait_for_async(lambda: len(rig.outcomes) == 2)
    assert rig.counters.epoch_bumps == 0
    assert producer_fields(first)[:2] == producer_fields(rig.brokers[1].produced[2])[:2]


# ---- delivery timeout and close ------------------------------------------------------------


@in_loop
async def test_batch_without_a_leader_expires_at_the_delivery_timeout():
    async with Rig(delivery_timeout_ms=5000, request_timeout_ms=1000) as rig:
        rig.move_leader(-1)
        rig.append("a")
        await wait_for_async(lambda: rig.metadata.updates_requested >= 1)  # asks who leads now
        assert rig.outcomes == []
        rig.advance(5.0)
        outcome = await rig.outcome()
    assert outcome.error.name == "DELIVERY_TIMEOUT"
    assert outcome.error.persistence is Persistence.NOT_PERSISTED
    assert rig.acc.buffer_used == 0 and rig.pool.produced() == []


@in_loop
async def test_an_expired_batch_that_may_have_been_written_says_so():
    async with Rig(delivery_timeout_ms=5000, request_timeout_ms=1000) as rig:
        rig.append("a")
        await rig.lose(1, BrokerConnectionError("reset by peer"))
        rig.move_leader(-1)
        rig.advance(5.0)
        outcome = await rig.outcome()
    assert outcome.error.name == "DELIVERY_TIMEOUT"
    assert outcome.error.persistence is Persistence.POSSIBLY_PERSISTED


@in_loop
async def test_fail_queued_fails_what_never_went_out_as_producer_closed():
    async with Rig() as rig:
        rig.move_leader(-1)
        rig.append("a")
        await wait_for_async(lambda: rig.metadata.updates_requested >= 1)
        rig.sender.fail_queued("closing")
        outcome = await rig.outcome()
    assert (outcome.error.name, outcome.error.persistence) == (
        "PRODUCER_CLOSED",
        Persistence.NOT_PERSISTED,
    )


# ---- the sender's one timer ----------------------------------------------------------------


class LoopClock:
    """The running loop's clock, as the sender has by default: its timer really fires."""

    def __call__(self) -> float:
        return asyncio.get_running_loop().time()

    def advance(self, seconds: float) -> None:  # Rig.advance: real time is not moved
        pass


@in_loop
async def test_a_lingering_batch_is_sent_when_its_timer_fires_without_any_wake():
    async with Rig(clock=LoopClock(), linger_ms=30) as rig:
        rig.append("a")  # opens a batch: the accumulator's one wake, then only the timer
        await wait_for_async(lambda: rig.sender._sleeping is not None)
        assert rig.sender._timer is not None  # armed for the linger deadline
        request = await rig.request(1)
    assert request.body["topic_data"][0]["name"] == TOPIC


@in_loop
async def test_the_timer_moves_only_to_an_earlier_deadline():
    async with Rig(clock=LoopClock(), linger_ms=10_000) as rig:
        loop = asyncio.get_running_loop()
        rig.append("a")
        await wait_for_async(lambda: rig.sender._sleeping is not None)
        linger_at = rig.sender._timer_at
        assert linger_at == pytest.approx(loop.time() + 10, abs=0.5)
        rig.sender._arm(loop, linger_at + 5)  # a later deadline keeps the earlier timer
        assert rig.sender._timer_at == linger_at
        rig.sender._arm(loop, linger_at - 5)  # an earlier one replaces it
        assert rig.sender._timer_at == linger_at - 5


@in_loop
async def test_a_batch_that_cannot_go_expires_at_its_delivery_timeout_with_no_wake():
    timeouts = {"delivery_timeout_ms": 300, "request_timeout_ms": 200, "linger_ms": 0}
    async with Rig(clock=LoopClock(), **timeouts) as rig:
        rig.move_leader(-1)
        rig.append("a")
        outcome = await rig.outcome()  # nothing from the test wakes the sender: its timer
    assert outcome.error.name == "DELIVERY_TIMEOUT"


@in_loop
async def test_a_due_batch_that_cannot_go_does_not_hide_another_partitions_linger():
    # Partition 0 is due but has no leader (rechecked, not sendable); partition 1's batch
    # lingers 200 ms: the sender's timer is for the earlier of the two, and partition 1's
    # request goes out when its linger ends, with no wake from the test.
    async with Rig(clock=LoopClock(), linger_ms=200) as rig:
        view = rig.metadata.view
        rig.metadata.view = ClusterView(
            view.brokers,
            {TOPIC: TopicView(TOPIC, 0, (-1, 1))},
        )
        rig.sender.wake()
        pq0, pq1 = rig.acc.queue(TOPIC, 0), rig.acc.queue(TOPIC, 1)
        rig.acc.append(pq0, 1_700_000_000_000, None, b"x", (), 1, rig.clock() - 1)  # due
        rig.acc.append(pq1, 1_700_000_000_000, None, b"y", (), 2, rig.clock())
        request = await rig.request(1)
        (topic,) = request.body["topic_data"]
        assert [p["index"] for p in topic["partition_data"]] == [1]


@in_loop
async def test_an_idle_sender_sleeps_without_a_timer():
    async with Rig(clock=LoopClock()) as rig:
        await wait_for_async(lambda: rig.sender._sleeping is not None)
        assert rig.sender._timer is None


class TickingClock(FakeClock):
    """A clock that moves 3 ms at every reading: a turn's drain and its deadline math see
    different times, as the loop's clock does when it ticks while a turn runs."""

    def __call__(self) -> float:
        self.now += 0.003
        return self.now


@in_loop
async def test_a_head_that_becomes_due_while_the_turn_runs_goes_next_turn_not_after_a_recheck():
    async with Rig(clock=TickingClock(), linger_ms=5) as rig:
        armed: list[float] = []
        loop = asyncio.get_running_loop()
        arm = rig.sender._arm
        rig.sender._arm = lambda loop_, when: armed.append(when - loop.time()) or arm(loop_, when)
        rig.append("a")  # created at the append's reading; the drain's reading is 3 ms on
        rig.sender.wake()
        await rig.request(1)
    # Not the 50 ms "due but cannot go" recheck: the head was never blocked.
    assert all(wait < 0.04 for wait in armed), armed


@in_loop
async def test_a_batch_opened_while_an_earlier_timer_is_armed_rides_its_turn_without_a_wake():
    # Issue 18: at 1k records/s nearly every record opens a batch; a sleeping turn whose
    # timer fires before the new batch's linger ends will take it (or arm for it), so the
    # open wakes nobody, and both partitions' batches go in the one request at the first
    # deadline (Java's drain: once one head is ready, the others ride along).
    async with Rig(clock=LoopClock(), linger_ms=200) as rig:
        view = rig.metadata.view
        rig.metadata.view = ClusterView(view.brokers, {TOPIC: TopicView(TOPIC, 0, (1, 1))})
        pq0, pq1 = rig.acc.queue(TOPIC, 0), rig.acc.queue(TOPIC, 1)
        rig.acc.append(pq0, 1_700_000_000_000, None, b"x", (), 1, rig.clock())
        await wait_for_async(lambda: rig.sender._timer is not None)
        sleeping = rig.sender._sleeping
        rig.acc.append(pq1, 1_700_000_000_000, None, b"y", (), 2, rig.clock())
        assert sleeping is rig.sender._sleeping and not sleeping.done()  # no turn for it
        request = await rig.request(1)
        (topic,) = request.body["topic_data"]
        assert sorted(p["index"] for p in topic["partition_data"]) == [0, 1]


@in_loop
async def test_a_batch_due_before_the_armed_timer_moves_the_timer_not_a_turn():
    async with Rig(clock=LoopClock(), linger_ms=10_000) as rig:
        rig.append("a")
        await wait_for_async(lambda: rig.sender._timer is not None)
        sleeping, due = rig.sender._sleeping, rig.sender._timer_at - 1
        rig.sender.wake(due)
        assert not sleeping.done() and rig.sender._timer_at == pytest.approx(due, abs=0.001)


@in_loop
async def test_the_first_batch_of_an_idle_sender_is_sent_at_its_linger_deadline():
    # No turn at the open: the idle sender's timer is armed for the batch's deadline.
    async with Rig(clock=LoopClock(), linger_ms=30) as rig:
        await wait_for_async(lambda: rig.sender._sleeping is not None)
        sleeping = rig.sender._sleeping
        rig.append("a")
        assert not sleeping.done() and rig.sender._timer is not None
        request = await rig.request(1)
    assert request.body["topic_data"][0]["name"] == TOPIC


@in_loop
async def test_an_answer_that_leaves_nothing_queued_wakes_no_turn():
    # At one batch per request nearly every answer empties the engine: a turn then would
    # only find nothing to send and re-arm nothing.
    async with Rig() as rig:
        rig.append("a")
        rig.sender.wake()
        await rig.request(1)
        await wait_for_async(lambda: rig.sender._sleeping is not None)
        sleeping = rig.sender._sleeping
        await rig.answer(1)
        assert rig.outcomes and sleeping is rig.sender._sleeping and not sleeping.done()


@in_loop
async def test_an_answer_that_frees_a_slot_for_a_queued_batch_sends_it():
    async with Rig(max_in_flight=1) as rig:
        rig.append("a")
        rig.sender.wake()
        await rig.request(1)
        rig.append("b")  # waits: the one in-flight slot is taken
        rig.sender.wake()
        await asyncio.sleep(0.01)
        assert len(rig.brokers[1].produced) == 1
        await rig.answer(1)
        await rig.request(2)


@in_loop
async def test_an_answer_after_a_lost_sequence_wakes_a_turn_for_the_epoch_bump():
    # The batch finally failed with its sequence used: the new producer id is taken once
    # nothing is in flight, not at the next append.
    async with Rig() as rig:
        rig.append("a")
        await rig.answer(1, code_of("INVALID_RECORD"))
        await wait_for_async(lambda: rig.counters.epoch_bumps == 1)
