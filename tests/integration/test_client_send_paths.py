"""Both twins of send()'s hot path end to end: the C appender and record future, and their
pure-Python twins, through a real kpd to a real broker (tansu), read back by librdkafka.

The same records go through the sync Producer and the AsyncProducer with each twin; every
future must say where Kafka put its record, keyed records must land where librdkafka's
murmur2 puts them, and what is read back must be exactly what was sent.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kpd import AsyncProducer, Producer
from tests.accel import IMPLEMENTATIONS, use_send_path
from tests.brokers.reader import partition_for_key_librdkafka, read_all
from tests.daemon_harness import KpdDaemon

PARTITIONS = 6
DEADLINE_S = 60.0


def _records(count: int) -> list[tuple]:
    """(key, value, partition, timestamp, headers): keys cycling and unique (36-byte
    request ids), keyless records, explicit partitions, some timestamps and headers."""
    out = []
    for i in range(count):
        value = b"value-%06d" % i
        if i % 5 == 0:
            key = None
        elif i % 5 == 1:
            key = str(uuid.UUID(int=i * 7919)).encode()
        else:
            key = b"user-%d" % (i % 37)
        partition = i % PARTITIONS if i % 41 == 0 else None
        timestamp = 1_700_000_000_000 + i if i % 53 == 0 else None
        headers = [("trace", b"%d" % i)] if i % 59 == 0 else None
        out.append((key, value, partition, timestamp, headers))
    return out


def _check(tansu, topic: str, records: list[tuple], metadata: list) -> None:
    consumed = read_all(tansu.bootstrap, topic, len(records), timeout_s=DEADLINE_S, exact=True)
    by_place = {(r.partition, r.offset): r for r in consumed}
    for (key, value, _, _, headers), meta in zip(records, metadata, strict=True):
        record = by_place[(meta.partition, meta.offset)]
        assert (record.key, record.value) == (key, value)
        assert tuple(record.headers) == tuple(headers or ())
    keyed = [(i, r[0]) for i, r in enumerate(records) if r[0] is not None and r[2] is None]
    expected = partition_for_key_librdkafka([key for _, key in keyed], PARTITIONS)
    assert [metadata[i].partition for i, _ in keyed] == expected
    explicit = [(i, r[2]) for i, r in enumerate(records) if r[2] is not None]
    assert all(metadata[i].partition == partition for i, partition in explicit)


@pytest.fixture(params=IMPLEMENTATIONS)
def topic(request, tansu, monkeypatch) -> str:
    """A fresh topic of PARTITIONS partitions, and the send path of this run chosen."""
    use_send_path(monkeypatch, request.param)
    name = f"send-path-{request.param.split()[0].lower()}-{uuid.uuid4().hex[:8]}"
    tansu.create_topic(name, PARTITIONS)
    return name


def test_the_sync_producer_delivers_every_shape_of_record_with_each_send_path(
    tansu, tmp_path, topic
):
    records = _records(1500)
    with (
        KpdDaemon(tmp_path, tansu.bootstrap, workers=2) as daemon,
        Producer(daemon.socket_path) as producer,
    ):
        producer.partitions_for(topic, timeout=DEADLINE_S)
        futures = [
            producer.send(topic, value, key, partition, timestamp, headers)
            for key, value, partition, timestamp, headers in records
        ]
        producer.flush(DEADLINE_S)
        assert all(f.done() and f.exception() is None for f in futures)
        metadata = [f.result() for f in futures]
    _check(tansu, topic, records, metadata)


def test_the_async_producer_delivers_every_shape_of_record_with_each_send_path(
    tansu, tmp_path, topic
):
    records = _records(1500)

    async def produce(path: str) -> list:
        async with AsyncProducer(path) as producer:
            futures = [
                await producer.send(topic, value, key, partition, timestamp, headers)
                for key, value, partition, timestamp, headers in records
            ]
            return [await asyncio.wait_for(future, DEADLINE_S) for future in futures]

    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2) as daemon:
        metadata = asyncio.run(produce(daemon.socket_path))
    _check(tansu, topic, records, metadata)
