"""The producer engine under faults: librdkafka's mock cluster moves leaders, injects error
codes, takes brokers down and adds latency while records flow; confluent-kafka reads back.

Every record's value is ``b"<partition>:<counter>"`` with a counter per partition, so the log
itself shows loss, duplication and reordering; every reported (partition, offset) is compared
with where the reader found the record.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from daemon.config import producer_settings
from daemon.kafka.errors import Persistence
from tests.brokers import ApiKey, MockCluster, read_all
from tests.engine_producer import DeliveryFailed, KafkaProducer
from tests.waiting import wait_for_async

pytestmark = pytest.mark.timeout(60)

# Kafka error codes (Kafka protocol guide, "Error Codes").
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
MESSAGE_TOO_LARGE = 10
NOT_ENOUGH_REPLICAS = 19
UNSUPPORTED_VERSION = 35
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46
UNKNOWN_PRODUCER_ID = 59

# Short timeouts so the fault paths finish in seconds.
FAST = {
    "linger_ms": 2,
    "batch_size": 2048,
    "request_timeout_ms": 1000,
    "delivery_timeout_ms": 20_000,
    "retry_backoff_ms": 20,
    "retry_backoff_max_ms": 200,
    "reconnect_backoff_ms": 20,
    "reconnect_backoff_max_ms": 200,
    "socket_connection_setup_timeout_ms": 1000,
    "max_block_ms": 5000,
}


@pytest.fixture
def cluster(mock_cluster: MockCluster) -> MockCluster:
    # The mock as it is: kpd's connection falls back to ApiVersions v0 on the mock's KIP-511
    # answer and reads its flexible Metadata responses despite their stray trailing byte.
    return mock_cluster


# ---- helpers --------------------------------------------------------------------------------


class Stream:
    """Sends ``b"<partition>:<counter>"`` values to explicit partitions; keeps the futures."""

    def __init__(self, producer: KafkaProducer, topic: str, partitions: int) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.next = [0] * partitions
        self.futures: dict[bytes, asyncio.Future] = {}

    async def wave(self, per_partition: int, partitions=None) -> list[asyncio.Future]:
        wave = []
        for _ in range(per_partition):
            for p in range(self.partitions) if partitions is None else partitions:
                value = b"%d:%d" % (p, self.next[p])
                self.next[p] += 1
                future = await self.producer.send(self.topic, value, partition=p)
                self.futures[value] = future
                wave.append(future)
        return wave

    @property
    def total(self) -> int:
        return sum(self.next)


def runs(counters: list[int]) -> str:
    """``0-39, 80-119, 40-79``: a partition's counters as consecutive runs, for messages."""
    spans: list[list[int]] = []
    for c in counters:
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ", ".join(f"{a}-{b}" for a, b in spans)


def assert_exactly_once_in_order(stream: Stream, read, *, offsets_known: bool = True) -> None:
    """The log holds each partition's counters 0..n-1 once, in order, and every report names
    the offset where the reader found its record."""
    for p in range(stream.partitions):
        counters = [int(r.value.split(b":")[1]) for r in read if r.partition == p]
        assert counters == list(range(stream.next[p])), f"partition {p}: {runs(counters)}"
    assert_reports_match(stream, read, offsets_known=offsets_known)


def assert_reports_match(stream: Stream, read, *, offsets_known: bool = True) -> None:
    for record in read:
        metadata = stream.futures[record.value].result()
        assert metadata.partition == record.partition
        if offsets_known or metadata.offset >= 0:
            assert metadata.offset == record.offset, record.value


def started_producer(cluster: MockCluster, **settings) -> KafkaProducer:
    return KafkaProducer(
        producer_settings(bootstrap_servers=cluster.bootstrap, **{**FAST, **settings})
    )


# ---- delivery under faults ------------------------------------------------------------------


# librdkafka 2.16's mock neither rejects a sequence gap (OUT_OF_ORDER_SEQUENCE_NUMBER) nor
# drops a duplicate sequence for an idempotent producer (measured: batches with base sequences
# 0, 2, 10, 2 are all appended). A real broker's check is what keeps pipelined idempotent
# batches in order across a retry, as for Java's producer; on the mock only a client that
# keeps one batch per partition in flight can keep order by itself.
# A request timeout well above the injected RTT: a real timeout makes a batch in doubt, and its
# retry would be a duplicate the mock (which does not check sequences) keeps. Under a loaded CI
# machine 1 s was seen to expire.
_PATIENT = {"request_timeout_ms": 5000}
CLIENT_KEEPS_ORDER = {"enable_idempotence": False, "max_in_flight": 1, **_PATIENT}
PIPELINED_IDEMPOTENT = {"enable_idempotence": True, "max_in_flight": 5, **_PATIENT}


