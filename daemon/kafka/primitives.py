"""Primitive types of the Kafka wire protocol (pure: no I/O, no clock, no logging).

Owns ``ProtocolError``, the writers (``write_*(value, out)`` append encoded parts to a list, so a
whole message is joined — and a records blob copied — exactly once) and ``Reader``, a bounds-checked
cursor over a received buffer. Both cover the classic encodings (int16/int32 length prefixes) and
the compact ones of flexible versions (KIP-482: unsigned-varint length + 1, where 0 means null),
plus the tagged-field section that ends every struct of a flexible version.

Reference: https://kafka.apache.org/protocol#protocol_types.

Must not import any other kpd module except ``varint``; schema, messages and headers build on it.
"""

from __future__ import annotations

import struct
import uuid

from .varint import decode_uvarint, encode_uvarint

__all__ = [
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "ProtocolError",
    "Reader",
    "write_array_length",
    "write_bool",
    "write_bytes",
    "write_compact_bytes",
    "write_compact_nullable_bytes",
    "write_compact_nullable_string",
    "write_compact_string",
    "write_int8",
    "write_int16",
    "write_int32",
    "write_int64",
    "write_nullable_bytes",
    "write_nullable_string",
    "write_string",
    "write_uuid",
    "write_uvarint",
]

INT8 = struct.Struct(">b")
INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")

# Classic STRING/NULLABLE_STRING carry an int16 length, so 32767 bytes is the most they can hold.
_MAX_CLASSIC_STRING = 0x7FFF
_NULL_INT16 = INT16.pack(-1)
_NULL_INT32 = INT32.pack(-1)
_COMPACT_NULL = b"\x00"


class ProtocolError(ValueError):
    """Bytes that are not a valid Kafka message, or a value that cannot be encoded as one."""


# --- writers -------------------------------------------------------------------------------------
# Each appends to ``out``; callers join once. Strings are measured in UTF-8 bytes, not characters.


def write_int8(value: int, out: list) -> None:
    out.append(INT8.pack(value))


def write_int16(value: int, out: list) -> None:
    out.append(INT16.pack(value))


def write_int32(value: int, out: list) -> None:
    out.append(INT32.pack(value))


def write_int64(value: int, out: list) -> None:
    out.append(INT64.pack(value))


def write_bool(value: bool, out: list) -> None:
    out.append(b"\x01" if value else b"\x00")


def write_uuid(value: uuid.UUID, out: list) -> None:
    out.append(value.bytes)


def write_uvarint(value: int, out: list) -> None:
    out.append(encode_uvarint(value))


def _utf8(value: str) -> bytes:
    if type(value) is not str:
        raise ProtocolError(f"expected str, got {type(value).__name__}")
    return value.encode("utf-8")


def write_string(value: str, out: list) -> None:
    data = _utf8(value)
    if len(data) > _MAX_CLASSIC_STRING:
        raise ProtocolError(f"string of {len(data)} bytes exceeds the int16 length prefix")
    out.append(INT16.pack(len(data)))
    out.append(data)


def write_nullable_string(value: str | None, out: list) -> None:
    if value is None:
        out.append(_NULL_INT16)
    else:
        write_string(value, out)


def write_compact_string(value: str, out: list) -> None:
    data = _utf8(value)
    out.append(encode_uvarint(len(data) + 1))
    out.append(data)


def write_compact_nullable_string(value: str | None, out: list) -> None:
    if value is None:
        out.append(_COMPACT_NULL)
    else:
        write_compact_string(value, out)


