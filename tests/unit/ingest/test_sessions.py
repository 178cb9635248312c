"""Protocol version 2 sessions in ingest, driven without a socket (the connection rig of
test_connection): ring entries keyed by the session, resends answered from the journal, the
reports of a session's records reaching its next connection, across a new ingest too."""

from __future__ import annotations

import asyncio
import json
import os

from daemon.ingest.connection import ClientConnection
from daemon.ingest.server import IngestServer, IngestSettings
from daemon.wire.ring_entry import encode_report_entry
from kpd import protocol as wire
from kpd.protocol import (
    SESSION_BIT,
    AckLevel,
    FrameType,
    KpdErrorCode,
    Persistence,
    ReportRun,
    Status,
)
from tests.settings_for import settings_for
from tests.unit.ingest.test_connection import TOPIC, RecordingTransport, Rig, rig  # noqa: F401

SESSION = SESSION_BIT | 0x1234


def _connect_v2(server, conn_id: int, resume_seq: int = 0, ack=AckLevel.KAFKA):
    conn = ClientConnection(server, conn_id)
    transport = RecordingTransport()
    conn.connection_made(transport)
    conn.data_received(wire.encode_hello(1, 2, ack, "v2", session_id=SESSION,
                                         resume_seq=resume_seq))  # fmt: skip
    (welcome,) = transport.frames()
    return conn, transport, wire.decode_welcome(welcome.payload)


def _records(n: int):
    return [(b"k", b"v%d" % i, None, ()) for i in range(n)]


def _deliver(server, first: int, count: int, offset: int) -> None:
    """A worker's report for the session's records, as it arrives from a reports ring."""
    run = ReportRun(first, count, Status.DELIVERED, 1, offset, -1)
    frame = wire.encode_reports([run])
    server.admission.sessions.report(SESSION, memoryview(frame))


def test_a_v2_connection_keys_its_ring_entries_by_the_session(rig):  # noqa: F811
    async def scenario():
        conn, _transport, welcome = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        return welcome

    welcome = asyncio.run(scenario())
    assert (welcome.version, welcome.resume_seq, welcome.resumed) == (2, 0, False)
    ((_, entry),) = rig.entries()
    assert entry.conn_id == SESSION


def test_a_v1_hello_still_gets_version_1(rig):  # noqa: F811
    async def scenario():
        return rig.connect()

    conn, _ = asyncio.run(scenario())
    assert conn.session_id is None and conn.conn_id == 7


def test_a_resend_is_answered_from_the_session_never_taken_twice(rig):  # noqa: F811
    async def scenario():
        first, _, _ = _connect_v2(rig.server, 7)
        first.data_received(wire.encode_produce(0, TOPIC, 1, _records(4)))
        first.data_received(wire.encode_produce(4, TOPIC, 1, _records(2)))
        first.connection_lost(None)  # the connection breaks before any report
        _deliver(rig.server, 0, 4, 100)  # records 0..3 delivered meanwhile; 4..5 not yet
        second, transport, welcome = _connect_v2(rig.server, 8, resume_seq=0)
        second.data_received(wire.encode_produce(0, TOPIC, 1, _records(4)))
        second.data_received(wire.encode_produce(4, TOPIC, 1, _records(2)))
        answered = transport.frames()
        _deliver(rig.server, 4, 2, 104)  # ... and now the pending ones come
        return welcome, answered, transport.frames()

    welcome, answered, later = asyncio.run(scenario())
    assert (welcome.resume_seq, welcome.resumed) == (6, True)
    assert len(rig.entries()) == 2  # the two frames once each, never again
    (run,) = wire.decode_reports(answered[0].payload)
    assert (run.first_seq, run.count, run.status, run.base_offset) == (0, 4, Status.DELIVERED, 100)
    (run,) = wire.decode_reports(later[0].payload)
    assert (run.first_seq, run.count, run.base_offset) == (4, 2, 104)


def test_a_resend_kpd_never_took_is_taken(rig):  # noqa: F811
    async def scenario():
        conn, _, _ = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, "forbidden", 1, _records(2)))  # refused
        conn.connection_lost(None)
        again, _transport, welcome = _connect_v2(rig.server, 8, resume_seq=0)
        again.data_received(wire.encode_produce(0, TOPIC, 1, _records(2)))
        return welcome

    welcome = asyncio.run(scenario())
    assert welcome.resume_seq == 0  # a refusal takes nothing
    assert [e.base_seq for _, e in rig.entries()] == [0]


