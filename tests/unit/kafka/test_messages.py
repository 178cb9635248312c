"""Kafka messages and headers: golden frames built field by field with struct.pack, round trips
of every supported API version, clean errors on bad input, and version negotiation.
"""

import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.kafka import headers
from daemon.kafka.messages import (
    API_BY_KEY,
    API_VERSIONS,
    CREATE_TOPICS,
    INIT_PRODUCER_ID,
    METADATA,
    OFFSET_FETCH,
    PRODUCE,
    TXN_OFFSET_COMMIT,
)
from daemon.kafka.primitives import ProtocolError
from daemon.kafka.schema import (
    BOOL,
    BYTES,
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    UUID,
    Array,
    Struct,
)
from daemon.kafka.versions import broker_ranges, negotiate, pick_version


def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def string(text):  # classic STRING: int16 length
    return i16(len(text)) + text.encode()


def compact(text):  # COMPACT_STRING: uvarint length + 1 (all lengths here fit in one byte)
    return bytes([len(text) + 1]) + text.encode()


def framed(payload):
    return i32(len(payload)) + payload


NO_TAGS = b"\x00"  # an empty tagged-field section
BLOB = bytes(range(61)) + b"opaque"  # stands in for a RecordBatch: passed through untouched


# --- golden request frames -----------------------------------------------------------------------


def test_api_versions_v0_request_frame():
    frame = framed(
        i16(18)  # api_key ApiVersions
        + i16(0)  # api_version
        + i32(1)  # correlation_id
        + string("kpd")  # client_id
        # empty body
    )
    assert headers.encode_request(API_VERSIONS, 0, 1, "kpd", {}) == frame
    absent_in_v0 = {"client_software_name": "", "client_software_version": ""}
    assert headers.decode_request(frame[4:]) == (API_VERSIONS, 0, 1, "kpd", absent_in_v0)


def test_api_versions_v3_request_uses_header_v2_with_a_classic_client_id():
    frame = framed(
        i16(18)  # api_key
        + i16(3)  # api_version
        + i32(7)  # correlation_id
        + string("kpd")  # client_id: int16 length even in header v2 (RequestHeader.json)
        + NO_TAGS  # header tagged fields
        + compact("kpd")  # client_software_name
        + compact("0.1.0")  # client_software_version
        + NO_TAGS  # body tagged fields
    )
    body = {"client_software_name": "kpd", "client_software_version": "0.1.0"}
    assert headers.encode_request(API_VERSIONS, 3, 7, "kpd", body) == frame
    assert headers.decode_request(frame[4:]) == (API_VERSIONS, 3, 7, "kpd", body)


def test_metadata_v1_request_for_one_topic():
    frame = framed(
        i16(3)  # api_key Metadata
        + i16(1)  # api_version
        + i32(2)  # correlation_id
        + string("kpd")  # client_id
        + i32(1)  # topics: 1 element
        + string("events")  # topics[0].name
    )
    body = {"topics": [{"name": "events"}]}
    assert headers.encode_request(METADATA, 1, 2, "kpd", body) == frame
    api, version, correlation_id, client_id, decoded = headers.decode_request(frame[4:])
    assert (api, version, correlation_id, client_id) == (METADATA, 1, 2, "kpd")
    assert decoded["topics"] == [{"name": "events", "topic_id": uuid.UUID(int=0)}]
    assert decoded["allow_auto_topic_creation"] is True  # absent in v1: the schema default


def produce_body(acks, timeout_ms):
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": timeout_ms,
        "topic_data": [{"name": "events", "partition_data": [{"index": 2, "records": BLOB}]}],
    }


