"""Straight-line codecs for the Produce body, the one message of kpd's data path (pure).

A worker encodes a ProduceRequest and decodes its response once per request; through the
generic schema codec (``schema.CompiledStruct``) that is a closure call per field, a tag
section walk per struct and a default per absent field — at 1k records/s, ~2 records per
request, a fifth of a worker's Python. These codecs write the same bytes and return the same
dicts as the compiled schema of ``messages.PRODUCE`` at the same version (a unit test holds
both to it on the same inputs), for the shapes kpd sends and brokers usually answer:

* a request as the sender builds it (every key present);
* a response whose tagged-field sections are all empty, whose partitions carry no
  ``record_errors`` and whose compact lengths fit one byte, read in place (one struct call
  per partition, no ``Reader`` call per field) — anything else (KIP-951 leader hints,
  per-record errors, a null array, a truncated body) is left to the generic codec, which
  also owns the error messages.

Imports only ``primitives``; ``messages`` wires these in for Produce.
"""

from __future__ import annotations

import struct

from .primitives import (
    INT16,
    INT32,
    ProtocolError,
    Reader,
    write_compact_nullable_bytes,
    write_compact_nullable_string,
    write_compact_string,
    write_nullable_bytes,
    write_nullable_string,
    write_string,
)
from .varint import encode_uvarint

__all__ = ["ProduceRequestCodec", "ProduceResponseCodec"]

_NO_TAGS = b"\x00"
_ACKS_TIMEOUT = struct.Struct(">hi")


class _Unusual(Exception):
    """A response shape the straight-line decoder leaves to the generic one."""


class ProduceRequestCodec:
    """``encode(body, out)`` of a ProduceRequest body at one version; ``decode`` is the
    generic codec's (kpd never reads Produce requests on its data path)."""

    __slots__ = ("_flexible", "_generic", "decode")

    def __init__(self, generic, flexible: bool) -> None:
        self._generic = generic
        self._flexible = flexible
        self.decode = generic.decode

    def encode(self, body: dict, out: list) -> None:
        mark = len(out)
        try:
            if self._flexible:
                _encode_flexible(body, out)
            else:
                _encode_classic(body, out)
        except (KeyError, TypeError, ValueError, AttributeError, struct.error, ProtocolError):
            del out[mark:]
            self._generic.encode(body, out)  # raises with the generic codec's field path


def _encode_flexible(body: dict, out: list) -> None:
    write_compact_nullable_string(body["transactional_id"], out)
    out.append(_ACKS_TIMEOUT.pack(body["acks"], body["timeout_ms"]))
    topics = body["topic_data"]
    out.append(encode_uvarint(len(topics) + 1))
    for topic in topics:
        write_compact_string(topic["name"], out)
        parts = topic["partition_data"]
        out.append(encode_uvarint(len(parts) + 1))
        for part in parts:
            out.append(INT32.pack(part["index"]))
            write_compact_nullable_bytes(part["records"], out)
            out.append(_NO_TAGS)
        out.append(_NO_TAGS)
    out.append(_NO_TAGS)


def _encode_classic(body: dict, out: list) -> None:
    write_nullable_string(body["transactional_id"], out)
    out.append(_ACKS_TIMEOUT.pack(body["acks"], body["timeout_ms"]))
    topics = body["topic_data"]
    out.append(INT32.pack(len(topics)))
    for topic in topics:
        write_string(topic["name"], out)
        parts = topic["partition_data"]
        out.append(INT32.pack(len(parts)))
        for part in parts:
            out.append(INT32.pack(part["index"]))
            write_nullable_bytes(part["records"], out)


