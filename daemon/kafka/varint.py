"""Variable-length integers of the Kafka protocol (pure: no I/O, no clock, no logging).

Two encodings, both little-endian base-128 (7 bits per byte, high bit = "more follows"):

* unsigned varint — compact array/string lengths and tagged fields (KIP-482);
* signed varint/varlong — ZigZag first, as in protobuf; used inside RecordBatch v2 records
  (Kafka ``ByteUtils.writeVarint``/``writeVarlong``).

Encoding small values is on the per-record hot path, so the first values of each encoding are
precomputed once into tables and looked up instead of looped over.
"""

from __future__ import annotations

__all__ = [
    "decode_uvarint",
    "decode_varint",
    "encode_uvarint",
    "encode_varint",
    "varint_size",
]

# Signed values in [-_TABLE_SPAN, _TABLE_SPAN) and unsigned values in [0, 2*_TABLE_SPAN)
# encode by table lookup; 2*8192 = 16384 covers every 1- and 2-byte unsigned varint.
_TABLE_SPAN = 8192


def _encode_uvarint_slow(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"unsigned varint cannot encode {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_UVARINT_TABLE: tuple[bytes, ...] = tuple(_encode_uvarint_slow(i) for i in range(2 * _TABLE_SPAN))


def encode_uvarint(value: int) -> bytes:
    """Unsigned varint (Kafka ``ByteUtils.writeUnsignedVarint``)."""
    if 0 <= value < 2 * _TABLE_SPAN:
        return _UVARINT_TABLE[value]
    return _encode_uvarint_slow(value)


def _zigzag(value: int) -> int:
    # ZigZag maps 0,-1,1,-2,… to 0,1,2,3,… so small magnitudes stay short. Python ints are
    # unbounded, so the (n << 1) ^ (n >> 63) trick of Java is written without the shift width.
    return value << 1 if value >= 0 else ((-value) << 1) - 1


def encode_varint(value: int) -> bytes:
    """Signed ZigZag varint/varlong (Kafka ``ByteUtils.writeVarint``/``writeVarlong``)."""
    if -_TABLE_SPAN <= value < _TABLE_SPAN:
        return _VARINT_TABLE[value + _TABLE_SPAN]
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"varlong out of range: {value}")
    return _encode_uvarint_slow(_zigzag(value))


_VARINT_TABLE: tuple[bytes, ...] = tuple(
    _encode_uvarint_slow(_zigzag(i)) for i in range(-_TABLE_SPAN, _TABLE_SPAN)
)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned varint at ``pos``; return ``(value, next_pos)``.

    Raises ``ValueError`` on a truncated buffer or on more than 10 bytes (a 64-bit value never
    needs more, so a longer run is corrupt input, not a big number).
    """
    if pos >= len(buf):
        raise ValueError("truncated varint")
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    end = len(buf)
    pos += 1
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def decode_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a signed ZigZag varint/varlong at ``pos``; return ``(value, next_pos)``."""
    raw, pos = decode_uvarint(buf, pos)
    return (raw >> 1) ^ -(raw & 1), pos


def varint_size(value: int) -> int:
    """Number of bytes ``encode_varint(value)`` produces."""
    raw = _zigzag(value)
    size = 1
    while raw >= 0x80:
        raw >>= 7
        size += 1
    return size
