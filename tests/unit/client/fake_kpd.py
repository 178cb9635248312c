"""The fake kpd the client's unit tests talk to, and their shared helpers.

``FakeKpd`` is an asyncio UNIX server on its own thread: it speaks HELLO/WELCOME, answers
METADATA from a partition table, checks that PRODUCE sequence numbers are continuous, records
every frame it decodes, and answers with report runs chosen by the test (DELIVERED by default,
FAILED, held until released, or none). It is written with the protocol codec
(``kpd.protocol``), never with the client under test. Tests wait for conditions with
deadlines, never sleep. Expected partitions come from Kafka's published murmur2 vectors.
The ``kpd`` fixture (tests/unit/client/conftest.py) serves one per test.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from kpd import (
    DeliveryError,
    KpdErrorCode,
)
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
    choose_version,
    decode_goodbye,
    decode_hello,
    decode_metadata_request,
    decode_produce_header,
    encode_error,
    encode_goodbye,
    encode_metadata_response,
    encode_reports,
    encode_welcome,
    iter_records,
)

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
class FakeConn:
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
        self.respond: Callable[[FakeConn, Received], list[ReportRun]] = self.deliver
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
        self._conns: list[FakeConn] = []
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
                    runs = merge_runs(runs)
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

    def pause_reading(self) -> None:
        """Stop reading every connection: the client's socket fills, its writes stay in flight."""
        self.call(lambda: [conn.writer.transport.pause_reading() for conn in self._conns])

    def resume_reading(self) -> None:
        self.call(lambda: [conn.writer.transport.resume_reading() for conn in self._conns])

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

    def deliver(self, conn: FakeConn, frame: Received) -> list[ReportRun]:
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

    def hold(self, conn: FakeConn, frame: Received) -> list[ReportRun]:
        """Keep the reports until ``release()`` or the client's GOODBYE."""
        conn.held.extend(self.deliver(conn, frame))
        return []

    def silent(self, conn: FakeConn, frame: Received) -> list[ReportRun]:
        return []

    # --- the protocol (server thread) -------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FakeConn(writer)
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

    def _handle(self, conn: FakeConn, frame) -> bool:
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

    def _on_hello(self, conn: FakeConn, payload) -> bool:
        hello = decode_hello(payload)
        self._note(hello=hello)
        if self.refuse is not None:
            conn.writer.write(encode_error(*self.refuse))
            return False
        conn.default_ack = hello.default_ack
        version = choose_version(hello, PROTOCOL_VERSIONS)
        conn.writer.write(encode_welcome(version, self.max_frame_bytes, "fake-kpd"))
        return True

    def _on_produce(self, conn: FakeConn, payload, size: int) -> bool:
        header = decode_produce_header(payload)
        if header.base_seq != conn.next_seq:
            message = f"base_seq {header.base_seq}, expected {conn.next_seq}"
            self._note(violation=message)
            conn.writer.write(encode_error(KpdErrorCode.SEQUENCE_MISMATCH, message))
            return False
        conn.next_seq += header.count
        records = [
            (
                copy_view(r.key),
                copy_view(r.value),
                r.timestamp,
                tuple((k, copy_view(v)) for k, v in r.headers),
            )
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


def copy_view(view):
    return None if view is None else bytes(view)


def merge_runs(runs: list[ReportRun]) -> list[ReportRun]:
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


def failing(**fields) -> Callable:
    def respond(conn: FakeConn, frame: Received) -> list[ReportRun]:
        return [ReportRun(frame.base_seq, frame.count, Status.FAILED, **fields)]

    return respond


def results(futures, timeout: float = DEADLINE) -> list:
    return [f.result(timeout) for f in futures]


def error_of(future) -> DeliveryError:
    exc = future.exception(DEADLINE)
    assert isinstance(exc, DeliveryError), exc
    return exc


def java_partition(key: bytes, partitions: int) -> int:
    # Kafka BuiltInPartitioner.partitionForKey: toPositive(murmur2(key)) % numPartitions.
    return (KAFKA_MURMUR2[key] & 0x7FFFFFFF) % partitions
