"""The broker side of kpd's Kafka listener codec: golden bytes built field by field.

Expected bytes never come from the code under test: every request and response below is
``struct.pack``-ed field by field after the JSON schemas (apache/kafka
clients/src/main/resources/common/message/), and record batches after Kafka's
implementation.html, with the CRC from the ``crc32c`` package.
"""

from __future__ import annotations

import contextlib
import gzip
import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.kafka import incoming, serving
from daemon.kafka.messages import API_VERSIONS, METADATA, PRODUCE
from daemon.kafka.primitives import ProtocolError
from kpd.protocol.records import iter_records


def zigzag(n: int) -> bytes:
    """A signed varint (Kafka's zig-zag varint), written here from the spec."""
    u = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = u & 0x7F
        u >>= 7
        if u:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def classic_string(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


def compact_string(text: str) -> bytes:
    return uvarint(len(text) + 1) + text.encode()


def nullable_blob(blob: bytes | None) -> bytes:
    return zigzag(-1) if blob is None else zigzag(len(blob)) + blob


def record(offset_delta, ts_delta, key, value, headers=()) -> bytes:
    body = b"\x00" + zigzag(ts_delta) + zigzag(offset_delta)  # attributes, deltas
    body += nullable_blob(key) + nullable_blob(value) + zigzag(len(headers))
    for name, header_value in headers:
        body += zigzag(len(name)) + name.encode() + nullable_blob(header_value)
    return zigzag(len(body)) + body


def batch(records: bytes, count: int, *, base_ts=1_700_000_000_000, attributes=0,
          producer=(-1, -1, -1), last_offset_delta=None) -> bytes:  # fmt: skip
    pid, epoch, seq = producer
    last = count - 1 if last_offset_delta is None else last_offset_delta
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            attributes,
            last,  # lastOffsetDelta
            base_ts,  # baseTimestamp
            base_ts + last,  # maxTimestamp
            pid,
            epoch,
            seq,
            count,
        )
        + records
    )
    # baseOffset, batchLength (from partitionLeaderEpoch to the end), leader epoch, magic, crc
    return struct.pack(">qiibI", 0, 4 + 1 + 4 + len(after_crc), -1, 2, crc32c(after_crc)) + (
        after_crc
    )


def three_records() -> bytes:
    return (
        record(0, 0, b"k0", b"v0")
        + record(1, 1, None, b"v1", (("h", b"x"), ("n", None)))
        + record(2, 2, b"k2", None)
    )


# ---- request headers ------------------------------------------------------------------------


def test_api_versions_v3_request_with_header_v2_and_client_software():
    payload = (
        struct.pack(">hhi", 18, 3, 7)  # api key, version, correlation id
        + classic_string("rdkafka")  # client id stays a classic string in header v2
        + b"\x00"  # header tagged fields
        + compact_string("librdkafka")
        + compact_string("2.3.0")
        + b"\x00"  # body tagged fields
    )
    request = serving.decode_request(payload)
    assert isinstance(request, serving.Request)
    assert (request.api, request.version, request.correlation_id) == (API_VERSIONS, 3, 7)
    assert request.client_id == "rdkafka"
    assert request.body["client_software_name"] == "librdkafka"
    assert request.body["client_software_version"] == "2.3.0"


def test_api_versions_of_an_unknown_version_answers_v0_unsupported_with_the_table():
    payload = struct.pack(">hhi", 18, 9, 42) + classic_string("new") + b"\x00" + b"\xff" * 5
    refused = serving.decode_request(payload)
    assert isinstance(refused, serving.RequestRefused)
    # sorted by api key; Fetch 4-10 and FindCoordinator 0 only for librdkafka's feature checks
    entries = [(0, 3, 11), (1, 4, 10), (3, 1, 12), (10, 0, 0), (18, 0, 3), (22, 0, 4)]
    body = struct.pack(">i", 42) + struct.pack(">hi", 35, len(entries))  # corr, error, count
    body += b"".join(struct.pack(">hhh", *entry) for entry in entries)
    assert refused.answer == struct.pack(">i", len(body)) + body


