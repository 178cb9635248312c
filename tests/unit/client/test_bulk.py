"""send_bulk(): many records, one future, against the fake kpd of test_client.

Expected partitions come from Kafka's published murmur2 vectors; expected outcomes from what
the fake kpd decoded and answered, never from the client under test.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from kpd import (
    AsyncProducer,
    BulkError,
    BulkResult,
    DeliveryError,
    KpdErrorCode,
    Persistence,
    Producer,
    RecordMetadata,
)
from kpd.protocol import ReportRun, Status
from tests.unit.client.fake_kpd import (
    DEADLINE,
    KAFKA_MURMUR2,
    FakeConn,
    Received,
    java_partition,
)


def test_a_keyed_bulk_lands_where_send_would_and_reads_back_in_the_apps_order(kpd):
    kpd.partitions["t"] = 7
    keys = [key for _ in range(50) for key in KAFKA_MURMUR2]
    values = [b"v%d" % i for i in range(len(keys))]
    with Producer(kpd.path) as producer:  # no partitions_for(): the bulk waits for the count
        future = producer.send_bulk("t", values, keys)
        result = future.result(DEADLINE)
    assert isinstance(result, BulkResult) and len(result) == len(values) == result.delivered
    assert result.failures == []
    # Each record where Java puts its key, and each partition's records in the app's order.
    received = {
        r[1]: (frame.partition, frame.base_seq) for frame in kpd.frames for r in frame.records
    }
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        assert result[i].partition == received[value][0] == java_partition(key, 7)
    per_partition: dict[int, list] = {}
    for frame in kpd.frames:
        per_partition.setdefault(frame.partition, []).extend(r[1] for r in frame.records)
    for partition, got in per_partition.items():
        assert got == [
            v for v, k in zip(values, keys, strict=True) if java_partition(k, 7) == partition
        ]
    # Offsets: the fake gives consecutive offsets per partition in arrival order.
    for got in per_partition.values():
        offsets = [result[values.index(v)].offset for v in got]
        assert offsets == list(range(len(got)))
    assert result[-1] == result[len(values) - 1] and len(result[:3]) == 3


def test_a_keyless_bulk_sticks_to_a_partition_per_batch_bytes_then_moves_on(kpd):
    kpd.partitions["t"] = 5
    with Producer(kpd.path, batch_bytes=1000) as producer:
        producer.partitions_for("t")
        result = producer.send_bulk("t", [b"x" * 100] * 40).result(DEADLINE)
    partitions = [result[i].partition for i in range(40)]
    runs = [p for i, p in enumerate(partitions) if i == 0 or partitions[i - 1] != p]
    assert partitions[:10] == [partitions[0]] * 10  # ~batch bytes on one partition (KIP-794)
    assert len(runs) == 4
    assert all(frame.partition >= 0 and frame.size <= 1000 + 200 for frame in kpd.frames)


def test_bulk_and_single_sends_share_frames_and_sequence_numbers(kpd):
    with Producer(kpd.path, linger_ms=60_000) as producer:
        first = producer.send("t", b"a", partition=1)
        bulk = producer.send_bulk("t", [b"b", b"c"], partition=1)
        last = producer.send("t", b"d", partition=1)
        producer.flush()
        assert [m.offset for m in bulk.result(DEADLINE)] == [1, 2]
        assert first.result().offset == 0 and last.result().offset == 3
    assert len(kpd.frames) == 1 and not kpd.violations  # one frame, continuous numbering


def test_failed_records_of_a_bulk_are_listed_with_their_index_and_error(kpd):
    def split(conn: FakeConn, frame: Received) -> list[ReportRun]:
        # Within each frame: the middle third failed, reported before the rest.
        third = max(frame.count // 3, 1)
        failed = ReportRun(
            frame.base_seq + third,
            third,
            Status.FAILED,
            error=KpdErrorCode.DELIVERY_TIMEOUT,
            persistence=Persistence.POSSIBLY_PERSISTED,
            message="late",
        )
        rest = [
            ReportRun(frame.base_seq, third, Status.DELIVERED, frame.partition, 0),
            ReportRun(
                frame.base_seq + 2 * third,
                frame.count - 2 * third,
                Status.DELIVERED,
                frame.partition,
                2 * third,
            ),
        ]
        return [failed, *rest]

    kpd.respond = split
    values = [b"v%d" % i for i in range(30)]
    with Producer(kpd.path, linger_ms=60_000) as producer:
        future = producer.send_bulk("t", values, partition=2)
        producer.flush()
        with pytest.raises(BulkError) as caught:
            future.result(DEADLINE)
        assert future.exception(DEADLINE).failures == caught.value.failures
    error = caught.value
    assert [index for index, _ in error.failures] == list(range(10, 20))
    assert all(e.code is KpdErrorCode.DELIVERY_TIMEOUT for _, e in error.failures)
    assert "10 of 30 records failed; record 10: DELIVERY_TIMEOUT" in str(error)
    result = error.result
    assert result.delivered == 20
    assert result[9] == RecordMetadata("t", 2, 9, -1)
    assert isinstance(result[10], DeliveryError) and result[10] is error.failures[0][1]
    assert result[20] == RecordMetadata("t", 2, 20, -1)


def test_a_record_too_large_for_any_frame_fails_alone(kpd):
    values = [b"small", b"x" * (kpd.max_frame_bytes + 1), b"small too"]
    with Producer(kpd.path) as producer, pytest.raises(BulkError) as caught:
        producer.send_bulk("t", values, partition=0).result(DEADLINE)
    (index, error), *_ = caught.value.failures
    assert index == 1 and len(caught.value.failures) == 1
    assert error.code is KpdErrorCode.RECORD_TOO_LARGE
    assert [r[1] for r in kpd.records()] == [b"small", b"small too"]


def test_bad_arguments_are_refused_before_anything_is_queued(kpd):
    with Producer(kpd.path) as producer:
        with pytest.raises(ValueError, match="2 keys for 3 values"):
            producer.send_bulk("t", [b"a", b"b", b"c"], [b"k", b"k"])
        with pytest.raises(TypeError, match="value must be bytes"):
            producer.send_bulk("t", [b"a", "text"])
        assert len(producer.send_bulk("t", []).result(DEADLINE)) == 0  # nothing to send
        producer.flush()
    assert kpd.frames == []


def test_one_done_callback_per_bulk_on_the_io_thread_or_at_once_when_done(kpd):
    kpd.respond = kpd.hold
    calls = []
    with Producer(kpd.path, batch_bytes=300) as producer:
        future = producer.send_bulk("t", [b"v" * 50] * 20, partition=0)  # several frames
        future.add_done_callback(lambda f: calls.append((threading.current_thread().name, f)))
        future.add_done_callback(lambda f: calls.append(("second", f)))
        kpd.wait_for(lambda: sum(frame.count for frame in kpd.frames) == 20)
        assert len(kpd.frames) > 1 and calls == [] and not future.done()
        kpd.release()
        assert len(future.result(DEADLINE)) == 20
        producer.flush()
        future.add_done_callback(lambda f: calls.append(("late", f)))
    assert calls == [("kpd-client-io", future), ("second", future), ("late", future)]


def test_async_bulk_is_awaited_for_its_result(kpd):
    kpd.partitions["t"] = 7

    async def main():
        async with AsyncProducer(kpd.path) as producer:
            future = await producer.send_bulk("t", [b"a", b"b"], [b"abc", b"21"])
            return await future

    result = asyncio.run(main())
    assert [m.partition for m in result] == [java_partition(b"abc", 7), java_partition(b"21", 7)]


def test_null_keys_in_a_keyed_bulk_are_placed_like_keyless_sends(kpd):
    kpd.partitions["t"] = 7
    keys = [b"abc", None, b"21", None, b"foobar"]
    with Producer(kpd.path) as producer:
        result = producer.send_bulk("t", [b"v%d" % i for i in range(5)], keys).result(DEADLINE)
    keyed = [(result[i].partition, java_partition(k, 7)) for i, k in enumerate(keys) if k]
    assert all(got == expected for got, expected in keyed)
    # Both keyless records stay on one sticky partition (two tiny records, one run).
    assert result[1].partition == result[3].partition
    assert [r[0] for r in kpd.records()].count(None) == 2
