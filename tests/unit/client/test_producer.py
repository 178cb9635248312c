"""The Python client (daemon.client) against a fake kpd written here with the same codec.

``FakeKpd`` is an asyncio UNIX server on its own thread: it speaks HELLO/WELCOME, answers
METADATA from a partition table, checks that PRODUCE sequence numbers are continuous, records
every frame it decodes, and answers with report runs chosen by the test (DELIVERED by default,
FAILED, held until released, or none). Tests wait for conditions with deadlines, never sleep.
Expected partitions come from Kafka's published murmur2 vectors, expected bytes from
struct.pack — never from the client under test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from kpd import (
    CONNECTION_LOST,
    AsyncProducer,
    BytesSerializer,
    DeliveryError,
    IntegerSerializer,
    JsonSerializer,
    KpdConnectionError,
    KpdErrorCode,
    Persistence,
    Producer,
    RecordMetadata,
    StringSerializer,
    TopicError,
)
from kpd.common import ClientSettings
from kpd.protocol import (
    MIN_MAX_FRAME_BYTES,
    PROTOCOL_VERSIONS,
    AckLevel,
    FatalProtocolError,
    FrameDecoder,
    FrameType,
    ReportRun,
    Role,
    Status,
    TopicMetadata,
    Welcome,
    choose_version,
    decode_goodbye,
    decode_hello,
    decode_metadata_request,
    decode_produce_header,
    encode_error,
    encode_frame,
    encode_goodbye,
    encode_metadata_response,
    encode_reports,
    encode_welcome,
    iter_records,
)
from kpd.protocol.produce import encode_produce_frame
from kpd.session import ProducerSession

DEADLINE = 10.0  # seconds any wait may take before the test fails

# Kafka's UtilsTest.testMurmur2 vectors: key -> Java Utils.murmur2(key).
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


# --- the fake kpd ---------------------------------------------------------------------------


@dataclass
class Received:
    """One PRODUCE frame as the fake server decoded it."""

    base_seq: int
    count: int
    partition: int
    ack: AckLevel
    topic: str
    records: list  # (key, value, timestamp, headers) with bytes copied out
    size: int  # frame bytes, length prefix included


@dataclass
class _Conn:
    writer: asyncio.StreamWriter
    default_ack: AckLevel = AckLevel.KAFKA
    next_seq: int = 0
    held: list[ReportRun] = field(default_factory=list)


class FakeKpd:
    """A kpd stand-in. ``respond(conn, frame) -> runs`` decides the reports of each frame."""

    def __init__(self, path: str, partitions: dict[str, int] | None = None) -> None:
        self.path = path
        self.partitions = dict(partitions if partitions is not None else {"t": 4})
        self.max_frame_bytes = MIN_MAX_FRAME_BYTES
        self.refuse: tuple[KpdErrorCode, str] | None = None  # answer HELLO with ERROR
        self.answer_goodbye = True  # False: note the client's GOODBYE, never answer it
        self.respond: Callable[[_Conn, Received], list[ReportRun]] = self.deliver
        self.frames: list[Received] = []
        self.metadata_requests: list[tuple[str, ...]] = []
        self.metadata_answers: list[TopicMetadata] = []  # what it answered, in order
        self.topic_errors: dict[str, KpdErrorCode] = {}  # METADATA answers other than a count
        self.hold_metadata = False  # keep METADATA answers until release_metadata()
        self._held_metadata: list = []
        self.goodbyes: list[int] = []
        self.violations: list[str] = []  # protocol errors the client made
        self.hellos: list = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._conns: list[_Conn] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeKpd:
        self._thread.start()
        self._server = self.call(asyncio.start_unix_server(self._serve, self.path))
        return self

    def __exit__(self, *exc_info) -> None:
        async def stop():
            self._server.close()
            for conn in self._conns:
                conn.writer.close()

        self.call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(DEADLINE)
        self._loop.close()

    # --- test-side helpers (any thread) -----------------------------------------------------

    def call(self, coro_or_fn):
        """Run a coroutine or a plain function on the server's loop; return its result."""
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self._loop).result(DEADLINE)
        done: Future = Future()

        def run():
            try:
                done.set_result(coro_or_fn())
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(DEADLINE)

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self._changed:
            assert self._changed.wait_for(predicate, DEADLINE), "condition not met in time"

    def records(self) -> list:
        return [record for frame in self.frames for record in frame.records]

    def release(self, merge: bool = False) -> None:
        """Send the reports held by ``hold``; ``merge`` joins consecutive DELIVERED runs."""

        def send():
            for conn in self._conns:
                runs, conn.held = conn.held, []
                if merge:
                    runs = _merge(runs)
                if runs:
                    conn.writer.write(encode_reports(runs))

        self.call(send)

    def release_metadata(self) -> None:
        """Send the METADATA answers held by ``hold_metadata`` and stop holding them."""

        def send():
            self.hold_metadata = False
            held, self._held_metadata = self._held_metadata, []
            for conn, answer in held:
                conn.writer.write(answer)

        self.call(send)

    def send_to_clients(self, frame: bytes, close: bool = False) -> None:
        def send():
            for conn in self._conns:
                conn.writer.write(frame)
                if close:
                    conn.writer.close()

        self.call(send)

    def drop_connections(self) -> None:
        def drop():
            for conn in self._conns:
                conn.writer.transport.abort()

        self.call(drop)

    def stop_listening(self) -> None:
        """kpd is gone: no socket file, every connection cut."""

        async def stop():
            self._server.close()
            for conn in self._conns:
                conn.writer.transport.abort()
            await self._server.wait_closed()
            if os.path.exists(self.path):  # uvloop removes it on close, asyncio does not
                os.unlink(self.path)

        self.call(stop())

    def listen_again(self) -> None:
        self._server = self.call(asyncio.start_unix_server(self._serve, self.path))

    # --- policies (server thread) -----------------------------------------------------------

    def deliver(self, conn: _Conn, frame: Received) -> list[ReportRun]:
        """Like kpd with acks=all: DELIVERED with consecutive offsets per partition."""
        ack = conn.default_ack if frame.ack == AckLevel.CONNECTION_DEFAULT else frame.ack
        if ack == AckLevel.NONE:
            return []
        partition = frame.partition if frame.partition >= 0 else 0
        if ack == AckLevel.ACCEPTED:
            return [ReportRun(frame.base_seq, frame.count, Status.ACCEPTED, partition)]
        base = self._offsets.get((frame.topic, partition), 0)
        self._offsets[frame.topic, partition] = base + frame.count
        return [ReportRun(frame.base_seq, frame.count, Status.DELIVERED, partition, base)]

    def hold(self, conn: _Conn, frame: Received) -> list[ReportRun]:
        """Keep the reports until ``release()`` or the client's GOODBYE."""
        conn.held.extend(self.deliver(conn, frame))
        return []

    def silent(self, conn: _Conn, frame: Received) -> list[ReportRun]:
        return []

    # --- the protocol (server thread) -------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.append(conn)
        decoder = FrameDecoder(Role.SERVER, self.max_frame_bytes)
        try:
            while data := await reader.read(1 << 16):
                try:
                    frames = decoder.feed(data)
                except FatalProtocolError as exc:
                    self._note(violation=f"{exc.code.name}: {exc.message}")
                    writer.write(encode_error(exc.code, exc.message))
                    break
                for frame in frames:
                    if not self._handle(conn, frame):
                        await writer.drain()
                        writer.close()
                        return
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _handle(self, conn: _Conn, frame) -> bool:
        kind, payload = frame.type, frame.payload
        if kind is FrameType.HELLO:
            return self._on_hello(conn, payload)
        if kind is FrameType.PRODUCE:
            return self._on_produce(conn, payload, len(payload) + 5)
        if kind is FrameType.METADATA_REQUEST:
            request = decode_metadata_request(payload)
            entries = [self._topic_metadata(topic) for topic in request.topics]
            answer = encode_metadata_response(request.request_id, entries)
            if self.hold_metadata:
                self._held_metadata.append((conn, answer))
            else:
                conn.writer.write(answer)
            self._note(metadata=request.topics, answers=entries)
            return True
        if kind is FrameType.GOODBYE:
            next_seq = decode_goodbye(payload)
            # Noted before answering: a client that got GOODBYE may check goodbyes at once.
            self._note(goodbye=next_seq)
            if not self.answer_goodbye:
                return True
            if conn.held:
                conn.writer.write(encode_reports(conn.held))
                conn.held = []
            conn.writer.write(encode_goodbye(conn.next_seq))
            return False
        return True  # PING: not used by the client

    def _on_hello(self, conn: _Conn, payload) -> bool:
        hello = decode_hello(payload)
        self._note(hello=hello)
        if self.refuse is not None:
            conn.writer.write(encode_error(*self.refuse))
            return False
        conn.default_ack = hello.default_ack
        version = choose_version(hello, PROTOCOL_VERSIONS)
        conn.writer.write(encode_welcome(version, self.max_frame_bytes, "fake-kpd"))
        return True

    def _on_produce(self, conn: _Conn, payload, size: int) -> bool:
        header = decode_produce_header(payload)
        if header.base_seq != conn.next_seq:
            message = f"base_seq {header.base_seq}, expected {conn.next_seq}"
            self._note(violation=message)
            conn.writer.write(encode_error(KpdErrorCode.SEQUENCE_MISMATCH, message))
            return False
        conn.next_seq += header.count
        records = [
            (_copy(r.key), _copy(r.value), r.timestamp, tuple((k, _copy(v)) for k, v in r.headers))
            for r in iter_records(header.records, header.count)
        ]
        frame = Received(
            header.base_seq,
            header.count,
            header.partition,
            header.ack,
            header.topic,
            records,
            size,
        )
        runs = self.respond(conn, frame)
        self._note(frame=frame)
        if runs:
            conn.writer.write(encode_reports(runs))
        return True

    def _topic_metadata(self, topic: str) -> TopicMetadata:
        if topic in self.topic_errors:
            return TopicMetadata(topic, self.topic_errors[topic], -1)
        count = self.partitions.get(topic)
        if count is None:
            return TopicMetadata(topic, KpdErrorCode.UNKNOWN_TOPIC, -1)
        return TopicMetadata(topic, KpdErrorCode.NONE, count)

    def _note(
        self, frame=None, metadata=None, goodbye=None, violation=None, hello=None, answers=()
    ) -> None:
        with self._changed:
            self.metadata_answers.extend(answers)
            if frame is not None:
                self.frames.append(frame)
            if metadata is not None:
                self.metadata_requests.append(metadata)
            if goodbye is not None:
                self.goodbyes.append(goodbye)
            if violation is not None:
                self.violations.append(violation)
            if hello is not None:
                self.hellos.append(hello)
            self._changed.notify_all()


