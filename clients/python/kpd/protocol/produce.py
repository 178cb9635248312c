"""The PRODUCE frame encoder: records laid out from whole columns at once (pure: no I/O, no
clock).

The one encoder of PRODUCE frames (docs/protocol.md section 6), used by the Python client and
the tests alike. The client keeps a frame's records as plain lists (keys, values) plus sparse
dicts for the rare timestamps and headers, and this module lays them out when the frame is
sealed (``records.encode_section``). ``encode_produce`` takes records one tuple each, for
tests and tools.

Must not import sockets, threads or asyncio, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from kpd.protocol.base import AckLevel, FrameType, encode_string
from kpd.protocol.records import (
    PRODUCE_FIXED,
    RecordIn,
    encode_section,
    split_records,
)

__all__ = [
    "FIXED_RECORD_BYTES",
    "encode_produce",
    "encode_produce_frame",
    "frame_overhead",
    "with_base_seq",
]

# Every record costs its key and value lengths (2 x i32) in the columns, whatever its size.
FIXED_RECORD_BYTES = 8
_FRAME_PREFIX = struct.Struct(">IB")  # length (of what follows it), frame type
_BASE_SEQ = struct.Struct(">Q")  # a PRODUCE payload starts with base_seq (protocol section 6)


def frame_overhead(topic_bytes: bytes) -> int:
    """Bytes of a PRODUCE frame that do not depend on its records: prefix, fixed head, topic,
    and the layout byte."""
    return _FRAME_PREFIX.size + PRODUCE_FIXED.size + len(topic_bytes) + 1


def encode_produce_frame(
    topic_bytes: bytes,
    partition: int,
    base_seq: int,
    keys: list,
    values: list,
    timestamps: dict[int, int] | None = None,
    header_blobs: dict[int, bytes] | None = None,
    ack: AckLevel = AckLevel.CONNECTION_DEFAULT,
) -> bytes:
    """The whole PRODUCE frame (length prefix included).

    ``keys[i]``/``values[i]``: bytes or None (null). ``timestamps`` and ``header_blobs`` map a
    record index to its timestamp (ms) / encoded header blob, only for records that have one;
    when a dict is None or empty its column is left out (protocol section 6: a sender SHOULD
    omit a column no record uses). ``topic_bytes`` is the encoded topic string.
    """
    section = encode_section(keys, values, timestamps, header_blobs)
    head = PRODUCE_FIXED.pack(base_seq, len(keys), partition, ack)
    body = len(head) + len(topic_bytes) + len(section)
    return b"".join((_FRAME_PREFIX.pack(1 + body, FrameType.PRODUCE), head, topic_bytes, section))


def encode_produce(
    base_seq: int,
    topic: str,
    partition: int,
    records: Iterable[RecordIn],
    ack: AckLevel = AckLevel.CONNECTION_DEFAULT,
) -> bytes:
    """A whole PRODUCE frame for ``records`` given one ``(key, value, timestamp, headers)``
    tuple each (timestamp None: the broker's clock; headers: ``(name, bytes-or-None)`` pairs)."""
    keys, values, timestamps, blobs = split_records(records)
    return encode_produce_frame(
        encode_string(topic), partition, base_seq, keys, values, timestamps, blobs, ack
    )


def with_base_seq(frame: bytes, base_seq: int) -> bytes:
    """``frame`` (a whole PRODUCE frame) renumbered to start at ``base_seq``.

    A client that reconnects sends the frames it never wrote on the new connection, whose
    numbering starts again at 0 (protocol section 1): only the first field of the payload,
    right after the 5-byte prefix, changes.
    """
    start = _FRAME_PREFIX.size
    return b"".join((frame[:start], _BASE_SEQ.pack(base_seq), frame[start + _BASE_SEQ.size :]))
