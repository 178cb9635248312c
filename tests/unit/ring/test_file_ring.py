"""Unit tests of the shared-memory ring (daemon.ring), one process, real files in /dev/shm.

Expected bytes and offsets come from the layout documented in daemon/ring/region.py and
file_ring.py, written out here with struct field by field and read back from the file itself,
not through the code under test.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import struct
import threading
import uuid
from collections import deque
from pathlib import Path

import crc32c
import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.ring import (
    AckWindow,
    EntryTooLargeError,
    Ring,
    RingConsumer,
    RingError,
    RingFormatError,
    RingProducer,
    RingWakeups,
)
from tests.waiting import wait_for, wait_for_async

# The documented layout, restated independently of the code under test.
HEADER = 4096
OFF_WRITE_POS = 128
OFF_CONSUMER_WAKE_AT = 256
OFF_RELEASE_POS = 384
OFF_PRODUCER_WAKE_AT = 512
WRAP = 0xFFFFFFFF


def padded(n: int) -> int:
    """Entry size per the spec: u32 length, u32 seal + payload, rounded up to a multiple of 8."""
    return -(-(8 + n) // 8) * 8


def sealed(pos: int, payload: bytes) -> bytes:
    """An entry's head per the spec: u32 length, then CRC32C over (pos u64 LE, length u32 LE)
    followed by the payload. CRC32C from the ``crc32c`` package, not from daemon.ring."""
    seal = crc32c.crc32c(struct.pack("<QI", pos, len(payload)) + payload)
    return struct.pack("=II", len(payload), seal) + payload


def unique_name(tag: str = "t") -> str:
    return f"kpd-test-{os.getpid()}-{tag}-{uuid.uuid4().hex[:10]}"


class Rig:
    """A ring with both ends in this process, torn down whatever the test did."""

    def __init__(self, capacity: int, backstop_s: float = 0.1) -> None:
        self.name = unique_name()
        self.path = Path("/dev/shm") / self.name
        self.ring = Ring.create(self.path, capacity)
        self.wakeups = RingWakeups.create()
        self.producer = RingProducer(self.ring, self.wakeups, backstop_s=backstop_s)
        self.consumer = RingConsumer(self.ring, self.wakeups, backstop_s=backstop_s)

    def raw(self, offset: int, size: int) -> bytes:
        """Bytes of the region file, read with a fresh fd: what another process sees."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def raw_u64(self, offset: int) -> int:
        return struct.unpack("=Q", self.raw(offset, 8))[0]

    def drain(self) -> list[bytes]:
        """Read everything published, release it, return copies of the payloads."""
        batch = self.consumer.read_entries()
        payloads = [bytes(view) for _, view in batch]
        if batch:
            self.consumer.release(batch[-1][0])
        return payloads

    def close(self) -> None:
        # A failed test's traceback may still hold views: then the GC unmaps later.
        with contextlib.suppress(BufferError):
            self.ring.close()
        self.wakeups.close()
        Ring.unlink(self.path)


@pytest.fixture
def rig_factory():
    rigs: list[Rig] = []

    def make(capacity: int = 256, backstop_s: float = 0.1) -> Rig:
        rigs.append(Rig(capacity, backstop_s))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def move_to(rig: Rig, pos: int) -> None:
    """Advance an empty ring's positions to ``pos`` (a multiple of 8) with filler entries."""
    room = rig.producer.max_entry_bytes + 8
    while rig.ring.write_pos < pos:
        step = min(pos - rig.ring.write_pos, room)
        assert rig.producer.write(b"f" * (step - 8))
        rig.producer.publish()
        rig.drain()
    assert rig.ring.write_pos == rig.ring.release_pos == pos


# -- layout -------------------------------------------------------------------------------


def test_header_fields_sit_at_documented_offsets(rig_factory):
    rig = rig_factory(1024)
    assert os.stat(rig.path).st_size == HEADER + 1024
    # magic (8s), layout version (u32), header size (u32), capacity (u64), then the creator's
    # labels: format (u32), set index (u32), set size (u32; 1 by default)
    assert rig.raw(0, 36) == struct.pack("=8sIIQIII", b"KPDRING\0", 3, HEADER, 1024, 0, 0, 1)

    rig.producer.write(b"abc")
    assert rig.raw_u64(OFF_WRITE_POS) == 0  # staged, not published
    rig.producer.publish()
    assert rig.raw_u64(OFF_WRITE_POS) == 16
    rig.drain()
    assert rig.raw_u64(OFF_RELEASE_POS) == 16