def _copy(view):
    return None if view is None else bytes(view)


def _merge(runs: list[ReportRun]) -> list[ReportRun]:
    """Join runs of consecutive records with consecutive offsets, as kpd may (one Kafka batch)."""
    merged: list[ReportRun] = []
    for run in sorted(runs, key=lambda r: r.first_seq):
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.status == run.status == Status.DELIVERED
            and last.partition == run.partition
            and last.first_seq + last.count == run.first_seq
            and last.base_offset + last.count == run.base_offset
        ):
            merged[-1] = last._replace(count=last.count + run.count)
        else:
            merged.append(run)
    return merged


def _failing(**fields) -> Callable:
    def respond(conn: _Conn, frame: Received) -> list[ReportRun]:
        return [ReportRun(frame.base_seq, frame.count, Status.FAILED, **fields)]

    return respond


@pytest.fixture
def kpd(tmp_path):
    with FakeKpd(str(tmp_path / "kpd.sock")) as server:
        yield server


def _results(futures, timeout: float = DEADLINE) -> list:
    return [f.result(timeout) for f in futures]


def _error(future) -> DeliveryError:
    exc = future.exception(DEADLINE)
    assert isinstance(exc, DeliveryError), exc
    return exc


def _java_partition(key: bytes, partitions: int) -> int:
    # Kafka BuiltInPartitioner.partitionForKey: toPositive(murmur2(key)) % numPartitions.
    return (KAFKA_MURMUR2[key] & 0x7FFFFFFF) % partitions