def test_api_versions_v3_response_keeps_header_v0_and_compact_arrays():
    entries = [(0, 3, 11), (1, 4, 10), (3, 1, 12), (10, 0, 0), (18, 0, 3), (22, 0, 4)]
    body = struct.pack(">i", 5)  # correlation id only: header v0 even though v3 is flexible
    body += struct.pack(">h", 0) + uvarint(len(entries) + 1)
    body += b"".join(struct.pack(">hhh", *entry) + b"\x00" for entry in entries)
    body += struct.pack(">i", 0) + b"\x00"  # throttle time, no tagged fields
    frame = serving.encode_response(API_VERSIONS, 3, 5, serving.api_versions_body())
    assert frame == struct.pack(">i", len(body)) + body


def test_metadata_v1_request_with_null_topics_means_all_topics():
    payload = struct.pack(">hhi", 3, 1, 1) + struct.pack(">h", -1) + struct.pack(">i", -1)
    request = serving.decode_request(payload)
    assert request.client_id is None
    assert request.body["topics"] is None


def test_metadata_v9_response_is_flexible_with_header_v1():
    body = {
        "brokers": [{"node_id": 0, "host": "127.0.0.1", "port": 9092}],
        "cluster_id": "kpd",
        "controller_id": 0,
        "topics": [
            {
                "name": "t",
                "partitions": [
                    {"partition_index": 0, "leader_id": 0, "replica_nodes": [0],
                     "isr_nodes": [0]},
                ],
            }
        ],
    }  # fmt: skip
    expected = struct.pack(">i", 9) + b"\x00"  # correlation id, header tagged fields
    expected += struct.pack(">i", 0)  # throttle
    expected += uvarint(2) + struct.pack(">i", 0) + compact_string("127.0.0.1")
    expected += struct.pack(">i", 9092) + b"\x00" + b"\x00"  # port, rack null, tags
    expected += compact_string("kpd") + struct.pack(">i", 0)  # cluster id, controller
    expected += uvarint(2) + struct.pack(">h", 0) + compact_string("t") + b"\x00"  # is_internal
    expected += uvarint(2) + struct.pack(">hiii", 0, 0, 0, -1)  # error, index, leader, epoch
    expected += uvarint(2) + struct.pack(">i", 0) + uvarint(2) + struct.pack(">i", 0)
    expected += uvarint(1) + b"\x00"  # offline replicas, partition tags
    expected += struct.pack(">i", -(2**31)) + b"\x00"  # topic authorized ops, topic tags
    expected += struct.pack(">i", -(2**31))  # cluster authorized operations (v8-v10)
    expected += b"\x00"  # response tags
    frame = serving.encode_response(METADATA, 9, 9, body)
    assert frame == struct.pack(">i", len(expected)) + expected


def test_a_request_of_an_api_kpd_does_not_serve_is_refused_without_an_answer():
    for key, version in ((1, 11), (10, 3), (0, 2), (24, 3)):  # Fetch, FindCoordinator, ...
        refused = serving.decode_request(struct.pack(">hhi", key, version, 3) + b"\xff\xff")
        assert isinstance(refused, serving.RequestRefused)
        assert refused.answer is None
        assert refused.correlation_id == 3


def test_truncated_or_garbage_requests_raise_protocol_error():
    with pytest.raises(ProtocolError):
        serving.decode_request(b"\x00\x12\x00")
    with pytest.raises(ProtocolError):
        serving.decode_request(struct.pack(">hhi", 0, 9, 1) + classic_string("c") + b"\x07")


# ---- Produce ---------------------------------------------------------------------------------


def produce_v9(records: bytes) -> bytes:
    return (
        struct.pack(">hhi", 0, 9, 11)
        + classic_string("app")
        + b"\x00"  # header v2 tags
        + b"\x00"  # transactional id: compact nullable, null
        + struct.pack(">hi", -1, 30000)  # acks, timeout
        + uvarint(2)  # one topic
        + compact_string("events")
        + uvarint(2)  # one partition
        + struct.pack(">i", 4)
        + uvarint(len(records) + 1)
        + records
        + b"\x00"  # partition tags
        + b"\x00"  # topic tags
        + b"\x00"  # body tags
    )


def _records(got: incoming.IncomingBatch) -> list[tuple]:
    """The batch's kpd records section, decoded by kpd's own reader."""
    return [
        (_bytes(r.key), _bytes(r.value), r.timestamp,
         tuple((name, _bytes(value)) for name, value in r.headers))
        for r in iter_records(got.section, got.count)
    ]  # fmt: skip


def _bytes(blob) -> bytes | None:
    return None if blob is None else bytes(blob)


