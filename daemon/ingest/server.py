"""The UNIX-socket ingestion server: client frames in, segments into worker rings, reports out.

Owns the listening socket, the client connections, the producing end of every worker's
records ring and the consuming end of every reports ring. Per PRODUCE frame it validates the
header (C-level column checks in the codec), picks the partition when the client left it to
kpd, and copies the records section into the ring of the worker that owns the partition —
no per-record Python work unless kpd must hash keys itself.

Backpressure: when a worker's ring is full the connection stops being read; after
``max.block.ms`` the frame's records are answered BUFFER_FULL and reading resumes. Ingest
never dies of input: a bad frame gets an error report, an unrecoverable stream an ERROR frame
and a close, and the other connections are unaffected.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemon.ingest import codec
from daemon.ingest.codec import ReportRun, encode_reports
from daemon.ingest.codec_base import (
    AckLevel,
    BadFrameError,
    FatalProtocolError,
    FrameType,
    KpdErrorCode,
    Persistence,
    Status,
)
from daemon.ingest.codec_records import (
    RecordIn,
    decode_produce_header,
    encode_records,
    iter_records,
)
from daemon.ingest.routing import worker_for
from daemon.ingest.segment import decode_report_entry, segment_head
from daemon.producer.partitioner import Partitioner
from daemon.protocol.murmur2 import partition_for_key
from daemon.ring import RingConsumer, RingProducer

__all__ = ["IngestServer", "IngestSettings", "TopicDirectory"]

log = logging.getLogger(__name__)

_MAX_CLIENT_BUFFER = 64 * 1024 * 1024  # a client that never reads its reports is cut off


@dataclass(frozen=True, slots=True)
class IngestSettings:
    socket_path: str
    socket_mode: int = 0o660
    max_frame_bytes: int = 1114112
    max_block_s: float = 60.0
    batch_size: int = 16384  # sticky partitioning switches after this many bytes
    server_name: str = "kpd"


class TopicDirectory:
    """Partition counts by topic, as ingest knows them, plus whether a topic is allowed.

    ``lookup`` is async: an unknown topic is looked up in Kafka (up to max.block.ms).
    """

    def __init__(
        self,
        allows: Callable[[str], bool],
        resolve: Callable[[str, float], asyncio.Future],
    ) -> None:
        self._allows = allows
        self._resolve = resolve  # (topic, timeout_s) -> awaitable partition count or raises
        self.counts: dict[str, int] = {}

    def allowed(self, topic: str) -> bool:
        return self._allows(topic)

    async def partition_count(self, topic: str, timeout_s: float) -> int:
        count = self.counts.get(topic)
        if count is None:
            count = await self._resolve(topic, timeout_s)
            self.counts[topic] = count
        return count


class _Connection(asyncio.Protocol):
    """One client. Owns its decoder, sequence counter and pause state."""

    def __init__(self, server: IngestServer, conn_id: int) -> None:
        self._server = server
        self.conn_id = conn_id
        self.transport: asyncio.Transport | None = None
        self._decoder = codec.FrameDecoder(codec.Role.SERVER, server.settings.max_frame_bytes)
        self.ack_default = AckLevel.KAFKA
        self.next_seq = 0
        self.greeted = False
        self.closed = False
        # Frames waiting behind a full ring or an unknown topic, processed in order.
        self._backlog: list = []
        self._busy = False
        self.quiescing = False

    @property
    def busy(self) -> bool:
        return self._busy

    def quiesce(self) -> None:
        """Read nothing more from this client; frames already read are still handled."""
        self.quiescing = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    # ---- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._server.connections[self.conn_id] = self

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._server.connections.pop(self.conn_id, None)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FatalProtocolError as exc:
            for frame in exc.frames or []:
                self._backlog.append(frame)
            self._backlog.append(exc)
            self._pump()
            return
        self._backlog.extend(frames)
        self._pump()

    # ---- frame processing --------------------------------------------------------------

    def _pump(self) -> None:
        """Process backlog frames synchronously while possible; go async when one must wait."""
        if self._busy:
            return
        server = self._server
        while self._backlog and not self.closed:
            item = self._backlog[0]
            if isinstance(item, FatalProtocolError):
                self._fatal(item.code, item.message)
                return
            waiting = self._handle(item)
            if waiting is not None:
                self._busy = True
                self.transport.pause_reading()
                asyncio.get_running_loop().create_task(self._finish_async(waiting))
                return
            self._backlog.pop(0)
        server.publish_all()

    async def _finish_async(self, waiting) -> None:
        try:
            await waiting
        except Exception:  # the handler reported what went wrong to the client
            log.exception("conn %d: frame handling failed", self.conn_id)
        finally:
            if self._backlog:
                self._backlog.pop(0)
            self._busy = False
            if not self.closed:
                if not self.quiescing:
                    self.transport.resume_reading()
                self._pump()

    def _handle(self, frame):
        kind = frame.type
        if kind == FrameType.PRODUCE:
            return self._produce(frame.payload)
        if kind == FrameType.HELLO:
            self._hello(frame.payload)
        elif kind == FrameType.METADATA_REQUEST:
            return self._metadata(frame.payload)
        elif kind == FrameType.PING:
            self.send(codec.encode_pong(codec.decode_ping(frame.payload)))
        elif kind == FrameType.GOODBYE:
            self._goodbye()
        return None

    def _hello(self, payload) -> None:
        try:
            hello = codec.decode_hello(payload)
            version = codec.choose_version(hello)
        except (BadFrameError, FatalProtocolError) as exc:
            self._fatal(exc.code, exc.message)
            return
        ack = hello.default_ack
        self.ack_default = AckLevel(ack) if ack != AckLevel.CONNECTION_DEFAULT else AckLevel.KAFKA
        self.greeted = True
        self.send(codec.encode_welcome(version, self._server.settings.max_frame_bytes))

    def _produce(self, payload):
        try:
            header = decode_produce_header(payload)
        except BadFrameError as exc:
            if exc.count:
                self._fail(exc.first_seq, exc.count, exc.code, exc.message)
                self.next_seq = max(self.next_seq, exc.first_seq + exc.count)
            else:
                self._fatal(exc.code, exc.message)
            return None
        if header.base_seq != self.next_seq:
            self._fatal(
                KpdErrorCode.SEQUENCE_MISMATCH,
                f"PRODUCE base_seq {header.base_seq}, expected {self.next_seq}",
            )
            return None
        self.next_seq = header.base_seq + header.count
        ack = header.ack if header.ack != AckLevel.CONNECTION_DEFAULT else self.ack_default
        server = self._server
        if not server.topics.allowed(header.topic):
            self._fail(
                header.base_seq,
                header.count,
                KpdErrorCode.TOPIC_NOT_ALLOWED,
                f"topic {header.topic!r} is not in topics.allow",
            )
            return None
        count = server.topics.counts.get(header.topic)
        if count is None or header.partition >= count:
            return self._produce_after_lookup(header, ack)
        return self._route(header, ack, count)

    async def _produce_after_lookup(self, header, ack) -> None:
        server = self._server
        try:
            count = await server.topics.partition_count(header.topic, server.settings.max_block_s)
        except Exception as exc:
            self._fail(header.base_seq, header.count, KpdErrorCode.UNKNOWN_TOPIC, str(exc))
            return
        waiting = self._route(header, ack, count)
        if waiting is not None:
            await waiting
        server.publish_all()

    def _route(self, header, ack, count: int):
        if header.partition >= count:
            self._fail(
                header.base_seq,
                header.count,
                KpdErrorCode.INVALID_PARTITION,
                f"{header.topic} has {count} partitions; no partition {header.partition}",
            )
            return None
        segments = self._server.split(header, count)
        return self._server.enqueue(self, segments, header, ack)

    async def _metadata(self, payload) -> None:
        request = codec.decode_metadata_request(payload)
        server = self._server
        answers = []
        for topic in request.topics:
            if not server.topics.allowed(topic):
                answers.append(codec.TopicMetadata(topic, KpdErrorCode.TOPIC_NOT_ALLOWED, -1))
                continue
            try:
                count = await server.topics.partition_count(topic, server.settings.max_block_s)
            except Exception:
                answers.append(codec.TopicMetadata(topic, KpdErrorCode.UNKNOWN_TOPIC, -1))
                continue
            answers.append(codec.TopicMetadata(topic, KpdErrorCode.NONE, count))
        self.send(codec.encode_metadata_response(request.request_id, answers))

    def _goodbye(self) -> None:
        # Reports for this connection flow on their own; GOODBYE is answered once every record
        # it sent has been reported (the server tracks that per connection).
        self._server.goodbye(self)

    # ---- output ------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        if transport.get_write_buffer_size() > _MAX_CLIENT_BUFFER:
            self._fatal(KpdErrorCode.INTERNAL_ERROR, "client does not read its reports")
            return
        transport.write(frame)

    def _fail(self, first_seq: int, count: int, code: KpdErrorCode, message: str) -> None:
        run = ReportRun(
            first_seq,
            count,
            Status.FAILED,
            -1,
            -1,
            -1,
            code,
            0,
            Persistence.NOT_PERSISTED,
            message[:1000],
        )
        self.send(encode_reports([run]))

    def _fatal(self, code: KpdErrorCode, message: str) -> None:
        log.info("conn %d: closing: %s", self.conn_id, message)
        if not self.closed and self.transport is not None:
            self.transport.write(codec.encode_error(code, message[:1000]))
            self.transport.close()
        self.closed = True
        self._backlog.clear()


class IngestServer:
    def __init__(
        self,
        settings: IngestSettings,
        records: list[RingProducer],
        reports: list[RingConsumer],
        topics: TopicDirectory,
    ) -> None:
        self.settings = settings
        self._records = records
        self._reports = reports
        self.topics = topics
        self.connections: dict[int, _Connection] = {}
        # Connection ids stay unique across ingest restarts: reports of a previous ingest's
        # connections must never reach a new connection that reused a small id.
        start = (time.time_ns() // 1_000_000) & 0xFFFFFFFF
        self._conn_ids = itertools.count(start << 32)
        self._dirty: set[int] = set()  # rings with staged, unpublished entries
        self._sticky = Partitioner("default", settings.batch_size)
        self._server: asyncio.AbstractServer | None = None
        self._report_tasks: list[asyncio.Task] = []
        self._goodbyes: dict[int, _Connection] = {}
        self.records_accepted = 0
        self.records_rejected = 0
        self.buffer_full_events = 0

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, sock=None) -> None:
        loop = asyncio.get_running_loop()
        if sock is None:
            path = self.settings.socket_path
            if os.path.exists(path):
                os.unlink(path)  # a stale socket of a dead daemon
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._server = await loop.create_unix_server(self._new_connection, path)
            os.chmod(path, self.settings.socket_mode)
        else:
            self._server = await loop.create_unix_server(self._new_connection, sock=sock)
        for index, ring in enumerate(self._reports):
            self._report_tasks.append(loop.create_task(self._forward_reports(index, ring)))

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        self.stop_accepting()
        for task in self._report_tasks:
            task.cancel()
        for conn in list(self.connections.values()):
            conn._fatal(KpdErrorCode.SHUTTING_DOWN, "kpd is shutting down")

    async def quiesce(self) -> None:
        """Accept no more records: stop listening and reading, finish frames in progress."""
        self.stop_accepting()
        for conn in list(self.connections.values()):
            conn.quiesce()
        deadline = asyncio.get_running_loop().time() + self.settings.max_block_s
        while any(c.busy for c in self.connections.values()):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)  # bounded: a frame waits at most max.block.ms
        self.publish_all()

    async def finish(self) -> None:
        """The workers are done: forward their last reports, then say goodbye to clients."""
        for ring in self._reports:
            self._forward_once(ring)
        await self.close()

    def _new_connection(self) -> _Connection:
        return _Connection(self, next(self._conn_ids))

    # ---- routing -----------------------------------------------------------------------

    def split(self, header, count: int) -> list[tuple[int, memoryview | bytes, int, int]]:
        """The frame as (partition, records section, first seq, record count) segments."""
        if header.partition >= 0:
            return [(header.partition, header.records, header.base_seq, header.count)]
        if header.keyless:
            size = len(header.records)
            partition = self._sticky.partition(header.topic, None, size, count)
            return [(partition, header.records, header.base_seq, header.count)]
        return self._split_by_key(header, count)

    def _split_by_key(self, header, count: int):
        # The slow path: the client left keyed records to kpd. Hash each key (Java's murmur2),
        # then re-encode each partition's records. Records of one partition must stay a
        # contiguous run of sequence numbers, so a run breaks whenever the partition changes.
        segments = []
        run: list[RecordIn] = []
        run_partition = -1
        run_start = header.base_seq
        for index, record in enumerate(iter_records(header.records, header.count)):
            if record.key is None:
                partition = self._sticky.partition(header.topic, None, 1, count)
            else:
                partition = partition_for_key(bytes(record.key), count)
            if partition != run_partition and run:
                segments.append((run_partition, encode_records(run), run_start, len(run)))
                run = []
                run_start = header.base_seq + index
            run_partition = partition
            run.append(RecordIn(record.key, record.value, record.timestamp, record.headers))
        segments.append((run_partition, encode_records(run), run_start, len(run)))
        return segments

    def enqueue(self, conn: _Connection, segments, header, ack):
        """Write segments into rings; returns an awaitable if a ring is full."""
        topic = header.topic.encode()
        now_ms = time.time_ns() // 1_000_000
        workers = len(self._records)
        for position, (partition, records, first_seq, n) in enumerate(segments):
            ring_index = worker_for(header.topic, partition, workers)
            ring = self._records[ring_index]
            head = segment_head(conn.conn_id, first_seq, n, partition, now_ms, topic)
            view = ring.reserve(len(head) + len(records))
            if view is None:
                return self._enqueue_when_free(conn, segments[position:], header, ack)
            view[: len(head)] = head
            view[len(head) :] = records
            del view
            self._dirty.add(ring_index)
            self._accepted(conn, first_seq, n, partition, ack)
        return None

    async def _enqueue_when_free(self, conn, segments, header, ack) -> None:
        topic = header.topic.encode()
        workers = len(self._records)
        deadline = asyncio.get_running_loop().time() + self.settings.max_block_s
        self.publish_all()
        for partition, records, first_seq, n in segments:
            ring = self._records[worker_for(header.topic, partition, workers)]
            head = segment_head(
                conn.conn_id, first_seq, n, partition, time.time_ns() // 1_000_000, topic
            )
            size = len(head) + len(records)
            while True:
                view = ring.reserve(size)
                if view is not None:
                    break
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or not await ring.wait_writable(size, timeout=remaining):
                    self.buffer_full_events += 1
                    conn._fail(
                        first_seq,
                        n,
                        KpdErrorCode.BUFFER_FULL,
                        f"worker ring full for {self.settings.max_block_s * 1000:.0f} ms"
                        " (max.block.ms)",
                    )
                    view = None
                    break
            if view is None:
                continue
            view[: len(head)] = head
            view[len(head) :] = records
            del view
            ring.publish()
            self._accepted(conn, first_seq, n, partition, ack)

    def _accepted(self, conn: _Connection, first_seq: int, n: int, partition: int, ack) -> None:
        self.records_accepted += n
        if ack == AckLevel.ACCEPTED:
            run = ReportRun(first_seq, n, Status.ACCEPTED, partition)
            conn.send(encode_reports([run]))

    def publish_all(self) -> None:
        """Publish staged entries: one index store and at most one wake-up per ring."""
        for index in self._dirty:
            self._records[index].publish()
        self._dirty.clear()

    # ---- reports -----------------------------------------------------------------------

    async def _forward_reports(self, index: int, ring: RingConsumer) -> None:
        while True:
            if not self._forward_once(ring):
                await ring.wait_readable()

    def _forward_once(self, ring: RingConsumer) -> bool:
        entries = ring.read_batch()
        if not entries:
            return False
        for _, entry in entries:
            conn_id, payload = decode_report_entry(entry)
            conn = self.connections.get(conn_id)
            if conn is not None:
                conn.send(bytes(payload))  # already a whole REPORT frame
        ring.release(entries[-1][0])
        return True

    def goodbye(self, conn: _Connection) -> None:
        conn.send(codec.encode_goodbye(conn.next_seq))