# --- delivery and results -------------------------------------------------------------------


def test_futures_resolve_with_consecutive_offsets_of_their_partition(kpd):
    with Producer(kpd.path) as producer:
        assert producer.partitions_for("t") == 4
        futures = [producer.send("t", b"v%d" % i, partition=2) for i in range(5)]
        producer.flush()
        assert all(f.done() for f in futures)
        assert _results(futures) == [RecordMetadata("t", 2, i, -1) for i in range(5)]


def test_acks_accepted_resolves_with_the_partition_and_no_offset(kpd):
    with Producer(kpd.path, acks="accepted") as producer:
        future = producer.send("t", b"v", partition=1)
        assert future.result(DEADLINE) == RecordMetadata("t", 1, -1, -1)
    assert kpd.hellos[0].default_ack == AckLevel.ACCEPTED


def test_acks_none_resolves_once_written_without_any_report(kpd):
    kpd.respond = kpd.silent
    with Producer(kpd.path, acks="none") as producer:
        futures = [producer.send("t", b"v", partition=3) for _ in range(3)]
        producer.flush()
        assert _results(futures) == [RecordMetadata("t", 3, -1, -1)] * 3
    assert kpd.hellos[0].default_ack == AckLevel.NONE


def test_timestamp_and_headers_reach_kpd_and_the_metadata(kpd):
    with Producer(kpd.path) as producer:
        future = producer.send(
            "t",
            b"v",
            key=b"k",
            partition=0,
            timestamp_ms=1_700_000_000_000,
            headers=[("h", b"1"), ("n", None)],
        )
        assert future.result(DEADLINE).timestamp == 1_700_000_000_000
        dict_headers = producer.send("t", b"w", partition=0, headers={"a": b"b"})
        dict_headers.result(DEADLINE)
    assert kpd.records() == [
        (b"k", b"v", 1_700_000_000_000, (("h", b"1"), ("n", None))),
        (None, b"w", None, (("a", b"b"),)),
    ]


def test_a_report_run_spanning_two_frames_settles_both(kpd):
    kpd.respond = kpd.hold
    with Producer(kpd.path, batch_bytes=1) as producer:  # every record is its own frame
        futures = [producer.send("t", b"v", partition=0) for _ in range(3)]
        kpd.wait_for(lambda: len(kpd.frames) == 3)
        kpd.release(merge=True)
        assert [m.offset for m in _results(futures)] == [0, 1, 2]


# --- failures -------------------------------------------------------------------------------


def test_failed_run_raises_delivery_error_with_codes_and_persistence(kpd):
    kpd.respond = _failing(
        error=KpdErrorCode.KAFKA_ERROR,
        kafka_error=10,  # MESSAGE_TOO_LARGE
        persistence=Persistence.NOT_PERSISTED,
        message="too big for the broker",
    )
    with Producer(kpd.path) as producer:
        error = _error(producer.send("t", b"v", partition=0))
    assert (error.code, error.kafka_error, error.persistence) == (
        KpdErrorCode.KAFKA_ERROR,
        10,
        Persistence.NOT_PERSISTED,
    )
    assert error.message == "too big for the broker"
    assert not error.retriable


def test_delivery_timeout_is_retriable_and_may_be_persisted(kpd):
    kpd.respond = _failing(
        error=KpdErrorCode.DELIVERY_TIMEOUT, persistence=Persistence.POSSIBLY_PERSISTED
    )
    with Producer(kpd.path) as producer:
        error = _error(producer.send("t", b"v", partition=0))
    assert error.retriable
    assert error.persistence is Persistence.POSSIBLY_PERSISTED


