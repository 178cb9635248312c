"""The plain-text listener (``socket.lines``): each newline-terminated line is one record.

For programs that cannot link a kpd client — shell scripts, ``tail -f | socat``, log tools.
A second UNIX socket of the ingest process; what is written to it is split into lines, and
every line becomes one record for the configured topic, keyed at the first ``key_separator``
when one is configured. Nothing is ever written back: the ack level is ``accepted``, so a line
counts as accepted once it is in a worker's ring (and kpd then delivers it like any record).

The records take the same path as a client's frames: each writer is a record source of
ingest's ``Admission`` (``admission.RecordSource``), and each batch of lines one records
section handed to ``admit`` — checked, partitioned (Kafka's partitioner: murmur2 for keyed
lines, sticky for keyless ones), cut into ring entries and counted there like a client's
frame. A writer reads no reports (its ``reader`` is None). This module owns only the socket,
its connections and the lines.

Rules (docs/operations.md, "Sending plain lines"):

* Lines end at ``\\n``; the bytes are taken as they are (a ``\\r`` before the ``\\n`` stays in
  the value). A last line without ``\\n`` before the writer closes its end is a record too.
* An empty line (nothing between two ``\\n``) is not a record: it is skipped and counted
  (``kpd_ingest_lines_empty_total``), as ``kpd send`` skips and counts it.
* A line longer than ``max_line_bytes`` is skipped whole: its bytes are read and dropped up to
  the next newline, so memory stays bounded by the limit; the connection logs it (the first
  one as a warning, later ones at debug level plus a count when it closes) and
  ``kpd_ingest_lines_too_long_total`` counts it. The lines after it are delivered.
* Backpressure by not reading: while a worker's ring is full the connection is paused, so the
  writer blocks in ``write``. As for a client's frame, lines that wait more than
  ``kafka.max.block.ms`` are dropped with a warning and counted as rejected (there is nobody to
  answer BUFFER_FULL to); so are lines for a topic Kafka cannot resolve.
* On shutdown the listener stops accepting and reading; lines not read by then were never
  accepted.

Must not import the server module (it receives the server's ``Admission``), uvloop or the
engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import NamedTuple

from daemon.ingest.admission import Admission
from daemon.ingest.socket_file import group_id, refuse_if_served
from daemon.wire.ring_entry import ENTRY_HEAD_BYTES
from kpd.protocol.base import AckLevel, KpdErrorCode
from kpd.protocol.records import ProduceHeader, encode_section

__all__ = ["LineSplitter", "LinesListener", "LinesSettings", "LinesStats", "SplitLines"]

log = logging.getLogger(__name__)

# A record in a ring entry costs its key and value plus two i32 lengths, and one u32 sequence
# offset when the planner scatters a batch over partitions (wire.ring_entry).
_PER_RECORD_BYTES = 12
_SECTION_SLACK = 64  # the layout byte and rounding, with room to spare


@dataclass(frozen=True, slots=True)
class LinesSettings:
    path: str
    topic: str
    key_separator: bytes | None  # None: every record is keyless
    max_line_bytes: int
    mode: int = 0o660
    group: str | int | None = None


@dataclass(frozen=True, slots=True)
class LinesStats:
    """A snapshot of the listener's own counts (its records are counted by the server)."""

    connections: int
    lines_too_long: int
    lines_empty: int


class SplitLines(NamedTuple):
    """What one chunk of bytes completed."""

    lines: list[bytes]  # the complete, non-empty lines, in order
    too_long: int  # lines it showed to be longer than the limit (skipped)
    empty: int  # empty lines (skipped: an empty line is no record)


