"""The producer engine against a real broker (tansu), read back with confluent-kafka.

What reaches the log is checked by librdkafka (CRCs, every field), and placement by
librdkafka's ``murmur2_random`` partitioner, never by kpd's own code.
"""

from __future__ import annotations

import asyncio
import time
from itertools import groupby

import pytest

from daemon.config import producer_settings
from tests.brokers import CREATE_TIME, partition_for_key_librdkafka, read_all
from tests.engine_producer import KafkaProducer

pytestmark = pytest.mark.timeout(60)

T0_MS = 1_700_000_000_000


async def send_all(producer: KafkaProducer, topic: str, records) -> list:
    """Send (key, value, partition, headers, timestamp) tuples; return the metadata, in order."""
    futures = [
        await producer.send(
            topic, value, key=key, partition=partition, headers=headers, timestamp_ms=timestamp
        )
        for key, value, partition, headers, timestamp in records
    ]
    await producer.flush(20)
    return [future.result() for future in futures]


def produce(bootstrap: str, topic: str, records, **settings) -> list:
    async def run():
        config = producer_settings(bootstrap_servers=bootstrap, **settings)
        async with KafkaProducer(config) as producer:
            return await send_all(producer, topic, records)

    return asyncio.run(run())


def assert_reports_match_the_log(reports, read) -> None:
    """Each record's reported (partition, offset) is where the reader found its value."""
    where = {(r.partition, r.offset): r.value for r in read}
    assert len(where) == len(read)
    for report, value in reports:
        assert where.get((report.partition, report.offset)) == value


def test_keyed_records_land_where_librdkafka_murmur2_random_puts_them(tansu, topic_factory):
    partitions = 7
    topic = topic_factory(tansu, partitions)
    keys = [f"user-{i}".encode() for i in range(3000)] + [b"", b"\x00\xff" * 9]
    records = [(key, b"v%d" % i, None, (), T0_MS + i) for i, key in enumerate(keys)]

    reports = produce(tansu.bootstrap, topic, records, linger_ms=5)

    expected = partition_for_key_librdkafka(keys, partitions)
    assert [r.partition for r in reports] == expected
    read = read_all(tansu.bootstrap, topic, len(keys))
    landed = {r.value: r.partition for r in read}
    assert [landed[b"v%d" % i] for i in range(len(keys))] == expected
    assert_reports_match_the_log(
        [(rep, rec[1]) for rep, rec in zip(reports, records, strict=True)], read
    )


