"""The read_committed view of a partition, computed from the log itself (the oracle of the
exactly-once tests).

Why: tansu 0.6.0's Fetch always answers an empty aborted-transactions list, so its
read_committed consumers see aborted records, and librdkafka's mock filters nothing either.
So this module reads the raw log with its own Fetch v4 and its own RecordBatch v2 decoder,
both written here from the Kafka protocol guide and ``docs/implementation.html`` (never from
kpd's codec: the checker must not share code with what it checks), and derives what a
read_committed consumer must see:

* a non-transactional batch is visible at once;
* a transactional batch of producer id P belongs to P's open transaction on that partition;
* a control batch of P ends it: key type 1 (COMMIT) makes its records visible in log order,
  type 0 (ABORT) drops them;
* a transaction that never ended is not visible (its records sit above the LSO for good).

Imports no kpd code.
"""

from __future__ import annotations

import socket
import struct
from collections import defaultdict
from dataclasses import dataclass, field

import crc32c

_FETCH = 1
_FETCH_VERSION = 4  # non-flexible; has isolation_level and the aborted-transactions list
_ATTR_COMPRESSION = 0x07
_ATTR_TRANSACTIONAL = 0x10
_ATTR_CONTROL = 0x20
_CONTROL_ABORT, _CONTROL_COMMIT = 0, 1
_NOT_LEADER_OR_FOLLOWER = 6


@dataclass(frozen=True)
class LogRecord:
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class LogBatch:
    """One RecordBatch v2 as it sits in the log."""

    base_offset: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    transactional: bool
    control: bool
    records: tuple[LogRecord, ...]

    @property
    def control_type(self) -> int | None:
        """0 ABORT, 1 COMMIT for a control batch (its one record's key: version, type)."""
        if not self.control or not self.records or self.records[0].key is None:
            return None
        _version, kind = struct.unpack(">hh", self.records[0].key[:4])
        return kind


@dataclass
class CommittedView:
    """What the oracle derived from one partition's log."""

    visible: list[LogRecord] = field(default_factory=list)  # in offset order
    committed: int = 0  # transactions ended with COMMIT
    aborted: int = 0  # transactions ended with ABORT
    open_transactions: dict[int, int] = field(default_factory=dict)  # producer id -> records
    aborted_records: int = 0


def committed_view(batches: list[LogBatch]) -> CommittedView:
    """The read_committed view of one partition's batches (in log order)."""
    view = CommittedView()
    pending: dict[int, list[LogRecord]] = defaultdict(list)
    for batch in batches:
        if batch.control:
            records = pending.pop(batch.producer_id, [])
            if batch.control_type == _CONTROL_COMMIT:
                view.visible.extend(records)
                view.committed += 1
            elif batch.control_type == _CONTROL_ABORT:
                view.aborted += 1
                view.aborted_records += len(records)
        elif batch.transactional:
            pending[batch.producer_id].extend(batch.records)
        else:
            view.visible.extend(batch.records)
    view.visible.sort(key=lambda r: r.offset)
    view.open_transactions = {pid: len(recs) for pid, recs in pending.items() if recs}
    return view


def read_partition(bootstrap: str, topic: str, partition: int, timeout_s: float = 10.0):
    """Every batch of one partition, from offset 0 to the high watermark, in log order.
    Asks each bootstrap server in turn until one leads the partition."""
    for address in bootstrap.split(","):
        try:
            return _read_from(address, topic, partition, timeout_s)
        except _NotLeader:
            continue
    raise AssertionError(f"no server of {bootstrap} leads {topic}[{partition}]")


class _NotLeader(Exception):
    pass


def _read_from(address: str, topic: str, partition: int, timeout_s: float) -> list[LogBatch]:
    host, port = address.rsplit(":", 1)
    batches: list[LogBatch] = []
    offset = 0
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        for correlation_id in range(1, 100_000):
            error, high_watermark, data = _fetch(sock, correlation_id, topic, partition, offset)
            if error == _NOT_LEADER_OR_FOLLOWER:
                raise _NotLeader
            if error:
                raise AssertionError(f"Fetch {topic}[{partition}]@{offset}: error {error}")
            fresh = [b for b in _decode_batches(data) if _last_offset(b) >= offset]
            batches.extend(fresh)
            if fresh:
                offset = _last_offset(fresh[-1]) + 1
            if offset >= high_watermark or not fresh:
                break
    return batches