def test_entry_is_length_and_seal_then_payload_padded_to_eight(rig_factory):
    rig = rig_factory(1024)
    rig.producer.write_many([b"abcde", b"", b"12345678"])
    expected = (
        sealed(0, b"abcde")
        + b"\0" * 3  # 8 + 5 + 3 = 16
        + sealed(16, b"")  # 8 + 0 = 8
        + sealed(24, b"12345678")  # 8 + 8 = 16
    )
    assert rig.raw(HEADER, 40) == expected
    assert rig.raw_u64(OFF_WRITE_POS) == 40


def test_reserved_entries_are_sealed_when_published(rig_factory):
    rig = rig_factory(1024)
    view = rig.producer.reserve(3)
    view[:] = b"xyz"
    del view
    rig.producer.publish()
    assert rig.raw(HEADER, 11) == sealed(0, b"xyz")


def test_an_entry_written_in_two_parts_is_the_joined_payload_sealed_at_once(rig_factory):
    rig = rig_factory(1024)
    assert rig.producer.write_parts(b"head", memoryview(b"-and-body"))
    assert rig.raw(HEADER, 21) == sealed(0, b"head-and-body")  # sealed before the publish
    rig.producer.publish()
    assert rig.drain() == [b"head-and-body"]


@pytest.mark.parametrize("gap", [16, 24, 40])
def test_a_two_part_entry_wraps_and_fails_for_room_as_one_entry(rig_factory, gap):
    rig = rig_factory(256)
    move_to(rig, 256 - gap)
    assert rig.producer.write_parts(b"h" * 10, b"b" * 20)  # 38 bytes padded to 40
    rig.producer.publish()
    end = (256 - gap + 40) if gap >= 40 else 256 + 40
    assert rig.raw_u64(OFF_WRITE_POS) == end
    assert rig.drain() == [b"h" * 10 + b"b" * 20]
    assert rig.producer.write_parts(b"x" * 60, b"y" * 60)  # the largest: half the ring
    rig.producer.write_parts(b"x" * 60, b"y" * 60)  # a second one fits unless it must wrap
    used = rig.producer.used_bytes()
    assert not rig.producer.write_parts(b"x" * 60, b"y" * 60)  # no room: nothing staged
    assert rig.producer.used_bytes() == used
    with pytest.raises(EntryTooLargeError):
        rig.producer.write_parts(b"x" * 100, b"y" * 100)


def test_reserve_fills_in_place_and_publishes_once(rig_factory):
    rig = rig_factory()
    for i in range(3):
        view = rig.producer.reserve(5)
        view[:] = b"abc%02d" % i
        del view
    assert rig.consumer.read_entries() == []
    rig.producer.publish()
    assert rig.producer.publishes == 1
    assert rig.drain() == [b"abc00", b"abc01", b"abc02"]


@pytest.mark.parametrize("gap", range(8, 136, 8))
def test_wrap_marker_at_every_alignment_near_the_end(rig_factory, gap):
    cap = 256
    for n in range(max(0, gap - 16), min(gap + 4, 121)):
        rig = rig_factory(cap)
        start = cap - gap
        move_to(rig, start)
        payload = bytes(range(n))
        assert rig.producer.write(payload)
        rig.producer.publish()
        if padded(n) <= gap:  # fits before the end: no marker
            assert rig.raw(HEADER + start, 8 + n) == sealed(start, payload)
            end = start + padded(n)
        else:  # marker at the old offset, entry at offset 0, skipped bytes belong to it
            assert rig.raw(HEADER + start, 4) == struct.pack("=I", WRAP)
            assert rig.raw(HEADER, 8 + n) == sealed(cap, payload)
            end = cap + padded(n)
        assert rig.raw_u64(OFF_WRITE_POS) == end
        batch = rig.consumer.read_entries()
        assert [(e, bytes(v)) for e, v in batch] == [(end, payload)]
        del batch
        rig.consumer.release(end)
        assert rig.raw_u64(OFF_RELEASE_POS) == end
        assert rig.producer.used_bytes() == 0


def test_largest_entry_fits_a_drained_ring_at_every_offset(rig_factory):
    # Half the capacity is the limit because a wrap can waste almost one entry's size.
    cap = 256
    for offset in range(0, cap, 8):
        rig = rig_factory(cap)
        move_to(rig, cap + offset)
        assert rig.producer.write(b"m" * rig.producer.max_entry_bytes)
        rig.producer.publish()
        assert rig.drain() == [b"m" * rig.producer.max_entry_bytes]


