"""send()'s hot path in C against its pure-Python twins, on the same inputs.

``kpd.appender.AppenderPython`` (the appender: partition, column appends, future),
``kpd.future.RecordFuturePython`` (the record future) and the pure plain-section encoder are
the specification; ``kpd._accel``'s Appender, RecordFuture and plain_section must give equal
partitions, byte-identical frames, the same key memo and sticky runs, futures that behave the
same (results, errors, timeouts, callbacks, await), and leave no reference behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import struct
import sys
import threading
import uuid

import pytest

import kpd.protocol.records as records_module
from kpd.common import ClientSettings, Completions
from kpd.errors import CONNECTION_LOST, DeliveryError, RecordMetadata
from kpd.future import RecordFuturePython, refused
from kpd.partitioner import KEY_MEMO_SIZE
from kpd.produce_frame import ENDED, REPORTED, ProduceFrame
from kpd.protocol import (
    FrameDecoder,
    KpdErrorCode,
    Persistence,
    ReportRun,
    Role,
    Status,
    Welcome,
)
from kpd.protocol.records import encode_section
from kpd.session import AwaitingMetadata, ProducerSession
from tests.accel import compiled_client, use_send_path
from tests.waiting import wait_for

PARTITIONS = 12


class _Hub:
    """A sync hub whose wait() returns at once (the record is re-checked by the caller)."""

    lock = threading.Lock()

    def wait(self, ready, timeout):
        pass

    def waiter(self, frame):
        future = asyncio.get_running_loop().create_future()
        frame.waiters = [*(frame.waiters or ()), future]
        return future


def _session(seed: int, batch_bytes: int = 4096) -> ProducerSession:
    settings = ClientSettings(batch_bytes=batch_bytes)
    welcome = Welcome(2, 1 << 20, 0, "test")
    session = ProducerSession(
        settings, welcome, FrameDecoder(Role.CLIENT), lambda: 0.0, _Hub(), random.Random(seed)
    )
    return session


def _know_partitions(session: ProducerSession, topic: str) -> None:
    """What a METADATA_RESPONSE does for ``topic`` (TopicTable.on_response)."""
    session.watch(topic)
    session.take_output()
    entry = session._topics.entries[topic]
    entry.placement = session._topics.partitioner.topic(topic, PARTITIONS)
    entry.key_partitions = entry.placement.keys
    entry.partitions = PARTITIONS


def _records(seed: int, count: int) -> list[tuple]:
    """Every shape send() takes: keys cycling and unique, keyless, explicit partitions,
    bytes-like keys, timestamps and headers, a bad partition, an unknown topic."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        shape = rng.randrange(100)
        value = b"v" * rng.randrange(0, 300) if shape % 17 else None
        if shape < 40:
            key = b"key-%04d" % rng.randrange(50)
        elif shape < 60:
            key = str(uuid.UUID(int=rng.getrandbits(128))).encode()
        elif shape < 80:
            key = None
        elif shape < 85:
            key = bytearray(b"ba-%d" % i)  # bytes-like: the general path converts it
        else:
            key = b"k%d" % i
        partition = rng.randrange(PARTITIONS) if shape in (85, 86, 87) else None
        if shape == 88:
            partition = -3  # refused: ValueError
        timestamp = 1_700_000_000_000 + i if shape in (89, 90) else None
        headers = [("h", b"x")] if shape == 91 else None
        topic = "other" if shape == 92 else "t"  # keyed: waits for a count (AwaitingMetadata)
        out.append((topic, key, value, partition, timestamp, headers))
    return out


def _drive(implementation: str, monkeypatch, seed: int, count: int) -> tuple:
    use_send_path(monkeypatch, implementation)
    session = _session(seed)
    _know_partitions(session, "t")
    outcomes = []
    for topic, key, value, partition, timestamp, headers in _records(seed, count):
        try:
            future = session.add(topic, key, value, partition, timestamp, headers)
        except (ValueError, TypeError, AwaitingMetadata) as exc:
            outcomes.append(type(exc).__name__)
            continue
        outcomes.append((type(future).__name__, future._frame.partition, future._index))
    session.seal_all()
    frames = [out.data for out in session.take_output() if out.buffered]
    placement = session._topics.entries["t"].placement
    return outcomes, frames, dict(placement.keys), (placement.sticky, placement.sticky_bytes)


