"""Key and value serializers, and how a DeliveryError reads."""

from __future__ import annotations

import json
import struct

import pytest

from kpd import (
    BytesSerializer,
    DeliveryError,
    IntegerSerializer,
    JsonSerializer,
    Producer,
    StringSerializer,
)
from tests.unit.client.fake_kpd import (
    DEADLINE,
)

# --- serializers ----------------------------------------------------------------------------


def test_integer_serializer_writes_four_big_endian_bytes_like_kafka():
    serialize = IntegerSerializer()
    assert serialize(1) == b"\x00\x00\x00\x01"
    assert serialize(-1) == b"\xff\xff\xff\xff"
    assert serialize(2**31 - 1) == struct.pack(">i", 2**31 - 1)
    assert serialize(None) is None
    with pytest.raises(ValueError):
        serialize(2**31)
    with pytest.raises(TypeError):
        serialize("1")


def test_string_json_and_bytes_serializers():
    assert StringSerializer()("é") == b"\xc3\xa9"
    assert StringSerializer("latin-1")("é") == b"\xe9"
    assert JsonSerializer()({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    assert json.loads(JsonSerializer(sort_keys=True)({"b": 1, "a": 2})) == {"a": 2, "b": 1}
    assert BytesSerializer()(bytearray(b"ab")) == b"ab"
    for serialize in (StringSerializer(), JsonSerializer(), BytesSerializer()):
        assert serialize(None) is None
    with pytest.raises(TypeError):
        BytesSerializer()("text")


def test_producer_applies_key_and_value_serializers(kpd):
    with Producer(
        kpd.path, key_serializer=StringSerializer(), value_serializer=JsonSerializer()
    ) as producer:
        producer.send("t", {"n": 1}, key="k", partition=0).result(DEADLINE)
        producer.send("t", None, key=None, partition=0).result(DEADLINE)  # a tombstone
    assert kpd.records() == [(b"k", b'{"n":1}', None, ()), (None, None, None, ())]


def test_str_value_without_serializer_is_a_type_error_and_sends_nothing(kpd):
    with Producer(kpd.path) as producer:
        with pytest.raises(TypeError):
            producer.send("t", "text", partition=0)
        producer.send("t", b"ok", partition=0).result(DEADLINE)
    assert kpd.records() == [(None, b"ok", None, ())]


def test_a_kafka_error_is_named_by_kpds_code_and_kafkas_number():
    # Kafka's error names are the daemon's table (daemon.kafka.errors), which kpd-client does
    # not import: the daemon's REPORT message names the error (str of its DeliveryFailure).
    from kpd.protocol.base import KpdErrorCode, Persistence

    error = DeliveryError(KpdErrorCode.KAFKA_ERROR, 17, Persistence.NOT_PERSISTED, "bad name")
    assert str(error) == "KAFKA_ERROR (Kafka error 17) [NOT_PERSISTED]: bad name"
    timeout = DeliveryError(KpdErrorCode.DELIVERY_TIMEOUT, 0, Persistence.POSSIBLY_PERSISTED, "t")
    assert str(timeout) == "DELIVERY_TIMEOUT [POSSIBLY_PERSISTED]: t"