def test_a_partly_taken_resend_takes_only_the_rest(rig):  # noqa: F811
    async def scenario():
        conn, _, _ = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        conn.connection_lost(None)
        again, _, _ = _connect_v2(rig.server, 8, resume_seq=0)
        again.data_received(wire.encode_produce(0, TOPIC, 1, _records(5)))

    asyncio.run(scenario())
    entries = [e for _, e in rig.entries()]
    assert [(e.base_seq, e.count) for e in entries] == [(0, 3), (3, 2)]


def test_goodbye_waits_for_the_sessions_pending_records_and_accepted_is_journaled(rig):  # noqa: F811
    async def scenario():
        conn, transport, _ = _connect_v2(rig.server, 7, ack=AckLevel.ACCEPTED)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(2)))
        await asyncio.sleep(0)
        conn.data_received(wire.encode_goodbye(2))
        return transport.frames()

    frames = asyncio.run(scenario())
    assert [f.type for f in frames] == [FrameType.REPORT, FrameType.GOODBYE]
    pieces = rig.server.admission.sessions.journal.lookup(f"{SESSION:016x}", 0, 2)
    assert pieces[0].outcome[0] == Status.ACCEPTED


def test_a_new_ingest_finds_the_session_and_routes_a_workers_report_to_it(rig):  # noqa: F811
    async def scenario():
        conn, _, _ = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        # kill -9 of ingest: a new server on the same rings and journal.
        settings = settings_for(IngestSettings, socket_path="/nonexistent",
                                sessions_path=rig.journal)  # fmt: skip
        reborn = IngestServer(settings, rig.server.admission._records, rig.server._reports,
                              rig.server.admission.topics)  # fmt: skip
        again, transport, welcome = _connect_v2(reborn, 8, resume_seq=0)
        again.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        # The worker's report, keyed by the session, through the reports ring.
        run = ReportRun(0, 3, Status.DELIVERED, 1, 7, -1)
        ring = rig.worker_report_ring(0)
        ring.write(encode_report_entry(SESSION, 3, wire.encode_reports([run])))
        ring.publish()
        reborn._forward_once(reborn._reports[0])
        return welcome, transport.frames()

    welcome, frames = asyncio.run(scenario())
    assert welcome.resumed and welcome.resume_seq == 3
    assert len(rig.entries()) == 1
    (run,) = wire.decode_reports(frames[0].payload)
    assert (run.first_seq, run.count, run.base_offset) == (0, 3, 7)


def _reborn_after_a_kill_that_lost_the_taken_line(rig):  # noqa: F811
    """kill -9 of ingest between a ring publish and its journal line: the journal is the
    file as it was before (here: none), the rings hold the entry; a new ingest starts."""
    os.unlink(rig.journal)
    settings = settings_for(IngestSettings, socket_path="/nonexistent",
                            sessions_path=rig.journal)  # fmt: skip
    return IngestServer(settings, rig.server.admission._records, rig.server._reports,
                        rig.server.admission.topics)  # fmt: skip


def test_records_in_a_ring_but_not_in_the_journal_are_taken_once_after_a_kill(rig):  # noqa: F811
    async def scenario():
        conn, _, _ = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        conn.data_received(wire.encode_produce(3, TOPIC, -1, _records(4)))  # ingest partitions
        reborn = _reborn_after_a_kill_that_lost_the_taken_line(rig)
        again, transport, welcome = _connect_v2(reborn, 8, resume_seq=0)
        again.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        again.data_received(wire.encode_produce(3, TOPIC, -1, _records(4)))
        return welcome, transport.frames(), reborn

    welcome, frames, reborn = asyncio.run(scenario())
    assert (welcome.resumed, welcome.resume_seq) == (True, 7)
    assert sum(e.count for _, e in rig.entries()) == 7  # each record once, never again
    assert frames == []  # pending: their reports answer them when the workers send them
    assert reborn.admission.sessions.pending(SESSION) == 7


