"""The UNIX-socket ingestion server: client frames in, segments into worker rings, reports out.

Owns the listening socket, the client connections, the producing end of every worker's
records ring and the consuming end of every reports ring. Per PRODUCE frame it validates the
header (C-level column checks in the codec), picks the partition when the client left it to
kpd, and copies the records section into the ring of the worker that owns the partition —
no per-record Python work unless kpd must hash keys itself.

Backpressure: when a worker's ring is full the connection stops being read; after
``max.block.ms`` the frame's records are answered BUFFER_FULL and reading resumes. Ingest
never dies of input: a bad frame gets an error report, an unrecoverable stream an ERROR frame
and a close, and the other connections are unaffected. A frame larger than one ring entry
(half a ring) is cut into runs of whole records; a record that cannot fit is RECORD_TOO_LARGE.

Reports: workers report every record they took; ingest passes on those the client asked
Kafka acks for, counts what it still owes each connection, and answers GOODBYE once that is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import itertools
import logging
import os
import re
import socket
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
from daemon.ingest.segment import SEGMENT_HEAD_BYTES, decode_report_entry, segment_head
from daemon.producer.partitioner import Partitioner
from daemon.protocol.errors import code_of
from daemon.ring import RingConsumer, RingProducer

__all__ = ["IngestServer", "IngestSettings", "TopicDirectory", "is_legal_topic"]

log = logging.getLogger(__name__)

_MAX_CLIENT_BUFFER = 64 * 1024 * 1024  # a client that never reads its reports is cut off

# Kafka's rule for topic names (org.apache.kafka.common.internals.Topic.validate): 1 to 249
# of [a-zA-Z0-9._-], and not "." or ".." (they would be directory names on the broker).
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_INVALID_TOPIC_EXCEPTION = code_of("INVALID_TOPIC_EXCEPTION")
# Bytes a record may add to a re-encoded records section beyond its own one-record section:
# a timestamp (8) and a header length (4) once any other record of the section has them.
_COLUMN_SLACK = 12


def is_legal_topic(topic: str) -> bool:
    """Whether Kafka accepts ``topic`` as a name at all (whether it exists is another matter)."""
    return _LEGAL_TOPIC.fullmatch(topic) is not None and topic not in (".", "..")


@dataclass(frozen=True, slots=True)
class IngestSettings:
    socket_path: str
    socket_mode: int = 0o660
    max_frame_bytes: int = 1114112
    max_block_s: float = 60.0
    batch_size: int = 16384  # sticky partitioning switches after this many bytes
    server_name: str = "kpd"
    max_connections: int = 1024
    partitioner: str = "default"  # kafka.partitioner, for records the client left to kpd
    ignore_keys: bool = False  # kafka.partitioner.ignore.keys
    socket_group: str | int | None = None  # chgrp the socket file (name or gid)


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
        # Worker outcomes still owed to the client: ack-KAFKA records in rings without a final
        # run yet. GOODBYE is answered only once this reaches 0 (docs/protocol.md section 9).
        self.owed = 0
        self._goodbye_due = False
        # Records in rings with ack NONE or ACCEPTED, as [first_seq, end_seq, unreported]:
        # workers report every segment whatever its ack (the ring entry does not carry it), so
        # ingest drops those outcomes here. Consecutive frames merge into one range.
        self._quiet: list[list[int]] = []

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
        server = self._server
        if len(server.connections) >= server.settings.max_connections:
            self._fatal(
                KpdErrorCode.TOO_MANY_CONNECTIONS,
                f"kpd serves {server.settings.max_connections} connections already "
                "(socket.max_connections)",
            )
            return
        server.connections[self.conn_id] = self

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
            try:
                waiting = self._handle(item)
            except Exception as exc:
                # A bug in a handler must cost this one connection, never the ingest process
                # (an exception escaping data_received makes uvloop drop the socket silently).
                log.exception("conn %d: %s frame handling failed", self.conn_id, item.type.name)
                self._fatal(KpdErrorCode.INTERNAL_ERROR, f"kpd could not handle the frame: {exc}")
                return
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
        except Exception as exc:
            # Handlers report every expected failure themselves; this is a bug, and the client
            # must hear of it rather than wait for reports that will never come.
            log.exception("conn %d: frame handling failed", self.conn_id)
            self._fatal(KpdErrorCode.INTERNAL_ERROR, f"kpd could not handle the frame: {exc}")
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
        try:
            if kind == FrameType.HELLO:
                self._hello(codec.decode_hello(frame.payload))
            elif kind == FrameType.METADATA_REQUEST:
                return self._metadata(codec.decode_metadata_request(frame.payload))
            elif kind == FrameType.PING:
                self.send(codec.encode_pong(codec.decode_ping(frame.payload)))
            elif kind == FrameType.GOODBYE:
                self._goodbye(codec.decode_goodbye(frame.payload))
        except (BadFrameError, FatalProtocolError) as exc:
            # A malformed control frame has no records to attribute the error to, so it ends
            # the connection (docs/protocol.md section 4), with the decoder's code.
            self._fatal(exc.code, exc.message)
        return None

    def _hello(self, hello: codec.Hello) -> None:
        version = codec.choose_version(hello)  # FatalProtocolError: UNSUPPORTED_VERSION
        ack = hello.default_ack
        self.ack_default = AckLevel(ack) if ack != AckLevel.CONNECTION_DEFAULT else AckLevel.KAFKA
        self.greeted = True
        self.send(codec.encode_welcome(version, self._server.settings.max_frame_bytes))

    def _produce(self, payload):
        try:
            header = decode_produce_header(payload)
        except BadFrameError as exc:
            self._malformed_produce(exc)
            return None
        if header.base_seq != self.next_seq:
            self._sequence_mismatch("PRODUCE base_seq", header.base_seq)
            return None
        self.next_seq = header.base_seq + header.count
        ack = header.ack if header.ack != AckLevel.CONNECTION_DEFAULT else self.ack_default
        server = self._server
        if not is_legal_topic(header.topic):
            # Kafka would answer INVALID_TOPIC_EXCEPTION for such a name; asking it would only
            # hold the connection for max.block.ms (and keep the name in the metadata wanted set).
            self._fail(
                header.base_seq,
                header.count,
                KpdErrorCode.KAFKA_ERROR,
                f"topic {header.topic!r} is not a legal Kafka topic name",
                kafka_error=_INVALID_TOPIC_EXCEPTION,
            )
            return None
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

    def _malformed_produce(self, exc: BadFrameError) -> None:
        if exc.count is None:  # payload shorter than 12 bytes or count 0: nothing to answer
            self._fatal(exc.code, exc.message)
        elif exc.first_seq != self.next_seq:
            # A wrong base_seq is fatal whatever the body holds: answering the run and moving
            # next_seq to it would let one flipped byte shift the numbering of every later frame.
            self._sequence_mismatch("PRODUCE base_seq", exc.first_seq)
        else:
            # The head names the records, so the stream stays usable (docs/protocol.md 4):
            # they count as received and the next PRODUCE starts after them.
            self.next_seq = exc.first_seq + exc.count
            self._fail(exc.first_seq, exc.count, exc.code, exc.message)

    def _sequence_mismatch(self, what: str, got: int) -> None:
        self._fatal(KpdErrorCode.SEQUENCE_MISMATCH, f"{what} {got}, expected {self.next_seq}")

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
        server = self._server
        segments = server.fit(header, server.split(header, count))
        if segments is None:
            self._fail(
                header.base_seq,
                header.count,
                KpdErrorCode.RECORD_TOO_LARGE,
                f"a record does not fit in a worker ring entry of {server.max_entry_bytes} bytes"
                " (rings.records_bytes / 2)",
            )
            return None
        return server.enqueue(self, segments, header, ack)

    async def _metadata(self, request: codec.MetadataRequest) -> None:
        server = self._server
        answers = []
        for topic in request.topics:
            if not is_legal_topic(topic):
                answers.append(codec.TopicMetadata(topic, KpdErrorCode.UNKNOWN_TOPIC, -1))
                continue
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

    def _goodbye(self, next_seq: int) -> None:
        if next_seq != self.next_seq:
            self._sequence_mismatch("GOODBYE next_seq", next_seq)
            return
        # A client that reads GOODBYE knows it has every report it will get, so the answer
        # waits for the outcomes still owed; forward_reports sends it when the last arrives.
        self._goodbye_due = True
        self._maybe_say_goodbye()

    def _maybe_say_goodbye(self) -> None:
        if self._goodbye_due and self.owed <= 0 and not self.closed:
            self.send(codec.encode_goodbye(self.next_seq))
            self.transport.close()  # after the buffered reports and GOODBYE are written
            self.closed = True

    # ---- outcomes from workers ---------------------------------------------------------

    def owe(self, first_seq: int, n: int, ack: AckLevel) -> None:
        """Records [first_seq, first_seq + n) are in a ring; their worker will report them."""
        if ack == AckLevel.KAFKA:
            self.owed += n
            return
        quiet = self._quiet
        if quiet and quiet[-1][1] == first_seq:
            quiet[-1][1] += n
            quiet[-1][2] += n
        else:
            quiet.append([first_seq, first_seq + n, n])

    def forward_reports(self, report_frame: memoryview) -> None:
        """A worker's REPORT frame for this connection: pass on the runs the client asked for
        (ack KAFKA), drop the others, and say GOODBYE once nothing is owed any more."""
        runs = codec.decode_reports(report_frame[5:])  # after the length prefix and type
        kept = [run for run in runs if not self._drop_quiet(run)] if self._quiet else runs
        if kept:
            self.owed -= sum(run.count for run in kept)
            self.send(bytes(report_frame) if len(kept) == len(runs) else encode_reports(kept))
        self._maybe_say_goodbye()

    def _drop_quiet(self, run: ReportRun) -> bool:
        # A run never spans two segments, so its first record places it. Ranges are few: one
        # per change of ack level on this connection, gone once fully reported.
        for index, (start, end, _) in enumerate(self._quiet):
            if start <= run.first_seq < end:
                self._quiet[index][2] -= run.count
                if self._quiet[index][2] <= 0:
                    del self._quiet[index]
                return True
        return False

    # ---- output ------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        if transport.get_write_buffer_size() > _MAX_CLIENT_BUFFER:
            self._fatal(KpdErrorCode.INTERNAL_ERROR, "client does not read its reports")
            return
        transport.write(frame)

    def _fail(
        self, first_seq: int, count: int, code: KpdErrorCode, message: str, kafka_error: int = 0
    ) -> None:
        self._server.records_rejected += count  # every record ingest refuses passes here
        run = ReportRun(
            first_seq,
            count,
            Status.FAILED,
            -1,
            -1,
            -1,
            code,
            kafka_error,
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


def _refuse_if_served(path: str) -> None:
    """A socket file someone still answers on is a running kpd: never steal it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return  # nobody listens: a dead daemon's leftover
    raise OSError(f"{path}: another process serves this socket (is kpd already running?)")