@pytest.mark.parametrize(
    "settings", [CLIENT_KEEPS_ORDER, PIPELINED_IDEMPOTENT], ids=["one-in-flight", "idempotent"]
)
def test_stream_survives_leader_moves_errors_a_bounced_broker_and_rtt_exactly_once(
    cluster, topic_factory, settings
):
    topic = topic_factory(cluster, 6)
    for p in range(6):
        cluster.set_partition_leader(topic, p, 1 + p % 3)
    faults = [
        lambda: cluster.set_partition_leader(topic, 0, 2),
        lambda: cluster.push_request_errors(ApiKey.PRODUCE, *[NOT_LEADER_OR_FOLLOWER] * 3),
        lambda: cluster.push_request_errors(ApiKey.PRODUCE, REQUEST_TIMED_OUT, REQUEST_TIMED_OUT),
        lambda: cluster.push_request_errors(ApiKey.PRODUCE, *[NOT_ENOUGH_REPLICAS] * 3),
        lambda: cluster.broker_down(3),
        lambda: cluster.broker_up(3),
        lambda: cluster.set_rtt(2, 150),
        lambda: cluster.set_partition_leader(topic, 4, 1),
        lambda: cluster.set_rtt(2, 0),
        lambda: cluster.set_partition_leader(topic, 3, 3),
    ]

    async def run() -> Stream:
        async with started_producer(cluster, **settings) as producer:
            stream = Stream(producer, topic, 6)
            for fault in faults:
                wave = await stream.wave(40)
                fault()  # lands while this wave's batches are queued or in flight
                await wait_for_async(lambda w=wave: any(f.done() for f in w), 20.0)
            await stream.wave(40)
            await producer.flush(30)
            counters = producer.engine.counters
            assert counters.retries > 0
            assert not counters.records_failed
            return stream

    stream = asyncio.run(run())
    read = read_all(cluster.bootstrap, topic, stream.total)
    if settings is CLIENT_KEEPS_ORDER:
        assert_exactly_once_in_order(stream, read)
    else:
        assert sorted(r.value for r in read) == sorted(stream.futures)  # once each
        assert_reports_match(stream, read)


def test_without_idempotence_one_request_in_flight_keeps_order_under_retries(
    cluster, topic_factory
):
    topic = topic_factory(cluster, 2)

    async def run() -> Stream:
        async with started_producer(
            cluster, enable_idempotence=False, max_in_flight=1, acks=-1
        ) as producer:
            stream = Stream(producer, topic, 2)
            for codes in (
                [NOT_LEADER_OR_FOLLOWER] * 2,
                [NOT_ENOUGH_REPLICAS] * 3,
                [REQUEST_TIMED_OUT],
            ):
                wave = await stream.wave(60)
                cluster.push_request_errors(ApiKey.PRODUCE, *codes)
                await wait_for_async(lambda w=wave: any(f.done() for f in w), 20.0)
            await stream.wave(60)
            await producer.flush(30)
            assert producer.engine.counters.retries > 0
            return stream

    stream = asyncio.run(run())
    assert_exactly_once_in_order(stream, read_all(cluster.bootstrap, topic, stream.total))


@pytest.mark.parametrize("code", [OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID])
def test_lost_sequence_state_bumps_the_epoch_without_loss_or_duplicates(
    cluster, topic_factory, code
):
    topic = topic_factory(cluster, 3)

    async def run() -> Stream:
        async with started_producer(cluster) as producer:
            stream = Stream(producer, topic, 3)
            await asyncio.gather(*await stream.wave(30))  # sequences are under way
            wave = await stream.wave(30)
            cluster.push_request_errors(ApiKey.PRODUCE, code)
            await asyncio.gather(*wave)
            await stream.wave(30)
            await producer.flush(30)
            assert producer.engine.counters.epoch_bumps == 1
            assert producer.engine.counters.errors_by_code
            return stream

    stream = asyncio.run(run())
    assert_exactly_once_in_order(stream, read_all(cluster.bootstrap, topic, stream.total))


