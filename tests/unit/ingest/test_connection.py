"""One ingest connection in this process: frames in through ``data_received``, ring entries and
report frames out — with real rings and a transport that records what was written.

The whole-daemon tests reach the same code through a socket; these pin the connection's own
rules where a failure is easy to read: the handshake, routing a PRODUCE frame into the ring of
the worker that owns the partition, errors for bad records and bad sequences, and GOODBYE
waiting for the reports still owed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from daemon.ingest.admission import TopicDirectory
from daemon.ingest.connection import ClientConnection
from daemon.ingest.server import IngestServer, IngestSettings
from daemon.ownership import worker_for
from daemon.ring import Ring, RingConsumer, RingProducer, RingWakeups
from daemon.wire.ring_entry import decode_records_entry
from kpd import protocol as wire
from kpd.protocol import (
    AckLevel,
    FrameDecoder,
    FrameType,
    KpdErrorCode,
    Persistence,
    ReportRun,
    Role,
    Status,
)
from tests.settings_for import settings_for

WORKERS = 2
TOPIC = "orders"
PARTITIONS = 6


class RecordingTransport(asyncio.Transport):
    """What the connection wrote, and whether it paused, resumed or closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False
        self._decoder = FrameDecoder(Role.CLIENT)  # a client's view: WELCOME comes first

    def write(self, data) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_write_buffer_size(self) -> int:
        return 0

    def frames(self) -> list:
        frames = self._decoder.feed(bytes(self.written))
        self.written.clear()
        return frames


class Rig:
    """An unstarted IngestServer over real rings, and the workers' ends of those rings."""

    def __init__(self, **overrides) -> None:
        """``overrides``: fields of the server's ``IngestSettings`` (``max_block_s``)."""
        # In a directory of its own: a run killed before close() leaves nothing in the tree.
        base = os.path.join(tempfile.mkdtemp(prefix="kpd-test-conn-"), "ring")
        self.names = []
        self.worker_ends = []
        self.report_ends: list = []  # (ring name, wakeups): a worker's end, made on demand
        self._record_wakeups = []
        for index in range(WORKERS):
            rec, rep = f"{base}-{index}-rec", f"{base}-{index}-rep"
            self.names += [rec, rep]
            rec_w, rep_w = RingWakeups.create(), RingWakeups.create()
            Ring.create(rec, 1 << 20).close()
            Ring.create(rep, 1 << 16).close()
            self._record_wakeups.append(rec_w)
            self.worker_ends.append(RingConsumer(Ring.attach(rec), rec_w))
            self.report_ends.append((rep, rep_w))
        self._overrides = overrides

        async def only_orders(topic: str, timeout_s: float) -> int:
            if topic == TOPIC:
                return PARTITIONS
            raise LookupError(f"unknown topic {topic}")

        self._topics = TopicDirectory(lambda topic: topic != "forbidden", only_orders)
        asyncio.run(self._topics.partition_count(TOPIC, 1.0))  # known: frames route at once
        self.journal = os.path.join(tempfile.mkdtemp(prefix="kpd-test-sessions-"), "journal")
        self.server = self._ingest()

    def _ingest(self) -> IngestServer:
        """An ingest server with ends of its own on the rings (a process's ends)."""
        records = [RingProducer(Ring.attach(self.names[2 * i]), self._record_wakeups[i])
                   for i in range(WORKERS)]  # fmt: skip
        reports = [RingConsumer(Ring.attach(name), wakeups) for name, wakeups in self.report_ends]
        settings = settings_for(IngestSettings, socket_path="/nonexistent",
                                sessions_path=self.journal, **self._overrides)  # fmt: skip
        return IngestServer(settings, records, reports, self._topics)

    def restart_ingest(self) -> IngestServer:
        """As after a kill -9 of ingest: a new server on the same rings; entries the old one
        staged and never published are gone (a new producer starts at ``write_pos``)."""
        self.server = self._ingest()
        return self.server

    def connect(self) -> tuple[ClientConnection, RecordingTransport]:
        conn = ClientConnection(self.server, 7)
        transport = RecordingTransport()
        conn.connection_made(transport)
        conn.data_received(wire.encode_hello(1, 1, AckLevel.KAFKA, "test"))
        (welcome,) = transport.frames()
        assert welcome.type == FrameType.WELCOME
        return conn, transport

    def worker_report_ring(self, index: int) -> RingProducer:
        name, wakeups = self.report_ends[index]
        return RingProducer(Ring.attach(name), wakeups)

    def entries(self) -> list:
        found = []
        for index, ring in enumerate(self.worker_ends):
            for _, entry in ring.read_entries():
                found.append((index, decode_records_entry(entry)))
        return found

    def close(self) -> None:
        for name in self.names:
            Ring.unlink(name)
        shutil.rmtree(os.path.dirname(self.names[0]), ignore_errors=True)
        shutil.rmtree(os.path.dirname(self.journal), ignore_errors=True)


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    yield made
    made.close()