def test_produce_v9_request_decodes_to_one_checked_batch_with_headers_and_timestamps():
    blob = batch(three_records(), 3, producer=(1000, 0, 5))
    request = serving.decode_request(produce_v9(blob))
    assert request.body["acks"] == -1
    assert request.body["timeout_ms"] == 30000
    (topic,) = request.body["topic_data"]
    (part,) = topic["partition_data"]
    assert (topic["name"], part["index"]) == ("events", 4)
    got = incoming.read_batch(part["records"], request.version)
    assert isinstance(got, incoming.IncomingBatch)
    assert (got.producer_id, got.producer_epoch, got.base_sequence, got.count) == (1000, 0, 5, 3)
    base = 1_700_000_000_000
    assert _records(got) == [
        (b"k0", b"v0", base, ()),
        (None, b"v1", base + 1, (("h", b"x"), ("n", None))),
        (b"k2", None, base + 2, ()),
    ]
    assert not got.keyless


def test_produce_v9_response_golden():
    body = {
        "responses": [
            {
                "name": "events",
                "partition_responses": [
                    {"index": 4, "error_code": 0, "base_offset": 77, "log_append_time_ms": -1,
                     "log_start_offset": -1},
                ],
            }
        ],
        "throttle_time_ms": 0,
    }  # fmt: skip
    expected = struct.pack(">i", 11) + b"\x00"  # correlation id, header v1 tags
    expected += uvarint(2) + compact_string("events") + uvarint(2)
    expected += struct.pack(">ihqqq", 4, 0, 77, -1, -1)  # index, error, offsets
    expected += uvarint(1) + b"\x00"  # record errors: empty; error message: null
    expected += b"\x00" + b"\x00"  # partition tags, topic tags
    expected += struct.pack(">i", 0) + b"\x00"  # throttle, body tags
    frame = serving.encode_response(PRODUCE, 9, 11, body)
    assert frame == struct.pack(">i", len(expected)) + expected


def test_gzip_batch_is_decompressed_once_into_its_records():
    records = three_records()
    blob = batch(gzip.compress(records), 3, attributes=1)  # codec 1 = gzip
    got = incoming.read_batch(blob, 3)
    assert [value for _, value, _, _ in _records(got)] == [b"v0", b"v1", None]


def test_crc_mismatch_is_corrupt_message():
    blob = bytearray(batch(three_records(), 3))
    blob[-1] ^= 0x01
    got = incoming.read_batch(bytes(blob), 9)
    assert isinstance(got, incoming.BatchRefused)
    assert got.error_code == 2  # CORRUPT_MESSAGE


@pytest.mark.parametrize(
    "blob, code",
    [
        (b"", 87),
        (batch(three_records(), 3) * 2, 87),  # two batches
        (batch(three_records(), 3, last_offset_delta=5), 87),
        (batch(three_records(), 3, attributes=0x10), 87),  # transactional
        (batch(three_records(), 3, attributes=0x20), 87),  # control
        (batch(three_records(), 3)[:-4], 2),  # truncated
        (batch(three_records(), 4), 2),  # count larger than the records
    ],
)
def test_bad_batches_get_the_code_a_broker_would_answer(blob, code):
    got = incoming.read_batch(blob, 9)
    assert isinstance(got, incoming.BatchRefused)
    assert got.error_code == code


def test_zstd_before_produce_v7_is_unsupported_compression():
    zstd = pytest.importorskip("zstandard")
    blob = batch(zstd.ZstdCompressor().compress(three_records()), 3, attributes=4)
    assert incoming.read_batch(blob, 6).error_code == 76
    assert incoming.read_batch(blob, 7).count == 3


# ---- fuzzing: bytes from anyone never raise anything but a ProtocolError -----------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_requests_decode_or_raise_protocol_error(data):
    with contextlib.suppress(ProtocolError):
        serving.decode_request(data)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzzed_produce_requests_and_batches_never_crash_the_codec(data):
    good = produce_v9(batch(three_records(), 3, producer=(1, 0, 0)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)),
                               min_size=1, max_size=4))  # fmt: skip
    mutated = bytearray(good)
    for index, xor in flips:
        mutated[index] ^= xor
    try:
        request = serving.decode_request(bytes(mutated))
    except ProtocolError:
        return
    if not isinstance(request, serving.Request) or request.api is not PRODUCE:
        return
    for topic in request.body["topic_data"]:
        for part in topic["partition_data"]:
            got = incoming.read_batch(part["records"] or b"", request.version)
            assert isinstance(got, incoming.IncomingBatch | incoming.BatchRefused)


