"""The AsyncProducer against a fake kpd (fake_kpd.py): the same session as the sync Producer,
driven by an event loop."""

from __future__ import annotations

import asyncio

import pytest

from kpd import (
    CONNECTION_LOST,
    AsyncProducer,
    DeliveryError,
    KpdErrorCode,
    Persistence,
    RecordMetadata,
    StringSerializer,
)
from tests.unit.client.fake_kpd import (
    DEADLINE,
    KAFKA_MURMUR2,
    error_of,
    failing,
    java_partition,
)

# Each test runs with both twins of send()'s hot path (tests/unit/client/conftest.py).
pytestmark = pytest.mark.usefixtures("send_path")

# --- AsyncProducer --------------------------------------------------------------------------


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE))


def test_async_producer_resolves_futures_with_offsets(kpd):
    async def main():
        async with AsyncProducer(kpd.path) as producer:
            assert await producer.partitions_for("t") == 4
            futures = [await producer.send("t", b"v", key=key) for key in KAFKA_MURMUR2]
            await producer.flush()
            assert all(f.done() for f in futures)
            return [f.result() for f in futures]

    results = _run(main())
    assert [m.partition for m in results] == [java_partition(k, 4) for k in KAFKA_MURMUR2]
    assert sum(f.count for f in kpd.frames) == len(KAFKA_MURMUR2)


def test_async_records_of_one_loop_tick_share_a_frame_written_without_a_timer(kpd):
    async def main():
        async with AsyncProducer(kpd.path) as producer:  # the default: no linger
            tick = [await producer.send("t", b"v", partition=0) for _ in range(5)]
            assert [(await f).offset for f in tick] == [0, 1, 2, 3, 4]  # no flush needed
            alone = await producer.send("t", b"w", partition=0)
            assert (await alone).offset == 5

    _run(main())
    assert [frame.count for frame in kpd.frames] == [5, 1]


def test_async_producer_failure_and_close(kpd):
    kpd.respond = failing(error=KpdErrorCode.BUFFER_FULL, persistence=Persistence.NOT_PERSISTED)

    async def main():
        producer = AsyncProducer(kpd.path, value_serializer=StringSerializer())
        await producer.start()
        future = await producer.send("t", "v", partition=0)
        with pytest.raises(DeliveryError) as caught:
            await future
        await producer.close()
        with pytest.raises(RuntimeError):
            await producer.send("t", "v")
        return caught.value

    error = _run(main())
    assert error.code is KpdErrorCode.BUFFER_FULL
    assert error.retriable
    assert kpd.goodbyes == [1]
    assert kpd.records() == [(None, b"v", None, ())]


def test_async_producer_connection_loss_fails_written_records_and_reconnects(kpd):
    kpd.respond = kpd.silent

    async def main():
        async with AsyncProducer(kpd.path, batch_bytes=1) as producer:
            future = await producer.send("t", b"v", partition=0)  # a full frame: written now
            await asyncio.to_thread(kpd.wait_for, lambda: len(kpd.frames) == 1)
            kpd.respond = kpd.deliver
            await asyncio.to_thread(kpd.drop_connections)
            with pytest.raises(DeliveryError) as caught:
                await future
            later = await producer.send("t", b"w", partition=0)
            return caught.value, await later

    lost, later = _run(main())
    assert lost.code == CONNECTION_LOST
    assert lost.persistence is Persistence.POSSIBLY_PERSISTED
    assert later.partition == 0
    assert len(kpd.hellos) == 2 and kpd.violations == []