def _group_id(group: str | int) -> int:
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise OSError(f"socket.group: no group named {group!r}") from None


class IngestServer:
    def __init__(
        self,
        settings: IngestSettings,
        records: list[RingProducer],
        reports: list[RingConsumer],
        topics: TopicDirectory,
    ) -> None:
        if settings.max_frame_bytes < codec.MIN_MAX_FRAME_BYTES:
            # Fail at boot: every connection's FrameDecoder would refuse it, leaving clients
            # hanging in the handshake.
            raise ValueError(
                f"max_frame_bytes {settings.max_frame_bytes} is below the protocol minimum "
                f"{codec.MIN_MAX_FRAME_BYTES}"
            )
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
        # Chooses partitions for records the client left to kpd (partition -1): the same rules
        # as Kafka's producer with the configured partitioner.
        self._partitioner = Partitioner(
            settings.partitioner, settings.batch_size, settings.ignore_keys
        )
        self._per_record = settings.partitioner != "default"  # round robin: every record
        self._server: asyncio.AbstractServer | None = None
        self._owned_path: str | None = None  # the socket file we created (and remove)
        self._report_tasks: list[asyncio.Task] = []
        # One ring entry may take at most half its ring; every records ring has the same size.
        self.max_entry_bytes = min(ring.max_entry_bytes for ring in records)
        self.records_accepted = 0
        self.records_rejected = 0
        self.buffer_full_events = 0

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, sock=None) -> None:
        loop = asyncio.get_running_loop()
        if sock is None:
            path = self.settings.socket_path
            if os.path.exists(path):
                _refuse_if_served(path)
                os.unlink(path)  # a stale socket of a dead daemon
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._server = await loop.create_unix_server(self._new_connection, path)
            self._owned_path = path
            os.chmod(path, self.settings.socket_mode)
            if self.settings.socket_group is not None:
                os.chown(path, -1, _group_id(self.settings.socket_group))
        else:
            self._server = await loop.create_unix_server(self._new_connection, sock=sock)
        for index, ring in enumerate(self._reports):
            self._report_tasks.append(loop.create_task(self._forward_reports(index, ring)))

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._owned_path is not None:  # never a socket systemd passed us
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._owned_path)
            self._owned_path = None

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
        if (header.keyless or self.settings.ignore_keys) and not self._per_record:
            # Sticky partitioning (KIP-794) moves on per batch.size bytes, never inside a
            # record run, so a whole keyless frame goes to one partition untouched.
            size = len(header.records)
            partition = self._partitioner.partition(header.topic, None, size, count)
            return [(partition, header.records, header.base_seq, header.count)]
        return self._split_per_record(header, count)

    def _split_per_record(self, header, count: int):
        # The slow path: the client left keyed (or round-robin) records to kpd. Choose each
        # record's partition (Java's murmur2 for keys), then re-encode each partition's
        # records. Records of one partition must stay a contiguous run of sequence numbers,
        # so a run breaks whenever the partition changes.
        segments = []
        run: list[RecordIn] = []
        run_partition = -1
        run_start = header.base_seq
        for index, record in enumerate(iter_records(header.records, header.count)):
            key = None if record.key is None else bytes(record.key)
            size = len(key or b"") + (len(record.value) if record.value is not None else 0)
            partition = self._partitioner.partition(header.topic, key, size, count)
            if partition != run_partition and run:
                segments.append((run_partition, encode_records(run), run_start, len(run)))
                run = []
                run_start = header.base_seq + index
            run_partition = partition
            run.append(RecordIn(record.key, record.value, record.timestamp, record.headers))
        segments.append((run_partition, encode_records(run), run_start, len(run)))
        return segments

    def fit(self, header, segments):
        """The segments, cut so that each fits in one ring entry; None if a record cannot.

        A frame may be larger than half a records ring (socket.max_frame_bytes is configured
        apart from rings.records_bytes), and a ring entry that large could never be written.
        Such a frame is re-encoded in runs of whole records; only a record that does not fit
        even alone fails, and then the whole frame does (it is accepted or failed as a unit).
        """
        limit = self.max_entry_bytes - SEGMENT_HEAD_BYTES - len(header.topic.encode())
        if all(len(segment[1]) <= limit for segment in segments):
            return segments  # the common case: one comparison per segment
        fitted = []
        for partition, records, first_seq, n in segments:
            if len(records) <= limit:
                fitted.append((partition, records, first_seq, n))
                continue
            runs = _runs_within(records, n, limit)
            if runs is None:
                return None
            fitted.extend((partition, section, first_seq + start, k) for section, start, k in runs)
        return fitted

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
        conn.owe(first_seq, n, ack)
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
            conn_id, payload = decode_report_entry(entry)  # payload: a whole REPORT frame
            conn = self.connections.get(conn_id)
            if conn is None:
                continue  # the client left; its records were still delivered or failed
            try:
                conn.forward_reports(payload)
            except Exception:
                # One bad entry must not stop this ring's reports for every connection.
                log.exception("conn %d: cannot forward a worker report", conn_id)
        ring.release(entries[-1][0])
        return True


def _runs_within(records, count: int, limit: int) -> list[tuple[bytes, int, int]] | None:
    """Re-encode a records section as ``(section, first index, count)`` runs of at most
    ``limit`` bytes each, records kept whole and in order; None if one record alone is larger.

    The slow path of an oversized frame only: it encodes every record once on its own to
    learn its size, and bounds a run by those sizes plus the columns its neighbours may add.
    """
    runs: list[tuple[bytes, int, int]] = []
    run: list[RecordIn] = []
    run_bytes = 1  # the layout byte
    run_start = 0
    for index, record in enumerate(iter_records(records, count)):
        one = RecordIn(record.key, record.value, record.timestamp, record.headers)
        alone = len(encode_records([one]))
        if alone > limit:
            return None
        size = alone - 1 + _COLUMN_SLACK
        if run and run_bytes + size > limit:
            runs.append((encode_records(run), run_start, len(run)))
            run, run_bytes, run_start = [], 1, index
        run.append(one)
        run_bytes += size
    runs.append((encode_records(run), run_start, len(run)))
    return runs
