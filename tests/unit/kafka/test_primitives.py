"""Kafka primitive types: published varint vectors, classic and compact strings/bytes, nullable
forms, UUIDs, tagged-field sections, and clean ProtocolErrors on bad input.

Expected bytes are written out by hand or with struct.pack, never produced by the code under test.
"""

import struct
import uuid

import pytest

from daemon.kafka import primitives as p
from daemon.kafka.primitives import ProtocolError, Reader
from daemon.kafka.varint import decode_uvarint, decode_varint, encode_uvarint, encode_varint


def written(writer, value) -> bytes:
    out: list = []
    writer(value, out)
    return b"".join(out)


# --- varints: protobuf encoding guide and Kafka's ByteUtilsTest ---------------------------------

UVARINT_VECTORS = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (150, "9601"),  # protobuf guide
    (300, "ac02"),  # protobuf guide
    (16383, "ff7f"),
    (16384, "808001"),
    (2**32 - 1, "ffffffff0f"),
]

VARINT_VECTORS = [  # ZigZag then base-128, as Kafka's writeVarint/writeVarlong
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (-2, "03"),
    (2, "04"),
    (-64, "7f"),
    (64, "8001"),
    (2**31 - 1, "feffffff0f"),  # Integer.MAX_VALUE
    (-(2**31), "ffffffff0f"),  # Integer.MIN_VALUE
    (2**63 - 1, "feffffffffffffffff01"),  # Long.MAX_VALUE
    (-(2**63), "ffffffffffffffffff01"),  # Long.MIN_VALUE
]


@pytest.mark.parametrize(("value", "hex_bytes"), UVARINT_VECTORS)
def test_uvarint_matches_published_bytes(value, hex_bytes):
    assert encode_uvarint(value) == bytes.fromhex(hex_bytes)
    assert decode_uvarint(bytes.fromhex(hex_bytes), 0) == (value, len(hex_bytes) // 2)


@pytest.mark.parametrize(("value", "hex_bytes"), VARINT_VECTORS)
def test_zigzag_varint_matches_published_bytes(value, hex_bytes):
    assert encode_varint(value) == bytes.fromhex(hex_bytes)
    assert decode_varint(bytes.fromhex(hex_bytes), 0) == (value, len(hex_bytes) // 2)


def test_reader_uvarint_advances_past_the_varint():
    reader = Reader(b"\xac\x02\x7f")
    assert reader.uvarint() == 300
    assert reader.uvarint() == 127
    assert reader.remaining == 0


def test_truncated_uvarint_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="varint"):
        Reader(b"\xac").uvarint()


# --- fixed-width integers, bool, uuid ------------------------------------------------------------


@pytest.mark.parametrize(
    ("writer", "read", "fmt", "value"),
    [
        (p.write_int8, Reader.int8, ">b", -128),
        (p.write_int16, Reader.int16, ">h", -32768),
        (p.write_int32, Reader.int32, ">i", 2**31 - 1),
        (p.write_int64, Reader.int64, ">q", -(2**63)),
    ],
)
def test_fixed_integers_are_big_endian(writer, read, fmt, value):
    expected = struct.pack(fmt, value)
    assert written(writer, value) == expected
    assert read(Reader(expected)) == value


def test_bool_is_one_byte_and_any_nonzero_byte_reads_true():
    assert written(p.write_bool, True) == b"\x01"
    assert written(p.write_bool, False) == b"\x00"
    reader = Reader(b"\x00\x01\x02")
    assert [reader.bool(), reader.bool(), reader.bool()] == [False, True, True]


def test_uuid_is_its_16_bytes_most_significant_first():
    # Kafka's Uuid is two longs, most significant first: the RFC 4122 byte order.
    msb, lsb = 0x0123456789ABCDEF, 0x0FEDCBA987654321
    wire = struct.pack(">QQ", msb, lsb)
    value = uuid.UUID(int=(msb << 64) | lsb)
    assert written(p.write_uuid, value) == wire
    assert Reader(wire).uuid() == value


# --- strings -------------------------------------------------------------------------------------


def test_classic_string_is_int16_byte_length_then_utf8():
    wire = struct.pack(">h", 6) + "héllo".encode()  # é is 2 bytes: 6 bytes for 5 characters
    assert written(p.write_string, "héllo") == wire
    assert Reader(wire).string() == "héllo"


def test_classic_nullable_string_null_is_length_minus_one():
    assert written(p.write_nullable_string, None) == struct.pack(">h", -1)
    assert Reader(struct.pack(">h", -1)).nullable_string() is None


def test_compact_string_is_uvarint_length_plus_one():
    wire = bytes([4]) + b"kpd"
    assert written(p.write_compact_string, "kpd") == wire
    assert Reader(wire).compact_string() == "kpd"


def test_compact_empty_string_and_null_differ():
    assert written(p.write_compact_nullable_string, "") == b"\x01"
    assert written(p.write_compact_nullable_string, None) == b"\x00"
    reader = Reader(b"\x01\x00")
    assert reader.compact_nullable_string() == ""
    assert reader.compact_nullable_string() is None


def test_long_compact_string_uses_a_two_byte_length():
    text = "x" * 200
    assert written(p.write_compact_string, text) == bytes.fromhex("c901") + text.encode()


def test_classic_string_longer_than_int16_cannot_be_encoded():
    with pytest.raises(ProtocolError, match="int16"):
        written(p.write_string, "x" * 32768)


def test_non_str_value_for_a_string_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="expected str"):
        written(p.write_compact_string, b"bytes")