def _run(coro):
    return asyncio.run(coro)


def test_produce_lands_in_the_ring_of_the_worker_that_owns_the_partition(rig):
    async def scenario():
        conn, transport = rig.connect()
        for partition in range(PARTITIONS):
            records = [(b"k", b"v%d" % partition, None, ())] * 3
            conn.data_received(wire.encode_produce(3 * partition, TOPIC, partition, records))
        return conn, transport

    conn, transport = _run(scenario())
    entries = rig.entries()
    assert sorted(e.partition for _, e in entries) == list(range(PARTITIONS))
    for index, entry in entries:
        assert index == worker_for(TOPIC, entry.partition, WORKERS)
        assert (entry.conn_id, entry.topic, entry.count) == (7, TOPIC, 3)
        assert entry.base_seq == 3 * entry.partition
    assert conn.owed == 3 * PARTITIONS  # ack KAFKA: the worker's reports are still owed
    assert transport.frames() == []  # nothing to say before the workers report
    assert not transport.closed


def test_an_illegal_topic_is_answered_invalid_topic_and_the_connection_goes_on(rig):
    async def scenario():
        conn, transport = rig.connect()
        conn.data_received(wire.encode_produce(0, "bad topic!", 0, [(None, b"x", None, ())]))
        conn.data_received(wire.encode_produce(1, TOPIC, 2, [(None, b"y", None, ())]))
        return transport

    transport = _run(scenario())
    (report,) = transport.frames()
    (run,) = wire.decode_reports(report.payload)
    assert (run.first_seq, run.count, run.status) == (0, 1, Status.FAILED)
    assert (run.error, run.kafka_error) == (KpdErrorCode.INVALID_TOPIC, 0)
    assert [e.base_seq for _, e in rig.entries()] == [1]  # the next frame still went through
    assert rig.server.stats().records_rejected == 1


def test_a_topic_outside_the_allow_list_is_refused_without_asking_kafka(rig):
    async def scenario():
        conn, transport = rig.connect()
        conn.data_received(wire.encode_produce(0, "forbidden", 0, [(None, b"x", None, ())]))
        return transport

    (report,) = _run(scenario()).frames()
    (run,) = wire.decode_reports(report.payload)
    assert run.error == KpdErrorCode.TOPIC_NOT_ALLOWED
    assert rig.entries() == []


def test_a_wrong_sequence_number_ends_the_connection_with_an_error_frame(rig):
    async def scenario():
        conn, transport = rig.connect()
        conn.data_received(wire.encode_produce(5, TOPIC, 0, [(None, b"x", None, ())]))
        return conn, transport

    conn, transport = _run(scenario())
    (error,) = transport.frames()
    assert error.type == FrameType.ERROR
    assert wire.decode_error(error.payload).code == KpdErrorCode.SEQUENCE_MISMATCH
    assert transport.closed and conn.closed
    assert rig.entries() == []


def test_goodbye_waits_for_the_reports_still_owed(rig):
    async def scenario():
        conn, transport = rig.connect()
        conn.data_received(wire.encode_produce(0, TOPIC, 1, [(None, b"x", None, ())] * 4))
        conn.data_received(wire.encode_goodbye(4))
        before = transport.frames()
        delivered = ReportRun(0, 4, Status.DELIVERED, 1, 100, -1)
        conn.forward_reports(4, memoryview(wire.encode_reports([delivered])))
        return before, transport

    before, transport = _run(scenario())
    assert before == []  # four records owed: no GOODBYE yet
    report, goodbye = transport.frames()
    assert wire.decode_reports(report.payload)[0].base_offset == 100
    assert (goodbye.type, wire.decode_goodbye(goodbye.payload)) == (FrameType.GOODBYE, 4)
    assert transport.closed


def test_a_quiescing_connection_keeps_reading_and_refuses_records_as_not_persisted(rig):
    # protocol.md section 9: once kpd drains, PRODUCE frames are answered with one FAILED run
    # per frame (partition -1, SHUTTING_DOWN, NOT_PERSISTED), never left unread in the socket.
    async def scenario():
        conn, transport = rig.connect()
        conn.data_received(wire.encode_produce(0, TOPIC, 1, [(None, b"in", None, ())]))
        conn.quiesce()
        records = [(None, b"a", None, ()), (None, b"b", None, ())]
        conn.data_received(wire.encode_produce(1, TOPIC, 1, records))
        return transport

    transport = _run(scenario())
    assert not transport.paused
    (report,) = transport.frames()
    (run,) = wire.decode_reports(report.payload)
    assert (run.first_seq, run.count, run.partition) == (1, 2, -1)
    assert (run.error, run.persistence) == (KpdErrorCode.SHUTTING_DOWN, Persistence.NOT_PERSISTED)
    assert [e.base_seq for _, e in rig.entries()] == [0]  # only the frame before the drain