def test_duplicate_sequence_number_answer_counts_as_delivered(cluster, topic_factory):
    topic = topic_factory(cluster, 1)

    async def run() -> tuple[Stream, list]:
        async with started_producer(cluster) as producer:
            stream = Stream(producer, topic, 1)
            await asyncio.gather(*await stream.wave(5))
            cluster.push_request_errors(ApiKey.PRODUCE, DUPLICATE_SEQUENCE_NUMBER)
            # The broker says it already holds this batch: the records are reported delivered
            # (offset unknown, -1) and not sent again.
            duplicate = await asyncio.gather(*await stream.wave(5))
            await asyncio.gather(*await stream.wave(5))
            assert producer.engine.counters.epoch_bumps == 0
            return stream, duplicate

    _stream, duplicate = asyncio.run(run())
    assert {m.offset for m in duplicate} == {-1}
    # The mock did not really hold them, so the log lacks exactly that batch: proof that
    # kpd trusted the answer rather than resending.
    read = read_all(cluster.bootstrap, topic, 10)
    assert [r.value for r in read] == [b"0:%d" % i for i in (*range(5), *range(10, 15))]


def test_message_too_large_once_splits_the_batch_and_delivers_all_in_order(cluster, topic_factory):
    topic = topic_factory(cluster, 1)  # one partition: the failed request held one batch

    async def run() -> Stream:
        async with started_producer(cluster, batch_size=64 * 1024, linger_ms=50) as producer:
            stream = Stream(producer, topic, 1)
            await asyncio.gather(*await stream.wave(3))
            cluster.push_request_errors(ApiKey.PRODUCE, MESSAGE_TOO_LARGE)
            await stream.wave(400)
            await producer.flush(30)
            assert producer.engine.counters.batch_splits == 1
            return stream

    stream = asyncio.run(run())
    assert_exactly_once_in_order(stream, read_all(cluster.bootstrap, topic, stream.total))


def test_acks_zero_reports_offset_minus_one_without_waiting_for_answers(cluster, topic_factory):
    topic = topic_factory(cluster, 2)
    cluster.set_rtt(-1, 5000)  # answers would take longer than the test's deadline

    async def run() -> Stream:
        async with started_producer(cluster, acks=0, enable_idempotence=False) as producer:
            stream = Stream(producer, topic, 2)
            metadata = await asyncio.wait_for(asyncio.gather(*await stream.wave(50)), 3)
            assert {m.offset for m in metadata} == {-1}
            return stream

    # Metadata and ApiVersions answers are delayed too: connect before the RTT applies.
    cluster.set_rtt(-1, 0)
    stream = asyncio.run(run())
    read = read_all(cluster.bootstrap, topic, stream.total)
    assert sorted(r.value for r in read) == sorted(stream.futures)


# ---- failures -------------------------------------------------------------------------------


def test_full_buffer_blocks_send_for_max_block_ms_then_fails_and_loses_nothing_else(
    cluster, topic_factory
):
    topic = topic_factory(cluster, 1)
    cluster.set_partition_leader(topic, 0, 1)

    async def run() -> tuple[Stream, asyncio.Future, float]:
        async with started_producer(
            cluster,
            buffer_memory=20_000,
            max_block_ms=300,
            linger_ms=0,
            batch_size=1024,
            request_timeout_ms=5000,
            delivery_timeout_ms=20_000,
        ) as producer:
            stream = Stream(producer, topic, 1)
            await asyncio.gather(*await stream.wave(1))  # connected and identified
            cluster.set_rtt(1, 2000)  # nothing is acknowledged for a while
            while True:
                started = time.monotonic()
                (future,) = await stream.wave(1)
                blocked = time.monotonic() - started
                if future.done():  # refused: buffer.memory stayed full for max.block.ms
                    break
                assert stream.total < 5000, "buffer.memory never filled"
            stream.next[0] -= 1  # the refused record is not part of the stream
            refused = stream.futures.pop(b"0:%d" % stream.next[0])
            cluster.set_rtt(1, 0)
            await producer.flush(30)
            return stream, refused, blocked

    stream, refused, blocked = asyncio.run(run())
    assert 0.3 <= blocked < 1.5
    with pytest.raises(DeliveryFailed) as failure:
        refused.result()
    assert failure.value.error.name == "BUFFER_EXHAUSTED"
    assert failure.value.error.persistence is Persistence.NOT_PERSISTED
    assert "max.block.ms" in str(failure.value)
    assert_exactly_once_in_order(stream, read_all(cluster.bootstrap, topic, stream.total))