def test_produce_v3_request_carries_the_records_blob_verbatim():
    frame = framed(
        i16(0)  # api_key Produce
        + i16(3)  # api_version
        + i32(11)  # correlation_id
        + i16(-1)  # client_id: null
        + i16(-1)  # transactional_id: null
        + i16(-1)  # acks: all
        + i32(30000)  # timeout_ms
        + i32(1)  # topic_data: 1 topic
        + string("events")  # name
        + i32(1)  # partition_data: 1 partition
        + i32(2)  # index
        + i32(len(BLOB))
        + BLOB  # records: int32 length + bytes
    )
    body = produce_body(-1, 30000)
    assert headers.encode_request(PRODUCE, 3, 11, None, body) == frame
    assert headers.decode_request(frame[4:]) == (PRODUCE, 3, 11, None, body)


def test_produce_v9_request_is_flexible():
    frame = framed(
        i16(0)  # api_key Produce
        + i16(9)  # api_version
        + i32(12)  # correlation_id
        + string("kpd")  # client_id
        + NO_TAGS  # header tagged fields
        + b"\x00"  # transactional_id: compact null
        + i16(1)  # acks: leader
        + i32(5000)  # timeout_ms
        + b"\x02"  # topic_data: compact array of 1
        + compact("events")  # name
        + b"\x02"  # partition_data: compact array of 1
        + i32(2)  # index
        + bytes([len(BLOB) + 1])
        + BLOB  # records: compact bytes
        + NO_TAGS  # partition tagged fields
        + NO_TAGS  # topic tagged fields
        + NO_TAGS  # body tagged fields
    )
    body = produce_body(1, 5000)
    body["topic_data"][0]["partition_data"][0]["records"] = memoryview(BLOB)
    assert headers.encode_request(PRODUCE, 9, 12, "kpd", body) == frame
    api, version, correlation_id, client_id, decoded = headers.decode_request(frame[4:])
    assert (api, version, correlation_id, client_id) == (PRODUCE, 9, 12, "kpd")
    assert decoded == produce_body(1, 5000)


def test_txn_offset_commit_v3_request_leaves_the_consumer_fields_at_their_defaults():
    body = {
        "transactional_id": "t-2-0",
        "group_id": "t-2-0",
        "producer_id": 77,
        "producer_epoch": 3,
        "topics": [
            {
                "name": "events",
                "partitions": [
                    {"partition_index": 4, "committed_offset": 123456, "committed_metadata": "m"}
                ],
            }
        ],
    }
    payload = (
        compact("t-2-0")  # transactional_id
        + compact("t-2-0")  # group_id
        + i64(77)  # producer_id
        + i16(3)  # producer_epoch
        + i32(-1)  # generation_id: not a group member
        + compact("")  # member_id
        + b"\x00"  # group_instance_id: null
        + b"\x02"  # topics: compact array of 1
        + compact("events")
        + b"\x02"  # partitions: compact array of 1
        + i32(4)  # partition_index
        + i64(123456)  # committed_offset
        + i32(-1)  # committed_leader_epoch
        + compact("m")  # committed_metadata
        + NO_TAGS  # partition
        + NO_TAGS  # topic
        + NO_TAGS  # request
    )
    assert TXN_OFFSET_COMMIT.encode_request(3, body) == payload
    decoded = TXN_OFFSET_COMMIT.decode_request(3, payload)
    assert decoded["member_id"] == "" and decoded["group_instance_id"] is None


def test_offset_fetch_v7_request_asks_every_partition_and_stable_offsets():
    body = {"group_id": "g", "topics": None, "require_stable": True}
    payload = compact("g") + b"\x00" + b"\x01" + NO_TAGS  # null topics, require_stable true
    assert OFFSET_FETCH.encode_request(7, body) == payload
    assert OFFSET_FETCH.decode_request(7, payload) == body


def test_offset_fetch_v2_response_has_a_top_level_error_code():
    payload = (
        i32(1)  # topics: 1
        + string("events")
        + i32(1)  # partitions: 1
        + i32(0)  # partition_index
        + i64(99)  # committed_offset
        + string("kpd")  # metadata
        + i16(0)  # error_code
        + i16(0)  # top-level error_code
    )
    decoded = OFFSET_FETCH.decode_response(2, payload)
    partition = decoded["topics"][0]["partitions"][0]
    assert (partition["committed_offset"], partition["metadata"]) == (99, "kpd")
    assert decoded["error_code"] == 0 and decoded["throttle_time_ms"] == 0


