"""PRODUCE frames built from whole columns at once (pure: no I/O, no clock).

Owns the client's fast encoder of the PRODUCE frame (docs/protocol.md section 6). The
session keeps a frame's records as plain lists (keys, values) plus sparse dicts for the rare
timestamps and headers, and this module lays them out when the frame is sealed with C-level
calls per column (``array(map(len, ...))``, ``bytes.join``) instead of Python work per record.
``daemon.ingest.codec_writer.ProduceBatchWriter`` writes the same bytes record by record; it
stays the reference codec, this is the client's hot path.

The records section is columnar::

    layout u8 | [timestamps: n x i64] | key_lens: n x i32 | value_lens: n x i32
              | [header_lens: n x i32] | data: key_0 value_0 headers_0 key_1 value_1 ...

Must not import sockets, threads or asyncio, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

import struct
import sys
from array import array

from daemon.ingest.codec import AckLevel, FrameType
from daemon.ingest.codec_records import (
    LAYOUT_HAS_HEADERS,
    LAYOUT_HAS_TIMESTAMPS,
    PRODUCE_FIXED,
)

__all__ = ["FIXED_RECORD_BYTES", "encode_produce_frame", "frame_overhead"]

# Every record costs its key and value lengths (2 x i32) in the columns, whatever its size.
FIXED_RECORD_BYTES = 8
_FRAME_PREFIX = struct.Struct(">IB")  # length (of what follows it), frame type
_NULL_LEN = struct.pack(">i", -1)
_NATIVE_IS_LITTLE = sys.byteorder == "little"


def frame_overhead(topic_bytes: bytes) -> int:
    """Bytes of a PRODUCE frame that do not depend on its records: prefix, fixed head, topic,
    and the layout byte."""
    return _FRAME_PREFIX.size + PRODUCE_FIXED.size + len(topic_bytes) + 1


def _column(values, typecode: str) -> bytes:
    """A column of ints, big-endian (protocol section 1)."""
    column = array(typecode, values)
    if _NATIVE_IS_LITTLE:
        column.byteswap()
    return column.tobytes()


def _lengths(items: list, nulls: int) -> bytes:
    """The i32 length column of ``items``, ``nulls`` of which are None: length -1 (protocol
    section 1, bytes-or-null)."""
    if not nulls:
        return _column(map(len, items), "i")
    if nulls == len(items):
        return _NULL_LEN * nulls  # keyless frames: all keys null
    return _column([-1 if item is None else len(item) for item in items], "i")


def _interleave(columns: tuple[list, ...], count: int) -> list:
    # data = key_0 value_0 [blob_0] key_1 value_1 ...: slice assignment does it in C.
    width = len(columns)
    parts = [b""] * (width * count)
    for offset, column in enumerate(columns):
        parts[offset::width] = column
    return parts


def encode_produce_frame(
    topic_bytes: bytes,
    partition: int,
    base_seq: int,
    keys: list,
    values: list,
    timestamps: dict[int, int] | None = None,
    header_blobs: dict[int, bytes] | None = None,
) -> bytes:
    """The whole PRODUCE frame (length prefix included), ack = the connection's default.

    ``keys[i]``/``values[i]``: bytes or None (null). ``timestamps`` and ``header_blobs`` map a
    record index to its timestamp (ms) / encoded header blob, only for records that have one;
    when a dict is None or empty its column is left out (protocol section 6: a sender SHOULD
    omit a column no record uses). ``topic_bytes`` is the encoded topic string.
    """
    count = len(keys)
    if count == 0 or len(values) != count:
        raise ValueError(
            f"a PRODUCE frame needs 1+ records, got {count} keys, {len(values)} values"
        )
    layout = 0
    columns = []
    if timestamps:
        layout |= LAYOUT_HAS_TIMESTAMPS
        stamps = [-1] * count
        for index, stamp in timestamps.items():
            stamps[index] = stamp
        columns.append(_column(stamps, "q"))
    null_keys, null_values = keys.count(None), values.count(None)
    columns.append(_lengths(keys, null_keys))
    columns.append(_lengths(values, null_values))
    if header_blobs:
        layout |= LAYOUT_HAS_HEADERS
        blobs = [b""] * count
        for index, blob in header_blobs.items():
            blobs[index] = blob
        columns.append(_column(map(len, blobs), "i"))
        parts = _interleave((keys, values, blobs), count)
    else:
        parts = _interleave((keys, values), count)
    # b"".join refuses None; filter(None, ...) drops nulls (and empty items, which add nothing).
    data = b"".join(filter(None, parts) if null_keys or null_values else parts)
    head = PRODUCE_FIXED.pack(base_seq, count, partition, AckLevel.CONNECTION_DEFAULT)
    body = len(head) + len(topic_bytes) + 1 + sum(map(len, columns)) + len(data)
    return b"".join(
        (
            _FRAME_PREFIX.pack(1 + body, FrameType.PRODUCE),
            head,
            topic_bytes,
            bytes((layout,)),
            *columns,
            data,
        )
    )