def test_partition_whose_leader_stays_down_fails_after_delivery_timeout_others_flow(
    cluster, topic_factory
):
    topic = topic_factory(cluster, 3)
    for p in range(3):
        cluster.set_partition_leader(topic, p, p + 1)
    cluster.broker_down(1)  # partition 0: its leader is never reachable, nothing is sent

    async def run():
        async with started_producer(
            cluster, request_timeout_ms=300, delivery_timeout_ms=2500, linger_ms=0
        ) as producer:
            stream = Stream(producer, topic, 3)
            await asyncio.gather(*await stream.wave(2, [1, 2]))  # brokers 2 and 3 connected
            cluster.set_rtt(2, 10_000)  # partition 1: sent, never answered
            started = time.monotonic()
            never_sent = await stream.wave(10, [0])
            unanswered = await stream.wave(10, [1])
            flowing = await asyncio.gather(*await stream.wave(10, [2]))
            assert time.monotonic() - started < 2.0  # partition 2 did not wait for the others
            outcomes = await asyncio.gather(*never_sent, *unanswered, return_exceptions=True)
            waited = time.monotonic() - started
            return stream, outcomes[:10], outcomes[10:], flowing, waited

    _stream, never_sent, unanswered, flowing, waited = asyncio.run(run())
    assert waited >= 2.5
    for outcomes, persistence in (
        (never_sent, Persistence.NOT_PERSISTED),
        (unanswered, Persistence.POSSIBLY_PERSISTED),
    ):
        for outcome in outcomes:
            assert isinstance(outcome, DeliveryFailed), outcome
            assert outcome.error.persistence is persistence, outcome
            assert outcome.error.name in ("DELIVERY_TIMEOUT", "REQUEST_TIMED_OUT"), outcome
    assert all(m.offset >= 0 for m in flowing)
    cluster.broker_up(1)
    cluster.set_rtt(2, 0)
    read = read_all(cluster.bootstrap, topic, 4 + 10, exact=False)
    assert [r.value for r in read if r.partition == 2] == [b"2:%d" % i for i in range(12)]
    assert [r.value for r in read if r.partition == 0] == []


def test_close_with_a_deadline_fails_what_remains_with_a_clear_error(cluster, topic_factory):
    topic = topic_factory(cluster, 2)
    cluster.set_partition_leader(topic, 0, 1)
    cluster.set_partition_leader(topic, 1, 2)

    async def run():
        producer = await started_producer(cluster, delivery_timeout_ms=60_000).start()
        stream = Stream(producer, topic, 2)
        await asyncio.gather(*await stream.wave(2))
        cluster.broker_down(1)
        stuck = await stream.wave(20, [0])
        delivered = await stream.wave(20, [1])
        started = time.monotonic()
        await producer.close(1.0)
        closed_in = time.monotonic() - started
        return stuck, delivered, closed_in

    stuck, delivered, closed_in = asyncio.run(run())
    assert closed_in < 3.0
    assert all(f.result().offset >= 0 for f in delivered)
    for future in stuck:
        error = future.exception()
        assert isinstance(error, DeliveryFailed)
        assert error.error.name == "PRODUCER_CLOSED"
        assert error.error.persistence in (
            Persistence.NOT_PERSISTED,
            Persistence.POSSIBLY_PERSISTED,
        )
        assert "closed" in str(error)


def test_records_once_possibly_written_stay_possibly_persisted_when_a_retry_fails_cleanly(
    cluster, topic_factory
):
    topic = topic_factory(cluster, 1)

    async def run() -> list:
        async with started_producer(cluster, enable_idempotence=False, retries=1) as producer:
            stream = Stream(producer, topic, 1)
            await asyncio.gather(*await stream.wave(1))
            # REQUEST_TIMED_OUT: the leader may have appended before the ack wait ran out.
            # The retry's NOT_ENOUGH_REPLICAS alone would mean "not written".
            cluster.push_request_errors(ApiKey.PRODUCE, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS)
            return await asyncio.gather(*await stream.wave(5), return_exceptions=True)

    outcomes = asyncio.run(run())
    for outcome in outcomes:
        assert isinstance(outcome, DeliveryFailed), outcome
        assert outcome.error.name == "NOT_ENOUGH_REPLICAS"
        assert outcome.error.persistence is Persistence.POSSIBLY_PERSISTED
        assert "gave up after 2 attempts" in str(outcome)