# --- golden response frames ----------------------------------------------------------------------


def test_init_producer_id_v0_response():
    frame = framed(
        i32(9)  # correlation_id (response header v0)
        + i32(0)  # throttle_time_ms
        + i16(0)  # error_code
        + i64(4242)  # producer_id
        + i16(0)  # producer_epoch
    )
    body = {"throttle_time_ms": 0, "error_code": 0, "producer_id": 4242, "producer_epoch": 0}
    assert headers.encode_response(INIT_PRODUCER_ID, 0, 9, body) == frame
    assert headers.response_correlation_id(frame[4:]) == 9
    assert headers.decode_response(INIT_PRODUCER_ID, 0, frame[4:]) == (9, body)


def feature_section():
    supported = (
        b"\x02"  # supported_features: compact array of 1
        + compact("metadata.version")  # name
        + i16(1)  # min_version
        + i16(20)  # max_version
        + NO_TAGS  # element tagged fields
    )
    return b"\x00" + bytes([len(supported)]) + supported  # tag 0, size, value


API_VERSIONS_V3_HEAD = (
    i32(1)  # correlation_id: header v0 although v3 is flexible (KIP-511), no tag section
    + i16(0)  # error_code
    + b"\x03"  # api_keys: compact array of 2
    + i16(0)  # api_keys[0].api_key: Produce
    + i16(3)  # min_version
    + i16(11)  # max_version
    + NO_TAGS  # element tagged fields
    + i16(18)  # api_keys[1].api_key: ApiVersions
    + i16(0)  # min_version
    + i16(4)  # max_version
    + NO_TAGS  # element tagged fields
    + i32(0)  # throttle_time_ms
)

API_VERSIONS_V3_BODY = {
    "error_code": 0,
    "api_keys": [
        {"api_key": 0, "min_version": 3, "max_version": 11},
        {"api_key": 18, "min_version": 0, "max_version": 4},
    ],
    "throttle_time_ms": 0,
    "supported_features": [{"name": "metadata.version", "min_version": 1, "max_version": 20}],
    "finalized_features_epoch": -1,
    "finalized_features": [],
    "zk_migration_ready": False,
}


def test_api_versions_v3_response_has_header_v0_and_tagged_features():
    payload = API_VERSIONS_V3_HEAD + b"\x01" + feature_section()  # one tagged field
    assert headers.encode_response(API_VERSIONS, 3, 1, API_VERSIONS_V3_BODY) == framed(payload)
    assert headers.decode_response(API_VERSIONS, 3, payload) == (1, API_VERSIONS_V3_BODY)


def test_unknown_tagged_fields_are_skipped():
    unknown = b"\x07" + b"\x03" + b"new"  # tag 7, 3 bytes: a field from a future version
    payload = API_VERSIONS_V3_HEAD + b"\x02" + feature_section() + unknown
    assert headers.decode_response(API_VERSIONS, 3, payload) == (1, API_VERSIONS_V3_BODY)


def test_api_versions_v0_answer_to_a_v3_request_is_read_as_v0():
    # KIP-511: a broker that does not know the requested version answers in v0 with
    # UNSUPPORTED_VERSION (35) and the versions it does support.
    payload = (
        i32(1)  # correlation_id
        + i16(35)  # error_code UNSUPPORTED_VERSION
        + i32(1)  # api_keys: classic array of 1
        + i16(18)  # api_key: ApiVersions
        + i16(0)  # min_version
        + i16(2)  # max_version
    )
    correlation_id, body = headers.decode_response(API_VERSIONS, 3, payload)
    assert correlation_id == 1
    assert body["error_code"] == 35
    assert body["api_keys"] == [{"api_key": 18, "min_version": 0, "max_version": 2}]