def test_unknown_error_code_from_a_newer_kpd_is_a_non_retriable_failure(kpd):
    kpd.respond = _failing(error=59, persistence=Persistence.NOT_PERSISTED)
    with Producer(kpd.path) as producer:
        error = _error(producer.send("t", b"v", partition=0))
    assert error.code == 59
    assert not error.retriable


def test_connection_loss_fails_written_records_and_sends_the_rest_after_reconnecting(kpd):
    kpd.respond = kpd.silent
    producer = Producer(kpd.path, linger_ms=60_000, batch_bytes=1000)
    sent = producer.send("t", b"x" * 1000, partition=0)  # fills a frame: written at once
    kpd.wait_for(lambda: len(kpd.frames) == 1)
    lingering = producer.send("t", b"small", partition=1)  # waits out its 60 s linger
    kpd.respond = kpd.deliver
    kpd.drop_connections()
    assert _error(sent).persistence is Persistence.POSSIBLY_PERSISTED
    assert _error(sent).code == CONNECTION_LOST
    assert _error(sent).retriable
    later = producer.send("t", b"after", partition=0)
    producer.flush(DEADLINE)
    assert lingering.result(0).partition == 1
    assert later.result(0).partition == 0
    producer.close()
    assert len(kpd.hellos) == 2
    # The new connection numbers from 0 again: the fake kpd checks it (no violations).
    assert kpd.violations == []
    assert [(f.base_seq, f.records[0][1]) for f in kpd.frames[1:]] == [(0, b"small"), (1, b"after")]


def test_error_frame_fails_outstanding_records_with_its_code(kpd):
    kpd.respond = kpd.silent
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        kpd.send_to_clients(encode_error(KpdErrorCode.SHUTTING_DOWN, "draining"), close=True)
        error = _error(future)
    assert error.code is KpdErrorCode.SHUTTING_DOWN
    assert error.retriable
    assert "draining" in error.message


def test_a_frame_a_draining_kpd_refused_is_sent_again_after_reconnecting(kpd):
    # Protocol section 9: while kpd drains for a restart it answers PRODUCE frames with a
    # FAILED run SHUTTING_DOWN / NOT_PERSISTED (whole frame, partition -1), then closes.
    kpd.respond = _failing(
        error=KpdErrorCode.SHUTTING_DOWN, persistence=Persistence.NOT_PERSISTED, message="bye"
    )
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"a", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        kpd.respond = kpd.deliver  # the restarted kpd
        kpd.send_to_clients(encode_error(KpdErrorCode.SHUTTING_DOWN, "drained"), close=True)
        assert future.result(DEADLINE).offset == 0
    assert [(f.base_seq, f.records[0][1]) for f in kpd.frames] == [(0, b"a"), (0, b"a")]
    assert len(kpd.hellos) == 2 and kpd.violations == []


def test_malformed_server_frame_ends_the_connection(kpd):
    kpd.respond = kpd.silent
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        kpd.send_to_clients(encode_frame(FrameType.PING, b"\0" * 8))  # servers never PING
        error = _error(future)
    assert error.code is KpdErrorCode.UNEXPECTED_FRAME
    assert error.persistence is Persistence.POSSIBLY_PERSISTED


def test_record_too_large_for_a_frame_fails_locally_and_is_never_sent(kpd):
    with Producer(kpd.path) as producer:
        big = producer.send("t", b"x" * MIN_MAX_FRAME_BYTES, partition=0)
        small = producer.send("t", b"ok", partition=0)
        assert _error(big).code is KpdErrorCode.RECORD_TOO_LARGE
        assert _error(big).persistence is Persistence.NOT_PERSISTED
        assert small.result(DEADLINE).offset == 0
    assert kpd.records() == [(None, b"ok", None, ())]


def test_handshake_refused_raises_kpd_connection_error(kpd):
    kpd.refuse = (KpdErrorCode.UNSUPPORTED_VERSION, "server speaks 2..2")
    with pytest.raises(KpdConnectionError) as caught:
        Producer(kpd.path)
    assert caught.value.code is KpdErrorCode.UNSUPPORTED_VERSION
    assert isinstance(caught.value, OSError)


def test_connecting_to_a_missing_socket_raises_oserror_naming_the_path(tmp_path):
    path = str(tmp_path / "absent.sock")
    with pytest.raises(FileNotFoundError) as caught:
        Producer(path)
    assert f"is kpd running? socket: {path}" in str(caught.value)