def test_a_report_of_records_the_journal_never_took_answers_their_resend(rig):  # noqa: F811
    async def scenario():
        conn, _, _ = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        for worker in rig.worker_ends:  # produced: the worker released the entry
            entries = worker.read_entries()
            if entries:
                worker.release(entries[-1][0])
        reborn = _reborn_after_a_kill_that_lost_the_taken_line(rig)
        run = ReportRun(0, 3, Status.DELIVERED, 1, 40, -1)
        ring = rig.worker_report_ring(0)
        ring.write(encode_report_entry(SESSION, 3, wire.encode_reports([run])))
        ring.publish()
        reborn._forward_once(reborn._reports[0])
        again, transport, welcome = _connect_v2(reborn, 8, resume_seq=0)
        again.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        return welcome, transport.frames()

    welcome, frames = asyncio.run(scenario())
    assert (welcome.resumed, welcome.resume_seq) == (True, 3)
    assert len(rig.entries()) == 0  # released, and not taken again
    (run,) = wire.decode_reports(frames[0].payload)
    assert (run.first_seq, run.count, run.status, run.base_offset) == (0, 3, Status.DELIVERED, 40)


def _journal_lines(rig) -> list[dict]:  # noqa: F811
    with open(rig.journal, encoding="utf-8") as journal:
        return [json.loads(line) for line in journal if line.strip()]


def test_a_kafka_ack_taken_line_is_written_with_its_report_before_the_outcome(rig):  # noqa: F811
    """Ack KAFKA: the first answer is the worker's report, so the taken line waits for that
    report's write (one write, the taken line first) instead of a write of its own."""

    async def scenario():
        conn, transport, _ = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        before = [line for line in _journal_lines(rig) if "t" in line]
        _deliver(rig.server, 0, 3, 40)
        return before, transport.frames()

    before, frames = asyncio.run(scenario())
    assert before == []  # published, its line waiting for the report
    kinds = [("t" in line, "o" in line) for line in _journal_lines(rig) if "f" not in line]
    assert kinds == [(True, False), (False, True)]  # taken, then its outcome
    (run,) = wire.decode_reports(frames[0].payload)
    assert (run.first_seq, run.count, run.base_offset) == (0, 3, 40)


def test_a_question_about_the_session_writes_the_waiting_taken_lines_first(rig):  # noqa: F811
    async def scenario():
        conn, _, _ = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
        return rig.server.admission.sessions.pending(SESSION)

    assert asyncio.run(scenario()) == 3
    assert [line["t"] for line in _journal_lines(rig) if "t" in line] == [[0, 3]]


def test_with_a_synced_journal_the_taken_line_is_written_at_the_publish():
    synced = Rig(fsync=100)  # rings.fsync syncs the journal: lines reach it as they always did
    try:

        async def scenario():
            conn, _, _ = _connect_v2(synced.server, 7)
            conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(3)))
            return [line["t"] for line in _journal_lines(synced) if "t" in line]

        assert asyncio.run(scenario()) == [[0, 3]]
    finally:
        synced.close()


def test_a_failed_report_is_journaled_with_its_message_and_a_kept_one_not_at_all(rig):  # noqa: F811
    async def scenario():
        conn, transport, _ = _connect_v2(rig.server, 7)
        conn.data_received(wire.encode_produce(0, TOPIC, 1, _records(4)))
        failed = ReportRun(0, 2, Status.FAILED, 1, -1, -1, KpdErrorCode.KAFKA_ERROR, 87,
                           Persistence.NOT_PERSISTED, "invalid record")  # fmt: skip
        kept = ReportRun(2, 2, Status.FAILED, 1, -1, -1, KpdErrorCode.SHUTTING_DOWN, 0,
                         Persistence.POSSIBLY_PERSISTED, "kept for the next start")  # fmt: skip
        frame = wire.encode_reports([failed, kept])
        rig.server.admission.sessions.report(SESSION, memoryview(frame))
        return transport.frames()

    (frame,) = asyncio.run(scenario())
    assert [run.first_seq for run in wire.decode_reports(frame.payload)] == [0]
    sessions = rig.server.admission.sessions
    first, rest = sessions.journal.lookup(f"{SESSION:016x}", 0, 4)
    assert first.outcome == [int(Status.FAILED), 1, -1, -1, int(KpdErrorCode.KAFKA_ERROR), 87,
                             int(Persistence.NOT_PERSISTED), "invalid record"]  # fmt: skip
    assert (rest.first, rest.count, rest.outcome) == (2, 2, None)  # still pending
    assert sessions.pending(SESSION) == 2
