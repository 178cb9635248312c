"""RecordBatch v2 (magic 2): the writer kpd produces with and a verifying reader.

Owns the byte layout of Kafka's record batch (Kafka docs, implementation.html "Record Batch";
Java ``DefaultRecordBatch`` / ``DefaultRecord``)::

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 (=2)
    | crc uint32 | attributes int16 | lastOffsetDelta int32 | baseTimestamp int64
    | maxTimestamp int64 | producerId int64 | producerEpoch int16 | baseSequence int32
    | recordCount int32 | records...

    record: length varint | attributes int8 (unused, 0) | timestampDelta varlong
            | offsetDelta varint | keyLength varint | key | valueLength varint | value
            | headerCount varint | [headerKeyLength varint | headerKey | headerValueLength
            varint | headerValue]...

A null key, value or header value is length -1 with no bytes. With compression, only the
records after ``recordCount`` are compressed; the header stays plain. The CRC is CRC-32C
(Castagnoli) over everything from ``attributes`` to the end of the batch — it does *not* cover
baseOffset, batchLength or partitionLeaderEpoch, which the broker rewrites without re-CRCing.

The writer is on the per-record hot path, so ``BatchBuilder`` keeps one bytearray whose first
61 bytes are a header placeholder, appends each encoded record to it with a handful of Python
statements, and only at ``build()`` compresses (once, and only if that makes the batch
smaller), patches the header fields at their named offsets and computes the CRC last.

Pure (no I/O, no clock, no logging). Imports only ``daemon.kafka`` siblings, the accelerator
(``daemon.accel``: ``append_packed`` and ``append_stamped`` in C when built) and the
``crc32c`` package; must not import producer, net, ring, ingest or process code.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from crc32c import crc32c

from daemon.accel import native
from daemon.kafka.compression import NONE, CompressionError, check_level, compress, decompress
from daemon.kafka.varint import decode_varint, encode_varint

__all__ = [
    "ATTRIBUTES_OFFSET",
    "BASE_SEQUENCE_OFFSET",
    "BATCH_LENGTH_OFFSET",
    "CRC_OFFSET",
    "HEADER_SIZE",
    "MAGIC",
    "PRODUCER_EPOCH_OFFSET",
    "PRODUCER_ID_OFFSET",
    "RECORDS_COUNT_OFFSET",
    "BatchBuilder",
    "CorruptBatchError",
    "DecodedBatch",
    "OpenedBatch",
    "Record",
    "append_packed_python",
    "batch_base_sequence",
    "batch_record_count",
    "decode_batches",
    "encode_record_tail",
    "increment_sequence",
    "open_batch",
    "restamp",
]

# Byte offsets of the batch header fields (DefaultRecordBatch.*_OFFSET).
BASE_OFFSET_OFFSET = 0
BATCH_LENGTH_OFFSET = 8
PARTITION_LEADER_EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21  # the CRC covers [ATTRIBUTES_OFFSET, end of batch)
LAST_OFFSET_DELTA_OFFSET = 23
BASE_TIMESTAMP_OFFSET = 27
MAX_TIMESTAMP_OFFSET = 35
PRODUCER_ID_OFFSET = 43
PRODUCER_EPOCH_OFFSET = 51
BASE_SEQUENCE_OFFSET = 53
RECORDS_COUNT_OFFSET = 57
HEADER_SIZE = 61  # RECORDS_OFFSET: the first record starts here
LOG_OVERHEAD = 12  # baseOffset + batchLength: batchLength counts the bytes after these

MAGIC = 2
NO_PARTITION_LEADER_EPOCH = -1  # what producers send; the leader fills in its epoch

# attributes bits
COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_FLAG = 0x08  # 0 = CreateTime (what producers write), 1 = LogAppendTime
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20

# Whole header in field order; see the module docstring for the layout.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC = struct.Struct(">I")
_INT32 = struct.Struct(">i")
_PRODUCER_FIELDS = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence
assert _HEADER.size == HEADER_SIZE
assert PRODUCER_ID_OFFSET + _PRODUCER_FIELDS.size == RECORDS_COUNT_OFFSET

_INT32_MAX = 0x7FFFFFFF
_NULL = encode_varint(-1)  # the length of a null key / value / header value
_NO_HEADERS = encode_varint(0)
_RECORD_ATTRIBUTES = b"\x00"  # record-level attributes are unused in v2
# Varints of 0 .. 16383, by index: the per-record fast path of BatchBuilder.append. 16384
# covers the offsetDelta of a 1 MiB batch of 64-byte records and any record under 16 KiB; past
# that append takes a slower path, still correct. Built with encode_varint (the first 8192 are
# the very objects of its own table; the rest cost ~300 KB per process).
_SMALL: tuple[bytes, ...] = tuple(encode_varint(i) for i in range(16384))


class CorruptBatchError(ValueError):
    """Bytes that are not a valid RecordBatch v2: bad CRC, truncation, bad lengths, bad codec."""


def encode_record_tail(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] = (),
) -> bytes:
    """The part of a record that does not depend on its position in a batch:
    ``keyLength key valueLength value headerCount headers``.

    ``BatchBuilder.append``'s slow path (varints past the small-number table).
    """
    return b"".join(
        (
            _NULL if key is None else encode_varint(len(key)),
            key or b"",
            _NULL if value is None else encode_varint(len(value)),
            value or b"",
            _encode_headers(headers) if headers else _NO_HEADERS,
        )
    )


def _encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    parts = [encode_varint(len(headers))]
    for name, value in headers:
        raw = name.encode("utf-8")
        parts.append(encode_varint(len(raw)))
        parts.append(raw)
        if value is None:
            parts.append(_NULL)
        else:
            parts.append(encode_varint(len(value)))
            parts.append(value)
    return b"".join(parts)


class BatchBuilder:
    """One open RecordBatch v2 of one partition.

    Owned by the single task that fills the partition's batch; not thread-safe. ``build()``
    hands the buffer over to the caller: the builder must not be used after it (any further
    ``append`` raises TypeError instead of silently writing into a sent batch).

    Public counters, read by the accumulator without a call:
    ``record_count``; ``first_timestamp`` (the batch's baseTimestamp) and ``max_timestamp``,
    both None until the first append.
    """

    __slots__ = (
        "_buf",
        "_codec",
        "_level",
        "_transactional",
        "first_timestamp",
        "max_timestamp",
        "record_count",
    )

    def __init__(
        self,
        compression: int = NONE,
        compression_level: int | None = None,
        transactional: bool = False,
    ) -> None:
        self._codec = compression
        self._level = check_level(compression, compression_level)  # fail at config time
        self._transactional = transactional
        # Header placeholder, patched by build(); records are appended after it.
        self._buf: bytearray | None = bytearray(HEADER_SIZE)
        self.record_count = 0
        self.first_timestamp: int | None = None
        self.max_timestamp: int | None = None

    @property
    def size_in_bytes(self) -> int:
        """Size of the batch if built uncompressed now (exact, header included)."""
        return len(self._buf) if self._buf is not None else 0

    def _timestamp_delta(self, timestamp_ms: int) -> int:
        """The record's timestampDelta; the first record sets the batch's baseTimestamp."""
        if self.record_count:
            if timestamp_ms > self.max_timestamp:
                self.max_timestamp = timestamp_ms
            return timestamp_ms - self.first_timestamp
        self.first_timestamp = self.max_timestamp = timestamp_ms
        return 0

    def append(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> int:
        """Add one record (CreateTime ``timestamp_ms``); return the bytes it added."""
        count = self.record_count
        delta = self._timestamp_delta(timestamp_ms)
        try:
            # Fast path: every varint below is a non-negative index into _SMALL, so the only
            # way out of the table is an IndexError (a value past 16383), never a wrong byte.
            body = b"".join(
                (
                    _RECORD_ATTRIBUTES,
                    _SMALL[delta] if delta >= 0 else encode_varint(delta),
                    _SMALL[count],  # offsetDelta
                    _NULL if key is None else _SMALL[len(key)],
                    key or b"",
                    _NULL if value is None else _SMALL[len(value)],
                    value or b"",
                    _encode_headers(headers) if headers else _NO_HEADERS,
                )
            )
            prefix = _SMALL[len(body)]
        except IndexError:
            body = b"".join(
                (
                    _RECORD_ATTRIBUTES,
                    encode_varint(delta),
                    encode_varint(count),
                    encode_record_tail(key, value, headers),
                )
            )
            prefix = encode_varint(len(body))
        buf = self._buf
        buf += prefix
        buf += body
        self.record_count = count + 1
        return len(prefix) + len(body)

    def append_packed(
        self,
        timestamp_ms: int,
        data,
        key_lens: Sequence[int],
        value_lens: Sequence[int],
        index: int,
        pos: int,
        max_size: int,
    ) -> tuple[int, int, int]:
        """Append packed records ``index``.. until the batch reaches ``max_size`` bytes.

        Packed records share ``timestamp_ms``, carry no headers, and lie back to back in
        ``data`` from ``pos`` (key then value, no separators); ``key_lens[i]``/``value_lens[i]``
        give their lengths (-1 = null). Whoever holds records that way appends many with no
        record object per record. At least one record is taken when the batch is empty.
        Returns (next index, next data position, bytes added).
        """
        first = self.record_count
        delta = self._timestamp_delta(timestamp_ms)
        head = _RECORD_ATTRIBUTES + (
            _SMALL[delta] if 0 <= delta < len(_SMALL) else encode_varint(delta)
        )
        end, pos, added = _append_packed(
            self._buf, head, data, key_lens, value_lens, index, pos, first, max_size
        )
        self.record_count = first + end - index
        return end, pos, added

    def append_stamped(
        self,
        default_ms: int,
        timestamps: Sequence[int],
        data,
        key_lens: Sequence[int],
        value_lens: Sequence[int],
        index: int,
        pos: int,
        max_size: int,
    ) -> tuple[int, int, int]:
        """``append_packed`` with a CreateTime per record: ``timestamps[i]`` (-1: none, the
        record gets ``default_ms``). One call for a whole section of a Kafka client's
        records, whatever their timestamps; the same return value."""
        first = self.record_count
        if not first:
            stamp = timestamps[index]
            self.first_timestamp = self.max_timestamp = default_ms if stamp == -1 else stamp
        end, pos, added, top = _append_stamped(
            self._buf, self.first_timestamp, default_ms, timestamps, data, key_lens,
            value_lens, index, pos, first, max_size,
        )  # fmt: skip
        if top > self.max_timestamp:
            self.max_timestamp = top
        self.record_count = first + end - index
        return end, pos, added

    def build(
        self, producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1
    ) -> bytearray:
        """Finish the batch and hand its bytes over (the builder is spent afterwards).

        Compresses the records once and keeps the result only if it is smaller; the
        attributes then name the codec actually used. The CRC is computed last.
        """
        buf = self._buf
        if buf is None:
            raise RuntimeError("batch already built")
        if not self.record_count:
            raise ValueError("cannot build an empty record batch")
        self._buf = None
        attributes = TRANSACTIONAL_FLAG if self._transactional else 0
        if self._codec != NONE and self._compress_into(buf):
            attributes |= self._codec
        _HEADER.pack_into(
            buf,
            BASE_OFFSET_OFFSET,
            0,  # baseOffset: the broker assigns offsets
            len(buf) - LOG_OVERHEAD,  # batchLength
            NO_PARTITION_LEADER_EPOCH,
            MAGIC,
            0,  # crc: written last, below
            attributes,  # CreateTime: the timestamp-type bit stays 0
            self.record_count - 1,  # lastOffsetDelta
            self.first_timestamp,
            self.max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            self.record_count,
        )
        _write_crc(buf)
        return buf

    def _compress_into(self, buf: bytearray) -> bool:
        """Replace the records in ``buf`` by their compressed form if that is smaller."""
        view = memoryview(buf)
        try:
            packed = compress(self._codec, view[HEADER_SIZE:], self._level)
        finally:
            view.release()  # a live export would forbid resizing buf below
        if len(packed) >= len(buf) - HEADER_SIZE:
            return False
        del buf[HEADER_SIZE:]
        buf += packed
        return True


def append_packed_python(
    buf: bytearray,
    head: bytes,
    data,
    key_lens: Sequence[int],
    value_lens: Sequence[int],
    index: int,
    pos: int,
    offset: int,
    max_size: int,
) -> tuple[int, int, int]:
    """Append packed records ``index``.. to the batch bytes ``buf`` (see
    ``BatchBuilder.append_packed``): ``head`` is the records' shared attributes byte and
    timestampDelta, ``offset`` the offsetDelta of the first one (0: the batch is empty, take
    one whatever ``max_size``). Returns (next index, next data position, bytes added).

    The reference for the C twin ``daemon.accel`` ``append_packed``; both are tested against
    the same golden bytes.
    """
    start = size = len(buf)
    small, null, no_headers = _SMALL, _NULL, _NO_HEADERS
    i, count = index, len(key_lens)
    while i < count and (size < max_size or offset == 0):
        klen = key_lens[i]
        vlen = value_lens[i]
        kend = pos + klen if klen > 0 else pos
        vend = kend + vlen if vlen > 0 else kend
        try:  # the table fast path; IndexError means a varint past 16383: slow path
            body = b"".join(
                (
                    head,
                    small[offset],
                    null if klen < 0 else small[klen],
                    data[pos:kend],
                    null if vlen < 0 else small[vlen],
                    data[kend:vend],
                    no_headers,
                )
            )
            buf += small[len(body)]
        except IndexError:
            key = None if klen < 0 else data[pos:kend]
            value = None if vlen < 0 else data[kend:vend]
            body = head + encode_varint(offset) + encode_record_tail(key, value, ())
            buf += encode_varint(len(body))
        buf += body
        size = len(buf)
        pos = vend
        offset += 1
        i += 1
    return i, pos, size - start


def append_stamped_python(
    buf: bytearray,
    base_ts: int,
    default_ts: int,
    timestamps: Sequence[int],
    data,
    key_lens: Sequence[int],
    value_lens: Sequence[int],
    index: int,
    pos: int,
    offset: int,
    max_size: int,
) -> tuple[int, int, int, int]:
    """``append_packed_python`` with a timestamp per record (-1: ``default_ts``), written as
    its delta from the batch's ``base_ts``: one ``append_packed_python`` per run of equal
    timestamps. Returns (next index, next data position, bytes added, the largest timestamp
    appended or ``base_ts``).

    The reference for the C twin ``daemon.accel`` ``append_stamped``; both are tested against
    the same golden bytes.
    """
    count = len(key_lens)
    if len(timestamps) != count or len(value_lens) != count:
        raise ValueError("append_stamped: bad columns or positions")
    start, top, i = len(buf), base_ts, index
    while i < count and (len(buf) < max_size or offset == 0):
        stamp = timestamps[i]
        run_end = i + 1
        while run_end < count and timestamps[run_end] == stamp:
            run_end += 1
        stamp = default_ts if stamp == -1 else stamp
        if stamp < 0:
            raise ValueError("append_stamped: a timestamp below -1")
        top = max(top, stamp)  # the run's first record is appended whatever max_size says
        head = _RECORD_ATTRIBUTES + encode_varint(stamp - base_ts)
        end, pos, _ = append_packed_python(
            buf, head, data, key_lens[:run_end], value_lens[:run_end], i, pos, offset, max_size
        )
        offset += end - i
        i = end
        if end < run_end:
            break  # the batch is full
    return i, pos, len(buf) - start, top


_append_packed = native.append_packed if native is not None else append_packed_python
_append_stamped = native.append_stamped if native is not None else append_stamped_python


def _write_crc(batch: bytearray) -> None:
    view = memoryview(batch)
    try:
        _CRC.pack_into(batch, CRC_OFFSET, crc32c(view[ATTRIBUTES_OFFSET:]))
    finally:
        view.release()


def restamp(batch: bytearray, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
    """Rewrite a built batch's producer id, epoch and base sequence in place, and its CRC.

    For an idempotent retry after an epoch bump (KIP-360): the records, and so any
    compression, are unchanged, so nothing is re-encoded.
    """
    _PRODUCER_FIELDS.pack_into(
        batch, PRODUCER_ID_OFFSET, producer_id, producer_epoch, base_sequence
    )
    _write_crc(batch)


def batch_record_count(batch: bytes | bytearray | memoryview) -> int:
    """recordCount of a built batch, read from its header."""
    return _INT32.unpack_from(batch, RECORDS_COUNT_OFFSET)[0]


def batch_base_sequence(batch: bytes | bytearray | memoryview) -> int:
    """baseSequence of a built batch, read from its header."""
    return _INT32.unpack_from(batch, BASE_SEQUENCE_OFFSET)[0]


def increment_sequence(sequence: int, increment: int) -> int:
    """Java ``DefaultRecordBatch.incrementSequence``: sequences wrap from Integer.MAX_VALUE
    to 0, so the sequence after ``MAX_VALUE`` is 0, not a negative number."""
    if sequence > _INT32_MAX - increment:
        return increment - (_INT32_MAX - sequence) - 1
    return sequence + increment


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record. ``offset`` is absolute (baseOffset + offsetDelta)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """One batch whose header and CRC are verified and whose records are decompressed, not
    yet decoded: ``payload`` holds ``count`` records (``decode_batches`` or a caller that
    reads them its own way, like the Kafka listener's ``kafka.sections``)."""

    base_offset: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    compression: int
    timestamp_type: int  # 0 = CreateTime, 1 = LogAppendTime
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    count: int
    payload: memoryview
    end: int  # where the next batch starts

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def fixed_timestamp(self) -> int | None:
        """LogAppendTime: every record's timestamp is the broker's, stored as maxTimestamp."""
        return self.max_timestamp if self.timestamp_type else None


@dataclass(frozen=True, slots=True)
class DecodedBatch(OpenedBatch):
    """An opened batch (every header field, verified) plus its records, decoded."""

    records: list[Record]


def decode_batches(data: bytes | bytearray | memoryview) -> list[DecodedBatch]:
    """Decode consecutive v2 batches, verifying each CRC and decompressing the records.

    Strict: any truncation, CRC mismatch, other magic, or length that does not add up raises
    ``CorruptBatchError`` (a trailing partial batch, which a Fetch response may carry, is an
    error here: this reader checks what kpd wrote).
    """
    view = memoryview(data)
    batches = []
    pos = 0
    while pos < len(view):
        batch, pos = _decode_batch(view, pos)
        batches.append(batch)
    return batches


def _decode_batch(view: memoryview, pos: int) -> tuple[DecodedBatch, int]:
    opened = open_batch(view, pos)
    records = _decode_records(opened.payload, opened.count, opened.base_offset,
                              opened.base_timestamp, opened.fixed_timestamp)  # fmt: skip
    fields = (getattr(opened, field.name) for field in dataclasses.fields(OpenedBatch))
    return DecodedBatch(*fields, records), opened.end


def open_batch(view: memoryview, pos: int = 0) -> OpenedBatch:
    """The batch at ``pos``: header read, CRC verified, records decompressed (not decoded).
    Raises ``CorruptBatchError`` as ``decode_batches`` does."""
    if len(view) - pos < HEADER_SIZE:
        raise CorruptBatchError(f"truncated batch header at byte {pos}")
    (
        base_offset,
        batch_length,
        leader_epoch,
        magic,
        crc,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    ) = _HEADER.unpack_from(view, pos)
    if magic != MAGIC:
        raise CorruptBatchError(f"magic {magic} at byte {pos}: only v2 batches are read")
    end = pos + LOG_OVERHEAD + batch_length
    if batch_length < HEADER_SIZE - LOG_OVERHEAD or end > len(view):
        raise CorruptBatchError(f"batchLength {batch_length} at byte {pos} exceeds the data")
    actual = crc32c(view[pos + ATTRIBUTES_OFFSET : end])
    if actual != crc:
        raise CorruptBatchError(
            f"CRC mismatch at byte {pos}: stored {crc:#x}, computed {actual:#x}"
        )
    codec = attributes & COMPRESSION_MASK
    payload = view[pos + HEADER_SIZE : end]
    if codec != NONE:
        try:
            payload = memoryview(decompress(codec, payload))
        except CompressionError as exc:
            raise CorruptBatchError(str(exc)) from exc
    return OpenedBatch(
        base_offset=base_offset,
        partition_leader_epoch=leader_epoch,
        magic=magic,
        crc=crc,
        attributes=attributes,
        compression=codec,
        timestamp_type=1 if attributes & TIMESTAMP_TYPE_FLAG else 0,
        last_offset_delta=last_offset_delta,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        count=count,
        payload=payload,
        end=end,
    )


def _decode_records(
    buf: memoryview, count: int, base_offset: int, base_ts: int, fixed_ts: int | None
) -> list[Record]:
    records = []
    pos = 0
    try:
        for _ in range(count):
            record, pos = _decode_record(buf, pos, base_offset, base_ts, fixed_ts)
            records.append(record)
    except (ValueError, UnicodeDecodeError) as exc:  # truncated varints, bad UTF-8
        raise CorruptBatchError(f"bad record at byte {pos} of the records: {exc}") from exc
    if pos != len(buf):
        raise CorruptBatchError(f"{len(buf) - pos} bytes after the last of {count} records")
    return records


def _decode_record(
    buf: memoryview, pos: int, base_offset: int, base_ts: int, fixed_ts: int | None
) -> tuple[Record, int]:
    length, pos = decode_varint(buf, pos)
    end = pos + length
    if length < 0 or end > len(buf):
        raise CorruptBatchError(f"record length {length} exceeds the batch")
    pos += 1  # record attributes: unused
    ts_delta, pos = decode_varint(buf, pos)
    offset_delta, pos = decode_varint(buf, pos)
    key, pos = _read_nullable(buf, pos)
    value, pos = _read_nullable(buf, pos)
    header_count, pos = decode_varint(buf, pos)
    headers = []
    for _ in range(header_count):
        name_len, pos = decode_varint(buf, pos)
        if name_len < 0 or pos + name_len > end:
            raise CorruptBatchError("header key length exceeds the record")
        name = str(buf[pos : pos + name_len], "utf-8")
        header_value, pos = _read_nullable(buf, pos + name_len)
        headers.append((name, header_value))
    if pos != end:
        raise CorruptBatchError(f"record declares {length} bytes but holds {pos - end + length}")
    timestamp = fixed_ts if fixed_ts is not None else base_ts + ts_delta
    return Record(base_offset + offset_delta, timestamp, key, value, tuple(headers)), end


def _read_nullable(buf: memoryview, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buf, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buf):
        raise CorruptBatchError(f"length {size} exceeds the records")
    return bytes(buf[pos : pos + size]), pos + size