PRODUCE_V10_PAYLOAD = (
    i32(21)  # correlation_id
    + NO_TAGS  # response header v1 tagged fields
    + b"\x02"  # responses: compact array of 1
    + compact("events")  # name
    + b"\x02"  # partition_responses: compact array of 1
    + i32(0)  # index
    + i16(6)  # error_code NOT_LEADER_OR_FOLLOWER
    + i64(-1)  # base_offset
    + i64(-1)  # log_append_time_ms
    + i64(-1)  # log_start_offset
    + b"\x01"  # record_errors: empty compact array
    + b"\x00"  # error_message: null
    + b"\x01"  # partition tagged fields: 1
    + b"\x00"  # tag 0: current_leader
    + b"\x09"  # its size: 4 + 4 + 1 bytes
    + i32(2)  # current_leader.leader_id
    + i32(5)  # current_leader.leader_epoch
    + NO_TAGS  # current_leader's own tagged fields
    + NO_TAGS  # topic tagged fields
    + i32(0)  # throttle_time_ms
    + b"\x01"  # body tagged fields: 1
    + b"\x00"  # tag 0: node_endpoints
    + b"\x0e"  # its size: 1 + 4 + 3 + 4 + 1 + 1 bytes
    + b"\x02"  # compact array of 1
    + i32(2)  # node_id
    + compact("b2")  # host
    + i32(9092)  # port
    + b"\x00"  # rack: null
    + NO_TAGS  # element tagged fields
)


def test_produce_v10_response_carries_leader_hints_as_tagged_fields():
    body = {
        "responses": [
            {
                "name": "events",
                "partition_responses": [
                    {
                        "index": 0,
                        "error_code": 6,
                        "base_offset": -1,
                        "log_append_time_ms": -1,
                        "log_start_offset": -1,
                        "record_errors": [],
                        "error_message": None,
                        "current_leader": {"leader_id": 2, "leader_epoch": 5},
                    }
                ],
            }
        ],
        "throttle_time_ms": 0,
        "node_endpoints": [{"node_id": 2, "host": "b2", "port": 9092, "rack": None}],
    }
    assert headers.decode_response(PRODUCE, 10, PRODUCE_V10_PAYLOAD) == (21, body)
    assert headers.encode_response(PRODUCE, 10, 21, body) == framed(PRODUCE_V10_PAYLOAD)


PRODUCE_V3_PAYLOAD = (
    i32(5)  # correlation_id
    + i32(1)  # responses: 1 topic
    + string("events")  # name
    + i32(1)  # partition_responses: 1 partition
    + i32(0)  # index
    + i16(0)  # error_code
    + i64(100)  # base_offset
    + i64(-1)  # log_append_time_ms (v2+)
    + i32(0)  # throttle_time_ms
)


def test_produce_v3_response_fills_fields_of_later_versions_with_defaults():
    _, body = headers.decode_response(PRODUCE, 3, PRODUCE_V3_PAYLOAD)
    assert body["responses"][0]["partition_responses"][0] == {
        "index": 0,
        "error_code": 0,
        "base_offset": 100,
        "log_append_time_ms": -1,
        "log_start_offset": -1,
        "record_errors": [],
        "error_message": None,
        "current_leader": {"leader_id": -1, "leader_epoch": -1},
    }
    assert body["node_endpoints"] == []


def test_defaults_filled_on_decode_are_fresh_objects():
    first = headers.decode_response(PRODUCE, 3, PRODUCE_V3_PAYLOAD)[1]
    first = first["responses"][0]["partition_responses"][0]
    first["record_errors"].append("mutated")
    first["current_leader"]["leader_id"] = 99
    second = headers.decode_response(PRODUCE, 3, PRODUCE_V3_PAYLOAD)[1]
    second = second["responses"][0]["partition_responses"][0]
    assert second["record_errors"] == []
    assert second["current_leader"] == {"leader_id": -1, "leader_epoch": -1}