# -- FIFO, full, release --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 120), min_size=1, max_size=300),
    batch=st.integers(1, 12),
    read_chunk=st.integers(1, 9),
    release_lag=st.integers(0, 6),
)
def test_fifo_order_over_many_wraps_with_random_sizes(sizes, batch, read_chunk, release_lag):
    rig = Rig(256)
    try:
        payloads = [(i.to_bytes(4, "little") * 31)[:n] for i, n in enumerate(sizes)]
        sent, got, held = 0, [], deque()
        for _ in range(4 * len(payloads) + 10):
            sent += rig.producer.write_many(payloads[sent : sent + batch])
            fresh = [(end, bytes(view)) for end, view in rig.consumer.read_entries(read_chunk)]
            got += [payload for _, payload in fresh]
            held += [end for end, _ in fresh]
            # Release in ring order, lagging like a worker waiting for acks; release all
            # when nothing else can move, or at the end.
            stalled = not fresh and rig.consumer.pending_bytes() == 0
            while held and (len(held) > release_lag or stalled or len(got) == len(payloads)):
                rig.consumer.release(held.popleft())
            if len(got) == len(payloads):
                break
        assert got == payloads
        assert rig.producer.used_bytes() == 0
        # Positions count every entry once plus the bytes skipped at wraps, each fewer than
        # the largest entry (128 bytes in this ring).
        skipped = rig.ring.write_pos - sum(map(padded, sizes))
        assert 0 <= skipped <= 120 * rig.producer.wraps
    finally:
        rig.close()


def test_full_ring_refuses_until_a_release_frees_room(rig_factory):
    rig = rig_factory(256)
    assert rig.producer.write(b"a" * 96)  # 104 bytes
    assert rig.producer.write(b"b" * 96)  # 208
    assert not rig.producer.write(b"c" * 96)  # 312 > 256
    assert rig.producer.reserve(96) is None
    assert rig.producer.write_many([b"d" * 40, b"e" * 40]) == 1  # 48 free: one 48-byte entry
    assert rig.producer.free_bytes() == 0
    first = rig.consumer.read_entries(max_entries=1)
    assert not rig.producer.write(b"c" * 96)  # read is not released: still full
    rig.consumer.release(first[0][0])
    del first
    assert rig.producer.free_bytes() == 104
    assert rig.producer.write(b"c" * 96)


def test_used_bytes_fall_only_by_what_is_released(rig_factory):
    rig = rig_factory(1024)
    rig.producer.write_many([b"x" * 8] * 4)  # 16 bytes each
    batch = rig.consumer.read_entries()
    assert (rig.ring.used_bytes(), rig.consumer.held_bytes()) == (64, 64)
    rig.consumer.release(batch[1][0])
    assert (rig.ring.used_bytes(), rig.consumer.held_bytes()) == (32, 32)
    assert rig.producer.free_bytes() == 1024 - 32
    del batch


def test_release_is_monotonic_and_within_what_was_read(rig_factory):
    rig = rig_factory()
    rig.producer.write_many([b"a", b"b"])
    batch = rig.consumer.read_entries(max_entries=1)
    with pytest.raises(RingError, match="outside the read span"):
        rig.consumer.release(batch[0][0] + 8)  # the second entry is not read yet
    rig.consumer.release(batch[0][0])
    rig.consumer.release(batch[0][0])  # again: no-op
    with pytest.raises(RingError, match="outside the read span"):
        rig.consumer.release(0)
    del batch


def test_read_entries_honours_entry_and_byte_limits_but_returns_at_least_one(rig_factory):
    rig = rig_factory(1024)
    rig.producer.write_many([b"a" * 10, b"b" * 10, b"c" * 50, b"d" * 10])
    assert [len(v) for _, v in rig.consumer.read_entries(max_entries=1)] == [10]
    assert [len(v) for _, v in rig.consumer.read_entries(max_bytes=15)] == [10]
    assert [len(v) for _, v in rig.consumer.read_entries(max_bytes=15)] == [50]
    assert [len(v) for _, v in rig.consumer.read_entries()] == [10]
    assert rig.consumer.entries_read == 4
    assert rig.consumer.bytes_read == 80