# --- bytes ---------------------------------------------------------------------------------------


def test_classic_bytes_are_int32_length_then_data():
    wire = struct.pack(">i", 3) + b"\x00\x01\x02"
    assert written(p.write_bytes, b"\x00\x01\x02") == wire
    assert Reader(wire).bytes() == b"\x00\x01\x02"


def test_nullable_bytes_null_forms():
    assert written(p.write_nullable_bytes, None) == struct.pack(">i", -1)
    assert written(p.write_compact_nullable_bytes, None) == b"\x00"
    assert Reader(struct.pack(">i", -1)).nullable_bytes() is None
    assert Reader(b"\x00").compact_nullable_bytes() is None


def test_compact_bytes_are_uvarint_length_plus_one():
    wire = bytes([3]) + b"ab"
    assert written(p.write_compact_bytes, bytearray(b"ab")) == wire
    assert Reader(wire).compact_bytes() == b"ab"


def test_bytes_writer_appends_the_callers_buffer_without_copying():
    blob = memoryview(bytearray(b"record-batch"))
    out: list = []
    p.write_compact_nullable_bytes(blob, out)
    assert out[1] is blob


def test_wide_memoryview_is_measured_in_bytes():
    words = memoryview(bytearray(8)).cast("I")  # 2 items of 4 bytes
    out: list = []
    p.write_bytes(words, out)
    assert out[0] == struct.pack(">i", 8)
    assert len(out[1]) == 8


# --- arrays and tagged fields --------------------------------------------------------------------


def test_array_length_prefixes():
    assert written(lambda v, o: p.write_array_length(v, False, o), 2) == struct.pack(">i", 2)
    assert written(lambda v, o: p.write_array_length(v, False, o), None) == struct.pack(">i", -1)
    assert written(lambda v, o: p.write_array_length(v, True, o), 2) == b"\x03"
    assert written(lambda v, o: p.write_array_length(v, True, o), None) == b"\x00"


def test_array_length_larger_than_the_remaining_bytes_is_rejected_before_decoding():
    wire = struct.pack(">i", 1_000_000) + b"\x00" * 8
    with pytest.raises(ProtocolError, match="cannot fit"):
        Reader(wire).array_length(False, 4)


def test_tagged_fields_yield_each_field_and_skip_to_what_follows():
    section = (
        b"\x02"  # two tagged fields
        + b"\x00"  # tag 0
        + b"\x02"  # size 2
        + b"\xab\xcd"  # its bytes
        + b"\x05"  # tag 5
        + b"\x01"  # size 1
        + b"\xff"  # its byte
    )
    reader = Reader(section + struct.pack(">h", 77))
    fields = [(tag, bytes(sub.buf[sub.pos : sub.end])) for tag, sub in reader.tagged_fields()]
    assert fields == [(0, b"\xab\xcd"), (5, b"\xff")]
    assert reader.int16() == 77


def test_skip_tagged_fields_skips_unknown_tags():
    reader = Reader(b"\x01" + b"\x2a" + b"\x03" + b"xyz" + b"\x09")
    reader.skip_tagged_fields()
    assert reader.int8() == 9


def test_tagged_field_reader_cannot_read_past_its_field():
    reader = Reader(b"\x01\x00\x01\x07" + b"\x00" * 8)
    ((_tag, sub),) = list(reader.tagged_fields())
    with pytest.raises(ProtocolError, match="need 4 bytes"):
        sub.int32()


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("read", "wire"),
    [
        (Reader.int16, b"\x00"),
        (Reader.int32, b"\x00\x00\x00"),
        (Reader.int64, b"\x00" * 7),
        (Reader.uuid, b"\x00" * 15),
        (Reader.string, struct.pack(">h", 5) + b"abc"),
        (Reader.bytes, struct.pack(">i", 5) + b"abc"),
        (Reader.compact_string, b"\x06abc"),
        (Reader.compact_bytes, b"\x06abc"),
    ],
)
def test_truncated_input_is_a_protocol_error(read, wire):
    with pytest.raises(ProtocolError, match="need"):
        read(Reader(wire))


def test_negative_length_other_than_minus_one_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="negative length -2"):
        Reader(struct.pack(">h", -2)).nullable_string()


def test_null_where_null_is_not_allowed_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="null string"):
        Reader(struct.pack(">h", -1)).string()
    with pytest.raises(ProtocolError, match="null bytes"):
        Reader(b"\x00").compact_bytes()


def test_invalid_utf8_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="UTF-8"):
        Reader(b"\x03\xff\xfe").compact_string()


def test_reader_rejects_an_offset_outside_the_buffer():
    with pytest.raises(ProtocolError, match="offset"):
        Reader(b"abc", 4)