def _as_bytes_like(value) -> tuple[object, int]:
    """Return ``value`` unchanged (never copied) with its length in bytes."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return value, len(value)
    if kind is memoryview:
        if value.ndim != 1 or value.itemsize != 1:
            value = value.cast("B")  # a view, not a copy: keeps len() == bytes for the framer
        return value, value.nbytes
    raise ProtocolError(f"expected bytes, bytearray or memoryview, got {kind.__name__}")


def write_bytes(value, out: list) -> None:
    data, size = _as_bytes_like(value)
    out.append(INT32.pack(size))
    out.append(data)


def write_nullable_bytes(value, out: list) -> None:
    if value is None:
        out.append(_NULL_INT32)
    else:
        write_bytes(value, out)


def write_compact_bytes(value, out: list) -> None:
    data, size = _as_bytes_like(value)
    out.append(encode_uvarint(size + 1))
    out.append(data)


def write_compact_nullable_bytes(value, out: list) -> None:
    if value is None:
        out.append(_COMPACT_NULL)
    else:
        write_compact_bytes(value, out)


def write_array_length(length: int | None, flexible: bool, out: list) -> None:
    """ARRAY (int32, -1 = null) or COMPACT_ARRAY (uvarint N+1, 0 = null) length prefix."""
    if flexible:
        out.append(_COMPACT_NULL if length is None else encode_uvarint(length + 1))
    else:
        out.append(_NULL_INT32 if length is None else INT32.pack(length))


# --- reader --------------------------------------------------------------------------------------


class Reader:
    """A cursor over ``buf[pos:end]``; every read checks the bound and raises ``ProtocolError``.

    Reads never slice past ``end``, so a Reader over a tagged field's bytes cannot wander into the
    fields that follow it.
    """

    __slots__ = ("buf", "end", "pos")

    def __init__(self, data, pos: int = 0, end: int | None = None) -> None:
        view = data if type(data) is memoryview else memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self.buf = view
        self.pos = pos
        self.end = len(view) if end is None else end
        if not 0 <= pos <= self.end <= len(view):
            raise ProtocolError(f"offset {pos} outside a buffer of {len(view)} bytes")

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def sub(self, size: int) -> Reader:
        """A Reader over the next ``size`` bytes; this Reader moves past them."""
        start = self.skip(size)
        return Reader(self.buf, start, self.pos)

    def skip(self, size: int) -> int:
        """Move past ``size`` bytes; return where they start."""
        start = self.pos
        if size < 0 or size > self.end - start:
            self._truncated(size)
        self.pos = start + size
        return start

    def _truncated(self, wanted: int) -> None:
        raise ProtocolError(
            f"need {wanted} bytes at offset {self.pos}, only {self.end - self.pos} left"
        )

    def _fixed(self, codec: struct.Struct):
        start = self.pos
        if codec.size > self.end - start:
            self._truncated(codec.size)
        self.pos = start + codec.size
        return codec.unpack_from(self.buf, start)[0]

    def int8(self) -> int:
        return self._fixed(INT8)

    def int16(self) -> int:
        return self._fixed(INT16)

    def int32(self) -> int:
        return self._fixed(INT32)

    def int64(self) -> int:
        return self._fixed(INT64)

    def bool(self) -> bool:
        # Kafka reads a BOOLEAN as "byte != 0" (ByteBufferAccessor.readByte() != 0).
        return self._fixed(INT8) != 0

    def uuid(self) -> uuid.UUID:
        start = self.skip(16)
        return uuid.UUID(bytes=bytes(self.buf[start : start + 16]))

    def uvarint(self) -> int:
        pos = self.pos
        if pos >= self.end:
            self._truncated(1)
        first = self.buf[pos]
        if first < 0x80:  # one byte: every length and tag count of a usual message
            self.pos = pos + 1
            return first
        try:
            value, pos = decode_uvarint(self.buf[: self.end], self.pos)
        except ValueError as exc:
            raise ProtocolError(f"bad varint at offset {self.pos}: {exc}") from None
        self.pos = pos
        return value

    # Length prefixes: None means null. A negative length other than -1 is corrupt input.

    def _classic_length(self, codec: struct.Struct) -> int | None:
        at = self.pos
        length = self._fixed(codec)
        if length < -1:
            raise ProtocolError(f"negative length {length} at offset {at}")
        return None if length == -1 else length

    def _compact_length(self) -> int | None:
        length = self.uvarint()
        return None if length == 0 else length - 1

    def _text(self, length: int | None, nullable: bool) -> str | None:
        if length is None:
            if nullable:
                return None
            raise ProtocolError(f"null string at offset {self.pos} where null is not allowed")
        start = self.skip(length)
        try:
            return str(self.buf[start : start + length], "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"invalid UTF-8 in string at offset {start}: {exc}") from None

    def _blob(self, length: int | None, nullable: bool) -> bytes | None:
        if length is None:
            if nullable:
                return None
            raise ProtocolError(f"null bytes at offset {self.pos} where null is not allowed")
        start = self.skip(length)
        return bytes(self.buf[start : start + length])

    def string(self) -> str:
        return self._text(self._classic_length(INT16), False)

    def nullable_string(self) -> str | None:
        return self._text(self._classic_length(INT16), True)

    def compact_string(self) -> str:
        return self._text(self._compact_length(), False)

    def compact_nullable_string(self) -> str | None:
        return self._text(self._compact_length(), True)

    def bytes(self) -> bytes:
        return self._blob(self._classic_length(INT32), False)

    def nullable_bytes(self) -> bytes | None:
        return self._blob(self._classic_length(INT32), True)

    def compact_bytes(self) -> bytes:
        return self._blob(self._compact_length(), False)

    def compact_nullable_bytes(self) -> bytes | None:
        return self._blob(self._compact_length(), True)

    def array_length(self, flexible: bool, min_item_size: int = 1) -> int | None:
        """Element count of an ARRAY/COMPACT_ARRAY, None for null.

        A count that cannot fit in the bytes left is rejected before any element is decoded, so
        a corrupt length cannot make the decoder allocate or loop for billions of elements.
        """
        at = self.pos
        length = self._compact_length() if flexible else self._classic_length(INT32)
        if length is not None and length * min_item_size > self.end - self.pos:
            raise ProtocolError(
                f"array of {length} elements at offset {at} cannot fit in "
                f"{self.end - self.pos} remaining bytes"
            )
        return length

    def tagged_fields(self):
        """Yield ``(tag, sub_reader)`` for each field of a tagged-field section (KIP-482).

        The section is a uvarint count, then per field a uvarint tag, a uvarint size and that
        many bytes. This Reader moves past each field whether or not the caller reads it, which
        is how unknown tags are skipped.
        """
        count = self.uvarint()
        for _ in range(count):
            tag = self.uvarint()
            size = self.uvarint()
            yield tag, self.sub(size)

    def skip_tagged_fields(self) -> None:
        for _tag, _field in self.tagged_fields():
            pass
