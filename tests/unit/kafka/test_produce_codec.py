"""The straight-line Produce codecs against the compiled schema of the same version, on the
same inputs: same request bytes, same response dicts, and the generic codec's answer (or
error) for every response shape the straight line leaves to it."""

import pytest

from daemon.kafka import messages
from daemon.kafka.primitives import ProtocolError, Reader
from daemon.kafka.produce_codec import ProduceRequestCodec, ProduceResponseCodec
from daemon.kafka.schema import compile_struct

P = messages.PRODUCE
VERSIONS = range(P.min_version, P.max_version + 1)


def _codecs(version: int):
    flexible = P.is_flexible(version)
    request = compile_struct(P.request_schema, version, flexible)
    response = compile_struct(P.response_schema, version, flexible)
    return (request, ProduceRequestCodec(request, flexible),
            response, ProduceResponseCodec(response, version, flexible))  # fmt: skip


def _request(transactional_id):
    return {
        "transactional_id": transactional_id,
        "acks": -1,
        "timeout_ms": 30_000,
        "topic_data": [
            {"name": "orders", "partition_data": [
                {"index": 0, "records": b"\x01" * 70},
                {"index": 5, "records": memoryview(bytearray(b"\x02" * 300))},
            ]},
            {"name": "ü-topic", "partition_data": [{"index": 2, "records": None}]},
        ],
    }  # fmt: skip


def _partition(index, error_message=None, record_errors=(), leader=None):
    part = {"index": index, "error_code": 0 if error_message is None else 6,
            "base_offset": 1000 + index, "log_append_time_ms": -1, "log_start_offset": 7,
            "record_errors": list(record_errors), "error_message": error_message}  # fmt: skip
    if leader is not None:
        part["current_leader"] = {"leader_id": leader, "leader_epoch": 3}
    return part


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transactional_id", [None, "txn-1"])
def test_request_bytes_are_the_compiled_schemas(version, transactional_id):
    generic, fast, _, _ = _codecs(version)
    expected, got = [], []
    generic.encode(_request(transactional_id), expected)
    fast.encode(_request(transactional_id), got)
    assert b"".join(map(bytes, got)) == b"".join(map(bytes, expected))
    alone: list = []  # written by the straight line itself, not its fallback
    ProduceRequestCodec(_NoFallback(), P.is_flexible(version)).encode(_request(None), alone)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_request_the_straight_line_cannot_encode_fails_as_the_schema_says(version):
    generic, fast, _, _ = _codecs(version)
    bad = _request(None)
    bad["topic_data"][0]["partition_data"][0]["records"] = 12  # not bytes
    with pytest.raises(ProtocolError) as from_generic:
        generic.encode(bad, [])
    with pytest.raises(ProtocolError) as from_fast:
        fast.encode(bad, [])
    assert str(from_fast.value) == str(from_generic.value)


def _responses(version):
    """Bodies of each shape: (name, body) for the generic encoder."""
    plain = [_partition(0), _partition(3)]
    yield "plain", [{"name": "orders", "partition_responses": plain},
                    {"name": "b", "partition_responses": []}]  # fmt: skip
    yield "error message", [{"name": "t", "partition_responses": [_partition(1, "not leader")]}]
    errors = [{"batch_index": 2, "batch_index_error_message": "bad"}]
    yield "record errors", [{"name": "t", "partition_responses": [_partition(1, "x", errors)]}]
    yield "leader hint", [{"name": "t", "partition_responses": [_partition(1, "moved", (), 4)]}]
    yield "endpoints", plain


STRAIGHT = {"plain", "error message"}  # the shapes the straight line reads itself


class _NoFallback:
    def encode(self, body, out):
        raise AssertionError("the straight-line codec fell back")

    decode = encode


@pytest.mark.parametrize("version", VERSIONS)
def test_response_dicts_are_the_compiled_schemas_for_every_shape(version):
    _, _, generic, fast = _codecs(version)
    for name, responses in _responses(version):
        if name == "endpoints":
            responses = [{"name": "t", "partition_responses": responses}]
        body = {"responses": responses, "throttle_time_ms": 12}
        if name == "endpoints":
            body["node_endpoints"] = [{"node_id": 1, "host": "h", "port": 9092, "rack": None}]
        out: list = []
        generic.encode(body, out)
        data = b"".join(map(bytes, out)) + b"tail"
        expected_reader, reader = Reader(data), Reader(data)
        assert fast.decode(reader) == generic.decode(expected_reader), name
        assert reader.pos == expected_reader.pos == len(data) - 4, name
        if name in STRAIGHT:
            alone = ProduceResponseCodec(_NoFallback(), version, P.is_flexible(version))
            assert alone.decode(Reader(data)) == generic.decode(Reader(data)), name


@pytest.mark.parametrize("version", VERSIONS)
def test_a_truncated_response_raises_as_the_schema_does(version):
    _, _, generic, fast = _codecs(version)
    out: list = []
    generic.encode({"responses": [{"name": "t", "partition_responses": [_partition(0)]}],
                    "throttle_time_ms": 0}, out)  # fmt: skip
    data = b"".join(map(bytes, out))[:-3]
    with pytest.raises(ProtocolError) as from_generic:
        generic.decode(Reader(data))
    with pytest.raises(ProtocolError) as from_fast:
        fast.decode(Reader(data))
    assert str(from_fast.value) == str(from_generic.value)


def test_produce_uses_the_straight_line_codecs_at_every_version():
    for version in VERSIONS:
        assert isinstance(P._requests[version - P.min_version], ProduceRequestCodec)
        assert isinstance(P._responses[version - P.min_version], ProduceResponseCodec)
