"""The UNIX-socket ingestion server: client frames in, entries into worker rings, reports out.

Owns the listening socket, the client connections (``connection``, one per client), the
consuming end of every reports ring, and the ``Admission`` through which every record source
(its connections, the ``socket.lines`` writers, the ``socket.kafka`` listener) puts records
into the workers' records rings: topic checks, partition lookup, planning into ring entries,
backpressure (``admission``). Reports go to the connection under the entry's conn_id, or to a
source of another socket that asked to hear them (``hear_reports``).
Ingest never dies of input: a bad frame gets an error report, an unrecoverable stream an
ERROR frame and a close, and the other connections are unaffected.

Reports: each ring entry carries its frame's ack level. Ingest reports ACCEPTED itself, but
only once the entry is published (and, with ``rings.fsync: always``, synced: ``ring_sync``),
never while the entry is merely staged; workers report only ack-KAFKA entries, as whole REPORT
frames that this server forwards unchanged to the connection the entry came from; a connection
counts what it is still owed (held ACCEPTED reports included) and answers GOODBYE once that is
0. Ack-NONE records get no report once accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.ingest.admission import Admission, TopicDirectory
from daemon.ingest.connection import ClientConnection
from daemon.ingest.dedupe import DedupeJournal
from daemon.ingest.ring_sync import RingSync
from daemon.ingest.routing import EntryPlanner
from daemon.ingest.sessions import Sessions, is_session
from daemon.ingest.socket_file import group_id, refuse_if_served
from daemon.ring import RingConsumer, RingProducer
from daemon.wire.ring_entry import decode_records_entry, decode_report_entry
from kpd import protocol as wire
from kpd.protocol.base import KpdErrorCode

__all__ = ["IngestServer", "IngestSettings", "IngestStats", "ReportSink"]

log = logging.getLogger(__name__)


class ReportSink(Protocol):
    """Who hears the workers' REPORT frames of one conn_id."""

    def forward_reports(self, records: int, frame) -> None:
        """A worker's REPORT frame covering ``records`` records."""

    def keep_reports(self) -> None:
        """The frames forwarded are about to leave their ring: make what must survive a kill
        of ingest durable now (a sink that journals outcomes later, at its own pace)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestSettings:
    """What the server runs with, every value from the validated configuration (no defaults
    here: they live in the schema; the ingest process builds this from its config)."""

    socket_path: str
    socket_mode: int
    max_frame_bytes: int
    max_block_s: float  # kafka.max.block.ms
    batch_size: int  # kafka.batch.size: sticky partitioning switches after this many bytes
    max_connections: int
    partitioner: str  # kafka.partitioner, for records the client left to kpd
    ignore_keys: bool  # kafka.partitioner.ignore.keys
    socket_group: str | int | None  # chgrp the socket file (name or gid)
    fsync: str | int  # rings.fsync: never, always or an interval in ms
    server_name: str = "kpd"  # kpd's name in the handshake, not a setting
    # Protocol v2 sessions' journal (None: version 1 only) and its bounds.
    sessions_path: str | None = None
    session_expiry_s: float = 0.0
    session_window_records: int = 0


@dataclass(frozen=True, slots=True)
class IngestStats:
    """A snapshot of the server's counts, for metrics and ``/status``."""

    records_accepted: int
    records_rejected: int
    buffer_full_events: int
    connections: int
    ring_syncs: int  # rings.fsync: syncs of the records rings' files done so far
    rejected_by_reason: dict[str, int]  # records_rejected by KpdErrorCode name
    # The stage trace's last stage (report written -> forwarded to the client), the
    # histogram the process layer gave the server (None: not traced).
    stage_forward: Any = None