def test_the_c_appender_places_and_frames_every_record_as_the_python_one(monkeypatch):
    for seed in range(4):
        c = _drive("C", monkeypatch, seed, 3000)
        pure = _drive("pure Python", monkeypatch, seed, 3000)
        c_outcomes = [o if isinstance(o, str) else o[1:] for o in c[0]]
        pure_outcomes = [o if isinstance(o, str) else o[1:] for o in pure[0]]
        assert c_outcomes == pure_outcomes  # partitions chosen, index in frame, errors
        assert {o[0] for o in c[0] if not isinstance(o, str)} == {"RecordFuture"}
        assert {o[0] for o in pure[0] if not isinstance(o, str)} == {"RecordFuturePython"}
        assert c[1] == pure[1]  # the frames, byte for byte
        assert c[2] == pure[2]  # the key memo
        assert c[3] == pure[3]  # the keyless sticky run
        assert len(c[1]) > 20  # frames were cut and sealed along the way


class _Link:
    connected = True


class _Gated:
    """A session behind ``Appender.send``'s gate, as the sync Producer wires it; the general
    path notes its calls and adds under the lock, as Producer.send does."""

    def __init__(self, implementation: str, monkeypatch, seed: int, limit: int = 1 << 30):
        use_send_path(monkeypatch, implementation)
        self.session = _session(seed)
        _know_partitions(self.session, "t")
        self.lock = threading.Lock()
        self.link = _Link()
        self.general_calls: list[tuple] = []
        self.woken = 0
        self.send = self.session.gated_send(self.lock, self.link, limit, self._general, self._woke)

    def _woke(self):
        assert self.lock.locked()
        self.session.wake = False
        self.woken += 1

    def _general(self, topic, value, key, partition, timestamp, headers):
        self.general_calls.append((topic, value, key, partition, timestamp, headers))
        with self.lock:
            try:
                return self.session.add(topic, key, value, partition, timestamp, headers)
            finally:
                self.session.wake = False


def _drive_gated(implementation: str, monkeypatch, seed: int, count: int) -> tuple:
    gated = _Gated(implementation, monkeypatch, seed, limit=20_000)
    outcomes = []
    for i, (topic, key, value, partition, timestamp, headers) in enumerate(_records(seed, count)):
        gated.link.connected = i % 97 != 5  # now and then the connection is down
        gated.session.taking = i % 89 != 7  # ... or the session refuses
        if i % 83 == 3:
            gated.session.seal_all()  # the I/O thread took the frames: buffered_bytes grows
        if i % 61 == 9:
            gated.session.buffered_bytes = 0  # ... and wrote them
        try:
            if i % 2:
                future = gated.send(topic, value, key, partition, timestamp, headers)
            else:
                future = gated.send(topic, value, key=key, partition=partition,
                                    timestamp_ms=timestamp, headers=headers)  # fmt: skip
        except (ValueError, TypeError, AwaitingMetadata) as exc:
            outcomes.append(type(exc).__name__)
            continue
        finally:
            assert not gated.lock.locked()
        outcomes.append((future._frame.partition, future._index))
    gated.session.seal_all()
    frames = [out.data for out in gated.session.take_output() if out.buffered]
    return outcomes, frames, gated.general_calls, gated.woken


def test_the_gated_send_in_c_takes_and_hands_on_every_record_as_the_python_one(monkeypatch):
    for seed in range(3):
        c = _drive_gated("C", monkeypatch, seed, 3000)
        pure = _drive_gated("pure Python", monkeypatch, seed, 3000)
        assert c[0] == pure[0]  # partitions, indexes in frames, errors
        assert c[1] == pure[1]  # the frames, byte for byte
        assert c[2] == pure[2]  # which records went to the general path, and how
        assert c[3] == pure[3]  # how often a frame opened in the one call raised wake
        assert 0 < len(c[2]) < 3000 // 2  # most took the one call, some the general path
        assert c[3] > 0


@pytest.mark.parametrize("implementation", ["C", "pure Python"])
def test_the_gated_send_hands_a_record_to_the_general_path_when_a_check_fails(
    implementation, monkeypatch
):
    gated = _Gated(implementation, monkeypatch, 0, limit=100)
    gated.send("t", b"opens the frame", key=b"k")  # opened by the one call: wake, woke()
    gated.send("t", b"plain", key=b"k")
    assert (gated.general_calls, gated.woken) == ([], 1)  # both appended in the one call
    with gated.lock:  # held by the I/O thread: not waited for here
        gated.general_calls.clear()
        threading.Thread(target=gated.send, args=("t", b"held", b"k")).start()
        wait_for(lambda: gated.general_calls, 5.0, "the general path")
    assert gated.general_calls == [("t", b"held", b"k", None, None, None)]
    for owner, name, spoiled, mended in (
        (gated.link, "connected", False, True),
        (gated.session, "taking", False, True),
        (gated.session, "buffered_bytes", 101, 0),
    ):
        gated.general_calls.clear()
        setattr(owner, name, spoiled)
        gated.send("t", b"checked", key=b"k")
        setattr(owner, name, mended)
        assert gated.general_calls == [("t", b"checked", b"k", None, None, None)]
    gated.general_calls.clear()
    gated.send("t", b"stamped", key=b"k", timestamp_ms=5)
    assert gated.general_calls == [("t", b"stamped", b"k", None, 5, None)]
    with pytest.raises(TypeError):
        gated.send("t")
    assert not gated.lock.locked()