class ProduceResponseCodec:
    """``decode(reader)`` of a ProduceResponse body at one version (3+); ``encode`` is the
    generic codec's (only test brokers write Produce responses)."""

    __slots__ = ("_flexible", "_generic", "_head", "_version", "encode")

    def __init__(self, generic, version: int, flexible: bool) -> None:
        self._generic = generic
        self._version = version
        self._flexible = flexible
        # index, error_code, base_offset, log_append_time_ms (2+), log_start_offset (5+)
        self._head = struct.Struct(">ihqq" + ("q" if version >= 5 else ""))
        self.encode = generic.encode

    def decode(self, reader: Reader) -> dict:
        start = reader.pos
        try:
            return self._decode(reader)
        except (_Unusual, ProtocolError, struct.error, IndexError, UnicodeDecodeError):
            reader.pos = start
            return self._generic.decode(reader)

    def _decode(self, reader: Reader) -> dict:
        # Reads the buffer in place, one struct call per partition: the lengths and counts
        # kpd meets fit one byte (a compact one) or are fixed-width (a classic one); a longer
        # varint, a null, a bound overrun or a tag is _Unusual: the generic codec reads it.
        buf, pos, end = reader.buf, reader.pos, reader.end
        flexible, head = self._flexible, self._head
        size, with_messages = head.size, self._version >= 8
        topics = []
        count, pos = _length(buf, pos, end, flexible, True)
        for _ in range(count):
            length, pos = _length(buf, pos, end, flexible, False)
            if pos + length > end:
                raise _Unusual
            name = str(buf[pos : pos + length], "utf-8")
            parts = []
            count, pos = _length(buf, pos + length, end, flexible, True)
            for _ in range(count):
                if pos + size > end:
                    raise _Unusual
                fields = head.unpack_from(buf, pos)
                pos += size
                message = None
                if with_messages:
                    errors, pos = _length(buf, pos, end, flexible, True)
                    if errors:
                        raise _Unusual  # record_errors: the generic codec reads them
                    message, pos = _nullable_string(buf, pos, end, flexible)
                if flexible:
                    pos = _no_tags(buf, pos, end)
                parts.append(
                    {
                        "index": fields[0],
                        "error_code": fields[1],
                        "base_offset": fields[2],
                        "log_append_time_ms": fields[3],
                        "log_start_offset": fields[4] if len(fields) > 4 else -1,
                        "record_errors": [],
                        "error_message": message,
                        "current_leader": {"leader_id": -1, "leader_epoch": -1},
                    }
                )
            if flexible:
                pos = _no_tags(buf, pos, end)
            topics.append({"name": name, "partition_responses": parts})
        if pos + 4 > end:
            raise _Unusual
        throttle = INT32.unpack_from(buf, pos)[0]
        pos += 4
        if flexible:
            pos = _no_tags(buf, pos, end)
        reader.pos = pos
        return {"responses": topics, "throttle_time_ms": throttle, "node_endpoints": []}


def _length(buf, pos: int, end: int, flexible: bool, array: bool) -> tuple[int, int]:
    """An array's count or a string's length at ``pos``, and the position after it: a
    compact one of one byte, or a classic INT32 count / INT16 length; null is _Unusual."""
    if flexible:
        if pos >= end or not 0 < buf[pos] < 0x80:
            raise _Unusual  # null, or a varint of more than one byte
        return buf[pos] - 1, pos + 1
    width = 4 if array else 2
    if pos + width > end:
        raise _Unusual
    n = (INT32 if array else INT16).unpack_from(buf, pos)[0]
    if n < 0:
        raise _Unusual
    return n, pos + width


def _nullable_string(buf, pos: int, end: int, flexible: bool) -> tuple[str | None, int]:
    if flexible:
        if pos < end and buf[pos] == 0:
            return None, pos + 1
    elif pos + 2 <= end and buf[pos] == 0xFF and buf[pos + 1] == 0xFF:
        return None, pos + 2
    length, pos = _length(buf, pos, end, flexible, False)
    if pos + length > end:
        raise _Unusual
    return str(buf[pos : pos + length], "utf-8"), pos + length


def _no_tags(buf, pos: int, end: int) -> int:
    if pos >= end or buf[pos] != 0:
        raise _Unusual  # tagged fields (KIP-951 leader hints): the generic codec reads them
    return pos + 1