class LineSplitter:
    """Bytes in, complete lines out; a line longer than the limit is dropped whole. Pure.

    Holds at most ``max_line_bytes`` of an unfinished line: past that it only looks for the
    next newline."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()  # the unfinished last line, at most max_line_bytes
        self._skipping = False  # inside a too-long line: drop everything up to its newline

    @property
    def buffered(self) -> int:
        """Bytes held of an unfinished line (never more than ``max_line_bytes``)."""
        return len(self._partial)

    def feed(self, data: bytes) -> SplitLines:
        """The lines ``data`` completes, and how many lines it skipped (too long, empty)."""
        parts = data.split(b"\n")
        rest = parts.pop()  # after the last newline: the start of a line still coming
        too_long = empty = 0
        lines = []
        if parts:
            first = parts[0]
            if self._skipping:
                del parts[0]  # the tail of a line already counted as too long
                self._skipping = False
            elif self._partial:
                self._partial += first
                parts[0] = bytes(self._partial)
                self._partial.clear()
            limit = self.max_line_bytes
            for line in parts:
                if len(line) > limit:
                    too_long += 1
                elif line:
                    lines.append(line)
                else:
                    empty += 1
        if self._skipping:
            return SplitLines(lines, too_long, empty)
        if len(self._partial) + len(rest) > self.max_line_bytes:
            too_long += 1
            self._partial.clear()
            self._skipping = True
        else:
            self._partial += rest
        return SplitLines(lines, too_long, empty)

    def finish(self) -> bytes | None:
        """The last line, unterminated, once the writer has closed its end (None if none)."""
        line, self._skipping = bytes(self._partial), False
        self._partial.clear()
        return line or None


def split_key(line: bytes, separator: bytes | None) -> tuple[bytes | None, bytes]:
    """(key, value) of a line: keyed at the first separator; a line without one is keyless."""
    if separator is None:
        return None, line
    key, found, value = line.partition(separator)
    return (key, value) if found else (None, line)


class LinesConnection(asyncio.Protocol):
    """One writer of the lines socket, a record source of ingest's admission. Owns its
    splitter, the lines read but not yet in a ring, and its pause state; all on ingest's
    event loop."""

    reader = None  # write-only: nobody reads outcomes here (admission.RecordSource)
    batched = False  # one line at a time: the worker's linger.ms gathers them
    write_ahead = None  # nothing journaled per line

    def __init__(self, listener: LinesListener, conn_id: int) -> None:
        self._listener = listener
        self.conn_id = conn_id  # from admission's sequence: unique among all sources
        self.name = f"lines client {conn_id & 0xFFFFFFFF}"
        self.transport: asyncio.Transport | None = None
        self._splitter = LineSplitter(listener.settings.max_line_bytes)
        self._pending: list[bytes] = []  # complete lines not yet written to a ring
        self._busy = False  # a batch waits for ring space or a topic lookup; reading paused
        self.idle = asyncio.Event()  # set while not busy: what a draining listener waits on
        self.idle.set()
        self._eof = False
        self.closed = False
        self.next_seq = 0  # numbers this connection's records, as a client's frames would
        self.too_long = 0

    @property
    def busy(self) -> bool:
        return self._busy

    # ---- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._listener.connections[self.conn_id] = self
        log.debug("%s connected", self.name)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._listener.connections.pop(self.conn_id, None)
        if self.too_long > 1:
            log.warning("%s: %d lines were too long and skipped", self.name, self.too_long)
        log.debug("%s disconnected%s", self.name, f": {exc}" if exc else "")

    def data_received(self, data: bytes) -> None:
        lines, too_long, empty = self._splitter.feed(data)
        if too_long:
            self._skipped(too_long)
        self._listener.lines_empty += empty
        self._pending.extend(lines)
        self._pump()

    def eof_received(self) -> bool:
        last = self._splitter.finish()
        if last is not None:
            self._pending.append(last)
        self._eof = True
        self._pump()
        return True  # the transport stays open until the pending lines are in rings

    def stop_reading(self) -> None:
        """Shutdown: read nothing more; lines already read still go to rings."""
        if not self.closed and self.transport is not None:
            self.transport.pause_reading()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()
        self.closed = True

    # ---- lines to rings ----------------------------------------------------------------

    def _pump(self) -> None:
        """Write pending lines batch by batch; pause reading while one must wait."""
        if self._busy:
            return
        listener = self._listener
        # Lines already read are routed even if the writer is gone: they were read whole.
        while self._pending:
            batch = self._take_batch()
            try:
                waiting = listener.route(self, batch)
            except Exception as exc:
                # A bug must cost this connection only, never the ingest process.
                log.exception("%s: routing lines failed", self.name)
                lost = len(batch) + len(self._pending)
                message = f"kpd could not route them: {exc}"
                admission = self._listener.admission
                admission.refuse(self, self.next_seq, lost, KpdErrorCode.INTERNAL_ERROR, message)
                self._pending.clear()
                self.close()
                return
            if waiting is not None:
                self._busy = True
                self.idle.clear()
                if not self.closed:
                    self.transport.pause_reading()
                asyncio.get_running_loop().create_task(self._finish_async(waiting))
                return
        listener.admission.publish_all()
        if self._eof and not self._pending:
            self.close()

    async def _finish_async(self, waiting) -> None:
        try:
            await waiting
        except Exception:
            log.exception("%s: routing lines failed", self.name)
        finally:
            self._busy = False
            self.idle.set()
            self._listener.admission.publish_all()
            if not self.closed and not self._listener.quiescing:
                self.transport.resume_reading()
            self._pump()

    def _take_batch(self) -> list[bytes]:
        """As many pending lines as fit one ring entry together."""
        budget = self._listener.batch_budget
        pending = self._pending
        used, end = 0, 0
        while end < len(pending):
            cost = len(pending[end]) + _PER_RECORD_BYTES
            if end and used + cost > budget:
                break
            used += cost
            end += 1
        batch = pending[:end]
        del pending[:end]
        return batch

    # ---- what admission calls back ---------------------------------------------------

    def refused(
        self, first_seq: int, count: int, code: KpdErrorCode, message: str, kafka_error: int
    ) -> None:
        """Lines admission did not take: there is nobody to answer, so they are logged (and
        counted by admission as rejected)."""
        log.warning("%s: %d lines dropped: %s", self.name, count, message)

    def _skipped(self, count: int) -> None:
        first = self.too_long == 0
        self.too_long += count
        self._listener.lines_too_long += count
        limit = self._listener.settings.max_line_bytes
        if first:
            log.warning(
                "%s: a line longer than %d bytes (socket.lines.max_line_bytes) was skipped; "
                "the lines after it are delivered",
                self.name,
                limit,
            )
        else:
            log.debug("%s: %d more lines longer than %d bytes skipped", self.name, count, limit)


class LinesListener:
    """The ``socket.lines`` socket and its connections, in the ingest process."""

    def __init__(self, settings: LinesSettings, admission: Admission) -> None:
        self.settings = settings
        self.admission = admission
        self.connections: dict[int, LinesConnection] = {}
        self.quiescing = False
        self.lines_too_long = 0
        self.lines_empty = 0
        self._server: asyncio.AbstractServer | None = None
        self._owned_path: str | None = None
        topic = settings.topic.encode()
        self._topic = settings.topic
        # Line bytes one batch may carry so that its ring entry always fits (no re-cutting).
        self.batch_budget = (
            admission.planner.max_entry_bytes - ENTRY_HEAD_BYTES - len(topic) - _SECTION_SLACK
        )

    def stats(self) -> LinesStats:
        return LinesStats(len(self.connections), self.lines_too_long, self.lines_empty)

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        path = self.settings.path
        if os.path.exists(path):
            refuse_if_served(path)
            os.unlink(path)  # a stale socket of a dead daemon
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._new_connection, path)
        self._owned_path = path
        os.chmod(path, self.settings.mode)
        if self.settings.group is not None:
            os.chown(path, -1, group_id(self.settings.group, "socket.lines.group"))
        log.info("plain lines on %s go to topic %s", path, self._topic)

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._owned_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._owned_path)
            self._owned_path = None

    async def quiesce(self) -> None:
        """Accept no more lines: stop listening and reading, and let batches that wait for
        ring space finish (at most max.block.ms)."""
        self.quiescing = True
        self.stop_accepting()
        for conn in list(self.connections.values()):
            conn.stop_reading()
        await self.admission.wait_idle(self.connections.values)
        self.admission.publish_all()

    def close(self) -> None:
        self.stop_accepting()
        for conn in list(self.connections.values()):
            conn.close()

    def _new_connection(self) -> LinesConnection:
        return LinesConnection(self, self.admission.next_source_id())

    # ---- routing -----------------------------------------------------------------------

    def route(self, conn: LinesConnection, lines: list[bytes]):
        """Put one batch of lines into rings; an awaitable when it must wait."""
        separator = self.settings.key_separator
        if separator is None:
            keys: list = [None] * len(lines)
            values = lines
        else:
            keys, values = [], []
            for line in lines:
                key, value = split_key(line, separator)
                keys.append(key)
                values.append(value)
        header = ProduceHeader(
            conn.next_seq,
            len(lines),
            -1,  # kpd partitions, as for a client that left the partition to kpd
            AckLevel.ACCEPTED,
            self._topic,
            memoryview(encode_section(keys, values)),
            keys.count(None) == len(keys),
        )
        conn.next_seq += len(lines)
        return self.admission.admit(conn, header, AckLevel.ACCEPTED)
