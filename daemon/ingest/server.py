"""The UNIX-socket ingestion server: client frames in, entries into worker rings, reports out.

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

Reports: each ring entry carries its frame's ack level. Ingest reports ACCEPTED itself, but
only once the entry is published (and, with ``rings.fsync: always``, synced: ``ring_sync``),
never while the entry is merely staged; workers report only ack-KAFKA entries, as whole REPORT
frames that ingest forwards unchanged; ingest counts what it still owes each connection (held
ACCEPTED reports included) and answers GOODBYE once that is 0. Ack-NONE records get no report
once accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemon.ingest.connection import ClientConnection, is_legal_topic
from daemon.ingest.ring_sync import RingSync
from daemon.ingest.routing import EntryPlanner, worker_for
from daemon.ingest.socket_file import group_id, refuse_if_served
from daemon.ring import RingConsumer, RingProducer
from daemon.wire.ring_entry import decode_report_entry, entry_head, seq_runs
from kpd import protocol as wire
from kpd.protocol import ReportRun, encode_reports
from kpd.protocol.base import (
    AckLevel,
    KpdErrorCode,
    Status,
)

__all__ = ["IngestServer", "IngestSettings", "IngestStats", "TopicDirectory", "is_legal_topic"]

log = logging.getLogger(__name__)


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
    fsync: str | int = "never"  # rings.fsync: never, always or an interval in ms


def _runs_of(first_seq: int, n: int, offsets) -> list[tuple[int, int, int]]:
    """An entry's records as (first seq, index, count) runs of consecutive sequence numbers."""
    if offsets is None:
        return [(first_seq, 0, n)]
    return [(first_seq + offset, index, k) for offset, index, k in seq_runs(offsets, 0, n)]


@dataclass(frozen=True, slots=True)
class IngestStats:
    """A snapshot of the server's counts, for metrics and ``/status``."""

    records_accepted: int
    records_rejected: int
    buffer_full_events: int
    connections: int
    ring_syncs: int  # rings.fsync: syncs of the records rings' files done so far


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