# ---- docs/protocol.md as a stranger reads it (issue 21 section 3) ---------------------------


class HalfClosingTransport(RecordingTransport):
    """A UNIX socket's transport: it can half-close (shutdown SHUT_WR)."""

    def __init__(self) -> None:
        super().__init__()
        self.eof_written = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True


def test_after_a_fatal_error_kpd_half_closes_and_drops_what_the_client_still_sends(rig):
    # Point 8: ERROR, then EOF; the socket stays open for reading a while, so a client
    # still writing does not get EPIPE/ECONNRESET and lose the ERROR.
    async def scenario():
        conn = ClientConnection(rig.server, 7)
        transport = HalfClosingTransport()
        conn.connection_made(transport)
        conn.data_received(wire.encode_hello(1, 1, AckLevel.KAFKA, "t"))
        transport.frames()
        conn.data_received(wire.encode_produce(9, TOPIC, 0, [(None, b"x", None, ())]))
        conn.data_received(wire.encode_produce(10, TOPIC, 0, [(None, b"y", None, ())]))
        return transport

    transport = _run(scenario())
    (error,) = transport.frames()
    assert wire.decode_error(error.payload).code == KpdErrorCode.SEQUENCE_MISMATCH
    assert transport.eof_written and not transport.closed  # closed later, or at the EOF
    assert rig.entries() == []


def test_a_frame_after_goodbye_is_fatal_while_reports_are_owed(rig):
    # Point 7, as documented in section 9: the owed reports are not sent then.
    async def scenario():
        conn, transport = rig.connect()
        conn.data_received(wire.encode_produce(0, TOPIC, 1, [(None, b"x", None, ())]))
        conn.data_received(wire.encode_goodbye(1) + wire.encode_ping(5))
        return transport

    transport = _run(scenario())
    (error,) = transport.frames()
    assert wire.decode_error(error.payload).code == KpdErrorCode.UNEXPECTED_FRAME
    assert transport.closed


def test_frames_pipelined_after_an_accepted_hello_are_processed_in_order(rig):
    # Point 9: section 3 says so; here the HELLO and a PRODUCE arrive in one read.
    async def scenario():
        conn = ClientConnection(rig.server, 7)
        transport = RecordingTransport()
        conn.connection_made(transport)
        hello = wire.encode_hello(1, 1, AckLevel.ACCEPTED, "t")
        conn.data_received(hello + wire.encode_produce(0, TOPIC, 2, [(None, b"x", None, ())]))
        return transport

    welcome, report = _run(scenario()).frames()
    assert welcome.type == FrameType.WELCOME
    (run,) = wire.decode_reports(report.payload)
    assert (run.first_seq, run.status, run.partition) == (0, Status.ACCEPTED, 2)


def test_a_frame_refused_as_a_whole_has_partition_minus_one_even_when_it_named_one(rig):
    # Point 6: a per-frame FAILED run never carries a partition.
    async def scenario():
        conn, transport = rig.connect()
        conn.data_received(wire.encode_produce(0, TOPIC, PARTITIONS, [(None, b"x", None, ())]))
        return transport

    (report,) = _run(scenario()).frames()
    (run,) = wire.decode_reports(report.payload)
    assert (run.error, run.partition) == (KpdErrorCode.INVALID_PARTITION, -1)


def test_a_client_that_does_not_read_is_cut_off_past_the_documented_buffer(rig):
    # Point 11: section 9 names the bound (64 MiB of frames kpd has not written yet).
    class Full(RecordingTransport):
        def get_write_buffer_size(self) -> int:
            return 64 * 1024 * 1024 + 1

    async def scenario():
        conn, _ = rig.connect()
        full = Full()
        conn.transport = full
        conn.data_received(wire.encode_ping(1))
        return full

    full = _run(scenario())
    (error,) = full.frames()
    assert wire.decode_error(error.payload).code == KpdErrorCode.INTERNAL_ERROR


def test_welcome_names_kpd_and_its_version():
    # Point 13: WELCOME's server_name carries the version.
    from importlib.metadata import version

    from daemon.process.child import server_name

    assert server_name().startswith(f"kpd/{version('kpd')} ")
