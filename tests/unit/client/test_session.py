"""The sans-IO ProducerSession and the PRODUCE encoder, without a socket: bytes in, bytes out."""

from __future__ import annotations

import contextlib
import random
import struct
import threading

import pytest

from kpd import CONNECTION_LOST, Persistence, RecordMetadata
from kpd.common import ClientSettings
from kpd.protocol import (
    MIN_MAX_FRAME_BYTES,
    FrameDecoder,
    FrameType,
    ReportRun,
    Role,
    Status,
    TopicMetadata,
    Welcome,
    decode_metadata_request,
    decode_produce_header,
    decode_welcome,
    encode_metadata_response,
    encode_reports,
    encode_welcome,
    iter_records,
)
from kpd.protocol.produce import encode_produce_frame
from kpd.session import AwaitingMetadata, ProducerSession
from tests.unit.client.fake_kpd import copy_view

# Each test runs with both twins of send()'s hot path (tests/unit/client/conftest.py).
pytestmark = pytest.mark.usefixtures("send_path")

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
            decoded.append((copy_view(r.key), copy_view(r.value), r.timestamp, tuple(r.headers)))
    assert decoded == sent
    # Full frames were cut only when the next record did not fit: at most one record short.
    assert all(len(data) > MIN_MAX_FRAME_BYTES - 400 for data in frames[:-1])


# --- the session alone: bytes in, bytes out, no socket --------------------------------------


class _CheckingHub:
    """Futures of a session driven by hand: result() is only asked once settled."""

    lock = contextlib.nullcontext()

    def wait(self, ready, timeout):
        assert ready(), "the test asked for a result the session has not settled"


def _live_session(clock: list[float], linger_s: float = 0.005) -> ProducerSession:
    """A session past a real WELCOME: its decoder has seen the handshake bytes."""
    decoder = FrameDecoder(Role.CLIENT)
    (welcome_frame,) = decoder.feed(encode_welcome(1, MIN_MAX_FRAME_BYTES, "fake"))
    welcome = decode_welcome(welcome_frame.payload)
    settings = ClientSettings(batch_bytes=1 << 30, linger_s=linger_s)
    return ProducerSession(settings, welcome, decoder, lambda: clock[0], _CheckingHub())


def test_without_linger_an_idle_adapter_frames_at_once_and_a_busy_one_lets_records_coalesce():
    session = _live_session([100.0], linger_s=ClientSettings().linger_s)  # the default: none
    session.add("t", None, b"a", partition=0)
    assert session.take_wake()  # a frame opened: an adapter asleep must be woken
    assert session.next_deadline() is None  # and no timer: nothing happens by time alone
    session.seal_ready(idle=False)  # a write is in flight: the record waits for company
    assert [out for out in session.take_output() if out.end_seq >= 0] == []  # METADATA only
    session.add("t", None, b"b", partition=0)
    session.add("t", None, b"c", partition=1)
    assert not session.take_wake()  # the adapter is already awake
    session.seal_ready(idle=True)  # the write finished: everything open goes, in one frame each
    frames = [decode_produce_header(_split(out.data)[1]) for out in session.take_output()]
    assert [(f.partition, f.base_seq, f.count) for f in frames] == [(0, 0, 2), (1, 2, 1)]
    session.add("t", None, b"d", partition=0)
    assert session.take_wake()  # the next record after an idle write opens a frame again


def _split(data: bytes) -> tuple[int, bytes]:
    """(type, payload) of one frame, read with struct: length u32 | type u8 | payload."""
    (length,) = struct.unpack_from(">I", data)
    assert len(data) == 4 + length
    return data[4], data[5:]


def test_a_keyed_record_asks_for_metadata_then_leaves_partitioned_and_settles_from_a_report():
    clock = [100.0]
    session = _live_session(clock)
    with pytest.raises(AwaitingMetadata):
        session.add("t", b"21", b"v")
    assert session.take_wake()
    (request,) = session.take_output()
    kind, payload = _split(request.data)
    assert kind == FrameType.METADATA_REQUEST
    asked = decode_metadata_request(payload)
    assert asked.topics == ("t",)

    session.receive(encode_metadata_response(asked.request_id, [TopicMetadata("t", 0, 4)]))
    assert session.placement_ready("t")
    future = session.add("t", b"21", b"v")
    assert session.take_output() == []  # lingering: nothing is due yet
    clock[0] += 0.005
    session.seal_due()
    (produce,) = session.take_output()
    kind, payload = _split(produce.data)
    assert kind == FrameType.PRODUCE
    header = decode_produce_header(payload)
    java_partition = (-973932308 & 0x7FFFFFFF) % 4  # Kafka's vector: murmur2(b"21")
    assert (header.base_seq, header.count, header.partition) == (0, 1, java_partition)
    session.sent(produce.end_seq, produce.buffered)
    assert not future.done()

    report = ReportRun(0, 1, Status.DELIVERED, header.partition, 42, -1)
    done = session.receive(encode_reports([report]))
    assert done.frames and future.done()
    assert future.result() == RecordMetadata("t", header.partition, 42, -1)
    assert session.settled_below == session.next_seq == 1