class IngestServer:
    def __init__(
        self,
        settings: IngestSettings,
        records: list[RingProducer],
        reports: list[RingConsumer],
        topics: TopicDirectory,
    ) -> None:
        if settings.max_frame_bytes < wire.MIN_MAX_FRAME_BYTES:
            # Fail at boot: every connection's FrameDecoder would refuse it, leaving clients
            # hanging in the handshake.
            raise ValueError(
                f"max_frame_bytes {settings.max_frame_bytes} is below the protocol minimum "
                f"{wire.MIN_MAX_FRAME_BYTES}"
            )
        self.settings = settings
        self._records = records
        self._reports = reports
        self.topics = topics
        self.connections: dict[int, ClientConnection] = {}
        # Connection ids stay unique across ingest restarts: reports of a previous ingest's
        # connections must never reach a new connection that reused a small id.
        start = (time.time_ns() // 1_000_000) & 0xFFFFFFFF
        self._conn_ids = itertools.count(start << 32)
        self._dirty: set[int] = set()  # rings with staged, unpublished entries
        # ACCEPTED reports of staged entries: sent once published (and synced, if asked).
        self._unannounced: list = []
        self.ring_sync = RingSync(settings.fsync, records)
        self._server: asyncio.AbstractServer | None = None
        self._owned_path: str | None = None  # the socket file we created (and remove)
        self._report_tasks: list[asyncio.Task] = []
        # One ring entry may take at most half its ring; every records ring has the same size.
        self.planner = EntryPlanner(
            settings.partitioner,
            settings.batch_size,
            settings.ignore_keys,
            min(ring.max_entry_bytes for ring in records),
        )
        self.records_accepted = 0
        self.records_rejected = 0
        self.buffer_full_events = 0

    def stats(self) -> IngestStats:
        return IngestStats(
            self.records_accepted,
            self.records_rejected,
            self.buffer_full_events,
            len(self.connections),
            self.ring_sync.syncs,
        )

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, sock=None) -> None:
        loop = asyncio.get_running_loop()
        if sock is None:
            path = self.settings.socket_path
            if os.path.exists(path):
                refuse_if_served(path)
                os.unlink(path)  # a stale socket of a dead daemon
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._server = await loop.create_unix_server(self._new_connection, path)
            self._owned_path = path
            os.chmod(path, self.settings.socket_mode)
            if self.settings.socket_group is not None:
                os.chown(path, -1, group_id(self.settings.socket_group))
        else:
            self._server = await loop.create_unix_server(self._new_connection, sock=sock)
        for index, ring in enumerate(self._reports):
            self._report_tasks.append(loop.create_task(self._forward_reports(index, ring)))
        self.ring_sync.start()

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
            conn.abort(KpdErrorCode.SHUTTING_DOWN, "kpd is shutting down")

    async def quiesce(self) -> None:
        """Accept no more records: stop listening, finish frames in progress, answer later
        PRODUCE frames SHUTTING_DOWN (ClientConnection.quiesce)."""
        self.stop_accepting()
        for conn in list(self.connections.values()):
            conn.quiesce()
        deadline = asyncio.get_running_loop().time() + self.settings.max_block_s
        while any(c.busy for c in self.connections.values()):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)  # bounded: a frame waits at most max.block.ms
        self.publish_all()
        await self.ring_sync.close()

    async def finish(self) -> None:
        """The workers are done: forward their last reports, then say goodbye to clients."""
        for ring in self._reports:
            self._forward_once(ring)
        await self.close()

    def _new_connection(self) -> ClientConnection:
        return ClientConnection(self, self.next_connection_id())

    def next_connection_id(self) -> int:
        """A connection id no other connection of this ingest (or of an earlier one) has: for
        this server's clients and for other listeners that enqueue (``daemon.ingest.lines``)."""
        return next(self._conn_ids)

    # ---- routing -----------------------------------------------------------------------

    def enqueue(self, conn: ClientConnection, entries, header, ack):
        """Write entries into rings; returns an awaitable if a ring is full."""
        topic = header.topic.encode()
        now_ms = time.time_ns() // 1_000_000
        workers = len(self._records)
        for position, (partition, records, first_seq, n, offsets) in enumerate(entries):
            ring_index = worker_for(header.topic, partition, workers)
            ring = self._records[ring_index]
            head = entry_head(conn.conn_id, first_seq, n, partition, now_ms, ack, topic, offsets)
            view = ring.reserve(len(head) + len(records))
            if view is None:
                return self._enqueue_when_free(conn, entries[position:], header, ack)
            view[: len(head)] = head
            view[len(head) :] = records
            del view
            self._dirty.add(ring_index)
            self._accepted(conn, first_seq, n, partition, ack, offsets)
        return None

    async def _enqueue_when_free(self, conn, entries, header, ack) -> None:
        topic = header.topic.encode()
        workers = len(self._records)
        deadline = asyncio.get_running_loop().time() + self.settings.max_block_s
        log.debug(
            "%s: a worker's ring is full; reading nothing more from it for up to %.0f ms "
            "(max.block.ms)",
            conn.name,
            self.settings.max_block_s * 1000,
        )
        self.publish_all()
        for partition, records, first_seq, n, offsets in entries:
            ring_index = worker_for(header.topic, partition, workers)
            ring = self._records[ring_index]
            now_ms = time.time_ns() // 1_000_000
            head = entry_head(conn.conn_id, first_seq, n, partition, now_ms, ack, topic, offsets)
            size = len(head) + len(records)
            while True:
                view = ring.reserve(size)
                if view is not None:
                    break
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or not await ring.wait_writable(size, timeout=remaining):
                    self.buffer_full_events += 1
                    message = (
                        f"worker ring full for {self.settings.max_block_s * 1000:.0f} ms"
                        " (max.block.ms)"
                    )
                    for seq, _, k in _runs_of(first_seq, n, offsets):
                        conn.reject(seq, k, KpdErrorCode.BUFFER_FULL, message)
                    view = None
                    break
            if view is None:
                continue
            view[: len(head)] = head
            view[len(head) :] = records
            del view
            ring.publish()
            self._accepted(conn, first_seq, n, partition, ack, offsets)
            self._announce([ring_index])

    def _accepted(
        self, conn: ClientConnection, first_seq: int, n: int, partition: int, ack, offsets
    ) -> None:
        self.records_accepted += n
        if ack == AckLevel.KAFKA:
            conn.owed += n  # the worker reports them
        elif ack == AckLevel.ACCEPTED:
            runs = [
                ReportRun(seq, k, Status.ACCEPTED, partition)
                for seq, _, k in _runs_of(first_seq, n, offsets)
            ]
            frame = encode_reports(runs)
            conn.hold_announcement(n)
            self._unannounced.append(lambda: conn.announce(frame, n))

    def publish_all(self) -> None:
        """Publish staged entries: one index store and at most one wake-up per ring."""
        for index in self._dirty:
            self._records[index].publish()
        self._announce(self._dirty)
        self._dirty.clear()

    def _announce(self, published) -> None:
        announce, self._unannounced = self._unannounced, []
        if announce or published:
            self.ring_sync.published(published, announce)

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
            conn_id, records, frame = decode_report_entry(entry)
            conn = self.connections.get(conn_id)
            if conn is None:
                continue  # the client left; its records were still delivered or failed
            try:
                conn.forward_reports(records, frame)
            except Exception:
                # One bad entry must not stop this ring's reports for every connection.
                log.exception("client %d: cannot forward a worker report", conn_id & 0xFFFFFFFF)
        ring.release(entries[-1][0])
        return True