class IngestServer:
    def __init__(
        self,
        settings: IngestSettings,
        records: list[RingProducer],
        reports: list[RingConsumer],
        topics: TopicDirectory,
        stage_forward: Any = None,
    ) -> None:
        """``stage_forward``: a histogram (``observe(seconds, times)``) for the stage trace's
        "report written -> forwarded" stage, from the process layer (ingest imports no
        metrics); None leaves it untraced."""
        if settings.max_frame_bytes < wire.MIN_MAX_FRAME_BYTES:
            # Fail at boot: every connection's FrameDecoder would refuse it, leaving clients
            # hanging in the handshake.
            raise ValueError(
                f"max_frame_bytes {settings.max_frame_bytes} is below the protocol minimum "
                f"{wire.MIN_MAX_FRAME_BYTES}"
            )
        self.settings = settings
        self._reports = reports
        self._stage_forward = stage_forward
        self.connections: dict[int, ClientConnection] = {}
        # Record sources that are no connection of this socket but hear workers' reports
        # under a conn_id of their own (the Kafka listener): not counted, never aborted.
        self._report_sinks: dict[int, ReportSink] = {}
        self._server: asyncio.AbstractServer | None = None
        self._owned_path: str | None = None  # the socket file we created (and remove)
        self._expiring: asyncio.Task | None = None  # drops idle protocol v2 sessions
        # One ring entry may take at most half its ring; every records ring has the same size.
        planner = EntryPlanner(
            settings.partitioner,
            settings.batch_size,
            settings.ignore_keys,
            min(ring.max_entry_bytes for ring in records),
        )
        sync = RingSync(settings.fsync, records)
        sessions = None
        if settings.sessions_path is not None:
            journal = DedupeJournal(settings.sessions_path,
                                    window_records=settings.session_window_records,
                                    idle_expiry_s=settings.session_expiry_s,
                                    durable=settings.fsync != "never")  # fmt: skip
            sync.watch(journal)  # synced with the rings, by rings.fsync
            sessions = Sessions(journal)
            unreleased = (entry for ring in records for entry in ring.unreleased_entries())
            adopted = sessions.adopt(map(decode_records_entry, unreleased))
            if adopted:
                log.info("journaled %d records of protocol v2 sessions found in the rings but not "
                         "in the sessions journal (taken just before an ingest was killed)",
                         adopted)  # fmt: skip
        self.admission = Admission(records, topics, planner, sync, settings.max_block_s,
                                   sessions)  # fmt: skip

    def stats(self) -> IngestStats:
        admission = self.admission
        return IngestStats(
            admission.records_accepted,
            admission.records_rejected,
            admission.buffer_full_events,
            len(self.connections),
            admission.ring_sync.syncs,
            dict(admission.rejected_by_reason),
            self._stage_forward,
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
        for ring in self._reports:
            # Watched for the life of the server: a report doorbell calls _forward_reports
            # directly, with no task, future or add_reader per wait (issue 18, finding 5).
            ring.watch(loop, lambda ring=ring: self._forward_reports(ring))
            self._forward_reports(ring)
        if self.admission.sessions is not None:
            self._expiring = loop.create_task(self._expire_sessions())
        self.admission.ring_sync.start()

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._owned_path is not None:  # never a socket systemd passed us
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._owned_path)
            self._owned_path = None

    async def close(self) -> None:
        self.stop_accepting()
        for ring in self._reports:
            ring.unwatch()
        if self._expiring is not None:
            self._expiring.cancel()
        for conn in list(self.connections.values()):
            conn.abort(KpdErrorCode.SHUTTING_DOWN, "kpd is shutting down")

    async def quiesce(self) -> None:
        """Accept no more records: stop listening, finish frames in progress, answer later
        PRODUCE frames SHUTTING_DOWN (ClientConnection.quiesce)."""
        self.stop_accepting()
        for conn in list(self.connections.values()):
            conn.quiesce()
        await self.admission.wait_idle(self.connections.values)
        self.admission.publish_all()
        if self.admission.sessions is not None:
            self.admission.sessions.flush()  # no taken line waits for a report any more
        await self.admission.ring_sync.close()

    async def finish(self) -> None:
        """The workers are done: forward their last reports, then say goodbye to clients."""
        for ring in self._reports:
            self._forward_once(ring)
        if self.admission.sessions is not None:
            self.admission.sessions.flush()
        await self.close()

    def _new_connection(self) -> ClientConnection:
        return ClientConnection(self, self.admission.next_source_id())

    def register(self, conn: ClientConnection) -> str | None:
        """A new connection joins the live ones; why it may not (socket.max_connections)."""
        limit = self.settings.max_connections
        if len(self.connections) >= limit:
            return f"kpd serves {limit} connections already (socket.max_connections)"
        self.connections[conn.registry_id] = conn
        return None

    def hear_reports(self, conn_id: int, sink: ReportSink) -> None:
        """Workers' reports for ``conn_id`` go to ``sink``: a record source of another socket
        (before ``start``, so reports of entries an earlier ingest wrote reach it too)."""
        self._report_sinks[conn_id] = sink

    def forget(self, conn: ClientConnection) -> None:
        """A connection is gone: later reports for it are dropped."""
        self.connections.pop(conn.registry_id, None)

    async def _expire_sessions(self) -> None:
        sessions = self.admission.sessions
        period = max(1.0, min(60.0, self.settings.session_expiry_s / 4))
        while True:
            await asyncio.sleep(period)
            sessions.expire()

    # ---- reports -----------------------------------------------------------------------

    def _forward_reports(self, ring: RingConsumer) -> None:
        """Forward what the ring holds, then sleep on its doorbell until more comes."""
        while True:
            self._forward_once(ring)
            if not ring.sleep_until_readable():
                return

    def _forward_once(self, ring: RingConsumer) -> bool:
        entries = ring.read_entries()
        if not entries:
            return False
        trace = self._stage_forward
        now_ns = time.monotonic_ns()
        sessions = self.admission.sessions
        for _, entry in entries:
            conn_id, records, written_ns, frame = decode_report_entry(entry)
            conn = self.connections.get(conn_id) or self._report_sinks.get(conn_id)
            if conn is None and is_session(conn_id) and sessions is not None:
                try:
                    # Journaled before the ring entry is released: after a kill -9 of ingest
                    # the next one reads it again or finds it in the journal.
                    sessions.report(conn_id, frame)
                except Exception:
                    log.exception("session %x: cannot take a worker report", conn_id)
                if trace is not None and written_ns:
                    trace.observe(max(0, now_ns - written_ns) / 1e9, records)
                continue
            if conn is None:
                continue  # the client left; its records were still delivered or failed
            try:
                conn.forward_reports(records, frame)
            except Exception:
                # One bad entry must not stop this ring's reports for every connection.
                log.exception("client %d: cannot forward a worker report", conn_id & 0xFFFFFFFF)
            if trace is not None and written_ns:
                trace.observe(max(0, now_ns - written_ns) / 1e9, records)
        for sink in self._report_sinks.values():
            sink.keep_reports()  # before the release: a kill -9 finds them here or there
        ring.release(entries[-1][0])
        return True