# --- null versus empty -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "topics", "wire"),
    [
        (1, None, i32(-1)),  # v1+: null = all topics
        (1, [], i32(0)),  # empty = no topics
        (12, None, b"\x00"),  # compact null
        (12, [], b"\x01"),  # compact empty
    ],
)
def test_metadata_request_distinguishes_all_topics_from_no_topics(version, topics, wire):
    body = {"topics": topics, "allow_auto_topic_creation": True}
    tail = b"" if version < 4 else b"\x01"  # allow_auto_topic_creation (v4+)
    if version >= 8:
        tail += b"\x00"  # include_topic_authorized_operations
    if version >= 9:
        tail += NO_TAGS
    assert METADATA.encode_request(version, body) == wire + tail
    assert METADATA.decode_request(version, wire + tail)["topics"] == topics


def test_metadata_v12_request_topic_by_id_has_a_null_name():
    topic_id = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    wire = b"\x02" + topic_id.bytes + b"\x00" + NO_TAGS + b"\x01" + b"\x00" + NO_TAGS
    body = {"topics": [{"topic_id": topic_id, "name": None}]}
    assert METADATA.encode_request(12, body) == wire


def test_encoding_ignores_fields_the_version_does_not_have():
    with_flag = METADATA.encode_request(3, {"topics": None, "allow_auto_topic_creation": False})
    assert with_flag == i32(-1)


def test_tagged_field_at_its_default_is_not_written():
    body = dict(API_VERSIONS_V3_BODY, supported_features=[])
    assert API_VERSIONS.encode_response(3, body) == API_VERSIONS_V3_HEAD[4:] + NO_TAGS


# --- every API, every version: round trips ----------------------------------------------------

_INT_RANGES = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}


def value_strategy(kind, version, flexible, nullable):
    if kind in _INT_RANGES:
        bits = _INT_RANGES[kind]
        strategy = st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    elif kind is BOOL:
        strategy = st.booleans()
    elif kind is UUID:
        strategy = st.uuids()
    elif kind is STRING:
        strategy = st.text(max_size=12)
    elif kind is BYTES or kind is RECORDS:
        strategy = st.binary(max_size=24)
    elif isinstance(kind, Array):
        strategy = st.lists(value_strategy(kind.element, version, flexible, False), max_size=3)
    elif isinstance(kind, Struct):
        strategy = body_strategy(kind.fields, version, flexible)
    else:
        raise AssertionError(f"no strategy for {kind}")
    return st.none() | strategy if nullable else strategy


def body_strategy(fields, version, flexible):
    """A body holding every field: present ones random, absent ones at their defaults."""
    entries = {}
    for field in fields:
        present = field.present_at(version) and (field.tag is None or flexible)
        if present:
            nullable = field.nullable_at(version)
            entries[field.key] = value_strategy(field.type, version, flexible, nullable)
        else:
            entries[field.key] = st.just(field.default_value())
    return st.fixed_dictionaries(entries)


ROUND_TRIP_CASES = [
    pytest.param(api, version, kind, id=f"{api.name}{kind}-v{version}")
    for api in API_BY_KEY.values()
    for version in range(api.min_version, api.max_version + 1)
    for kind in ("Request", "Response")
]


@pytest.mark.parametrize(("api", "version", "kind"), ROUND_TRIP_CASES)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_api_version_round_trips(api, version, kind, data):
    schema = api.request_schema if kind == "Request" else api.response_schema
    body = data.draw(body_strategy(schema, version, api.is_flexible(version)))
    if kind == "Request":
        assert api.decode_request(version, api.encode_request(version, body)) == body
    else:
        assert api.decode_response(version, api.encode_response(version, body)) == body


def test_round_trip_with_offset_and_memoryview_input():
    wire = b"junk" + PRODUCE.encode_request(9, produce_body(-1, 100))
    assert PRODUCE.decode_request(9, memoryview(wire), 4) == produce_body(-1, 100)


