"""A Produce request's record batch as a broker checks it, into record columns (pure).

kpd's Kafka-protocol listener receives, per partition of a ProduceRequest (v3+), the bytes of
exactly one RecordBatch v2. ``read_batch`` checks them as a broker's ``LogValidator`` would and
returns an ``IncomingBatch``: the producer fields (id, epoch, base sequence — what idempotence
needs) and the records as columns (keys, values, timestamps, headers by index), ready to be
laid out as a kpd records section without a second pass. A batch that fails a check returns a
``BatchRefused`` with the Kafka error code the partition is answered with; nothing of it is
produced.

Checks, and the code each failure is answered with (Kafka's broker in brackets):

* exactly one batch in the partition's bytes, magic 2                    INVALID_RECORD (87)
  ("Produce requests with version 3 and above must have exactly one record batch"; a v3+
  request cannot carry magic 0/1 message sets)
* the CRC-32C over attributes..end matches                              CORRUPT_MESSAGE (2)
* lengths add up, records decode, decompression works                   CORRUPT_MESSAGE (2)
* recordCount >= 1 and lastOffsetDelta == recordCount - 1               INVALID_RECORD (87)
* not transactional, not a control batch (kpd serves no transactions)   INVALID_RECORD (87)
* every timestamp >= -1 (-1: none)                                   INVALID_TIMESTAMP (32)
* zstd only from Produce v7 (KIP-110)                         UNSUPPORTED_COMPRESSION_TYPE (76)

The batch is decompressed once, here; the records are copied out as ``bytes`` (the request
buffer may be reused after this returns).

Imports only ``daemon.kafka`` siblings.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compression import ZSTD
from .errors import ErrorCode
from .records import CorruptBatchError, decode_batches

__all__ = ["BatchRefused", "IncomingBatch", "read_batch"]

_FIRST_ZSTD_PRODUCE_VERSION = 7  # KIP-110
_MAGIC_OFFSET = 16


@dataclass(frozen=True, slots=True)
class IncomingBatch:
    """One checked batch. ``timestamps`` / ``headers`` map a record index to its timestamp /
    headers; every record of a v2 batch has a timestamp, and only records with headers appear
    in ``headers``."""

    producer_id: int  # -1: not idempotent
    producer_epoch: int
    base_sequence: int
    keys: list
    values: list
    timestamps: dict[int, int]
    headers: dict[int, tuple[tuple[str, bytes | None], ...]]
    wire_bytes: int  # the batch's size as received (what max.request.size-like limits count)

    @property
    def count(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class BatchRefused:
    error_code: int
    message: str


def read_batch(data, produce_version: int) -> IncomingBatch | BatchRefused:
    """Check one partition's records bytes (see the module docstring)."""
    if not data:
        return BatchRefused(ErrorCode.INVALID_RECORD, "the partition carries no record batch")
    if len(data) > _MAGIC_OFFSET and data[_MAGIC_OFFSET] != 2:
        return BatchRefused(
            ErrorCode.INVALID_RECORD, f"record batch magic {data[_MAGIC_OFFSET]}: v2 only"
        )
    try:
        batches = decode_batches(data)
    except CorruptBatchError as exc:
        return BatchRefused(ErrorCode.CORRUPT_MESSAGE, str(exc))
    if len(batches) != 1:
        return BatchRefused(
            ErrorCode.INVALID_RECORD, f"{len(batches)} record batches: exactly one allowed"
        )
    (batch,) = batches
    records = batch.records
    if not records or batch.last_offset_delta != len(records) - 1:
        return BatchRefused(
            ErrorCode.INVALID_RECORD,
            f"{len(records)} records but lastOffsetDelta {batch.last_offset_delta}",
        )
    if batch.is_transactional or batch.is_control:
        return BatchRefused(
            ErrorCode.INVALID_RECORD, "transactional and control batches are not accepted by kpd"
        )
    if batch.compression == ZSTD and produce_version < _FIRST_ZSTD_PRODUCE_VERSION:
        return BatchRefused(
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
            f"zstd needs Produce v7+, got v{produce_version}",
        )
    timestamps = {}
    headers = {}
    base_offset = batch.base_offset
    for index, record in enumerate(records):
        if record.timestamp < -1:
            return BatchRefused(
                ErrorCode.INVALID_TIMESTAMP, f"record {index}: timestamp {record.timestamp}"
            )
        timestamps[index] = record.timestamp
        if record.headers:
            headers[index] = record.headers
        if record.offset - base_offset != index:
            return BatchRefused(
                ErrorCode.INVALID_RECORD, f"record {index} has offset delta out of order"
            )
    return IncomingBatch(
        producer_id=batch.producer_id,
        producer_epoch=batch.producer_epoch,
        base_sequence=batch.base_sequence,
        keys=[record.key for record in records],
        values=[record.value for record in records],
        timestamps=timestamps,
        headers=headers,
        wire_bytes=len(data),
    )
