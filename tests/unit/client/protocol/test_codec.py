"""Tests of the kpd socket protocol codec (kpd.protocol) against docs/protocol.md.

Golden frames are built here field by field with struct.pack — never with the codec — and the
hex examples in docs/protocol.md must spell exactly the same bytes.
"""

from __future__ import annotations

import re
import struct
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpd.protocol import (
    HANDSHAKE_MAX_FRAME_BYTES,
    MIN_MAX_FRAME_BYTES,
    SESSION_BIT,
    AckLevel,
    BadFrameError,
    FatalProtocolError,
    FrameDecoder,
    FrameType,
    Hello,
    KpdErrorCode,
    MetadataRequest,
    MetadataResponse,
    Persistence,
    RecordIn,
    ReportRun,
    Role,
    Status,
    TopicMetadata,
    Welcome,
    choose_version,
    decode_error,
    decode_goodbye,
    decode_hello,
    decode_metadata_request,
    decode_metadata_response,
    decode_ping,
    decode_pong,
    decode_produce_header,
    decode_reports,
    decode_welcome,
    encode_error,
    encode_goodbye,
    encode_hello,
    encode_metadata_request,
    encode_metadata_response,
    encode_ping,
    encode_pong,
    encode_produce,
    encode_records,
    encode_reports,
    encode_welcome,
    error_code,
    is_retriable,
    iter_records,
    report_run_fields,
)
from kpd.protocol.base import encode_string
from kpd.protocol.produce import encode_produce_frame, frame_overhead
from kpd.protocol.records import header_blob

PROTOCOL_MD = Path(__file__).resolve().parents[4] / "docs" / "protocol.md"
MAX_FRAME = 1 << 20


def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def i16(v):
    return struct.pack(">h", v)


def u32(v):
    return struct.pack(">I", v)


def i32(v):
    return struct.pack(">i", v)


def u64(v):
    return struct.pack(">Q", v)


def i64(v):
    return struct.pack(">q", v)


def string(text):
    raw = text.encode("utf-8")
    return u16(len(raw)) + raw


def frame(frame_type: int, *fields: bytes) -> bytes:
    body = b"".join(fields)
    return u32(1 + len(body)) + u8(frame_type) + body  # length counts the type byte


def payload_of(whole_frame: bytes) -> memoryview:
    return memoryview(whole_frame)[5:]


# --- golden frames (the same bytes are printed as hex in docs/protocol.md) ------------------

GOLDEN = {
    "hello": frame(
        0x01,  # HELLO
        b"KPD1",  # magic
        u16(1),  # min version
        u16(1),  # max version
        u8(2),  # default ack: KAFKA
        u32(0),  # features requested: none
        string("app-1"),  # client name
    ),
    "welcome": frame(
        0x02,  # WELCOME
        u16(1),  # chosen version
        u32(1048576),  # max frame bytes: 1 MiB
        u32(0),  # features granted
        string("kpd@host-a"),  # server name
    ),
    "error": frame(0x03, u16(5), string("client speaks 2..3, server 1..1")),
    "produce": frame(
        0x04,  # PRODUCE
        u64(0),  # base_seq
        u32(2),  # count
        i32(3),  # partition
        u8(3),  # ack: connection default
        string("t1"),  # topic
        u8(0),  # records layout: no timestamps, no headers
        i32(2),  # key_lens[0]
        i32(-1),  # key_lens[1]: null key
        i32(2),  # value_lens[0]
        i32(3),  # value_lens[1]
        b"k1" + b"v1",  # record 0: key, value
        b"v22",  # record 1: value
    ),
    "produce_ts_headers": frame(
        0x04,  # PRODUCE
        u64(2),  # base_seq
        u32(1),  # count
        i32(-1),  # partition: kpd chooses
        u8(1),  # ack: ACCEPTED
        string("t1"),  # topic
        u8(0x03),  # layout: timestamps + headers
        i64(1700000000000),  # timestamps[0]
        i32(-1),  # key_lens[0]: null
        i32(1),  # value_lens[0]
        i32(15),  # header_lens[0]
        b"x",  # record 0 value
        string("h") + i32(1) + b"1",  # header "h" = b"1"
        string("n") + i32(-1),  # header "n" = null  (8 + 7 = 15 header bytes)
    ),
    "report": frame(
        0x05,  # REPORT
        u32(2),  # run count
        # run 0: records 0..1 delivered to partition 3 at offsets 42, 43
        u64(0) + u32(2) + u8(2) + i32(3) + i64(42) + i64(-1),
        u16(0) + i16(0) + u8(0) + u16(0),  # no error, no message
        # run 1: record 2 failed, delivery timeout, may be in Kafka
        u64(2) + u32(1) + u8(3) + i32(5) + i64(-1) + i64(-1),
        u16(46) + i16(0) + u8(2) + string("timed out"),
    ),
    "metadata_request": frame(0x06, u32(7), u16(2), string("t1"), string("nope")),
    "metadata_response": frame(
        0x07,
        u32(7),  # request id
        u16(2),  # topic count
        string("t1") + u16(0) + i32(6),  # t1: 6 partitions
        string("nope") + u16(40) + i32(-1),  # nope: UNKNOWN_TOPIC
    ),
    "ping": frame(0x08, u64(0x0102030405060708)),
    "pong": frame(0x09, u64(0x0102030405060708)),
    "goodbye": frame(0x0A, u64(3)),
}


