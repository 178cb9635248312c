"""PRODUCE frames and their records section (pure: no I/O, no clock, no logging).

Owns the record layout, which is COLUMNAR rather than one record after another::

    layout u8 | [timestamps: count x i64] | key_lens: count x i32 | value_lens: count x i32
              | [header_lens: count x i32] | data: key_0 value_0 headers_0 key_1 value_1 ...

Why: every check the ingest process must make before it may say ACCEPTED (lengths in range,
lengths add up to the data, all keys null?) becomes a few C-level calls per frame —
``struct.unpack_from`` of a whole column, ``min``, ``sum``, ``count`` — instead of a Python loop
per record; and a worker decodes a frame with one unpack plus two slices per record. Measured
in CPython 3.11 (docs/protocol.md, "Design notes"): varint lengths cost ~2.5x fixed-width ones.

The records section is self-describing given ``count``, so ingest copies it into a worker's
ring as one slice and the worker decodes it with ``iter_records``; ``encode_records``
and ``encode_section`` build one (for ingest re-routing subsets of a frame, and for
``produce``'s frames).

Must not import anything outside ``kpd.protocol`` and the accelerator (``kpd.accel``:
the plain layout's checks in one C loop when it is built).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from kpd.accel import native
from kpd.protocol.base import (
    AckLevel,
    BadFrameError,
    KpdErrorCode,
    encode_string,
    read_string,
)

__all__ = [
    "LAYOUT_HAS_HEADERS",
    "LAYOUT_HAS_TIMESTAMPS",
    "ProduceHeader",
    "RecordIn",
    "RecordView",
    "decode_produce_header",
    "encode_records",
    "encode_section",
    "iter_records",
    "plain_columns",
    "split_records",
    "stamped_columns",
]

LAYOUT_HAS_TIMESTAMPS = 0x01
LAYOUT_HAS_HEADERS = 0x02
_LAYOUT_KNOWN = LAYOUT_HAS_TIMESTAMPS | LAYOUT_HAS_HEADERS

# base_seq u64 | count u32 | partition i32 | ack u8; the topic string and records follow.
PRODUCE_FIXED = struct.Struct(">QIiB")
_IDENTITY = struct.Struct(">QI")  # the first 12 bytes: which records this frame carries
_HEADER_VALUE_LEN = struct.Struct(">i")
SEQ_LIMIT = 1 << 64
_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__ (~70 ns less)


class RecordIn(NamedTuple):
    """A record to encode. ``timestamp`` is ms since the epoch; None lets kpd assign one."""

    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()


class RecordView(NamedTuple):
    """A decoded record. ``key``/``value`` are slices of the buffer given to ``iter_records``
    (memoryviews if it was a memoryview: copy them before the buffer is reused)."""

    key: bytes | memoryview | None
    value: bytes | memoryview | None
    timestamp: int | None
    headers: tuple[tuple[str, bytes | memoryview | None], ...]


class ProduceHeader(NamedTuple):
    """What ingest needs to route a PRODUCE frame without looking at its records."""

    base_seq: int
    count: int
    partition: int  # -1: kpd chooses
    ack: AckLevel  # may be CONNECTION_DEFAULT
    topic: str
    records: memoryview  # the records section, ready for iter_records(records, count)
    keyless: bool  # every key is null: one sticky partition serves the whole frame


# --- decoding -------------------------------------------------------------------------------


def decode_produce_header(payload) -> ProduceHeader:
    """Decode the head of a PRODUCE payload and validate its records section (C-level checks).

    Raises BadFrameError; its ``first_seq``/``count`` are set whenever the first 12 bytes were
    readable and ``count`` > 0, so the server can fail exactly those records and continue.
    """
    if len(payload) < _IDENTITY.size:
        raise BadFrameError(
            KpdErrorCode.BAD_FRAME, f"PRODUCE: {len(payload)} bytes, too short to name its records"
        )
    base_seq, count = _IDENTITY.unpack_from(payload, 0)
    if count == 0:
        raise BadFrameError(KpdErrorCode.BAD_RECORD_COUNT, "PRODUCE: record count is 0")
    try:
        return _decode_produce_rest(payload, base_seq, count)
    except BadFrameError as exc:
        raise BadFrameError(exc.code, exc.message, base_seq, count) from None


def _decode_produce_rest(payload, base_seq: int, count: int) -> ProduceHeader:
    if len(payload) < PRODUCE_FIXED.size:
        raise BadFrameError(KpdErrorCode.BAD_FRAME, "PRODUCE: truncated header")
    _, _, partition, ack = PRODUCE_FIXED.unpack_from(payload, 0)
    if base_seq + count > SEQ_LIMIT:
        raise BadFrameError(KpdErrorCode.BAD_FIELD, "PRODUCE: sequence numbers pass 2**64")
    if partition < -1:
        raise BadFrameError(KpdErrorCode.INVALID_PARTITION, f"PRODUCE: partition {partition}")
    if ack > AckLevel.CONNECTION_DEFAULT:
        raise BadFrameError(KpdErrorCode.BAD_FIELD, f"PRODUCE: ack level {ack}")
    topic, pos = read_string(payload, PRODUCE_FIXED.size, "PRODUCE topic")
    records = memoryview(payload)[pos:]
    if native is not None and records and records[0] == 0:
        try:  # the plain layout, validated in one C loop
            keyless = native.scan_plain(records, count)
        except ValueError:
            pass  # malformed: the pure scan below raises the exact BadFrameError
        else:
            return ProduceHeader(base_seq, count, partition, AckLevel(ack), topic, records, keyless)
    columns = _scan_records(records, count)
    keyless = columns.lens[:count].count(-1) == count
    return ProduceHeader(base_seq, count, partition, AckLevel(ack), topic, records, keyless)


class _Columns(NamedTuple):
    timestamps: tuple[int, ...] | None
    lens: tuple[int, ...]  # key lens, then value lens, then header lens (if any)
    headers: list | None  # decoded headers per record, when the layout has them
    data_start: int


def _scan_records(buf, count: int) -> _Columns:
    """Validate a records section as a whole; all checks are per column, in C."""
    if not buf:
        raise BadFrameError(KpdErrorCode.BAD_FRAME, "records: missing layout byte")
    layout = buf[0]
    if layout & ~_LAYOUT_KNOWN:
        raise BadFrameError(KpdErrorCode.BAD_FLAGS, f"records: unknown layout bits {layout:#04x}")
    n_lens = count * (3 if layout & LAYOUT_HAS_HEADERS else 2)
    ts_bytes = 8 * count if layout & LAYOUT_HAS_TIMESTAMPS else 0
    data_start = 1 + ts_bytes + 4 * n_lens
    if data_start > len(buf):
        raise BadFrameError(
            KpdErrorCode.BAD_RECORD_COUNT,
            f"records: count {count} needs {data_start} bytes of columns, section has {len(buf)}",
        )
    timestamps = _read_timestamps(buf, count) if ts_bytes else None
    lens = struct.unpack_from(f">{n_lens}i", buf, 1 + ts_bytes)
    _check_lengths(lens, count, len(buf) - data_start)
    headers = None
    if layout & LAYOUT_HAS_HEADERS:
        headers = _decode_all_headers(buf, lens, count, data_start)
    return _Columns(timestamps, lens, headers, data_start)


def _read_timestamps(buf, count: int) -> tuple[int, ...]:
    timestamps = struct.unpack_from(f">{count}q", buf, 1)
    if min(timestamps) < -1:
        first = next(i for i, ts in enumerate(timestamps) if ts < -1)
        raise BadFrameError(
            KpdErrorCode.BAD_FIELD, f"record {first}: timestamp {timestamps[first]} < -1"
        )
    return timestamps


def _check_lengths(lens: tuple[int, ...], count: int, data_bytes: int) -> None:
    # Key and value lengths may be -1 (null); header-blob lengths may not (0 = no headers).
    if min(lens) < -1 or (len(lens) > 2 * count and min(lens[2 * count :]) < 0):
        index = next(i for i, n in enumerate(lens) if n < -1 or (i >= 2 * count and n < 0))
        field = ("key", "value", "headers")[index // count]
        raise BadFrameError(
            KpdErrorCode.BAD_LENGTH, f"record {index % count}: {field} length {lens[index]}"
        )
    # Each -1 contributes -1 to the sum but no data bytes, hence the correction.
    needed = sum(lens) + lens.count(-1)
    if needed != data_bytes:
        raise BadFrameError(
            KpdErrorCode.BAD_LENGTH,
            f"records: lengths add up to {needed} data bytes, section carries {data_bytes}",
        )


def _decode_all_headers(buf, lens, count: int, data_start: int) -> list:
    # Header blobs sit after each record's value; walking to them needs the running position.
    out = []
    pos = data_start
    for i in range(count):
        pos += max(lens[i], 0) + max(lens[count + i], 0)
        size = lens[2 * count + i]
        out.append(_decode_headers(buf, pos, pos + size, i) if size else ())
        pos += size
    return out


def _decode_headers(buf, pos: int, end: int, index: int) -> tuple:
    """A header blob: (key string, value i32 length + bytes, -1 = null) until ``end``."""
    headers = []
    what = f"record {index} header"
    while pos < end:
        # ``end`` bounds every read to this blob, so an overrun reads as truncation.
        key, pos = read_string(buf, pos, what, end)
        if pos + 4 > end:
            raise BadFrameError(KpdErrorCode.BAD_FRAME, f"{what} {key!r}: truncated value length")
        (size,) = _HEADER_VALUE_LEN.unpack_from(buf, pos)
        pos += 4
        if size < -1 or pos + max(size, 0) > end:
            raise BadFrameError(KpdErrorCode.BAD_LENGTH, f"{what} {key!r}: value length {size}")
        value = None if size == -1 else buf[pos : pos + size]
        pos += max(size, 0)
        headers.append((key, value))
    return tuple(headers)


def plain_columns(records, count: int) -> tuple[Sequence[int], Sequence[int], int] | None:
    """``(key_lens, value_lens, data_start)`` of a records section without timestamps or
    headers, else None.

    The lengths are sequences of ints (-1 = null): with the accelerator, native i32 columns
    that ``BatchBuilder.append_packed`` reads in C without an int object per record. The
    record bytes start at ``data_start``. Validates like ``iter_records``. Lets a worker batch
    a whole section without a RecordView per record.
    """
    if count <= 0:
        raise BadFrameError(KpdErrorCode.BAD_RECORD_COUNT, f"records: count {count}")
    if native is not None and records and records[0] == 0:
        try:
            keys, values, data_start = native.plain_lengths(records, count)
        except ValueError:
            pass  # malformed: the pure scan below raises the exact BadFrameError
        else:
            return memoryview(keys).cast("i"), memoryview(values).cast("i"), data_start
    columns = _scan_records(records, count)
    if columns.timestamps is not None or columns.headers is not None:
        return None
    lens = columns.lens
    return lens[:count], lens[count:], columns.data_start


def stamped_columns(
    records, count: int
) -> tuple[Sequence[int], Sequence[int], Sequence[int], int] | None:
    """``(timestamps, key_lens, value_lens, data_start)`` of a records section with a
    timestamp column and no headers (what Kafka clients send through kpd's Kafka listener),
    else None. Validates like ``iter_records``; lets a worker batch the records of each
    timestamp together, without a RecordView per record."""
    if count <= 0:
        raise BadFrameError(KpdErrorCode.BAD_RECORD_COUNT, f"records: count {count}")
    if not records or records[0] != LAYOUT_HAS_TIMESTAMPS:
        return None
    columns = _scan_records(records, count)
    lens = columns.lens
    return columns.timestamps, lens[:count], lens[count:], columns.data_start


def iter_records(records, count: int) -> Iterator[RecordView]:
    """Decode a records section (as found in ``ProduceHeader.records``) into RecordViews.

    Validates the whole section before yielding anything, so a malformed section raises
    BadFrameError from this call and never half-way through the iteration.
    """
    if count <= 0:
        raise BadFrameError(KpdErrorCode.BAD_RECORD_COUNT, f"records: count {count}")
    columns = _scan_records(records, count)
    if columns.timestamps is None and columns.headers is None:
        return _iter_plain(records, columns.lens, count, columns.data_start)
    return _iter_general(records, columns, count)


def _iter_plain(buf, lens, count: int, pos: int) -> Iterator[RecordView]:
    # The common case: no timestamps, no headers. Kept branch-light on purpose.
    for klen, vlen in zip(lens[:count], lens[count:], strict=True):
        if klen >= 0:
            key = buf[pos : pos + klen]
            pos += klen
        else:
            key = None
        if vlen >= 0:
            value = buf[pos : pos + vlen]
            pos += vlen
        else:
            value = None
        yield _tuple_new(RecordView, (key, value, None, ()))


def _iter_general(buf, columns: _Columns, count: int) -> Iterator[RecordView]:
    lens = columns.lens
    timestamps = columns.timestamps or (-1,) * count
    headers = columns.headers or ((),) * count
    header_lens = lens[2 * count :] or (0,) * count
    pos = columns.data_start
    for i in range(count):
        klen, vlen = lens[i], lens[count + i]
        key = buf[pos : pos + klen] if klen >= 0 else None
        pos += max(klen, 0)
        value = buf[pos : pos + vlen] if vlen >= 0 else None
        pos += max(vlen, 0) + header_lens[i]
        ts = timestamps[i]
        yield _tuple_new(RecordView, (key, value, None if ts == -1 else ts, headers[i]))


# --- encoding -------------------------------------------------------------------------------


_NULL_LEN = struct.pack(">i", -1)


def _column(values, typecode: str, count: int) -> bytes:
    """A column of ``count`` ints, big-endian (protocol section 1). One struct.pack of the
    whole column: ~2x faster than array(values) + byteswap, which boxes each int twice."""
    return struct.pack(f">{count}{typecode}", *values)


def _lengths(items: list) -> tuple[bytes, bool]:
    """The i32 length column of ``items`` (None: length -1, protocol section 1, bytes-or-null)
    and whether any item is None.

    Tries ``len`` on every item first: counting the None items (``list.count(None)``) costs
    more than the whole column, and most columns have none."""
    try:
        return _column(map(len, items), "i", len(items)), False
    except TypeError:  # len(None): some items are null
        pass
    if items.count(None) == len(items):
        return _NULL_LEN * len(items), True  # keyless frames: all keys null
    return _column([-1 if item is None else len(item) for item in items], "i", len(items)), True


def _interleave(columns: tuple[list, ...], count: int) -> list:
    # data = key_0 value_0 [blob_0] key_1 value_1 ...: slice assignment does it in C.
    width = len(columns)
    parts = [b""] * (width * count)
    for offset, column in enumerate(columns):
        parts[offset::width] = column
    return parts


def encode_section(
    keys: list,
    values: list,
    timestamps: dict[int, int] | None = None,
    header_blobs: dict[int, bytes] | None = None,
) -> bytes:
    """The records section of ``keys``/``values`` laid out with C-level calls per column, not
    Python work per record.

    ``keys[i]``/``values[i]``: bytes or None (null). ``timestamps`` and ``header_blobs`` map a
    record index to its timestamp (ms) / encoded header blob, only for records that have one;
    when a dict is None or empty its column is left out (protocol section 6: a sender SHOULD
    omit a column no record uses).
    """
    if native is not None and not timestamps and not header_blobs:
        # The C twin of the plain case below (one allocation, no Python step per record);
        # None when an item is bytes-like but not bytes: then the code below encodes it.
        section = native.plain_section(keys, values)
        if section is not None:
            return section
    count = len(keys)
    if count == 0 or len(values) != count:
        raise ValueError(f"a records section needs 1+ records, got {count} keys, {len(values)}")
    layout = 0
    columns = []
    if timestamps:
        layout |= LAYOUT_HAS_TIMESTAMPS
        stamps = [-1] * count
        for index, stamp in timestamps.items():
            if stamp < -1:
                raise ValueError(f"timestamp {stamp} < -1")
            stamps[index] = stamp
        columns.append(_column(stamps, "q", count))
    key_lengths, null_keys = _lengths(keys)
    value_lengths, null_values = _lengths(values)
    columns.append(key_lengths)
    columns.append(value_lengths)
    if header_blobs:
        layout |= LAYOUT_HAS_HEADERS
        blobs = [b""] * count
        for index, blob in header_blobs.items():
            blobs[index] = blob
        columns.append(_column(map(len, blobs), "i", count))
        parts = _interleave((keys, values, blobs), count)
    else:
        parts = _interleave((keys, values), count)
    # b"".join refuses None; filter(None, ...) drops nulls (and empty items, which add nothing).
    data = b"".join(filter(None, parts) if null_keys or null_values else parts)
    return b"".join((bytes((layout,)), *columns, data))


def _encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    parts = []
    for key, value in headers:
        parts.append(encode_string(key))
        if value is None:
            parts.append(_HEADER_VALUE_LEN.pack(-1))
        else:
            parts.append(_HEADER_VALUE_LEN.pack(len(value)))
            parts.append(bytes(value))
    return b"".join(parts)


def header_blob(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    """The encoded header blob of one record (b"" for none)."""
    return _encode_headers(headers) if headers else b""


def encode_records(records: Iterable[RecordIn]) -> bytes:
    """The records section alone (what ``iter_records`` reads) from one ``RecordIn`` each."""
    keys, values, timestamps, blobs = split_records(records)
    return encode_section(keys, values, timestamps, blobs)


def split_records(records: Iterable[RecordIn]) -> tuple[list, list, dict, dict]:
    """``RecordIn`` tuples as ``encode_section``'s columns: keys, values, and the sparse
    timestamps and header blobs."""
    keys, values, timestamps, blobs = [], [], {}, {}
    for index, (key, value, timestamp, headers) in enumerate(records):
        keys.append(key)
        values.append(value)
        if timestamp is not None:
            timestamps[index] = timestamp
        if headers:
            blobs[index] = header_blob(headers)
    return keys, values, timestamps, blobs
