"""A Kafka RecordBatch v2's records, as a kpd records section, in one pass (the Kafka listener).

``kafka_section(payload, count, base_timestamp, fixed_timestamp)`` turns the decompressed
records of one batch (``records.open_batch``) into the records section a kpd PRODUCE frame
carries (``kpd.protocol.records``: a timestamp column, key and value length columns, a header
length column when a record has headers, then the data), and says whether every key is null.
It never builds a Python object per record: the C accelerator's ``kafka_section`` does the
work; ``kafka_section_python`` is its pure twin and the reference (the tests run both on the
same batches and fuzzed bytes and require the same answer).

What it checks, in this order (the first failure is the answer):

1. every record decodes within the payload, and the payload holds exactly ``count`` records
   (a varint fits 64 bits, a record's fields end at its length, a header name is UTF-8 of at
   most 65,535 bytes, a header count is not negative)                 -> CORRUPT_MESSAGE
2. then record by record: its timestamp (``fixed_timestamp`` when the batch is LogAppendTime,
   else baseTimestamp + timestampDelta) is >= -1 and fits an i64     -> INVALID_TIMESTAMP
   and its offsetDelta equals its index                                -> INVALID_RECORD

A failure raises ``SectionError`` with that Kafka error code. Header values and keys are copied
as they are; a header of the kpd section is (u16 name length, name, i32 value length or -1,
value), as ``kpd.protocol.records.header_blob`` writes it.

Pure: bytes in, bytes out. Imports the Kafka codec's varints, kpd-client's section encoder and
the accelerator only.
"""

from __future__ import annotations

from daemon.accel import native
from daemon.kafka.errors import ErrorCode
from daemon.kafka.varint import decode_varint
from kpd.protocol.records import encode_section, header_blob

__all__ = ["SectionError", "kafka_section", "kafka_section_python"]

# The error of each check, by the index the C twin raises ValueError(index, message) with.
_KINDS = (ErrorCode.CORRUPT_MESSAGE, ErrorCode.INVALID_TIMESTAMP, ErrorCode.INVALID_RECORD)
_CORRUPT, _TIMESTAMP, _OFFSET = 0, 1, 2
_I64_MAX = (1 << 63) - 1
_MAX_HEADER_NAME = 0xFFFF  # the kpd section's u16 header name length


class SectionError(ValueError):
    """The batch's records cannot become a section; ``error_code`` says why (Kafka's code)."""

    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


def kafka_section(payload, count: int, base_timestamp: int,
                  fixed_timestamp: int | None) -> tuple[bytes, bool]:  # fmt: skip
    """(records section, every key null) of ``count`` >= 1 records; raises SectionError."""
    convert = native.kafka_section if native is not None else kafka_section_python
    fixed = fixed_timestamp is not None
    try:
        return convert(payload, count, base_timestamp, fixed_timestamp if fixed else 0, fixed)
    except ValueError as exc:
        kind, message = exc.args
        raise SectionError(_KINDS[kind], message) from None


def _fail(kind: int, message: str) -> ValueError:
    return ValueError(kind, message)


def _varint(buf, pos: int) -> tuple[int, int]:
    """A zig-zag varint that fits 64 bits (a longer or larger one is corrupt)."""
    try:
        value, pos = decode_varint(buf, pos)
    except ValueError as exc:
        raise _fail(_CORRUPT, str(exc)) from None
    if not -(1 << 63) <= value <= _I64_MAX:
        raise _fail(_CORRUPT, "varint beyond 64 bits")
    return value, pos


def _nullable(buf, pos: int) -> tuple[bytes | None, int]:
    size, pos = _varint(buf, pos)
    if size < 0:
        return None, pos
    if size > len(buf) - pos:
        raise _fail(_CORRUPT, f"length {size} exceeds the records")
    return bytes(buf[pos : pos + size]), pos + size


def kafka_section_python(payload, count: int, base_timestamp: int, fixed_timestamp: int,
                         fixed: bool) -> tuple[bytes, bool]:  # fmt: skip
    """The pure twin of the accelerator's ``kafka_section`` (``fixed``: every record has
    ``fixed_timestamp``). Raises ValueError(kind index, message)."""
    buf = memoryview(payload)
    size = len(buf)
    if count < 1 or count > size:  # a record takes at least one byte
        raise _fail(_CORRUPT, f"{count} records in {size} bytes")
    keys, values, deltas, stamps, blobs = [], [], [], [], {}
    pos = 0
    for index in range(count):
        length, pos = _varint(buf, pos)
        end = pos + length
        if length < 0 or end > size:
            raise _fail(_CORRUPT, f"record {index}: length {length} exceeds the batch")
        pos += 1  # record attributes: unused
        ts_delta, pos = _varint(buf, pos)
        offset_delta, pos = _varint(buf, pos)
        key, pos = _nullable(buf, pos)
        value, pos = _nullable(buf, pos)
        header_count, pos = _varint(buf, pos)
        if header_count < 0:
            raise _fail(_CORRUPT, f"record {index}: {header_count} headers")
        headers = []
        for _ in range(header_count):
            name_len, pos = _varint(buf, pos)
            if name_len < 0 or name_len > size - pos or name_len > _MAX_HEADER_NAME:
                raise _fail(_CORRUPT, f"record {index}: header name length {name_len}")
            try:
                name = str(buf[pos : pos + name_len], "utf-8")
            except UnicodeDecodeError:
                raise _fail(_CORRUPT, f"record {index}: a header name is not UTF-8") from None
            header_value, pos = _nullable(buf, pos + name_len)
            headers.append((name, header_value))
        if pos != end:
            raise _fail(_CORRUPT, f"record {index} declares {length} bytes but holds "
                                  f"{pos - end + length}")  # fmt: skip
        keys.append(key)
        values.append(value)
        deltas.append((ts_delta, offset_delta))
        if headers:
            blobs[index] = header_blob(headers)
    if pos != size:
        raise _fail(_CORRUPT, f"{size - pos} bytes after the last of {count} records")
    for index, (ts_delta, offset_delta) in enumerate(deltas):
        stamp = fixed_timestamp if fixed else base_timestamp + ts_delta
        if not -1 <= stamp <= _I64_MAX:
            raise _fail(_TIMESTAMP, f"record {index}: timestamp {stamp}")
        if offset_delta != index:
            raise _fail(_OFFSET, f"record {index} has offset delta {offset_delta}")
        stamps.append(stamp)
    section = encode_section(keys, values, dict(enumerate(stamps)), blobs)
    return section, keys.count(None) == count