def _doc_examples() -> dict[str, bytes]:
    """Hex dumps of docs/protocol.md: ``<!-- example: NAME -->`` then a fenced block."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    found = {}
    for match in re.finditer(r"<!-- example: (\w+) -->\s*```\w*\n(.*?)```", text, re.S):
        hex_text = "".join(line.split("#")[0] for line in match.group(2).splitlines())
        found[match.group(1)] = bytes.fromhex(hex_text)
    return found


def test_doc_hex_examples_spell_the_golden_frames():
    assert _doc_examples() == GOLDEN


def test_encoders_produce_the_golden_frames():
    encoded = {
        "hello": encode_hello(1, 1, AckLevel.KAFKA, "app-1"),
        "welcome": encode_welcome(1, 1048576, "kpd@host-a"),
        "error": encode_error(KpdErrorCode.UNSUPPORTED_VERSION, "client speaks 2..3, server 1..1"),
        "produce": encode_produce(
            0,
            "t1",
            3,
            [RecordIn(b"k1", b"v1"), RecordIn(None, b"v22")],
            AckLevel.CONNECTION_DEFAULT,
        ),
        "produce_ts_headers": encode_produce(
            2,
            "t1",
            -1,
            [RecordIn(None, b"x", 1700000000000, [("h", b"1"), ("n", None)])],
            AckLevel.ACCEPTED,
        ),
        "report": encode_reports(
            [
                ReportRun(0, 2, Status.DELIVERED, 3, 42, -1),
                ReportRun(
                    2,
                    1,
                    Status.FAILED,
                    5,
                    error=KpdErrorCode.DELIVERY_TIMEOUT,
                    persistence=Persistence.POSSIBLY_PERSISTED,
                    message="timed out",
                ),
            ]
        ),
        "metadata_request": encode_metadata_request(7, ["t1", "nope"]),
        "metadata_response": encode_metadata_response(
            7,
            [
                TopicMetadata("t1", KpdErrorCode.NONE, 6),
                TopicMetadata("nope", KpdErrorCode.UNKNOWN_TOPIC, -1),
            ],
        ),
        "ping": encode_ping(0x0102030405060708),
        "pong": encode_pong(0x0102030405060708),
        "goodbye": encode_goodbye(3),
    }
    assert encoded == GOLDEN


def test_decoders_read_the_golden_frames():
    assert decode_hello(payload_of(GOLDEN["hello"])) == Hello(1, 1, AckLevel.KAFKA, 0, "app-1")
    assert decode_welcome(payload_of(GOLDEN["welcome"])) == Welcome(1, 1048576, 0, "kpd@host-a")
    error = decode_error(payload_of(GOLDEN["error"]))
    assert error.code is KpdErrorCode.UNSUPPORTED_VERSION
    assert decode_ping(payload_of(GOLDEN["ping"])) == 0x0102030405060708
    assert decode_pong(payload_of(GOLDEN["pong"])) == 0x0102030405060708
    assert decode_goodbye(payload_of(GOLDEN["goodbye"])) == 3
    assert decode_metadata_request(payload_of(GOLDEN["metadata_request"])) == MetadataRequest(
        7, ("t1", "nope")
    )
    response = decode_metadata_response(payload_of(GOLDEN["metadata_response"]))
    assert response == MetadataResponse(
        7, (TopicMetadata("t1", 0, 6), TopicMetadata("nope", KpdErrorCode.UNKNOWN_TOPIC, -1))
    )
    runs = decode_reports(payload_of(GOLDEN["report"]))
    assert runs[0] == ReportRun(0, 2, Status.DELIVERED, 3, 42, -1)
    assert runs[1].error is KpdErrorCode.DELIVERY_TIMEOUT
    assert runs[1].persistence is Persistence.POSSIBLY_PERSISTED
    assert runs[1].message == "timed out"


def test_golden_produce_decodes_to_its_records_without_touching_them_first():
    header = decode_produce_header(payload_of(GOLDEN["produce"]))
    assert (header.base_seq, header.count, header.partition) == (0, 2, 3)
    assert header.ack is AckLevel.CONNECTION_DEFAULT
    assert header.topic == "t1"
    assert header.keyless is False
    # The records section starts at the layout byte: 5 prefix + 17 fixed + 4 topic bytes in.
    assert bytes(header.records) == GOLDEN["produce"][26:]
    records = [
        (bytes(r.key) if r.key else None, bytes(r.value))
        for r in iter_records(header.records, header.count)
    ]
    assert records == [(b"k1", b"v1"), (None, b"v22")]


def test_golden_produce_with_timestamps_and_headers_decodes_every_field():
    header = decode_produce_header(payload_of(GOLDEN["produce_ts_headers"]))
    assert header.partition == -1
    assert header.keyless is True
    (record,) = iter_records(bytes(header.records), header.count)
    assert record.key is None
    assert record.value == b"x"
    assert record.timestamp == 1700000000000
    assert record.headers == (("h", b"1"), ("n", None))


def test_doc_tables_list_every_error_code_and_frame_type():
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    codes = {int(n): name for n, name in re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", text, re.M)}
    assert codes == {int(c): c.name for c in KpdErrorCode}
    types = {
        int(n, 16): name
        for n, name in re.findall(r"^\| 0x([0-9A-F]{2}) \| `([A-Z_]+)` \|", text, re.M)
    }
    assert types == {int(t): t.name for t in FrameType}


# --- round trips ------------------------------------------------------------------------------

blobs = st.none() | st.binary(max_size=40)
headers = st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3)
records_in = st.builds(
    RecordIn,
    key=blobs,
    value=blobs,
    timestamp=st.none() | st.integers(0, 2**63 - 1),
    headers=headers,
)
u64s = st.integers(0, 2**64 - 1)
names = st.text(max_size=30)


def _as_plain(view):
    def b(x):
        return None if x is None else bytes(x)

    return (b(view.key), b(view.value), view.timestamp, tuple((k, b(v)) for k, v in view.headers))


@settings(max_examples=150, deadline=None)
@given(
    base_seq=st.integers(0, 2**63),
    topic=names,
    partition=st.integers(-1, 2**31 - 1),
    ack=st.sampled_from(list(AckLevel)),
    records=st.lists(records_in, min_size=1, max_size=20),
    as_memoryview=st.booleans(),
)
def test_produce_round_trips(base_seq, topic, partition, ack, records, as_memoryview):
    whole = encode_produce(base_seq, topic, partition, records, ack)
    frames = FrameDecoder(Role.SERVER, MAX_FRAME).feed(GOLDEN["hello"] + whole)
    header = decode_produce_header(frames[1].payload)
    assert (header.base_seq, header.count, header.partition, header.ack, header.topic) == (
        base_seq,
        len(records),
        partition,
        ack,
        topic,
    )
    assert header.keyless == all(r.key is None for r in records)
    section = header.records if as_memoryview else bytes(header.records)
    decoded = [_as_plain(v) for v in iter_records(section, header.count)]
    expected = [(r.key, r.value, r.timestamp, tuple(r.headers)) for r in records]
    assert decoded == expected
    assert bytes(header.records) == encode_records(records)


@given(
    low=st.integers(0, 0xFFFF),
    span=st.integers(0, 10),
    ack=st.sampled_from([AckLevel.NONE, AckLevel.ACCEPTED, AckLevel.KAFKA]),
    features=st.integers(0, 2**32 - 1),
    name=names,
)
def test_hello_round_trips(low, span, ack, features, name):
    high = min(low + span, 0xFFFF)
    session = (SESSION_BIT | low * 7919, low * 31) if high >= 2 else (None, 0)
    decoded = decode_hello(payload_of(encode_hello(low, high, ack, name, features, *session)))
    assert decoded == Hello(low, high, ack, features, name, *session)


def test_a_version_2_hello_needs_a_session_id_with_its_top_bit():
    with pytest.raises(ValueError):
        encode_hello(1, 2, AckLevel.KAFKA, "x")
    with pytest.raises(ValueError):
        encode_hello(1, 2, AckLevel.KAFKA, "x", session_id=5)
    good = bytes(payload_of(encode_hello(1, 2, AckLevel.KAFKA, "x", session_id=SESSION_BIT | 5)))
    cleared = bytearray(good)
    cleared[-16] &= 0x7F  # the session id's top bit
    with pytest.raises(BadFrameError) as caught:
        decode_hello(bytes(cleared))
    assert caught.value.code == KpdErrorCode.BAD_FIELD
    with pytest.raises(BadFrameError) as caught:  # a v1 HELLO layout offering version 2
        v1 = bytes(payload_of(encode_hello(1, 1, AckLevel.KAFKA, "x")))
        decode_hello(v1[:4] + b"\0\1\0\2" + v1[8:])
    assert caught.value.code == KpdErrorCode.BAD_FRAME


@given(
    version=st.integers(0, 0xFFFF),
    max_frame=st.integers(MIN_MAX_FRAME_BYTES, 2**32 - 1),
    features=st.integers(0, 2**32 - 1),
    name=names,
)
def test_welcome_round_trips(version, max_frame, features, name):
    resume = (version * 13, version % 2 == 1) if version >= 2 else (0, False)
    frame = encode_welcome(version, max_frame, name, features, *resume)
    decoded = decode_welcome(payload_of(frame))
    assert decoded == Welcome(version, max_frame, features, name, *resume)


@given(code=st.sampled_from(list(KpdErrorCode)), message=names)
def test_error_round_trips(code, message):
    assert decode_error(payload_of(encode_error(code, message))) == (code, message)


@given(value=u64s)
def test_ping_pong_goodbye_round_trip(value):
    assert decode_ping(payload_of(encode_ping(value))) == value
    assert decode_pong(payload_of(encode_pong(value))) == value
    assert decode_goodbye(payload_of(encode_goodbye(value))) == value


@given(request_id=st.integers(0, 2**32 - 1), topics=st.lists(names, min_size=1, max_size=128))
def test_metadata_request_round_trips(request_id, topics):
    decoded = decode_metadata_request(payload_of(encode_metadata_request(request_id, topics)))
    assert decoded == MetadataRequest(request_id, tuple(topics))


topic_metadata = st.one_of(
    st.builds(TopicMetadata, names, st.just(KpdErrorCode.NONE), st.integers(1, 2**31 - 1)),
    st.builds(
        TopicMetadata,
        names,
        st.sampled_from([KpdErrorCode.UNKNOWN_TOPIC, KpdErrorCode.TOPIC_NOT_ALLOWED]),
        st.just(-1),
    ),
)


@given(
    request_id=st.integers(0, 2**32 - 1), topics=st.lists(topic_metadata, min_size=1, max_size=20)
)
def test_metadata_response_round_trips(request_id, topics):
    decoded = decode_metadata_response(payload_of(encode_metadata_response(request_id, topics)))
    assert decoded == MetadataResponse(request_id, tuple(topics))


success_runs = st.builds(
    ReportRun,
    first_seq=st.integers(0, 2**63),
    count=st.integers(1, 2**32 - 1),
    status=st.sampled_from([Status.ACCEPTED, Status.DELIVERED]),
    partition=st.integers(0, 2**31 - 1),
    base_offset=st.integers(-1, 2**63 - 1),
    timestamp=st.integers(-1, 2**63 - 1),
    error=st.just(KpdErrorCode.NONE),
    kafka_error=st.just(0),
    persistence=st.just(Persistence.PERSISTED),
    message=st.just(""),
)
failed_runs = st.builds(
    ReportRun,
    first_seq=st.integers(0, 2**63),
    count=st.integers(1, 2**32 - 1),
    status=st.just(Status.FAILED),
    partition=st.integers(-1, 2**31 - 1),
    base_offset=st.just(-1),
    timestamp=st.just(-1),
    error=st.sampled_from([c for c in KpdErrorCode if c not in (0, KpdErrorCode.KAFKA_ERROR)]),
    kafka_error=st.just(0),
    persistence=st.sampled_from([Persistence.NOT_PERSISTED, Persistence.POSSIBLY_PERSISTED]),
    message=names,
)
kafka_failed_runs = failed_runs.map(
    lambda r: r._replace(error=KpdErrorCode.KAFKA_ERROR, kafka_error=10)
)


@given(runs=st.lists(success_runs | failed_runs | kafka_failed_runs, max_size=20))
def test_reports_round_trip(runs):
    assert decode_reports(payload_of(encode_reports(runs))) == runs


# --- framing --------------------------------------------------------------------------------

STREAM_FRAMES = ["hello", "produce", "metadata_request", "ping", "produce_ts_headers", "goodbye"]


def _expected_stream():
    return [(FrameType(GOLDEN[n][4]), GOLDEN[n][5:]) for n in STREAM_FRAMES]


def _plain(frames):
    return [(f.type, bytes(f.payload)) for f in frames]


def test_stream_split_at_every_byte_boundary_yields_the_same_frames():
    stream = b"".join(GOLDEN[n] for n in STREAM_FRAMES)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder(Role.SERVER, MAX_FRAME)
        frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert _plain(frames) == _expected_stream(), cut
        assert decoder.pending_bytes == 0


def test_stream_fed_one_byte_at_a_time_yields_the_same_frames():
    stream = b"".join(GOLDEN[n] for n in STREAM_FRAMES)
    decoder = FrameDecoder(Role.SERVER, MAX_FRAME)
    frames = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i : i + 1])
    assert _plain(frames) == _expected_stream()
    assert decoder.pending_bytes == 0


def test_incomplete_frame_is_held_as_pending_bytes():
    decoder = FrameDecoder(Role.SERVER, MAX_FRAME)
    assert decoder.feed(GOLDEN["hello"][:-1]) == []
    assert decoder.pending_bytes == len(GOLDEN["hello"]) - 1


def test_client_decoder_accepts_the_server_frames_in_order():
    stream = b"".join(
        GOLDEN[n] for n in ["welcome", "report", "metadata_response", "pong", "goodbye"]
    )
    decoder = FrameDecoder(Role.CLIENT)
    types = [f.type for f in decoder.feed(stream)]
    assert types == [
        FrameType.WELCOME,
        FrameType.REPORT,
        FrameType.METADATA_RESPONSE,
        FrameType.PONG,
        FrameType.GOODBYE,
    ]


def _fatal(decoder, data) -> FatalProtocolError:
    with pytest.raises(FatalProtocolError) as info:
        decoder.feed(data)
    return info.value


def test_http_request_instead_of_hello_is_fatal_frame_too_large():
    error = _fatal(FrameDecoder(Role.SERVER, MAX_FRAME), b"GET / HTTP/1.1\r\n\r\n")
    assert error.code is KpdErrorCode.FRAME_TOO_LARGE
    assert str(HANDSHAKE_MAX_FRAME_BYTES) in error.message


def test_oversized_frame_is_fatal_as_soon_as_its_length_arrives():
    decoder = FrameDecoder(Role.SERVER, MIN_MAX_FRAME_BYTES)
    decoder.feed(GOLDEN["hello"])
    # 4 + length = MIN_MAX_FRAME_BYTES + 1; only the length prefix is sent.
    error = _fatal(decoder, u32(MIN_MAX_FRAME_BYTES - 3))
    assert error.code is KpdErrorCode.FRAME_TOO_LARGE


def test_frame_of_exactly_max_frame_bytes_is_accepted():
    decoder = FrameDecoder(Role.SERVER, MIN_MAX_FRAME_BYTES)
    decoder.feed(GOLDEN["hello"])
    body = b"\x00" * (MIN_MAX_FRAME_BYTES - 5)
    (got,) = decoder.feed(u32(MIN_MAX_FRAME_BYTES - 4) + u8(0x04) + body)
    assert len(got.payload) == len(body)


def test_zero_length_frame_is_fatal():
    assert _fatal(FrameDecoder(Role.SERVER, MAX_FRAME), u32(0)).code is KpdErrorCode.BAD_FRAME


@pytest.mark.parametrize("handshake_done", [False, True])
def test_unknown_frame_type_is_fatal(handshake_done):
    decoder = FrameDecoder(Role.SERVER, MAX_FRAME)
    if handshake_done:
        decoder.feed(GOLDEN["hello"])
    error = _fatal(decoder, u32(1) + u8(0x7F))
    assert error.code is KpdErrorCode.UNKNOWN_FRAME_TYPE
    assert "0x7f" in error.message


@pytest.mark.parametrize(
    ("role", "before", "bad"),
    [
        (Role.SERVER, [], "produce"),  # PRODUCE before HELLO
        (Role.SERVER, ["hello"], "hello"),  # second HELLO
        (Role.SERVER, ["hello"], "report"),  # a server-only frame sent by a client
        (Role.SERVER, ["hello", "goodbye"], "ping"),  # anything after GOODBYE
        (Role.CLIENT, [], "report"),  # REPORT before WELCOME
        (Role.CLIENT, ["welcome"], "welcome"),  # second WELCOME
        (Role.CLIENT, ["welcome", "error"], "pong"),  # anything after ERROR
    ],
)
def test_frame_not_allowed_in_the_current_state_is_fatal(role, before, bad):
    decoder = FrameDecoder(role, MAX_FRAME if role is Role.SERVER else None)
    for name in before:
        decoder.feed(GOLDEN[name])
    assert _fatal(decoder, GOLDEN[bad]).code is KpdErrorCode.UNEXPECTED_FRAME


def test_fatal_error_carries_the_valid_frames_before_it_and_sticks():
    decoder = FrameDecoder(Role.SERVER, MAX_FRAME)
    error = _fatal(decoder, GOLDEN["hello"] + GOLDEN["ping"] + u32(1) + u8(0x7F))
    assert [f.type for f in error.frames] == [FrameType.HELLO, FrameType.PING]
    assert decoder.pending_bytes == 0  # the untrusted rest of the stream is dropped
    again = _fatal(decoder, GOLDEN["ping"])
    assert again.code is KpdErrorCode.UNKNOWN_FRAME_TYPE
    assert again.frames == []


def test_client_decoder_applies_the_max_frame_announced_in_welcome():
    decoder = FrameDecoder(Role.CLIENT)
    assert decoder.max_frame_bytes == HANDSHAKE_MAX_FRAME_BYTES
    decoder.feed(encode_welcome(1, MIN_MAX_FRAME_BYTES, "kpd"))
    assert decoder.max_frame_bytes == MIN_MAX_FRAME_BYTES
    big_report = u32(MIN_MAX_FRAME_BYTES - 4) + u8(0x05)
    assert decoder.feed(big_report) == []  # allowed: waits for the body
    error = _fatal(FrameDecoder(Role.CLIENT), big_report)
    assert error.code is KpdErrorCode.FRAME_TOO_LARGE


def test_client_decoder_rejects_a_welcome_with_a_too_small_max_frame():
    welcome = frame(0x02, u16(1), u32(1024), u32(0), string("kpd"))
    assert _fatal(FrameDecoder(Role.CLIENT), welcome).code is KpdErrorCode.BAD_FIELD


def test_server_decoder_requires_a_max_frame_of_at_least_the_minimum():
    with pytest.raises(ValueError):
        FrameDecoder(Role.SERVER, MIN_MAX_FRAME_BYTES - 1)
    with pytest.raises(ValueError):
        FrameDecoder(Role.CLIENT, MAX_FRAME)


# --- handshake --------------------------------------------------------------------------------


def test_hello_with_wrong_magic_is_bad_magic():
    bad = frame(0x01, b"KPD2", u16(1), u16(1), u8(1), u32(0), string("x"))
    with pytest.raises(BadFrameError) as info:
        decode_hello(payload_of(bad))
    assert info.value.code is KpdErrorCode.BAD_MAGIC


def test_choose_version_picks_the_highest_common_version():
    assert choose_version(Hello(1, 5, AckLevel.KAFKA, 0, "c"), supported=(1, 3)) == 3
    assert choose_version(Hello(2, 2, AckLevel.KAFKA, 0, "c"), supported=(1, 3)) == 2


def test_choose_version_without_a_common_version_is_fatal():
    with pytest.raises(FatalProtocolError) as info:
        choose_version(Hello(2, 3, AckLevel.KAFKA, 0, "c"), supported=(1, 1))
    assert info.value.code is KpdErrorCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"KPD1" + u16(1) + u16(1) + u8(3) + u32(0) + string("x"), KpdErrorCode.BAD_FIELD),
        (b"KPD1" + u16(2) + u16(1) + u8(1) + u32(0) + string("x"), KpdErrorCode.BAD_FIELD),
        (b"KPD1" + u16(1) + u16(1) + u8(1) + u32(0) + u16(1) + b"\xff", KpdErrorCode.BAD_STRING),
        (b"KPD1" + u16(1) + u16(1) + u8(1) + u32(0) + string("x") + b"!", KpdErrorCode.BAD_FRAME),
        (b"KPD1" + u16(1), KpdErrorCode.BAD_FRAME),
    ],
    ids=["ack-3", "min>max", "bad-utf8-name", "trailing-byte", "truncated"],
)
def test_malformed_hello_is_a_bad_frame_with_a_specific_code(body, code):
    with pytest.raises(BadFrameError) as info:
        decode_hello(body)
    assert info.value.code is code
    assert info.value.message


# --- malformed PRODUCE bodies -----------------------------------------------------------------


DEFAULT_COLUMNS = (i32(1), i32(-1), i32(2), i32(2))  # key_lens 1, -1; value_lens 2, 2


def produce_body(
    *,
    base_seq=10,
    count=2,
    partition=0,
    ack=3,
    topic=b"\x00\x01t",  # the string "t"
    layout=0,
    columns=DEFAULT_COLUMNS,
    data=b"k" + b"v1" + b"v2",
):
    return (
        u64(base_seq)
        + u32(count)
        + i32(partition)
        + u8(ack)
        + topic
        + u8(layout)
        + b"".join(columns)
        + data
    )


def test_produce_body_helper_builds_a_valid_frame():
    header = decode_produce_header(produce_body())
    records = [_as_plain(r) for r in iter_records(header.records, header.count)]
    assert records == [(b"k", b"v1", None, ()), (None, b"v2", None, ())]


MALFORMED_PRODUCE = {
    "truncated-record-data": (produce_body(data=b"k" + b"v1" + b"v"), KpdErrorCode.BAD_LENGTH),
    "extra-data-bytes": (produce_body(data=b"k" + b"v1" + b"v2!"), KpdErrorCode.BAD_LENGTH),
    "count-larger-than-columns": (produce_body(count=5), KpdErrorCode.BAD_RECORD_COUNT),
    "count-smaller-than-records": (produce_body(count=1), KpdErrorCode.BAD_LENGTH),
    "unknown-layout-bits": (produce_body(layout=0x04), KpdErrorCode.BAD_FLAGS),
    "bad-utf8-topic": (produce_body(topic=u16(2) + b"\xc3\x28"), KpdErrorCode.BAD_STRING),
    "topic-longer-than-frame": (produce_body(topic=u16(5000) + b"t"), KpdErrorCode.BAD_LENGTH),
    # Lengths add up to the 2 data bytes (-2 - 1 + 2 + 2, +1 per null): only the range check
    # can catch the -2.
    "negative-key-length": (
        produce_body(columns=(i32(-2), i32(-1), i32(2), i32(2)), data=b"xy"),
        KpdErrorCode.BAD_LENGTH,
    ),
    "negative-value-length": (
        produce_body(columns=(i32(1), i32(-1), i32(2), i32(-7)), data=b"kv1"),
        KpdErrorCode.BAD_LENGTH,
    ),
    "huge-length": (
        produce_body(columns=(i32(2**31 - 1), i32(-1), i32(2), i32(2))),
        KpdErrorCode.BAD_LENGTH,
    ),
    "partition-below-minus-one": (produce_body(partition=-2), KpdErrorCode.INVALID_PARTITION),
    "ack-level-out-of-range": (produce_body(ack=4), KpdErrorCode.BAD_FIELD),
    "sequence-past-2**64": (produce_body(base_seq=2**64 - 1), KpdErrorCode.BAD_FIELD),
    "timestamp-below-minus-one": (
        produce_body(layout=0x01, columns=(i64(5), i64(-9), i32(1), i32(-1), i32(2), i32(2))),
        KpdErrorCode.BAD_FIELD,
    ),
    "missing-layout-byte": (
        u64(10) + u32(2) + i32(0) + u8(3) + string("t"),
        KpdErrorCode.BAD_FRAME,
    ),
    "truncated-fixed-head": (u64(10) + u32(2) + i32(0), KpdErrorCode.BAD_FRAME),
    "header-length-negative": (
        produce_body(count=1, layout=0x02, columns=(i32(-1), i32(-1), i32(-3)), data=b""),
        KpdErrorCode.BAD_LENGTH,
    ),
    "header-key-bad-utf8": (
        produce_body(
            count=1,
            layout=0x02,
            columns=(i32(-1), i32(-1), i32(8)),
            data=u16(2) + b"\xff\xfe" + i32(-1),
        ),
        KpdErrorCode.BAD_STRING,
    ),
    "header-value-length-negative": (
        produce_body(
            count=1,
            layout=0x02,
            columns=(i32(-1), i32(-1), i32(7)),
            data=string("h") + i32(-5),
        ),
        KpdErrorCode.BAD_LENGTH,
    ),
    "header-value-past-blob": (
        produce_body(
            count=1,
            layout=0x02,
            columns=(i32(-1), i32(-1), i32(8)),
            data=string("h") + i32(2) + b"x",
        ),
        KpdErrorCode.BAD_LENGTH,
    ),
    "header-truncated-value-length": (
        produce_body(
            count=1, layout=0x02, columns=(i32(-1), i32(-1), i32(5)), data=string("h") + b"\0\0"
        ),
        KpdErrorCode.BAD_FRAME,
    ),
}


@pytest.mark.parametrize("case", MALFORMED_PRODUCE)
def test_malformed_produce_is_a_bad_frame_naming_its_records(case):
    body, code = MALFORMED_PRODUCE[case]
    with pytest.raises(BadFrameError) as info:
        decode_produce_header(body)
    assert info.value.code is code
    assert info.value.message
    # The first 12 bytes were readable, so the server can fail exactly these records.
    base_seq, count = struct.unpack_from(">QI", body)
    assert (info.value.first_seq, info.value.count) == (base_seq, count)


SECTION_CASES = [
    name
    for name in MALFORMED_PRODUCE
    if name.startswith(("truncated-record", "extra", "count-", "unknown", "negative", "huge"))
    or name.startswith(("timestamp", "header"))
]


@pytest.mark.parametrize("case", SECTION_CASES)
def test_iter_records_rejects_a_malformed_section_before_yielding(case):
    body, code = MALFORMED_PRODUCE[case]
    section = body[17 + 3 :]  # fixed head, then the topic "t" as a 3-byte string
    count = struct.unpack_from(">I", body, 8)[0]
    with pytest.raises(BadFrameError) as info:
        iter_records(section, count)  # raises at the call, not at the first next()
    assert info.value.code is code


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00" * 11, u64(0) + u32(0) + i32(0) + u8(3) + string("t") + u8(0)],
    ids=["empty", "11-bytes", "count-0"],
)
def test_produce_that_names_no_records_cannot_be_attributed(body):
    with pytest.raises(BadFrameError) as info:
        decode_produce_header(body)
    assert info.value.first_seq is None
    assert info.value.code in (KpdErrorCode.BAD_FRAME, KpdErrorCode.BAD_RECORD_COUNT)


def test_every_truncation_of_a_valid_produce_is_a_bad_frame():
    body = bytes(payload_of(GOLDEN["produce_ts_headers"]))
    for end in range(len(body)):
        with pytest.raises(BadFrameError):
            decode_produce_header(body[:end])


DECODERS = [
    decode_produce_header,
    decode_hello,
    decode_welcome,
    decode_error,
    decode_ping,
    decode_pong,
    decode_goodbye,
    decode_metadata_request,
    decode_metadata_response,
    decode_reports,
]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), decoder=st.sampled_from(DECODERS))
def test_garbage_bodies_raise_only_bad_frame_error(data, decoder):
    try:
        decoder(data)
    except BadFrameError as exc:
        assert isinstance(exc.code, KpdErrorCode)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(records_in, min_size=1, max_size=6), flips=st.data())
def test_corrupted_produce_either_decodes_fully_or_raises_bad_frame(records, flips):
    body = bytearray(payload_of(encode_produce(1, "topic", 2, records)))
    for _ in range(flips.draw(st.integers(1, 4))):
        pos = flips.draw(st.integers(0, len(body) - 1))
        body[pos] = flips.draw(st.integers(0, 255))
    try:
        header = decode_produce_header(bytes(body))
    except BadFrameError:
        return
    # A header that validates guarantees the records decode: ingest may say ACCEPTED.
    assert len(list(iter_records(header.records, header.count))) == header.count


# --- malformed control frames -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decoder", "body", "code"),
    [
        (decode_ping, u64(1) + b"\0", KpdErrorCode.BAD_FRAME),
        (decode_goodbye, b"\0" * 7, KpdErrorCode.BAD_FRAME),
        (decode_welcome, u16(1) + u32(65536) + u32(0) + u16(3) + b"ab", KpdErrorCode.BAD_LENGTH),
        (decode_metadata_request, u32(1) + u16(0), KpdErrorCode.BAD_FIELD),
        (decode_metadata_request, u32(1) + u16(129) + string("t") * 129, KpdErrorCode.BAD_FIELD),
        (decode_metadata_request, u32(1) + u16(2) + string("t"), KpdErrorCode.BAD_FRAME),
        (
            decode_metadata_response,
            u32(1) + u16(1) + string("t") + u16(0) + i32(0),
            KpdErrorCode.BAD_FIELD,
        ),
        (
            decode_metadata_response,
            u32(1) + u16(1) + string("t") + u16(40) + i32(3),
            KpdErrorCode.BAD_FIELD,
        ),
        (decode_error, u16(4) + u16(1) + b"\x80", KpdErrorCode.BAD_STRING),
    ],
    ids=[
        "ping-trailing",
        "goodbye-short",
        "welcome-name-overrun",
        "metadata-0-topics",
        "metadata-129-topics",
        "metadata-count-mismatch",
        "metadata-0-partitions",
        "metadata-error-with-partitions",
        "error-bad-utf8",
    ],
)
def test_malformed_control_frame_is_a_bad_frame_with_a_specific_code(decoder, body, code):
    with pytest.raises(BadFrameError) as info:
        decoder(body)
    assert info.value.code is code


def run_bytes(seq, count, status, partition, offset, ts, error, kafka_error, persistence, msg=b""):
    return (
        u64(seq)
        + u32(count)
        + u8(status)
        + i32(partition)
        + i64(offset)
        + i64(ts)
        + u16(error)
        + i16(kafka_error)
        + u8(persistence)
        + u16(len(msg))
        + msg
    )


@pytest.mark.parametrize(
    "run",
    [
        run_bytes(0, 1, 9, 0, 0, -1, 0, 0, 0),  # unknown status
        run_bytes(0, 1, 0, 0, 0, -1, 0, 0, 0),  # status 0 (zeroed memory)
        run_bytes(0, 1, 3, 0, -1, -1, 0, 0, 1),  # FAILED without an error code
        run_bytes(0, 1, 3, 0, -1, -1, 44, 0, 0),  # FAILED without persistence
        run_bytes(0, 1, 3, 0, -1, -1, 44, 0, 7),  # unknown persistence
        run_bytes(0, 1, 2, 0, 5, -1, 44, 0, 0),  # DELIVERED with an error code
        run_bytes(0, 1, 2, -1, 5, -1, 0, 0, 0),  # DELIVERED without a partition
        run_bytes(0, 1, 1, 0, -1, -1, 0, 0, 0, b"hm"),  # ACCEPTED with a message
        run_bytes(0, 0, 2, 0, 5, -1, 0, 0, 0),  # empty run
        run_bytes(0, 1, 3, 0, -1, -1, 44, 10, 1),  # kafka_error without KAFKA_ERROR
        run_bytes(0, 1, 2, 0, -2, -1, 0, 0, 0),  # offset below -1
    ],
)
def test_invalid_report_runs_are_bad_field(run):
    with pytest.raises(BadFrameError) as info:
        decode_reports(u32(1) + run)
    assert info.value.code is KpdErrorCode.BAD_FIELD


def test_report_with_more_runs_announced_than_sent_is_a_bad_frame():
    body = u32(2) + run_bytes(0, 1, 2, 0, 5, -1, 0, 0, 0)
    with pytest.raises(BadFrameError) as info:
        decode_reports(body)
    assert info.value.code is KpdErrorCode.BAD_FRAME


def test_report_error_code_newer_than_the_codec_decodes_as_an_int():
    (run,) = decode_reports(u32(1) + run_bytes(0, 1, 3, -1, -1, -1, 999, 0, 1, b"new"))
    assert run.error == 999
    assert not isinstance(run.error, KpdErrorCode)
    assert error_code(44) is KpdErrorCode.BUFFER_FULL


def test_encoders_refuse_runs_the_decoder_would_reject():
    with pytest.raises(ValueError):
        encode_reports([ReportRun(0, 1, Status.FAILED, 0)])
    with pytest.raises(ValueError):
        encode_reports([ReportRun(0, 1, Status.DELIVERED, -1, 3)])


def test_report_run_fields_are_the_decoded_runs_fields_of_a_frame_without_messages():
    runs = [ReportRun(7, 3, Status.DELIVERED, 2, 40, -1), ReportRun(12, 1, Status.ACCEPTED, 0),
            ReportRun(1 << 63, 2, Status.DELIVERED, 11, 1 << 40, 1700000000000)]  # fmt: skip
    payload = encode_reports(runs)[5:]
    fields = report_run_fields(payload)
    assert fields == [(*run[:-1], 0) for run in decode_reports(payload)]
    assert fields[0] == (7, 3, 2, 2, 40, -1, 0, 0, 0, 0)  # fields as the wire has them


def test_report_run_fields_leave_frames_with_messages_or_bad_sizes_to_decode_reports():
    failed = ReportRun(3, 1, Status.FAILED, -1, -1, -1, KpdErrorCode.BUFFER_FULL, 0,
                       Persistence.NOT_PERSISTED, "ring full")  # fmt: skip
    assert report_run_fields(encode_reports([failed])[5:]) is None
    plain = encode_reports([ReportRun(7, 3, Status.DELIVERED, 2, 40, -1)])[5:]
    assert report_run_fields(plain[:-1]) is None
    assert report_run_fields(plain + b"x") is None
    assert report_run_fields(b"\0\0") is None
    # A message length with the sizes adding up (no well-formed frame has it): left alone.
    assert report_run_fields(u32(1) + run_bytes(0, 1, 2, 0, 5, -1, 0, 0, 0)[:-2] + u16(1)) is None


def test_retriable_codes_are_the_transient_ones():
    assert is_retriable(KpdErrorCode.BUFFER_FULL)
    assert is_retriable(KpdErrorCode.SHUTTING_DOWN)
    assert not is_retriable(KpdErrorCode.RECORD_TOO_LARGE)
    assert not is_retriable(KpdErrorCode.KAFKA_ERROR)


# --- the PRODUCE encoder ------------------------------------------------------------------------


def test_produce_frame_size_is_overhead_plus_eight_per_record_plus_data_and_used_columns():
    topic = encode_string("t1")
    plain = encode_produce_frame(topic, 3, 0, [b"k1", None], [b"v1", b"v22"])
    assert frame_overhead(topic) == 5 + 17 + 4 + 1  # prefix, fixed head, topic, layout byte
    assert len(plain) == frame_overhead(topic) + 2 * 8 + 4 + 3
    # A timestamp column costs 8 bytes for every record, a header column 4, once any uses one.
    stamped = encode_produce_frame(topic, 3, 0, [None, None], [b"x", b"y"], {1: 1700000000000})
    assert len(stamped) == frame_overhead(topic) + 2 * (8 + 8) + 2
    blob = header_blob([("h", None)])
    assert len(blob) == 7  # name len i16, "h", value len i32 = -1
    headed = encode_produce_frame(topic, 3, 0, [None], [None], None, {0: blob})
    assert len(headed) == frame_overhead(topic) + 8 + 4 + 7


def test_encode_produce_rejects_an_empty_frame_and_a_timestamp_below_minus_one():
    with pytest.raises(ValueError):
        encode_produce(0, "t1", 0, [])
    with pytest.raises(ValueError):
        encode_produce(0, "t1", 0, [(None, b"x", -2, ())])


def test_columns_use_four_and_eight_byte_machine_types():
    # The writer relies on array('i') and array('q') being exactly i32 and i64.
    assert array("i").itemsize == 4
    assert array("q").itemsize == 8