def test_a_socket_nobody_serves_is_refused_with_the_path(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a killed daemon's leftover: bound, never listening
    with pytest.raises(ConnectionRefusedError) as caught:
        Producer(path)
    stale.close()
    assert f"socket: {path}" in str(caught.value)


def test_records_survive_kpd_going_away_and_coming_back(kpd):
    with Producer(kpd.path, linger_ms=60_000) as producer:
        producer.send("t", b"before", partition=0)
        producer.flush(DEADLINE)
        queued = producer.send("t", b"queued", partition=0)  # lingers in an open batch
        kpd.stop_listening()
        # Blocks until kpd is back if the I/O thread noticed the outage already, else queues.
        with ThreadPoolExecutor(1) as pool:
            during = pool.submit(producer.send, "t", b"during", partition=0)
            kpd.listen_again()
            during = during.result(DEADLINE)
        producer.flush(DEADLINE)
        assert (queued.result(0).offset, during.result(0).offset) == (1, 2)
    assert [r[1] for r in kpd.records()] == [b"before", b"queued", b"during"]
    assert kpd.violations == []


def test_send_blocks_for_max_block_ms_while_kpd_is_down_then_fails_naming_the_socket(kpd):
    producer = Producer(kpd.path, linger_ms=60_000, max_block_ms=300)
    queued = producer.send("t", b"queued", partition=0)
    kpd.stop_listening()
    # Queued before the outage: fails once kpd stayed unreachable for max.block.ms.
    error = _error(queued)
    assert error.persistence is Persistence.NOT_PERSISTED
    assert f"is kpd running? socket: {kpd.path}" in error.message
    # Sent during the outage: send() blocks up to max.block.ms, then the future fails.
    error = _error(producer.send("t", b"later", partition=0))
    assert error.code == CONNECTION_LOST
    assert error.persistence is Persistence.NOT_PERSISTED
    assert "max.block.ms 300" in error.message and kpd.path in error.message
    assert "No such file or directory" in error.message
    producer.close(timeout=DEADLINE)


# --- partitioning ---------------------------------------------------------------------------


def test_keyed_records_go_to_the_java_murmur2_partition(kpd):
    kpd.partitions["t"] = 7
    with Producer(kpd.path) as producer:
        assert producer.partitions_for("t") == 7
        futures = {key: producer.send("t", b"v", key=key) for key in KAFKA_MURMUR2}
        producer.flush()
    for key, future in futures.items():
        assert future.result().partition == _java_partition(key, 7), key
    by_frame = {r[0]: frame.partition for frame in kpd.frames for r in frame.records}
    assert by_frame == {key: _java_partition(key, 7) for key in KAFKA_MURMUR2}


def test_explicit_partition_is_honoured_over_the_key(kpd):
    with Producer(kpd.path) as producer:
        producer.partitions_for("t")
        future = producer.send("t", b"v", key=b"21", partition=3)
        assert future.result(DEADLINE).partition == 3
    assert _java_partition(b"21", 4) != 3


def test_keyless_records_stick_to_one_partition_then_move_on(kpd):
    kpd.partitions["t"] = 5
    with Producer(kpd.path, batch_bytes=1000) as producer:
        producer.partitions_for("t")
        futures = [producer.send("t", b"x" * 100) for _ in range(40)]
        producer.flush()
    partitions = [f.result().partition for f in futures]
    # KIP-794: ~batch bytes (10 records of 100 bytes) on one partition, then another one.
    runs = [p for i, p in enumerate(partitions) if i == 0 or partitions[i - 1] != p]
    assert partitions[:10] == [partitions[0]] * 10
    assert len(runs) == 4
    assert all(a != b for a, b in itertools.pairwise(runs))


def test_the_first_keyed_record_waits_for_the_partition_count_and_leaves_partitioned(kpd):
    # No partitions_for(): the app sends at once, and kpd's METADATA answer is late.
    kpd.partitions["t"] = 7
    kpd.hold_metadata = True
    sent: Future = Future()
    with Producer(kpd.path) as producer:
        thread = threading.Thread(
            target=lambda: sent.set_result(producer.send("t", b"v", key=b"abc")), daemon=True
        )
        thread.start()
        kpd.wait_for(lambda: kpd.metadata_requests == [("t",)])
        assert not sent.done()  # send() is blocked on the count, like Java's waitOnMetadata
        kpd.release_metadata()
        future = sent.result(DEADLINE)
        thread.join(DEADLINE)
        later = [producer.send("t", b"v", key=key) for key in KAFKA_MURMUR2]
        producer.flush()
    assert future.result().partition == _java_partition(b"abc", 7)
    assert [f.result().partition for f in later] == [_java_partition(k, 7) for k in KAFKA_MURMUR2]
    assert all(frame.partition >= 0 for frame in kpd.frames)  # none left to kpd


def test_keyless_records_before_the_count_let_kpd_choose_without_waiting(kpd):
    kpd.hold_metadata = True
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v")  # returns although METADATA is unanswered
        producer.flush()
        assert future.result().partition == 0  # what the fake kpd chose for partition -1
        kpd.release_metadata()
    assert kpd.frames[0].partition == -1
    assert ("t",) in kpd.metadata_requests


def test_a_keyed_record_for_a_missing_topic_fails_clearly_after_max_block_ms(kpd):
    with Producer(kpd.path, max_block_ms=300) as producer:
        started = time.monotonic()
        error = _error(producer.send("nope", b"v", key=b"k"))
        assert time.monotonic() - started >= 0.3  # it waited max.block.ms, not less
        assert error.code is KpdErrorCode.UNKNOWN_TOPIC
        assert error.persistence is Persistence.NOT_PERSISTED
        assert "'nope' not present in metadata after 300 ms" in str(error)
        # It asked again while it waited (the topic may have been created meanwhile).
        assert kpd.metadata_requests.count(("nope",)) >= 2
        # The next keyed record fails at once with the same error instead of waiting again...
        again = producer.send("nope", b"v", key=b"k")
        assert again.done() and _error(again).message == error.message
        # ...until the topic exists: the client keeps asking, and then places records again.
        kpd.partitions["nope"] = 3
        kpd.wait_for(lambda: TopicMetadata("nope", KpdErrorCode.NONE, 3) in kpd.metadata_answers)
        producer.send("t", b"barrier", partition=0).result(DEADLINE)  # reported after it
        assert producer.send("nope", b"v", key=b"abc").result(DEADLINE).partition == (
            _java_partition(b"abc", 3)
        )
    assert not kpd.violations


def test_a_keyed_record_for_a_forbidden_topic_fails_at_once(kpd):
    kpd.topic_errors["secret"] = KpdErrorCode.TOPIC_NOT_ALLOWED
    with Producer(kpd.path, max_block_ms=DEADLINE * 1000) as producer:
        error = _error(producer.send("secret", b"v", key=b"k"))  # no max.block.ms wait
    assert error.code is KpdErrorCode.TOPIC_NOT_ALLOWED
    assert "kpd answered TOPIC_NOT_ALLOWED" in error.message
    assert not any(frame.topic == "secret" for frame in kpd.frames)


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
    assert placed.partition == _java_partition(b"abc", 7)
    assert _error(missing).code is KpdErrorCode.UNKNOWN_TOPIC
    assert "after 200 ms" in _error(missing).message


def test_unknown_topic_raises_topic_error_from_partitions_for(kpd):
    with Producer(kpd.path) as producer, pytest.raises(TopicError) as caught:
        producer.partitions_for("nope")
    assert caught.value.code is KpdErrorCode.UNKNOWN_TOPIC


def test_invalid_partition_report_refreshes_the_partition_count(kpd):
    kpd.partitions["t"] = 2
    with Producer(kpd.path) as producer:
        assert producer.partitions_for("t") == 2
        kpd.partitions["t"] = 4  # partitions were added behind the client's back
        kpd.respond = _failing(
            error=KpdErrorCode.INVALID_PARTITION, persistence=Persistence.NOT_PERSISTED
        )
        assert _error(producer.send("t", b"v", partition=3)).code is KpdErrorCode.INVALID_PARTITION
        kpd.wait_for(lambda: len(kpd.metadata_requests) == 2)
        kpd.respond = kpd.deliver
        # A report written after the METADATA_RESPONSE: once it is in, so is the new count.
        producer.send("t", b"barrier", partition=0).result(DEADLINE)
        assert producer.partitions_for("t") == 4
        # "foobar" maps to a different partition of 4 than of 2.
        assert _java_partition(b"foobar", 4) != _java_partition(b"foobar", 2)
        keyed = producer.send("t", b"v", key=b"foobar")
        assert keyed.result(DEADLINE).partition == _java_partition(b"foobar", 4)


# --- batching and sequence numbers ----------------------------------------------------------


def test_a_tight_send_loop_puts_many_records_in_each_frame(kpd):
    with Producer(kpd.path, linger_ms=50) as producer:
        producer.partitions_for("t")
        futures = [producer.send("t", b"v" * 100, key=b"k%d" % (i % 8)) for i in range(2000)]
        producer.flush()
        _results(futures)
    assert sum(f.count for f in kpd.frames) == 2000
    # 2000 records of ~110 bytes over 4 partitions fit in a handful of 64 KiB frames.
    assert len(kpd.frames) <= 12


def test_frames_are_cut_at_batch_bytes(kpd):
    with Producer(kpd.path, batch_bytes=4096, linger_ms=60_000) as producer:
        futures = [producer.send("t", b"v" * 100, partition=0) for _ in range(200)]
        producer.flush()
        _results(futures)
    sizes = [frame.size for frame in kpd.frames]
    assert all(size < 4096 + 200 for size in sizes)
    assert all(size >= 4096 for size in sizes[:-1])


def test_sequence_numbers_are_continuous_across_frames_and_partitions(kpd):
    with Producer(kpd.path, batch_bytes=2000) as producer:
        producer.partitions_for("t")
        for i in range(300):
            producer.send("t", b"v" * 50, key=b"key-%d" % i)
            if i % 50 == 0:
                producer.send("other", b"w")
        producer.flush()
    assert not kpd.violations
    frames = sorted(kpd.frames, key=lambda f: f.base_seq)
    assert frames[0].base_seq == 0
    assert all(a.base_seq + a.count == b.base_seq for a, b in itertools.pairwise(frames))
    assert frames == kpd.frames  # and they went out in that order


def test_linger_sends_a_partial_batch_without_flush(kpd):
    with Producer(kpd.path, linger_ms=1) as producer:
        future = producer.send("t", b"v", partition=0)
        assert future.result(DEADLINE).offset == 0


# --- flush and close ------------------------------------------------------------------------


def test_flush_waits_for_reports_and_times_out_while_they_are_held(kpd):
    kpd.respond = kpd.hold
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        with pytest.raises(TimeoutError):
            producer.flush(timeout=0.05)
        assert not future.done()
        kpd.release()
        producer.flush(timeout=DEADLINE)
        assert future.done()


def test_close_says_goodbye_and_waits_for_the_last_reports(kpd):
    kpd.respond = kpd.hold  # reports come only with the server's GOODBYE
    producer = Producer(kpd.path, linger_ms=60_000)
    futures = [producer.send("t", b"v", partition=0) for _ in range(3)]
    producer.close()
    assert [f.result(0).offset for f in futures] == [0, 1, 2]
    assert kpd.goodbyes == [3]
    with pytest.raises(RuntimeError):
        producer.send("t", b"v")
    producer.close()  # a second close is a no-op


def test_close_times_out_and_fails_what_kpd_never_reported(kpd):
    kpd.respond = kpd.silent
    kpd.answer_goodbye = False
    producer = Producer(kpd.path)
    future = producer.send("t", b"v", partition=0)
    producer.close(timeout=0.05)
    error = _error(future)
    assert error.code == CONNECTION_LOST
    assert error.persistence is Persistence.POSSIBLY_PERSISTED
    assert kpd.goodbyes == [1]


# --- serializers ----------------------------------------------------------------------------


def test_integer_serializer_writes_four_big_endian_bytes_like_kafka():
    serialize = IntegerSerializer()
    assert serialize(1) == b"\x00\x00\x00\x01"
    assert serialize(-1) == b"\xff\xff\xff\xff"
    assert serialize(2**31 - 1) == struct.pack(">i", 2**31 - 1)
    assert serialize(None) is None
    with pytest.raises(ValueError):
        serialize(2**31)
    with pytest.raises(TypeError):
        serialize("1")


def test_string_json_and_bytes_serializers():
    assert StringSerializer()("é") == b"\xc3\xa9"
    assert StringSerializer("latin-1")("é") == b"\xe9"
    assert JsonSerializer()({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    assert json.loads(JsonSerializer(sort_keys=True)({"b": 1, "a": 2})) == {"a": 2, "b": 1}
    assert BytesSerializer()(bytearray(b"ab")) == b"ab"
    for serialize in (StringSerializer(), JsonSerializer(), BytesSerializer()):
        assert serialize(None) is None
    with pytest.raises(TypeError):
        BytesSerializer()("text")


def test_producer_applies_key_and_value_serializers(kpd):
    with Producer(
        kpd.path, key_serializer=StringSerializer(), value_serializer=JsonSerializer()
    ) as producer:
        producer.send("t", {"n": 1}, key="k", partition=0).result(DEADLINE)
        producer.send("t", None, key=None, partition=0).result(DEADLINE)  # a tombstone
    assert kpd.records() == [(b"k", b'{"n":1}', None, ()), (None, None, None, ())]


def test_str_value_without_serializer_is_a_type_error_and_sends_nothing(kpd):
    with Producer(kpd.path) as producer:
        with pytest.raises(TypeError):
            producer.send("t", "text", partition=0)
        producer.send("t", b"ok", partition=0).result(DEADLINE)
    assert kpd.records() == [(None, b"ok", None, ())]


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
    assert [m.partition for m in results] == [_java_partition(k, 4) for k in KAFKA_MURMUR2]
    assert sum(f.count for f in kpd.frames) == len(KAFKA_MURMUR2)


def test_async_producer_failure_and_close(kpd):
    kpd.respond = _failing(error=KpdErrorCode.BUFFER_FULL, persistence=Persistence.NOT_PERSISTED)

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


# --- the frame encoder and the session's size accounting -----------------------------------


def test_encoder_writes_the_protocol_example_frame():
    # docs/protocol.md section 12, "produce": two records for partition 3 of "t1", ack 3.
    expected = b"".join(
        (
            struct.pack(">I", 46),  # length = 46 (type byte + payload)
            b"\x04",  # type = PRODUCE
            struct.pack(">Q", 0),  # base_seq
            struct.pack(">I", 2),  # count
            struct.pack(">i", 3),  # partition
            b"\x03",  # ack = connection default
            struct.pack(">H", 2) + b"t1",  # topic
            b"\x00",  # layout: no timestamps, no headers
            struct.pack(">ii", 2, -1),  # key_lens (record 1: null)
            struct.pack(">ii", 2, 3),  # value_lens
            b"k1v1v22",  # data
        )
    )
    assert encode_produce_frame(b"\x00\x02t1", 3, 0, [b"k1", None], [b"v1", b"v22"]) == expected


def test_encoder_writes_timestamp_and_header_columns_only_when_used():
    blob = struct.pack(">H", 1) + b"h" + struct.pack(">i", 1) + b"1"  # header h = "1"
    expected = b"".join(
        (
            struct.pack(">IB", 1 + 17 + 3 + 1 + 16 + 8 + 8 + 8 + 3 + len(blob), 4),
            struct.pack(">QIiB", 7, 2, -1, 3),  # base_seq 7, 2 records, kpd chooses, ack 3
            struct.pack(">H", 1) + b"t",
            b"\x03",  # layout: timestamps + headers
            struct.pack(">qq", -1, 1_700_000_000_000),  # record 0 has no timestamp
            struct.pack(">ii", -1, -1),  # key_lens: both null
            struct.pack(">ii", 1, 2),  # value_lens
            struct.pack(">ii", len(blob), 0),  # header_lens: record 1 has none
            b"a" + blob + b"bc",  # data: value 0, headers 0, value 1
        )
    )
    frame = encode_produce_frame(
        b"\x00\x01t", -1, 7, [None, None], [b"a", b"bc"], {1: 1_700_000_000_000}, {0: blob}
    )
    assert frame == expected


class _NoHub:
    lock = threading.Lock()


def _session(max_frame: int = MIN_MAX_FRAME_BYTES, batch_bytes: int = 1 << 30) -> ProducerSession:
    welcome = Welcome(1, max_frame, 0, "test")
    decoder = FrameDecoder(Role.CLIENT)  # only dispatches frames in; unused here
    settings = ClientSettings(batch_bytes=batch_bytes)
    return ProducerSession(settings, welcome, decoder, lambda: 0.0, _NoHub())


def test_frames_fill_up_to_the_max_frame_exactly_with_mixed_record_shapes():
    session = _session()
    rng = random.Random(7)
    sent = []
    for i in range(3000):
        key = None if i % 3 == 0 else b"k%d" % i
        value = None if i % 11 == 0 else b"v" * rng.randrange(0, 300)
        stamp = 1_600_000_000_000 + i if i % 5 == 0 and i > 400 else None
        headers = [("h", b"x" * (i % 7))] if i % 13 == 0 and i > 900 else None
        session.add("t", key, value, 0, stamp, headers)
        sent.append((key, value, stamp, tuple(headers or ())))
    session.seal_all()
    frames = [out.data for out in session.take_output() if out.buffered]
    decoded = []
    for data in frames:
        assert len(data) <= MIN_MAX_FRAME_BYTES
        header = decode_produce_header(memoryview(data)[5:])
        for r in iter_records(header.records, header.count):
            decoded.append((_copy(r.key), _copy(r.value), r.timestamp, tuple(r.headers)))
    assert decoded == sent
    # Full frames were cut only when the next record did not fit: at most one record short.
    assert all(len(data) > MIN_MAX_FRAME_BYTES - 400 for data in frames[:-1])


# --- futures ---------------------------------------------------------------------------------


def test_done_callbacks_run_once_on_the_io_thread_or_at_once_when_done(kpd):
    kpd.respond = kpd.hold
    calls = []
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        future.add_done_callback(lambda f: calls.append((threading.current_thread().name, f)))
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        assert calls == [] and not future.done()
        kpd.release()
        assert future.result(DEADLINE).offset == 0
        producer.flush()
        future.add_done_callback(lambda f: calls.append(("late", f)))
    assert calls == [("kpd-client-io", future), ("late", future)]
    assert not future.cancel() and not future.cancelled()


def test_result_times_out_while_the_report_is_held(kpd):
    kpd.respond = kpd.hold
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        with pytest.raises(TimeoutError):
            future.result(timeout=0.01)
        with pytest.raises(TimeoutError):
            future.exception(timeout=0)
        kpd.release()
        assert future.exception(DEADLINE) is None


def test_runs_splitting_a_frame_give_each_record_its_own_outcome(kpd):
    def split(conn: _Conn, frame: Received) -> list[ReportRun]:
        half = frame.count // 2
        failed = ReportRun(
            frame.base_seq + half,
            frame.count - half,
            Status.FAILED,
            error=KpdErrorCode.DELIVERY_TIMEOUT,
            persistence=Persistence.POSSIBLY_PERSISTED,
            message="late",
        )
        # The failed half is reported first: runs may come in any order (protocol §7).
        delivered = ReportRun(frame.base_seq, half, Status.DELIVERED, 1, 100, 5)
        return [failed, delivered]

    kpd.respond = split
    with Producer(kpd.path, linger_ms=60_000) as producer:
        futures = [producer.send("t", b"v", partition=1) for _ in range(4)]
        producer.flush()
    assert _results(futures[:2]) == [RecordMetadata("t", 1, 100, 5), RecordMetadata("t", 1, 101, 5)]
    errors = [_error(f) for f in futures[2:]]
    assert [e.code for e in errors] == [KpdErrorCode.DELIVERY_TIMEOUT] * 2
    assert errors[0] is not errors[1]
    assert _error(futures[2]) is errors[0]  # the same object every time it is asked


def test_a_second_report_for_a_record_does_not_change_its_outcome(kpd):
    def twice(conn: _Conn, frame: Received) -> list[ReportRun]:
        duplicate = ReportRun(
            frame.base_seq,
            frame.count,
            Status.FAILED,
            error=KpdErrorCode.INTERNAL_ERROR,
            persistence=Persistence.NOT_PERSISTED,
            message="dup",
        )
        return [*kpd.deliver(conn, frame), duplicate]

    kpd.respond = twice
    with Producer(kpd.path) as producer:
        futures = [producer.send("t", b"v", partition=0) for _ in range(3)]
        producer.flush()
        assert [m.offset for m in _results(futures)] == [0, 1, 2]
        # The duplicate must not count as the outcome of records sent later either.
        kpd.respond = kpd.hold
        later = producer.send("t", b"w", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 2)
        assert not later.done()
        kpd.release()
        assert later.result(DEADLINE).offset == 3


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


def test_a_kafka_error_is_named_by_kpds_code_and_kafkas_number():
    # Kafka's error names are the daemon's table (daemon.kafka.errors), which kpd-client does
    # not import: the daemon's REPORT message names the error (str of its DeliveryFailure).
    from kpd.protocol.base import KpdErrorCode, Persistence

    error = DeliveryError(KpdErrorCode.KAFKA_ERROR, 17, Persistence.NOT_PERSISTED, "bad name")
    assert str(error) == "KAFKA_ERROR (Kafka error 17) [NOT_PERSISTED]: bad name"
    timeout = DeliveryError(KpdErrorCode.DELIVERY_TIMEOUT, 0, Persistence.POSSIBLY_PERSISTED, "t")
    assert str(timeout) == "DELIVERY_TIMEOUT [POSSIBLY_PERSISTED]: t"