def test_oversize_entry_raises_at_once_and_stages_nothing(rig_factory):
    rig = rig_factory(256)
    limit = rig.producer.max_entry_bytes
    assert limit == 120  # padded(120) == 128 == capacity / 2
    with pytest.raises(EntryTooLargeError, match="can never fit"):
        rig.producer.write(b"x" * (limit + 1))
    with pytest.raises(EntryTooLargeError):
        rig.producer.reserve(limit + 1)
    with pytest.raises(EntryTooLargeError):
        rig.producer.write_many([b"ok", b"x" * 1000])
    rig.producer.publish()
    assert rig.ring.write_pos == 0
    assert rig.producer.write(b"x" * limit)


# -- crash replay and attach ----------------------------------------------------------------


def test_new_consumer_replays_exactly_the_unreleased_entries(rig_factory):
    rig = rig_factory(1024)
    rig.producer.write_many([b"rec%d" % i for i in range(10)])
    batch = rig.consumer.read_entries()
    assert len(batch) == 10
    rig.consumer.release(batch[3][0])  # entries 0..3 acknowledged
    del batch
    rig.ring.consumer_wake_at = 99  # as if it died asleep
    del rig.consumer  # "crash": dropped without releasing

    ring2 = Ring.attach(rig.path, capacity=1024)
    try:
        replacement = RingConsumer(ring2, rig.wakeups)
        assert ring2.consumer_wake_at == 0
        replayed = [bytes(v) for _, v in replacement.read_entries()]
        assert replayed == [b"rec%d" % i for i in range(4, 10)]
        rig.producer.write(b"rec10")
        rig.producer.publish()
        assert [bytes(v) for _, v in replacement.read_entries()] == [b"rec10"]
    finally:
        ring2.close()


def test_attach_rejects_bad_magic(rig_factory):
    rig = rig_factory()
    fd = os.open(rig.path, os.O_WRONLY)
    os.pwrite(fd, b"NOTARING", 0)
    os.close(fd)
    with pytest.raises(RingFormatError, match="bad magic"):
        Ring.attach(rig.path)


def test_attach_rejects_other_layout_version(rig_factory):
    rig = rig_factory()
    fd = os.open(rig.path, os.O_WRONLY)
    os.pwrite(fd, struct.pack("=I", 2), 8)  # shm rings without labels or sealed entries
    os.close(fd)
    with pytest.raises(RingFormatError, match="layout version 2"):
        Ring.attach(rig.path)


def test_attach_rejects_capacity_other_than_configured(rig_factory):
    rig = rig_factory(1024)
    with pytest.raises(RingFormatError, match="capacity 1024 does not match the configured 512"):
        Ring.attach(rig.path, capacity=512)


def test_attach_rejects_truncated_segment(rig_factory):
    rig = rig_factory(1024)
    os.truncate(rig.path, HEADER + 512)
    with pytest.raises(RingFormatError, match="file holds 512 data bytes"):
        Ring.attach(rig.path)
    os.truncate(rig.path, 100)
    with pytest.raises(RingFormatError, match="smaller than a header"):
        Ring.attach(rig.path)


def test_create_refuses_an_existing_name_unless_replace(rig_factory):
    rig = rig_factory()
    rig.producer.write_many([b"old"])
    with pytest.raises(FileExistsError):
        Ring.create(rig.path, 256)
    fresh = Ring.create(rig.path, 512, replace=True)
    try:
        assert (fresh.capacity, fresh.write_pos) == (512, 0)
        assert rig.ring.write_pos == 16  # the old mapping is intact, just nameless
    finally:
        fresh.close()


@pytest.mark.parametrize("capacity", [0, 8, 100, 1 << 33])
def test_create_rejects_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity"):
        Ring.create(Path("/dev/shm") / unique_name(), capacity)


# -- wake-ups -------------------------------------------------------------------------------


def test_busy_pipeline_rings_no_doorbell(rig_factory):
    rig = rig_factory(1024)
    for _ in range(50):
        rig.producer.write_many([b"x" * 10] * 5)
        rig.drain()
    assert rig.producer.wakeups_sent == rig.consumer.wakeups_sent == 0
    assert not rig.wakeups.data.drain() and not rig.wakeups.space.drain()