def test_keyed_partitions_are_javas_murmur2_in_both_twins(monkeypatch):
    # Kafka's published vectors (tests/unit/client/test_murmur2.py) pin murmur2 itself; here
    # the appender's choice must be toPositive(murmur2) % count for fresh and memoised keys.
    from kpd.murmur2 import murmur2_python

    keys = [b"", b"a", b"21", b"key-0001", str(uuid.UUID(int=7)).encode(), b"\xff" * 37]
    for implementation in ("C", "pure Python"):
        use_send_path(monkeypatch, implementation)
        session = _session(0)
        _know_partitions(session, "t")
        session.add("t", None, b"x")  # opens nothing keyed; the frames below open on demand
        for _ in range(2):  # the first round hashes, the second reads the memo
            for key in keys:
                future = session.add("t", key, b"v")
                expected = (murmur2_python(key) & 0x7FFFFFFF) % PARTITIONS
                assert future._frame.partition == expected, (implementation, key)


def test_the_key_memo_is_cleared_at_its_limit_in_both_twins(monkeypatch):
    for implementation in ("C", "pure Python"):
        use_send_path(monkeypatch, implementation)
        session = _session(0, batch_bytes=1 << 30)
        _know_partitions(session, "t")
        memo = session._topics.entries["t"].placement.keys
        for i in range(KEY_MEMO_SIZE + 5):
            session.add("t", b"unique-%d" % i, None)
        assert len(memo) == 5, implementation  # full at KEY_MEMO_SIZE: cleared, then 5 more


def test_plain_section_in_c_writes_the_protocol_layout_field_by_field():
    keys, values = [b"k1", None, b""], [b"v1", b"v22", None]
    expected = b"".join(
        (
            b"\x00",  # layout 0: no timestamps, no headers
            struct.pack(">iii", 2, -1, 0),  # key_lens (record 1: null key)
            struct.pack(">iii", 2, 3, -1),  # value_lens (record 2: null value)
            b"k1v1" + b"v22",  # data: key 0, value 0, value 1
        )
    )
    assert compiled_client().plain_section(keys, values) == expected


def test_plain_section_in_c_equals_the_pure_encoder(monkeypatch):
    rng = random.Random(3)
    for _ in range(200):
        count = rng.randrange(1, 40)

        def item():
            return (
                None
                if rng.random() < 0.2
                else bytes(rng.randrange(256) for _ in range(rng.randrange(20)))
            )

        keys = [item() for _ in range(count)]
        values = [item() for _ in range(count)]
        c = compiled_client().plain_section(keys, values)
        monkeypatch.setattr(records_module, "native", None)
        assert encode_section(keys, values) == c
        monkeypatch.undo()
    # What the C encoder leaves to the pure one: bytes-like items, columns not lists.
    assert compiled_client().plain_section([bytearray(b"k")], [b"v"]) is None
    assert compiled_client().plain_section((b"k",), [b"v"]) is None
    with pytest.raises(ValueError, match="1\\+ records"):
        compiled_client().plain_section([], [])


# --- the record future ----------------------------------------------------------------------

FUTURES = pytest.mark.parametrize(
    "future_type",
    [pytest.param("C", id="C"), pytest.param("pure Python", id="pure Python")],
)


def _future_type(name: str):
    return compiled_client().RecordFuture if name == "C" else RecordFuturePython


def _sealed_frame(count: int) -> ProduceFrame:
    frame = ProduceFrame("t", 4, 0, 0.0, _Hub())
    frame.keys.extend([b"k"] * count)
    frame.values.extend([b"v"] * count)
    frame.seal(b"\x00\x01t", 100)
    return frame


def _delivered(lo: int, hi: int) -> ReportRun:
    return ReportRun(100 + lo, hi - lo, Status.DELIVERED, 4, 5000, 77)