# --- bad input ---------------------------------------------------------------------------------


def test_every_truncation_of_a_response_is_a_protocol_error():
    for cut in range(len(PRODUCE_V10_PAYLOAD)):
        with pytest.raises(ProtocolError):
            headers.decode_response(PRODUCE, 10, PRODUCE_V10_PAYLOAD[:cut])


def test_trailing_bytes_after_a_request_body_are_a_protocol_error():
    body = INIT_PRODUCER_ID.encode_request(
        0, {"transactional_id": None, "transaction_timeout_ms": 1}
    )
    with pytest.raises(ProtocolError, match="1 bytes left over"):
        INIT_PRODUCER_ID.decode_request(0, body + b"\x00")


def test_trailing_bytes_after_a_response_body_are_ignored_like_librdkafka_does():
    # correlation id 9 | throttle 0 | error 0 | producer id 1 | epoch 0 | one stray byte
    payload = i32(9) + i32(0) + i16(0) + i64(1) + i16(0) + b"\x00"
    correlation_id, body = headers.decode_response(INIT_PRODUCER_ID, 0, payload)
    assert (correlation_id, body["producer_id"], body["producer_epoch"]) == (9, 1, 0)


def test_null_topic_name_in_a_produce_response_is_a_protocol_error():
    payload = i32(1) + i32(1) + i16(-1)  # responses[0].name = null
    with pytest.raises(ProtocolError, match="null string"):
        headers.decode_response(PRODUCE, 3, payload)


def test_unsupported_version_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="ProduceRequest v2 is not supported"):
        PRODUCE.encode_request(2, produce_body(1, 1))
    with pytest.raises(ProtocolError, match="MetadataResponse v13"):
        METADATA.decode_response(13, b"")


def test_encode_error_names_the_field_path():
    body = produce_body(1, 1)
    body["topic_data"][0]["partition_data"][0]["index"] = "two"
    with pytest.raises(ProtocolError, match=r"topic_data\.partition_data\.index"):
        PRODUCE.encode_request(9, body)


def test_null_for_a_non_nullable_array_cannot_be_encoded():
    with pytest.raises(ProtocolError, match=r"topics: null where the array is not nullable"):
        CREATE_TOPICS.encode_request(5, {"topics": None})


def test_request_for_an_unknown_api_key_is_a_protocol_error():
    payload = i16(1) + i16(0) + i32(1) + i16(-1)  # Fetch: not an API kpd speaks
    with pytest.raises(ProtocolError, match="API key 1"):
        headers.decode_request(payload)


def test_response_without_a_correlation_id_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="no correlation id"):
        headers.response_correlation_id(b"\x00\x00")


# --- version negotiation ------------------------------------------------------------------------


def test_pick_version_takes_the_highest_common_version():
    assert pick_version(PRODUCE, 0, 9) == 9  # broker older than kpd
    assert pick_version(PRODUCE, 3, 13) == 11  # broker newer than kpd
    assert pick_version(PRODUCE, 11, 11) == 11


def test_pick_version_is_none_without_overlap():
    assert pick_version(PRODUCE, 0, 2) is None
    assert pick_version(PRODUCE, 12, 13) is None


def test_negotiate_keeps_only_apis_kpd_speaks_with_a_common_version():
    ranges = {0: (0, 12), 3: (0, 13), 18: (0, 4), 22: (0, 1), 1: (0, 17), 24: (4, 5)}
    assert negotiate(ranges) == {0: 11, 3: 12, 18: 3, 22: 1}


def test_broker_ranges_reads_a_decoded_api_versions_response():
    assert broker_ranges(API_VERSIONS_V3_BODY) == {0: (3, 11), 18: (0, 4)}
    assert negotiate(broker_ranges(API_VERSIONS_V3_BODY)) == {0: 11, 18: 3}