def test_after_a_reconnect_written_frames_fail_and_unwritten_ones_go_out_renumbered_from_0():
    session = _live_session([0.0])
    session.receive(encode_metadata_response(0, [TopicMetadata("t", 0, 2)]))  # unasked: ignored
    first = session.add("t", b"a", b"1", partition=0)
    session.seal_all()
    second = session.add("t", b"b", b"2", partition=1)
    session.seal_all()
    out = [o for o in session.take_output() if _split(o.data)[0] == FrameType.PRODUCE]
    assert [decode_produce_header(_split(o.data)[1]).base_seq for o in out] == [0, 1]
    session.sent(out[0].end_seq, out[0].buffered)  # only the first frame was written

    session.disconnected(CONNECTION_LOST, "kpd went away")
    assert first.exception().persistence is Persistence.POSSIBLY_PERSISTED
    assert not second.done()

    decoder = FrameDecoder(Role.CLIENT)
    (frame,) = decoder.feed(encode_welcome(1, MIN_MAX_FRAME_BYTES, "fake"))
    session.reconnected(decode_welcome(frame.payload), decoder)
    resent = [o for o in session.take_output() if _split(o.data)[0] == FrameType.PRODUCE]
    (header,) = [decode_produce_header(_split(o.data)[1]) for o in resent]
    assert (header.base_seq, header.partition) == (0, 1)  # producer seq 1 is wire seq 0 now
    session.sent(resent[0].end_seq, resent[0].buffered)
    session.receive(encode_reports([ReportRun(0, 1, Status.DELIVERED, 1, 7, -1)]))
    assert second.result() == RecordMetadata("t", 1, 7, -1)


# --- protocol version 2: the session outlives the connection ---------------------------------


def _past_welcome(resume_seq: int = 0, resumed: bool = False) -> FrameDecoder:
    decoder = FrameDecoder(Role.CLIENT)
    decoder.feed(encode_welcome(2, MIN_MAX_FRAME_BYTES, "kpd", 0, resume_seq, resumed))
    return decoder


def _v2_session() -> ProducerSession:
    welcome = Welcome(2, MIN_MAX_FRAME_BYTES, 0, "test", 0, False)
    settings = ClientSettings(batch_bytes=1 << 30)
    return ProducerSession(settings, welcome, _past_welcome(), lambda: 0.0, _NoHub())


def _written_frames(session: ProducerSession, records: int, per_frame: int) -> list[bytes]:
    frames = []
    for start in range(0, records, per_frame):
        for i in range(start, start + per_frame):
            session.add("t", b"k", b"v%d" % i, 0)
        session.seal_all()
        for out in session.take_output():
            if out.buffered:
                session.sent(out.end_seq, out.buffered)
                frames.append(out.data)
    return frames


def _delivered(session: ProducerSession, first: int, count: int) -> None:
    run = ReportRun(first, count, Status.DELIVERED, 0, 100 + first, -1)
    session.receive(encode_reports([run]))


def test_v2_a_resumed_session_sends_every_unreported_frame_again_unchanged():
    session = _v2_session()
    frames = _written_frames(session, 6, 2)  # frames [0,2) [2,4) [4,6), all written
    _delivered(session, 0, 2)
    _delivered(session, 2, 1)  # frame [2,4) half reported
    done = session.disconnected(CONNECTION_LOST, "ingest killed")
    assert not done.callbacks  # nothing failed
    assert session.resume_seq == 2  # the first frame with a record still unreported
    session.reconnected(Welcome(2, MIN_MAX_FRAME_BYTES, 0, "kpd", 6, True), _past_welcome(6, True))
    again = [out.data for out in session.take_output() if out.buffered]
    assert again == frames[1:]  # same bytes, same sequence numbers


def test_v2_a_session_kpd_forgot_fails_what_was_written_as_possibly_persisted():
    session = _v2_session()
    futures = []
    for i in range(2):
        futures.append(session.add("t", b"k", b"v%d" % i, 0))
    session.seal_all()
    for out in session.take_output():
        session.sent(out.end_seq, out.buffered)
    session.disconnected(CONNECTION_LOST, "daemon killed")
    session.reconnected(Welcome(2, MIN_MAX_FRAME_BYTES, 0, "kpd", 0, False), _past_welcome())
    for future in futures:
        assert future.exception(timeout=0).persistence is Persistence.POSSIBLY_PERSISTED
    session.add("t", b"k", b"new", 0)
    session.seal_all()
    (out,) = [out for out in session.take_output() if out.buffered]
    assert decode_produce_header(memoryview(out.data)[5:]).base_seq == 0  # kpd's resume_seq