def _failed(lo: int, hi: int) -> ReportRun:
    return ReportRun(
        100 + lo,
        hi - lo,
        Status.FAILED,
        error=KpdErrorCode.DELIVERY_TIMEOUT,
        persistence=Persistence.POSSIBLY_PERSISTED,
        message="slow",
    )


@FUTURES
def test_the_future_is_not_tracked_by_the_cycle_collector_in_c(future_type):
    future = _future_type(future_type)(_sealed_frame(1), 0)
    if future_type == "C":
        assert not gc.is_tracked(future)
    assert not future.cancel() and not future.cancelled()


@FUTURES
def test_futures_give_metadata_errors_and_timeouts_alike(future_type):
    make = _future_type(future_type)
    frame = _sealed_frame(4)
    futures = [make(frame, i) for i in range(4)]
    assert [f.done() for f in futures] == [False] * 4
    assert repr(futures[0]) == "<RecordFuture pending>"
    with pytest.raises(TimeoutError):
        futures[0].result(0.01)
    with pytest.raises(TimeoutError):
        futures[0].exception(timeout=0)
    done = Completions()
    frame.settle(0, 2, REPORTED, _delivered(0, 2), done)
    frame.settle(2, 3, REPORTED, _failed(2, 3), done)
    assert [f.done() for f in futures] == [True, True, True, False]
    assert repr(futures[0]) == "<RecordFuture done>"
    assert futures[1].result() == RecordMetadata("t", 4, 5001, 77)
    assert futures[1].exception() is None
    error = futures[2].exception()
    assert isinstance(error, DeliveryError) and error.code == KpdErrorCode.DELIVERY_TIMEOUT
    with pytest.raises(DeliveryError) as raised:
        futures[2].result(timeout=1)
    assert raised.value is error  # one error object per record
    assert not frame.all_delivered
    frame.settle(3, 4, ENDED, (CONNECTION_LOST, Persistence.NOT_PERSISTED, "x"), done)
    assert futures[3].exception().persistence == Persistence.NOT_PERSISTED
    assert not frame.all_delivered  # some failed: every future asks its own run


@FUTURES
def test_a_frame_all_delivered_answers_done_and_exception_at_once(future_type):
    make = _future_type(future_type)
    frame = _sealed_frame(3)
    futures = [make(frame, i) for i in range(3)]
    frame.settle(0, 3, REPORTED, _delivered(0, 3), Completions())
    assert frame.all_delivered
    assert all(f.done() for f in futures)
    assert [f.exception(0) for f in futures] == [None] * 3
    assert [f.result(0).offset for f in futures] == [5000, 5001, 5002]


@FUTURES
def test_done_callbacks_run_at_once_when_settled_and_later_when_not(future_type):
    make = _future_type(future_type)
    frame = _sealed_frame(2)
    seen = []
    pending, settled = make(frame, 0), make(frame, 1)
    done = Completions()
    frame.settle(1, 2, REPORTED, _delivered(1, 2), done)
    settled.add_done_callback(seen.append)
    assert seen == [settled]
    pending.add_done_callback(seen.append)
    pending.add_done_callback(lambda f: 1 / 0)  # logged, never raised
    assert seen == [settled]
    done = Completions()
    frame.settle(0, 1, REPORTED, _delivered(0, 1), done)
    assert [future for _, future in done.pairs()] == [pending, pending]
    for fn, future in done.pairs():
        from kpd.future import run_callback

        run_callback(fn, future)
    assert seen == [settled, pending]


def _noted(seen: list, tag: str):
    return lambda future: seen.append((tag, future))


@FUTURES
def test_a_records_callbacks_run_in_the_order_added_whichever_run_settles_it(future_type):
    make = _future_type(future_type)
    frame = _sealed_frame(6)
    futures = [make(frame, i) for i in range(6)]
    seen = []
    for i in (4, 1, 4, 2, 4):
        futures[i].add_done_callback(_noted(seen, f"{i}-{len(seen)}"))
        seen.append(None)
    seen.clear()
    for lo, hi in ((3, 6), (0, 3)):
        done = Completions()
        frame.settle(lo, hi, REPORTED, _delivered(lo, hi), done)
        for fn, future in done.pairs():
            fn(future)
    assert seen == [("4-0", futures[4]), ("4-2", futures[4]), ("4-4", futures[4]),
                    ("1-1", futures[1]), ("2-3", futures[2])]  # fmt: skip
    assert frame.callbacks == {} and frame.more_callbacks == []