def test_async_send_waits_for_max_block_ms_while_kpd_is_down_then_fails(kpd):
    async def main():
        producer = AsyncProducer(kpd.path, linger_ms=60_000, max_block_ms=300)
        await producer.start()
        queued = await producer.send("t", b"queued", partition=0)
        await asyncio.to_thread(kpd.stop_listening)
        with pytest.raises(DeliveryError) as before:
            await queued
        with pytest.raises(DeliveryError) as during:
            await (await producer.send("t", b"later", partition=0))
        await asyncio.to_thread(kpd.listen_again)
        # The outage outlasted max.block.ms, so send() fails at once until the reconnect task,
        # within its backoff, is through: an app that retries gets through without a restart.
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while True:
            future = await producer.send("t", b"after", partition=0)
            await producer.flush(DEADLINE)
            if future.exception() is None:
                break
            assert asyncio.get_running_loop().time() < deadline, future.exception()
            await asyncio.sleep(0.05)  # an app's retry pause, not synchronisation
        after = await future
        await producer.close(timeout=DEADLINE)
        return before.value, during.value, after

    before, during, after = _run(main())
    for error in (before, during):
        assert error.persistence is Persistence.NOT_PERSISTED
        assert f"is kpd running? socket: {kpd.path}" in error.message
    assert after.partition == 0
    assert [r[1] for r in kpd.records()] == [b"after"]


def test_async_flush_waits_for_held_reports_and_close_collects_the_rest(kpd):
    kpd.respond = kpd.hold

    async def main():
        producer = AsyncProducer(kpd.path, linger_ms=60_000)
        await producer.start()
        first = await producer.send("t", b"a", partition=0)
        with pytest.raises(TimeoutError):
            await producer.flush(timeout=0.05)
        await asyncio.to_thread(kpd.release)
        await producer.flush(timeout=DEADLINE)
        assert first.done()
        second = await producer.send("t", b"b", partition=0)
        await producer.close()
        return first.result(), second.result()

    first, second = _run(main())
    assert (first.offset, second.offset) == (0, 1)
    assert kpd.goodbyes == [2]


def test_async_first_keyed_record_awaits_the_partition_count(kpd):
    kpd.partitions["t"] = 7
    kpd.hold_metadata = True

    async def main():
        async with AsyncProducer(kpd.path, max_block_ms=200) as producer:
            pending = asyncio.ensure_future(producer.send("t", b"v", key=b"abc"))
            await asyncio.to_thread(kpd.wait_for, lambda: kpd.metadata_requests == [("t",)])
            assert not pending.done()
            await asyncio.to_thread(kpd.release_metadata)
            placed = await (await pending)
            missing = await producer.send("nope", b"v", key=b"k")
            await producer.flush()
            return placed, missing

    placed, missing = _run(main())
    assert placed.partition == java_partition(b"abc", 7)
    assert error_of(missing).code is KpdErrorCode.UNKNOWN_TOPIC
    assert "after 200 ms" in error_of(missing).message


def test_awaiting_coroutines_are_independent_when_one_is_cancelled(kpd):
    kpd.respond = kpd.hold

    async def main():
        async with AsyncProducer(kpd.path) as producer:
            future = await producer.send("t", b"v", partition=0)
            with pytest.raises(asyncio.InvalidStateError):
                future.result()
            first = asyncio.ensure_future(_await(future))
            second = asyncio.ensure_future(_await(future))
            await asyncio.to_thread(kpd.wait_for, lambda: len(kpd.frames) == 1)
            first.cancel()
            await asyncio.to_thread(kpd.release)
            called = asyncio.get_running_loop().create_future()
            future.add_done_callback(called.set_result)
            return await second, first.cancelled(), await called is future

    metadata, cancelled, called = _run(main())
    assert metadata == RecordMetadata("t", 0, 0, -1)
    assert cancelled and called


async def _await(future):
    return await future


def test_an_async_producer_started_while_kpd_is_down_waits_for_it(kpd):
    # Issue 19 item 11, asyncio flavour: start() does not raise, send() waits for kpd.
    kpd.stop_listening()

    async def main():
        async with AsyncProducer(kpd.path, max_block_ms=30_000) as producer:
            asyncio.get_running_loop().call_later(0.3, kpd.listen_again)
            future = await producer.send("t", b"v", partition=0)
            return (await future).offset

    assert _run(main()) == 0
