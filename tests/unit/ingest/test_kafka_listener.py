"""The Kafka listener as one record source of ingest's admission, in this process: a Produce
partition's batch in, a ring entry out, and the answer from the report the ingest server
routes back — with the real rings and server of ``test_connection``'s rig.

The whole-daemon tests (tests/integration/test_daemon_kafka_listener.py) reach the same code
through librdkafka; these pin the listener's place beside the kpd socket: it is no connection
of that socket (it takes none of its ``max_connections`` slots), admission's refusals reach it
as Kafka codes, and an idempotent resend is answered without a second entry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from daemon.ingest.kafka.listener import SOURCE_ID, KafkaListener, KafkaListenerSettings
from daemon.kafka.errors import ErrorCode
from daemon.kafka.records import BatchBuilder, restamp
from daemon.ownership import worker_for
from daemon.ring import Ring, RingProducer, RingWakeups
from daemon.wire.ring_entry import encode_report_entry
from kpd import protocol as wire
from kpd.protocol import AckLevel, ReportRun, Status
from tests.unit.ingest.test_connection import PARTITIONS, TOPIC, WORKERS, Rig

PRODUCE_VERSION = 9
TIMEOUT_S = 5.0


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    yield made
    made.close()


def _listener(rig) -> KafkaListener:
    settings = KafkaListenerSettings("127.0.0.1", 0, 4, 1 << 20, None)
    listener = KafkaListener(settings, rig.server.admission)
    rig.server.hear_reports(listener.conn_id, listener)
    return listener


def _batch(values: list[bytes], producer: tuple[int, int, int] | None = None) -> bytes:
    builder = BatchBuilder()
    for value in values:
        builder.append(1_700_000_000_000, None, value)
    built = builder.build()
    if producer is not None:
        restamp(built, *producer)
    return bytes(built)


def _report(rig, worker: int, first_seq: int, count: int, base_offset: int) -> None:
    """What a worker writes once Kafka acknowledged an entry of the listener."""
    ring = RingProducer(Ring.attach(rig.names[2 * worker + 1]), RingWakeups.create())
    run = ReportRun(first_seq, count, Status.DELIVERED, 0, base_offset, 1_700_000_000_123)
    frame = wire.encode_reports([run])
    view = ring.reserve(len(encode_report_entry(SOURCE_ID, count, frame)))
    view[:] = encode_report_entry(SOURCE_ID, count, frame)
    del view
    ring.publish()


def test_a_batch_at_acks_all_is_answered_with_the_offset_the_worker_reports(rig):
    partition = 2
    worker = worker_for(TOPIC, partition, WORKERS)

    async def scenario():
        listener = _listener(rig)
        answer = await listener.produce_partition(
            TOPIC, partition, _batch([b"a", b"b", b"c"]), PRODUCE_VERSION, AckLevel.KAFKA,
            TIMEOUT_S,
        )  # fmt: skip
        listener.publish()  # what the connection does once per Produce request
        ((index, entry),) = rig.entries()
        assert (index, entry.conn_id, entry.partition, entry.count) == (worker, SOURCE_ID, 2, 3)
        assert rig.server.stats().connections == 0  # not a connection of the kpd socket
        assert listener.owed == 3
        _report(rig, worker, entry.base_seq, 3, 41)
        await rig.server.finish()  # forwards the reports rings' last entries
        return await answer, listener

    outcome, listener = asyncio.run(scenario())
    assert outcome == (ErrorCode.NONE, 41, 1_700_000_000_123)
    assert (listener.owed, listener.records) == (0, 3)


def test_admissions_refusals_are_answered_with_kafka_codes(rig):
    async def scenario():
        listener = _listener(rig)
        produce = listener.produce_partition
        batch = _batch([b"x"])
        return (
            await produce("forbidden", 0, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S),
            await produce("no such/topic", 0, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S),
            await produce(TOPIC, PARTITIONS, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S),
            listener.records,
        )

    forbidden, illegal, beyond, records = asyncio.run(scenario())
    assert forbidden[0] == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    assert illegal[0] == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert beyond[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert (records, rig.entries()) == (0, [])
    assert rig.server.admission.records_rejected == 3


def test_acks_1_is_answered_once_the_entry_is_published(rig):
    async def scenario():
        listener = _listener(rig)
        answer = await listener.produce_partition(
            TOPIC, 0, _batch([b"x", b"y"]), PRODUCE_VERSION, AckLevel.ACCEPTED, TIMEOUT_S
        )
        assert not answer.done()  # nothing published yet
        listener.publish()
        return await answer, listener.owed

    outcome, owed = asyncio.run(scenario())
    assert (outcome[0], owed) == (ErrorCode.NONE, 0)
    assert len(rig.entries()) == 1


def test_an_idempotent_resend_gets_the_first_outcome_and_no_second_entry(rig):
    partition = 1
    worker = worker_for(TOPIC, partition, WORKERS)

    async def scenario():
        listener = _listener(rig)
        producer_id, epoch = listener.producers.init_producer()
        batch = _batch([b"a", b"b"], (producer_id, epoch, 0))
        first = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        listener.publish()
        ((_, entry),) = rig.entries()
        _report(rig, worker, entry.base_seq, 2, 7)
        await rig.server.finish()
        resent = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        return await first, resent

    first, resent = asyncio.run(scenario())
    assert first == resent
    assert first[:2] == (ErrorCode.NONE, 7)
    assert rig.entries() == []  # the resend wrote nothing