@FUTURES
def test_adding_a_done_callback_allocates_nothing_the_cycle_collector_tracks(future_type):
    make = _future_type(future_type)
    frame = _sealed_frame(5000)
    futures = [make(frame, i) for i in range(5000)]
    fn = _noted([], "x")
    futures[0].add_done_callback(fn)  # the frame's two dicts, once
    gc.disable()
    try:
        before = gc.get_count()[0]
        for future in futures[1:]:
            future.add_done_callback(fn)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 50  # not one or two per record (a dict resize may allocate a little)


@FUTURES
def test_a_refused_record_fails_at_once(future_type, monkeypatch):
    use_send_path(monkeypatch, future_type)
    error = DeliveryError(KpdErrorCode.BUFFER_FULL, 0, Persistence.NOT_PERSISTED, "full")
    future = refused(error)
    assert type(future) is _future_type(future_type)
    assert future.done() and future.exception() is error
    with pytest.raises(DeliveryError):
        future.result()


@FUTURES
def test_futures_are_awaitable_alike(future_type):
    make = _future_type(future_type)

    async def main():
        frame = _sealed_frame(2)
        first, second = make(frame, 0), make(frame, 1)
        task = asyncio.ensure_future(_await(first))
        await asyncio.sleep(0)
        assert not task.done()
        frame.settle(0, 2, REPORTED, _delivered(0, 2), Completions())
        for waiter in frame.waiters or ():
            waiter.set_result(None)
        assert (await task).offset == 5000
        assert (await second).offset == 5001

    asyncio.run(main())


async def _await(future):
    return await future


# --- no leaks -------------------------------------------------------------------------------


def test_the_c_twins_leave_no_reference_behind(monkeypatch):
    use_send_path(monkeypatch, "C")
    key, value, topic = b"leak-check-key", b"leak-check-value", "t"
    session = _session(1, batch_bytes=1 << 30)
    _know_partitions(session, topic)
    session.add(topic, key, value)  # opens the frame: from now on every add is the C line
    frame = session._topics.entries[topic].open_frames[
        next(iter(session._topics.entries[topic].open_frames))
    ]
    before = (sys.getrefcount(key), sys.getrefcount(value), sys.getrefcount(frame))
    futures = [session.add(topic, key, value) for _ in range(1000)]
    assert sys.getrefcount(frame) == before[2] + 1000  # one per future, nothing else
    # Each record is in the frame's columns once.
    assert sys.getrefcount(key) == before[0] + 1000
    for future in futures:
        future.done()
        future.add_done_callback(lambda f: None)
    frame.callbacks = frame.callback_futures = None  # what settling does with them
    del futures, future
    assert (sys.getrefcount(value) - 1000, sys.getrefcount(frame)) == (before[1], before[2])
    # The general path's arguments are handed on, not kept: refused records leave nothing.
    for _ in range(100):
        with contextlib.suppress(ValueError):
            session.add(topic, key, value, -1)
    assert sys.getrefcount(key) == before[0] + 1000


def test_a_loop_of_sends_and_settlements_does_not_grow_memory(monkeypatch):
    import tracemalloc

    use_send_path(monkeypatch, "C")

    def one_round():
        session = _session(2, batch_bytes=8192)
        _know_partitions(session, "t")
        futures = [session.add("t", b"k%d" % (i % 40), b"v" * 50) for i in range(2000)]
        session.seal_all()
        for out in session.take_output():
            if out.frame is not None:
                frame = out.frame
                frame.settle(0, frame.count, REPORTED, _delivered(0, frame.count), Completions())
        assert all(f.exception(0) is None for f in futures)

    one_round()
    tracemalloc.start()
    try:
        one_round()
        first, _ = tracemalloc.get_traced_memory()
        for _ in range(5):
            one_round()
        gc.collect()
        last, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last - first < 64 * 1024, (first, last)


def test_grouping_a_bulk_by_partition_in_c_equals_the_python_loop():
    from kpd.grouping import group_by_partition_python

    rng = random.Random(5)
    for _ in range(50):
        count = rng.randrange(1, 20)
        size = rng.randrange(0, 300)
        keys = [b"k%d" % i for i in range(size)]
        values = [None if i % 9 == 0 else b"v%d" % i for i in range(size)]
        parts = [rng.randrange(count) for _ in range(size)]
        expected = group_by_partition_python(keys, values, parts, count)
        assert compiled_client().group_by_partition(keys, values, parts, count) == expected
    with pytest.raises(ValueError, match="partition 3 of 3"):
        compiled_client().group_by_partition([b"k"], [b"v"], [3], 3)
    with pytest.raises(ValueError, match="lengths differ"):
        compiled_client().group_by_partition([b"k"], [], [0], 3)
