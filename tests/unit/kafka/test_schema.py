"""The schema compiler's decoders: runs of fixed-width integers read with one unpack must give
the same fields, the same bounds checks and the same tagged-field handling as one read each."""

import struct

import pytest

from daemon.kafka.primitives import ProtocolError, Reader
from daemon.kafka.schema import INT16, INT32, INT64, STRING, Array, Field, Struct, compile_struct

_FIELDS = (
    Field("Index", INT32),
    Field("ErrorCode", INT16),
    Field("BaseOffset", INT64),
    Field("Name", STRING),
    Field("Count", INT32),  # a run of one: read on its own
    Field("Leader", Struct("Leader", Field("LeaderId", INT32, default=-1)), "1+", tag=0),
)


def _classic_body() -> bytes:
    return (
        struct.pack(">i", 7)  # Index
        + struct.pack(">h", -3)  # ErrorCode
        + struct.pack(">q", 1 << 40)  # BaseOffset
        + struct.pack(">h", 2) + b"ab"  # Name: int16 length, UTF-8
        + struct.pack(">i", 9)  # Count
    )  # fmt: skip


def test_a_run_of_fixed_width_integers_decodes_field_by_field():
    body = compile_struct(_FIELDS, 0, flexible=False).decode(Reader(_classic_body()))
    assert body == {"index": 7, "error_code": -3, "base_offset": 1 << 40, "name": "ab",
                    "count": 9, "leader": {"leader_id": -1}}  # fmt: skip


def test_a_run_cut_short_is_a_protocol_error():
    data = _classic_body()[:9]  # Index, ErrorCode and 3 of BaseOffset's 8 bytes
    with pytest.raises(ProtocolError):
        compile_struct(_FIELDS, 0, flexible=False).decode(Reader(data))


def test_flexible_struct_reads_an_empty_and_a_filled_tag_section():
    fixed = struct.pack(">ihq", 1, 0, 5) + bytes([3]) + b"xy" + struct.pack(">i", 2)
    codec = compile_struct(_FIELDS, 1, flexible=True)
    assert codec.decode(Reader(fixed + b"\x00"))["leader"] == {"leader_id": -1}
    # One tagged field: tag 0, 5 bytes (LeaderId int32 + its own empty tag section).
    tagged = fixed + bytes([1, 0, 5]) + struct.pack(">i", 4) + b"\x00"
    reader = Reader(tagged + b"rest")
    assert codec.decode(reader)["leader"] == {"leader_id": 4}
    assert reader.remaining == 4


def test_array_of_structs_with_runs_decodes_every_element():
    element = Struct("E", Field("A", INT32), Field("B", INT64))
    codec = compile_struct((Field("Items", Array(element)),), 0, flexible=False)
    data = struct.pack(">i", 2) + struct.pack(">iq", 1, 2) + struct.pack(">iq", 3, 4)
    assert codec.decode(Reader(data)) == {"items": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}