def read_committed(bootstrap: str, topic: str, partitions: int) -> dict[int, CommittedView]:
    """The committed view of every partition of ``topic``."""
    return {p: committed_view(read_partition(bootstrap, topic, p)) for p in range(partitions)}


# -- Fetch v4, by hand -------------------------------------------------------------------------


def _fetch(sock: socket.socket, correlation_id: int, topic: str, partition: int, offset: int):
    name = topic.encode()
    request = (
        struct.pack(">hhih", _FETCH, _FETCH_VERSION, correlation_id, 6) + b"oracle"
        # replica_id, max_wait_ms, min_bytes, max_bytes: tansu answers no topics at all to
        # min_bytes 0, so ask for at least one byte and wait at most 100 ms for it.
        + struct.pack(">iiii", -1, 100, 1, 8 << 20)
        + struct.pack(">b", 0)  # isolation_level READ_UNCOMMITTED: the raw log, markers too
        + struct.pack(">ih", 1, len(name)) + name  # one topic
        + struct.pack(">iiqi", 1, partition, offset, 8 << 20)  # one partition
    )  # fmt: skip
    sock.sendall(struct.pack(">i", len(request)) + request)
    (size,) = struct.unpack(">i", _recv(sock, 4))
    body = memoryview(_recv(sock, size))
    answered_id, _throttle, topics = struct.unpack_from(">iii", body)
    assert answered_id == correlation_id
    if topics == 0:
        return 0, -1, b""
    (name_len,) = struct.unpack_from(">h", body, 12)
    pos = 14 + name_len
    _partitions, _index, error, high_watermark, _lso = struct.unpack_from(">iihqq", body, pos)
    pos += 4 + 4 + 2 + 8 + 8
    (aborted_count,) = struct.unpack_from(">i", body, pos)
    pos += 4 + max(0, aborted_count) * 16  # (producer_id int64, first_offset int64) each
    (records_len,) = struct.unpack_from(">i", body, pos)
    pos += 4
    data = bytes(body[pos : pos + max(0, records_len)])
    return error, high_watermark, data


def _recv(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- RecordBatch v2, by hand -------------------------------------------------------------------
# baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8, crc uint32,
# attributes int16, lastOffsetDelta int32, baseTimestamp int64, maxTimestamp int64,
# producerId int64, producerEpoch int16, baseSequence int32, records count int32, records.

_HEAD = struct.Struct(">qiibIhiqqqhii")


def _last_offset(batch: LogBatch) -> int:
    return batch.records[-1].offset if batch.records else batch.base_offset


def _decode_batches(data: bytes) -> list[LogBatch]:
    batches = []
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        end = pos + 12 + length
        if end > len(data):
            break  # a partial batch at the end of a Fetch answer
        batches.append(_decode_batch(data, pos, end))
        pos = end
    return batches


def _decode_batch(data: bytes, pos: int, end: int) -> LogBatch:
    (base_offset, _len, _leader_epoch, magic, crc, attributes, _last_delta, _base_ts, _max_ts,
     producer_id, producer_epoch, base_sequence, count) = _HEAD.unpack_from(data, pos)  # fmt: skip
    assert magic == 2, f"batch at {base_offset}: magic {magic}"
    # The CRC-32C covers attributes to the end of the batch (21 = offset of attributes).
    # librdkafka 2.16's mock cluster writes its control batches with a CRC of 0.
    mock_marker = crc == 0 and attributes & _ATTR_CONTROL
    assert mock_marker or crc32c.crc32c(data[pos + 21 : end]) == crc, f"bad CRC at {base_offset}"
    assert attributes & _ATTR_COMPRESSION == 0, "the oracle reads uncompressed batches only"
    records = []
    at = pos + _HEAD.size
    for _ in range(count):
        length, at = _varint(data, at)
        record_end = at + length
        at += 1  # attributes
        _ts_delta, at = _varint(data, at)
        offset_delta, at = _varint(data, at)
        key, at = _nullable_bytes(data, at)
        value, at = _nullable_bytes(data, at)
        records.append(LogRecord(base_offset + offset_delta, key, value))
        at = record_end  # headers are not needed
    return LogBatch(
        base_offset,
        producer_id,
        producer_epoch,
        base_sequence,
        bool(attributes & _ATTR_TRANSACTIONAL),
        bool(attributes & _ATTR_CONTROL),
        tuple(records),
    )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint (protobuf style), as record fields are encoded."""
    shift = raw = 0
    while True:
        byte = data[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7


def _nullable_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = _varint(data, pos)
    if length < 0:
        return None, pos
    return data[pos : pos + length], pos + length