def test_sleeping_consumer_is_woken_by_one_publish(rig_factory):
    rig = rig_factory(backstop_s=30)  # a working bell, not the backstop, must wake it
    result = []
    sleeper = threading.Thread(
        target=lambda: result.append(rig.consumer.wait_readable_blocking(timeout=30))
    )
    sleeper.start()
    wait_for(lambda: rig.raw_u64(OFF_CONSUMER_WAKE_AT) == 1)
    rig.producer.write_many([b"a", b"b", b"c"])
    sleeper.join(10)
    assert result == [True]
    assert rig.producer.wakeups_sent == 1
    assert rig.consumer.sleeps >= 1 and rig.consumer.missed_wakeups == 0
    assert rig.raw_u64(OFF_CONSUMER_WAKE_AT) == 0


def test_sleeping_producer_is_woken_only_by_a_release_that_makes_room(rig_factory):
    rig = rig_factory(256, backstop_s=30)
    rig.producer.write_many([b"s" * 20, b"s" * 20, b"L" * 100, b"L" * 100])  # 24+24+104+104
    batch = rig.consumer.read_entries()
    result = []
    sleeper = threading.Thread(
        target=lambda: result.append(rig.producer.wait_writable_blocking(100, timeout=30))
    )
    sleeper.start()
    wait_for(lambda: rig.raw_u64(OFF_PRODUCER_WAKE_AT) != 0)
    rig.consumer.release(batch[0][0])  # 24 bytes free: not enough for 104
    assert rig.consumer.wakeups_sent == 0
    rig.consumer.release(batch[2][0])
    sleeper.join(10)
    del batch
    assert result == [True]
    assert rig.consumer.wakeups_sent == 1
    assert rig.producer.write(b"n" * 100)


def test_wait_readable_times_out_and_clears_its_flag(rig_factory):
    rig = rig_factory(backstop_s=0.02)
    assert rig.consumer.wait_readable_blocking(timeout=0.05) is False
    assert rig.raw_u64(OFF_CONSUMER_WAKE_AT) == 0


def test_wait_writable_publishes_staged_entries_before_sleeping(rig_factory):
    rig = rig_factory(256)
    rig.producer.write(b"x" * 120)
    rig.producer.write(b"x" * 120)  # staged, ring full
    assert rig.producer.wait_writable_blocking(120, timeout=0.01) is False
    assert rig.raw_u64(OFF_WRITE_POS) == 256


def test_backstop_recovers_a_lost_wakeup(rig_factory):
    rig = rig_factory(backstop_s=0.02)
    deaf = RingWakeups.create()  # the producer rings a bell nobody listens to
    try:
        producer = RingProducer(rig.ring, deaf)
        result = []
        sleeper = threading.Thread(
            target=lambda: result.append(rig.consumer.wait_readable_blocking(timeout=30))
        )
        sleeper.start()
        wait_for(lambda: rig.raw_u64(OFF_CONSUMER_WAKE_AT) != 0)
        producer.write_many([b"lost"])
        sleeper.join(10)
        assert result == [True]
        assert rig.consumer.missed_wakeups == 1
    finally:
        deaf.close()


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_async_waits_are_woken_through_the_event_loop(rig_factory, new_loop):
    rig = rig_factory(256, backstop_s=30)

    async def scenario():
        reader = asyncio.create_task(rig.consumer.wait_readable(timeout=30))
        await wait_for_async(lambda: rig.raw_u64(OFF_CONSUMER_WAKE_AT) != 0)
        rig.producer.write_many([b"y" * 120, b"y" * 120])
        assert await reader is True

        writer = asyncio.create_task(rig.producer.wait_writable(120, timeout=30))
        await wait_for_async(lambda: rig.raw_u64(OFF_PRODUCER_WAKE_AT) != 0)
        rig.drain()
        assert await writer is True
        assert await rig.consumer.wait_readable(timeout=0.01) is False

    loop = new_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert (rig.producer.wakeups_sent, rig.consumer.wakeups_sent) == (1, 1)
    assert rig.producer.missed_wakeups == rig.consumer.missed_wakeups == 0


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_a_watched_consumer_is_called_back_for_every_publish_it_slept_for(rig_factory, new_loop):
    # The persistent reader: one add_reader for the ring's life, each sleep armed and woken by
    # a publish from another thread (the producer's side of the race runs truly concurrently).
    rig = rig_factory(256, backstop_s=30)
    rounds = 300

    async def scenario():
        loop = asyncio.get_running_loop()
        woken: list[asyncio.Future] = []
        rig.consumer.watch(loop, lambda: woken[-1].set_result(None))
        try:
            for i in range(rounds):
                woken.append(loop.create_future())
                assert rig.consumer.sleep_until_readable() is False
                assert rig.raw_u64(OFF_CONSUMER_WAKE_AT) != 0
                await loop.run_in_executor(None, rig.producer.write_many, [b"r%d" % i])
                await asyncio.wait_for(woken[-1], 10)
                assert rig.raw_u64(OFF_CONSUMER_WAKE_AT) == 0  # retracted before the callback
                assert rig.drain() == [b"r%d" % i]
        finally:
            rig.consumer.unwatch()

    loop = new_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert rig.producer.wakeups_sent == rounds
    assert rig.consumer.sleeps == rounds
    assert rig.consumer.missed_wakeups == 0