def test_keyless_records_stick_to_a_partition_for_a_batch_then_cover_all(tansu, topic_factory):
    partitions, batch_size, value_size = 4, 1024, 50
    topic = topic_factory(tansu, partitions)
    count = 3000  # ~146 runs of 21 records
    records = [(None, b"%049d|" % i, None, (), T0_MS) for i in range(count)]

    reports = produce(tansu.bootstrap, topic, records, batch_size=batch_size, linger_ms=5)

    read = read_all(tansu.bootstrap, topic, count)
    landed = {r.value: r.partition for r in read}
    in_send_order = [landed[value] for _, value, *_ in records]
    assert [r.partition for r in reports] == in_send_order
    runs = [len(list(run)) for _, run in groupby(in_send_order)]
    # KIP-794: a run ends once batch.size bytes (key + value) went to its partition, so every
    # run but the last holds ceil(1024 / 50) = 21 records; the next run is elsewhere.
    assert runs[:-1] == [-(-batch_size // value_size)] * (len(runs) - 1)
    assert set(in_send_order) == set(range(partitions))


def test_explicit_partition_is_honoured_even_when_the_key_hashes_elsewhere(tansu, topic_factory):
    topic = topic_factory(tansu, 5)
    keys = [f"k{i}".encode() for i in range(40)]
    hashed = partition_for_key_librdkafka(keys, 5)
    records = [
        (key, b"x%d" % i, (p + 1) % 5, (), T0_MS)
        for i, (key, p) in enumerate(zip(keys, hashed, strict=True))
    ]

    reports = produce(tansu.bootstrap, topic, records)

    assert [r.partition for r in reports] == [(p + 1) % 5 for p in hashed]
    read = read_all(tansu.bootstrap, topic, len(records))
    assert {(r.value, r.partition) for r in read} == {(v, p) for _, v, p, _, _ in records}


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_codec_round_trips_headers_timestamps_and_null_keys_and_values(
    tansu, topic_factory, codec
):
    topic = topic_factory(tansu, 2)
    records = []
    for i in range(300):
        key = None if i % 7 == 0 else (b"" if i % 11 == 0 else b"key-%d" % i)
        value = None if i % 5 == 0 else b"value %d " % i * (1 + i % 20)  # compressible
        headers = [] if i % 3 else [("trace", b"%d" % i), ("empty", b""), ("null", None)]
        records.append((key, value, i % 2, headers, T0_MS + i))

    reports = produce(tansu.bootstrap, topic, records, compression=codec, linger_ms=20)

    read = read_all(tansu.bootstrap, topic, len(records))
    by_offset = {(r.partition, r.offset): r for r in read}
    for report, (key, value, partition, headers, timestamp) in zip(reports, records, strict=True):
        got = by_offset[(report.partition, report.offset)]
        assert (got.partition, got.key, got.value) == (partition, key, value)
        assert got.headers == tuple(headers)
        assert (got.timestamp, got.timestamp_type) == (timestamp, CREATE_TIME)
        assert report.timestamp == timestamp


def test_acks_zero_awaits_nothing_and_reports_offset_minus_one(tansu, topic_factory):
    topic = topic_factory(tansu, 3)
    records = [(b"k%d" % i, b"v%d" % i, None, (), T0_MS) for i in range(500)]

    reports = produce(tansu.bootstrap, topic, records, acks=0, enable_idempotence=False)

    assert {r.offset for r in reports} == {-1}
    read = read_all(tansu.bootstrap, topic, len(records))
    assert sorted(r.value for r in read) == sorted(v for _, v, *_ in records)


def test_flush_returns_only_once_every_record_has_its_outcome(tansu, topic_factory):
    topic = topic_factory(tansu, 3)

    async def run():
        config = producer_settings(bootstrap_servers=tansu.bootstrap, linger_ms=200)
        async with KafkaProducer(config) as producer:
            futures = [await producer.send(topic, b"v%d" % i) for i in range(2000)]
            await producer.flush(10)
            assert all(f.done() for f in futures)
            assert producer.engine.pending_records == 0
            return [f.result() for f in futures]

    reports = asyncio.run(run())
    read = read_all(tansu.bootstrap, topic, 2000)
    assert_reports_match_the_log([(r, b"v%d" % i) for i, r in enumerate(reports)], read)


def test_close_sends_what_linger_still_holds(tansu, topic_factory):
    topic = topic_factory(tansu, 2)

    async def run():
        # A linger far longer than the test: only close() can make these records go.
        config = producer_settings(
            bootstrap_servers=tansu.bootstrap, linger_ms=60_000, delivery_timeout_ms=120_000
        )
        producer = await KafkaProducer(config).start()
        futures = [await producer.send(topic, b"late-%d" % i) for i in range(50)]
        assert not any(f.done() for f in futures)
        started = time.monotonic()
        await producer.close(10)
        assert time.monotonic() - started < 10
        return [f.result() for f in futures]

    reports = asyncio.run(run())
    assert all(r.offset >= 0 for r in reports)
    assert len(read_all(tansu.bootstrap, topic, 50)) == 50


def test_idempotent_stream_of_many_batches_has_contiguous_offsets_per_partition(
    tansu, topic_factory
):
    topic = topic_factory(tansu, 3)
    records = [(b"key-%d" % (i % 97), b"%d" % i, None, (), T0_MS) for i in range(20_000)]

    reports = produce(tansu.bootstrap, topic, records, batch_size=4096, linger_ms=2)

    read = read_all(tansu.bootstrap, topic, len(records))
    assert_reports_match_the_log(
        [(r, rec[1]) for r, rec in zip(reports, records, strict=True)], read
    )
    # Per partition the log holds the records in send order, offsets from 0 without gaps.
    for partition in range(3):
        mine = [int(r.value) for r in read if r.partition == partition]
        assert mine == sorted(mine)
        assert [r.offset for r in read if r.partition == partition] == list(range(len(mine)))
