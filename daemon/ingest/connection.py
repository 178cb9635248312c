"""One client connection of the ingest server: frames in, records to rings, reports out.

Owns its frame decoder, its sequence counter, the backlog of frames waiting behind a full ring
or an unknown topic, what it still owes the client in reports, and its pause state. Frames are
handled in order; a bad frame gets its error report, an unrecoverable stream an ERROR frame and
a close, and nothing a client sends can stop the server. Its PRODUCE frames go into rings
through the server's ``Admission`` (a record source: ``admission.RecordSource``); it is also
the ``ReportReader`` of its own records' outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any, Protocol

from daemon.accel import native
from daemon.ingest.admission import Admission
from kpd import protocol as wire
from kpd.protocol import ReportRun, encode_reports
from kpd.protocol.base import (
    AckLevel,
    BadFrameError,
    FatalProtocolError,
    FrameType,
    KpdErrorCode,
    Persistence,
    Status,
)
from kpd.protocol.records import (
    ProduceHeader,
    RecordIn,
    decode_produce_header,
    encode_records,
    iter_records,
)

__all__ = ["ClientConnection", "ConnectionHost", "decode_produce"]

log = logging.getLogger(__name__)

_MAX_CLIENT_BUFFER = 64 * 1024 * 1024  # a client that never reads its reports is cut off
_LINGER_S = 2.0  # after ERROR: how long kpd reads and drops what a client still sends


_ACK_LEVELS = [AckLevel(value) for value in range(len(AckLevel))]  # by wire value
_new_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__
_PRODUCE_HEAD = native.produce_head if native is not None else None


def decode_produce(payload, produce_head=_PRODUCE_HEAD) -> ProduceHeader:
    """``decode_produce_header``, in one C call when the records section has the plain layout
    (the accelerator's ``produce_head``, whose twin and reference ``decode_produce_header``
    is: it runs for every other payload, and for the exact error of a bad one)."""
    if produce_head is not None:
        head = produce_head(payload)
        if head is not None:
            base_seq, count, partition, ack, topic, start, keyless = head
            return _new_tuple(ProduceHeader, (base_seq, count, partition, _ACK_LEVELS[ack],
                                              topic, payload[start:], keyless))  # fmt: skip
    return decode_produce_header(payload)


class ConnectionHost(Protocol):
    """What a connection needs of the server that accepted it (``IngestServer``): its
    settings, its admission, and a place in its registry of live connections. Declared here
    so the connection does not import the server."""

    settings: Any  # IngestSettings: max_frame_bytes
    admission: Admission

    def register(self, conn: ClientConnection) -> str | None:
        """Count ``conn`` among the live connections; why not, if the server is full."""

    def forget(self, conn: ClientConnection) -> None: ...


class ClientConnection(asyncio.Protocol):
    """One client. Owns its decoder, sequence counter and pause state."""

    def __init__(self, server: ConnectionHost, conn_id: int) -> None:
        self._server = server
        self._admission = server.admission
        # The id ring entries and reports carry: this one for version 1, the session id once a
        # version 2 HELLO named one. ``registry_id`` stays: the server's registry key.
        self.conn_id = self.registry_id = conn_id
        self.session_id: int | None = None
        # For logs: the id's low half counts connections of this ingest (the high half only
        # keeps ids unique across ingest restarts); the peer's pid is added once known.
        self.name = f"client {conn_id & 0xFFFFFFFF}"
        self.transport: asyncio.Transport | None = None
        self._decoder = wire.FrameDecoder(wire.Role.SERVER, server.settings.max_frame_bytes)
        self.ack_default = AckLevel.KAFKA
        self.next_seq = 0
        self.greeted = False
        self.closed = False
        # Frames waiting behind a full ring or an unknown topic, processed in order.
        self._backlog: list = []
        self._busy = False
        self.idle = asyncio.Event()  # set while not busy: what a draining server waits on
        self.idle.set()
        self.quiescing = False
        self.reader = self  # a kpd client reads its outcomes on this connection
        self.batched = False  # admission.RecordSource: the worker's linger.ms applies
        self.write_ahead = None  # admission.RecordSource: the sessions journal after staging
        # Outcomes still owed to the client: ack-KAFKA records in rings without a final run yet
        # and ACCEPTED reports held until their entry is published (``owe``, from admission).
        # GOODBYE is answered only once this reaches 0 (docs/protocol.md section 9).
        self.owed = 0
        self._goodbye_due = False

    @property
    def busy(self) -> bool:
        return self._busy

    def quiesce(self) -> None:
        """Accept no more records from this client. Frames in progress finish; every later
        PRODUCE is answered SHUTTING_DOWN / NOT_PERSISTED (docs/protocol.md section 9), so
        the client knows for certain those records are not in Kafka and may send them again
        after reconnecting — instead of leaving them unread in the socket, where they would
        count as written and of unknown outcome."""
        self.quiescing = True

    # ---- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        pid = _peer_pid(transport)
        if pid is not None:
            self.name += f" (pid {pid})"
        log.debug("%s connected", self.name)
        refusal = self._server.register(self)
        if refusal is not None:
            self.abort(KpdErrorCode.TOO_MANY_CONNECTIONS, refusal)

    def connection_lost(self, exc) -> None:
        log.debug("%s disconnected%s", self.name, f": {exc}" if exc else "")
        self.closed = True
        self._server.forget(self)
        if self.session_id is not None:
            self._admission.sessions.detach(self, self.session_id)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # after ERROR: read and dropped until the client closes (abort)
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
        backlog = self._backlog
        done = 0  # frames handled from the head of the backlog, dropped from it at the end
        while done < len(backlog) and not self.closed:
            item = backlog[done]
            if isinstance(item, FatalProtocolError):
                self.abort(item.code, item.message)
                return
            try:
                if item.type == FrameType.PRODUCE:  # the hot path, without _handle's dispatch
                    waiting = self._produce(item.payload)
                else:
                    waiting = self._handle(item)
            except Exception as exc:
                # A bug in a handler must cost this one connection, never the ingest process
                # (an exception escaping data_received makes uvloop drop the socket silently).
                log.exception("%s: %s frame handling failed", self.name, item.type.name)
                self.abort(KpdErrorCode.INTERNAL_ERROR, f"kpd could not handle the frame: {exc}")
                return
            if waiting is not None:
                del backlog[:done]  # the waiting frame is the head: _finish_async drops it
                self._busy = True
                self.idle.clear()
                self.transport.pause_reading()
                asyncio.get_running_loop().create_task(self._finish_async(waiting))
                return
            if self.closed:
                return  # the frame ended the connection; abort() emptied the backlog
            done += 1
        del backlog[:done]
        self._admission.publish_all()

    async def _finish_async(self, waiting) -> None:
        try:
            await waiting
        except Exception as exc:
            # Handlers report every expected failure themselves; this is a bug, and the client
            # must hear of it rather than wait for reports that will never come.
            log.exception("%s: frame handling failed", self.name)
            self.abort(KpdErrorCode.INTERNAL_ERROR, f"kpd could not handle the frame: {exc}")
        finally:
            if self._backlog:
                self._backlog.pop(0)
            self._busy = False
            self.idle.set()
            if not self.closed:
                self.transport.resume_reading()
                self._pump()

    def _handle(self, frame):
        kind = frame.type
        if kind == FrameType.PRODUCE:
            return self._produce(frame.payload)
        try:
            if kind == FrameType.HELLO:
                self._hello(wire.decode_hello(frame.payload))
            elif kind == FrameType.METADATA_REQUEST:
                return self._metadata(wire.decode_metadata_request(frame.payload))
            elif kind == FrameType.PING:
                self.send(wire.encode_pong(wire.decode_ping(frame.payload)))
            elif kind == FrameType.GOODBYE:
                self._goodbye(wire.decode_goodbye(frame.payload))
        except (BadFrameError, FatalProtocolError) as exc:
            # A malformed control frame has no records to attribute the error to, so it ends
            # the connection (docs/protocol.md section 4), with the decoder's code.
            self.abort(exc.code, exc.message)
        return None

    def _hello(self, hello: wire.Hello) -> None:
        sessions = self._admission.sessions
        supported = wire.PROTOCOL_VERSIONS if sessions is not None else (1, 1)
        version = wire.choose_version(hello, supported)  # FatalProtocolError: UNSUPPORTED_...
        ack = hello.default_ack
        self.ack_default = AckLevel(ack) if ack != AckLevel.CONNECTION_DEFAULT else AckLevel.KAFKA
        self.greeted = True
        settings = self._server.settings
        if version < 2:
            self.send(wire.encode_welcome(version, settings.max_frame_bytes, settings.server_name))
            return
        # Version 2: the records of this connection are the session's (docs/protocol.md 14).
        self.session_id = self.conn_id = hello.session_id
        self.next_seq, resumed = sessions.attach(self, hello.session_id, hello.resume_seq)
        self.name += f" session {hello.session_id & 0xFFFFFFFF:08x}"
        self.send(wire.encode_welcome(version, settings.max_frame_bytes, settings.server_name,
                                      resume_seq=self.next_seq, resumed=resumed))  # fmt: skip

    def _produce(self, payload):
        try:
            header = decode_produce(payload)
        except BadFrameError as exc:
            self._malformed_produce(exc)
            return None
        if header.base_seq < self.next_seq and self.session_id is not None:
            return self._resent(header)
        if header.base_seq != self.next_seq:
            self._sequence_mismatch("PRODUCE base_seq", header.base_seq)
            return None
        self.next_seq = header.base_seq + header.count
        if self.quiescing:
            self.reject(
                header.base_seq,
                header.count,
                KpdErrorCode.SHUTTING_DOWN,
                "kpd is shutting down; the records were not accepted: send them again after "
                "reconnecting",
            )
            return None
        ack = header.ack if header.ack != AckLevel.CONNECTION_DEFAULT else self.ack_default
        return self._admission.admit(self, header, ack)

    def _resent(self, header):
        """Version 2: a frame sent before (docs/protocol.md section 14). What kpd took is
        answered from the session (now, or when its report comes); what it never took is
        admitted as new."""
        end = header.base_seq + header.count
        untaken = self._admission.sessions.resend(self.session_id, header.base_seq, header.count)
        self.next_seq = max(self.next_seq, end)
        if not untaken:
            self._maybe_say_goodbye()
            return None
        ack = header.ack if header.ack != AckLevel.CONNECTION_DEFAULT else self.ack_default
        parts = [part_of(header, first, count) for first, count in untaken]
        return self._admit_in_order(parts, ack)

    def _admit_in_order(self, parts, ack):
        for index, part in enumerate(parts):
            if self.quiescing:
                self.reject(part.base_seq, part.count, KpdErrorCode.SHUTTING_DOWN,
                            "kpd is shutting down; the records were not accepted: send them "
                            "again after reconnecting")  # fmt: skip
                continue
            waiting = self._admission.admit(self, part, ack)
            if waiting is not None:
                return self._admit_after(waiting, parts[index + 1 :], ack)
        return None

    async def _admit_after(self, waiting, rest, ack) -> None:
        await waiting
        more = self._admit_in_order(rest, ack)
        if more is not None:
            await more

    def _malformed_produce(self, exc: BadFrameError) -> None:
        if exc.count is None:  # payload shorter than 12 bytes or count 0: nothing to answer
            self.abort(exc.code, exc.message)
        elif exc.first_seq != self.next_seq:
            # A wrong base_seq is fatal whatever the body holds: answering the run and moving
            # next_seq to it would let one flipped byte shift the numbering of every later frame.
            self._sequence_mismatch("PRODUCE base_seq", exc.first_seq)
        else:
            # The head names the records, so the stream stays usable (docs/protocol.md 4):
            # they count as received and the next PRODUCE starts after them.
            self.next_seq = exc.first_seq + exc.count
            self.reject(exc.first_seq, exc.count, exc.code, exc.message)

    def _sequence_mismatch(self, what: str, got: int) -> None:
        self.abort(KpdErrorCode.SEQUENCE_MISMATCH, f"{what} {got}, expected {self.next_seq}")

    async def _metadata(self, request: wire.MetadataRequest) -> None:
        answers = []
        for topic in request.topics:
            code, count = await self._admission.describe(topic)
            answers.append(wire.TopicMetadata(topic, code, count))
        self.send(wire.encode_metadata_response(request.request_id, answers))

    def _goodbye(self, next_seq: int) -> None:
        if next_seq != self.next_seq:
            self._sequence_mismatch("GOODBYE next_seq", next_seq)
            return
        # A client that reads GOODBYE knows it has every report it will get, so the answer
        # waits for the outcomes still owed; forward_reports sends it when the last arrives.
        self._goodbye_due = True
        self._maybe_say_goodbye()

    def _maybe_say_goodbye(self) -> None:
        if not self._goodbye_due or self.closed:
            return
        if self.session_id is not None:
            self._admission.publish_all()  # journals what it took, so pending is exact
            owed = self._admission.sessions.pending(self.session_id)
        else:
            owed = self.owed
        if owed <= 0:
            self.send(wire.encode_goodbye(self.next_seq))
            self.transport.close()  # after the buffered reports and GOODBYE are written
            self.closed = True

    # ---- outcomes from workers ---------------------------------------------------------

    def owe(self, n: int) -> None:
        """Admission staged ``n`` records whose outcome this client waits for (a worker's
        report, or an ACCEPTED report held until the entry is published and synced): GOODBYE
        waits for them."""
        self.owed += n

    def accepted(self, accepted_frame: bytes, n: int) -> None:
        """Send the ACCEPTED report of ``n`` owed records (a session's: journaled first, and
        sent to whichever connection now speaks for the session)."""
        self.owed -= n
        if self.session_id is not None:
            self._admission.sessions.accepted(self.session_id, accepted_frame)
        else:
            self.send(accepted_frame)
        self._maybe_say_goodbye()

    def reports_arrived(self) -> None:
        """Version 2: the session's outcomes arrived (sent by ``sessions``)."""
        self._maybe_say_goodbye()

    def replaced(self) -> None:
        """Version 2: a newer connection speaks for this session; this one ends without a
        word (its client has given it up)."""
        log.info("%s: replaced by a newer connection of its session", self.name)
        self.session_id = None  # its outcomes go to the newer connection from now on
        self.closed = True
        self._backlog.clear()
        if self.transport is not None:
            self.transport.close()

    def forward_reports(self, records: int, report_frame: memoryview) -> None:
        """A worker's REPORT frame of ``records`` records for this connection (ack-KAFKA only:
        the ring entry carries the ack level): pass it on as it is, undecoded, and say GOODBYE
        once nothing is owed."""
        self.owed -= records
        self.send(bytes(report_frame))
        self._maybe_say_goodbye()

    # ---- output ------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        if transport.get_write_buffer_size() > _MAX_CLIENT_BUFFER:
            self.abort(KpdErrorCode.INTERNAL_ERROR, "client does not read its reports")
            return
        transport.write(frame)

    def reject(
        self, first_seq: int, count: int, code: KpdErrorCode, message: str, kafka_error: int = 0
    ) -> None:
        """Refuse records of this connection through admission, which counts every refusal."""
        self._admission.refuse(self, first_seq, count, code, message, kafka_error)

    def refused(
        self, first_seq: int, count: int, code: KpdErrorCode, message: str, kafka_error: int
    ) -> None:
        """Answer records [first_seq, first_seq + count) FAILED, NOT_PERSISTED."""
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

    def abort(self, code: KpdErrorCode, message: str) -> None:
        """End the connection with an ERROR frame (docs/protocol.md section 4): written, then
        the socket half-closed, and what the client still sends read and dropped until it
        closes (at most ``_LINGER_S``), so that a client still writing gets the ERROR and an
        EOF rather than EPIPE/ECONNRESET with the ERROR lost."""
        log.info("%s: closing: %s", self.name, message)
        transport = self.transport
        if not self.closed and transport is not None:
            transport.write(wire.encode_error(code, message[:1000]))
            if _can_half_close(transport):
                transport.write_eof()
                transport.resume_reading()
                asyncio.get_running_loop().call_later(_LINGER_S, transport.close)
            else:
                transport.close()
        self.closed = True
        self._backlog.clear()


def _can_half_close(transport) -> bool:
    try:
        return bool(transport.can_write_eof())
    except NotImplementedError:
        return False


def _peer_pid(transport) -> int | None:
    """The connecting process's pid (SO_PEERCRED), for logs; None when unavailable."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)[0] or None


def part_of(header, first: int, count: int):
    """The frame's records ``[first, first + count)`` as a header of their own (a resend of
    which kpd took only a part: the rare path, re-encoded record by record)."""
    if first == header.base_seq and count == header.count:
        return header
    start = first - header.base_seq
    records = list(iter_records(header.records, header.count))[start : start + count]
    section = encode_records([RecordIn(r.key, r.value, r.timestamp, r.headers) for r in records])
    keyless = all(r.key is None for r in records)
    return header._replace(base_seq=first, count=count, records=memoryview(section),
                           keyless=keyless)  # fmt: skip