def test_a_watch_does_not_sleep_when_an_entry_is_already_published(rig_factory):
    rig = rig_factory()

    async def scenario():
        calls = []
        rig.consumer.watch(asyncio.get_running_loop(), lambda: calls.append(1))
        try:
            rig.producer.write_many([b"there"])
            assert rig.consumer.sleep_until_readable() is True
            assert rig.raw_u64(OFF_CONSUMER_WAKE_AT) == 0  # nothing announced
            await asyncio.sleep(0.01)
            assert calls == []
        finally:
            rig.consumer.unwatch()

    asyncio.run(scenario())
    assert rig.consumer.sleeps == 0


def test_waking_a_watch_retracts_its_flag_without_a_callback(rig_factory):
    rig = rig_factory()

    async def scenario():
        calls = []
        rig.consumer.watch(asyncio.get_running_loop(), lambda: calls.append(1))
        try:
            assert rig.consumer.sleep_until_readable() is False
            rig.consumer.wake_watch()  # e.g. a worker told to stop
            assert rig.raw_u64(OFF_CONSUMER_WAKE_AT) == 0
            rig.producer.write_many([b"late"])  # no sleeper announced: no bell, no callback
            await asyncio.sleep(0.01)
            assert calls == []
        finally:
            rig.consumer.unwatch()

    asyncio.run(scenario())
    assert rig.producer.wakeups_sent == 0


@pytest.mark.parametrize("ordering", ["C11 atomics", "x86-64 TSO"])
def test_a_watch_keeps_a_backstop_only_where_a_wakeup_can_be_lost(
    rig_factory, monkeypatch, ordering
):
    # With seq_cst words (the accelerator) a wake-up cannot be lost: no timer. With plain
    # stores it can: the backstop finds the entry the deaf bell did not announce.
    monkeypatch.setattr("daemon.ring.file_ring.ordering_of", lambda: ordering)
    rig = rig_factory(backstop_s=0.02)
    deaf = RingWakeups.create()  # the producer rings a bell nobody listens to
    producer = RingProducer(rig.ring, deaf)

    async def scenario():
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        rig.consumer.watch(loop, lambda: woken.set_result(None))
        try:
            assert rig.consumer.sleep_until_readable() is False
            producer.write_many([b"lost"])
            if ordering == "C11 atomics":
                assert rig.consumer._watch._timer is None
                rig.consumer.wake_watch()
            else:
                await asyncio.wait_for(woken, 10)
        finally:
            rig.consumer.unwatch()

    try:
        asyncio.run(scenario())
    finally:
        deaf.close()
    assert rig.consumer.missed_wakeups == (0 if ordering == "C11 atomics" else 1)


# -- commit on ack --------------------------------------------------------------------------


def test_ack_window_releases_only_the_contiguous_done_prefix():
    window = AckWindow(start=0)
    for end in (8, 16, 24, 32):
        window.track(end)
    assert window.done([16, 32]) is None  # 8 is still in flight
    assert window.done([8]) == 16
    assert window.done([24]) == 32
    assert (window.release_pos, len(window)) == (32, 0)


def test_ack_window_rejects_out_of_order_tracking():
    window = AckWindow(start=64)
    with pytest.raises(ValueError, match="not after"):
        window.track(64)


# -- the package's import rule ----------------------------------------------------------------


def test_ring_package_imports_no_process_layer_module():
    forbidden = {"multiprocessing", "uvloop", "signal", "prometheus_client"}
    ring_dir = Path(__file__).resolve().parents[3] / "daemon" / "ring"
    for source in ring_dir.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & forbidden, f"{source.name} imports {names & forbidden}"