# ---- Produce's straight codec against the schema codec -------------------------------------

PRODUCE_VERSIONS = range(3, 12)


def _produce_request(version: int, body: dict) -> bytes:
    """A Produce request payload (no size prefix) from the schema codec: header v1 (v3-v8) or
    v2 (flexible, v9+) with client id "c"."""
    head = struct.pack(">hhi", PRODUCE.key, version, 7) + struct.pack(">h", 1) + b"c"
    if version >= 9:
        head += b"\x00"
    return head + PRODUCE.encode_request(version, body)


_PRODUCE_BODIES = [
    {"transactional_id": None, "acks": -1, "timeout_ms": 30000,
     "topic_data": [{"name": "events", "partition_data": [{"index": 4, "records": b"batch"}]}]},
    {"transactional_id": "txn", "acks": 1, "timeout_ms": 0,
     "topic_data": [{"name": "a", "partition_data": [{"index": 0, "records": b"x" * 300},
                                                     {"index": 9, "records": None}]},
                    {"name": "b" * 200, "partition_data": []}]},
    {"transactional_id": None, "acks": 0, "timeout_ms": -5, "topic_data": []},
]  # fmt: skip


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
@pytest.mark.parametrize("body", _PRODUCE_BODIES, ids=["one", "several", "none"])
def test_produce_requests_decode_to_what_the_schema_codec_decodes(version, body):
    payload = _produce_request(version, body)
    request = serving.decode_request(payload)
    offset = len(payload) - len(PRODUCE.encode_request(version, body))
    assert request.body == PRODUCE.decode_request(version, payload, offset) == body


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_produce_requests_cut_or_padded_anywhere_raise_protocol_error(version):
    payload = _produce_request(version, _PRODUCE_BODIES[1])
    for end in range(len(payload)):
        with pytest.raises(ProtocolError):
            serving.decode_request(payload[:end])
    with pytest.raises(ProtocolError, match="left over"):
        serving.decode_request(payload + b"\x00")


def test_flexible_produce_requests_skip_unknown_tagged_fields():
    # One unknown tag (7, two bytes) in each section: partition, topic and body (KIP-482).
    tag = b"\x01\x07\x02zz"
    payload = (struct.pack(">hhi", PRODUCE.key, 9, 7) + struct.pack(">h", -1) + b"\x00"
               + b"\x00" + struct.pack(">hi", -1, 1000)  # null transactional id, acks, timeout
               + uvarint(2) + compact_string("t") + uvarint(2)
               + struct.pack(">i", 3) + uvarint(4) + b"abc" + tag  # index, records, tags
               + tag + tag)  # fmt: skip
    body = serving.decode_request(payload).body
    (topic,) = body["topic_data"]
    assert topic == {"name": "t", "partition_data": [{"index": 3, "records": b"abc"}]}
    assert body == PRODUCE.decode_request(9, payload, 11)  # the body starts after the header


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzzed_produce_requests_decode_as_the_schema_codec_does(data):
    version = data.draw(st.sampled_from(PRODUCE_VERSIONS))
    good = _produce_request(version, _PRODUCE_BODIES[1])
    flips = data.draw(st.lists(st.tuples(st.integers(12, len(good) - 1), st.integers(1, 255)),
                               min_size=1, max_size=3))  # fmt: skip
    mutated = bytearray(good)
    for index, xor in flips:
        mutated[index] ^= xor
    offset = 12 if version >= 9 else 11  # past the header: the client id "c" is intact
    try:
        expected = PRODUCE.decode_request(version, bytes(mutated), offset)
    except ProtocolError:
        expected = ProtocolError
    try:
        got = serving.decode_request(bytes(mutated)).body
    except ProtocolError:
        got = ProtocolError
    assert got == expected


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
@pytest.mark.parametrize("throttle", [0, 1000])
def test_produce_responses_are_the_schema_codecs_bytes(version, throttle):
    topics = [("events", [(4, 0, 77, -1), (5, 6, -1, 1_700_000_000_000)]), ("x" * 130, [])]
    body = {"responses": [{"name": name, "partition_responses": [
                {"index": i, "error_code": e, "base_offset": o, "log_append_time_ms": t,
                 "log_start_offset": -1} for i, e, o, t in parts]}
             for name, parts in topics], "throttle_time_ms": throttle}  # fmt: skip
    expected = serving.encode_response(PRODUCE, version, 11, body)
    assert serving.encode_produce_response(version, 11, topics, throttle) == expected
