"""A Produce request's record batch as a broker checks it, into a kpd records section (pure).

kpd's Kafka-protocol listener receives, per partition of a ProduceRequest (v3+), the bytes of
exactly one RecordBatch v2. ``read_batch`` checks them as a broker's ``LogValidator`` would and
returns an ``IncomingBatch``: the producer fields (id, epoch, base sequence — what idempotence
needs) and the records already laid out as the records section of a kpd PRODUCE frame
(``kafka.sections``: one pass in C, no Python object per record), ready for ingest's
admission. A batch that fails a check returns a ``BatchRefused`` with the Kafka error code the
partition is answered with; nothing of it is produced.

Checks, and the code each failure is answered with (Kafka's broker in brackets):

* exactly one batch in the partition's bytes, magic 2                    INVALID_RECORD (87)
  ("Produce requests with version 3 and above must have exactly one record batch"; a v3+
  request cannot carry magic 0/1 message sets)
* the CRC-32C over attributes..end matches                              CORRUPT_MESSAGE (2)
* recordCount >= 1 and lastOffsetDelta == recordCount - 1               INVALID_RECORD (87)
* not transactional, not a control batch (kpd serves no transactions)   INVALID_RECORD (87)
* zstd only from Produce v7 (KIP-110)                         UNSUPPORTED_COMPRESSION_TYPE (76)
* decompression works, lengths add up, records decode                   CORRUPT_MESSAGE (2)
* every timestamp >= -1 (-1: none)                                   INVALID_TIMESTAMP (32)
* each record's offsetDelta is its index                                 INVALID_RECORD (87)

The batch is decompressed once, here; the section is a new ``bytes`` (the request buffer may
be reused after this returns).

Imports only ``daemon.kafka`` siblings, the accelerator (through ``sections``) and kpd-client's
section layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .compression import ZSTD
from .errors import ErrorCode
from .records import CorruptBatchError, open_batch
from .sections import SectionError, kafka_section

__all__ = ["BatchRefused", "IncomingBatch", "read_batch"]

_FIRST_ZSTD_PRODUCE_VERSION = 7  # KIP-110
_MAGIC_OFFSET = 16


class IncomingBatch(NamedTuple):
    """One checked batch: its producer fields and its records as a kpd records section. (A
    named tuple: made once per partition of every Produce request, and a frozen dataclass's
    ``__init__`` costs a Python call per field.)"""

    producer_id: int  # -1: not idempotent
    producer_epoch: int
    base_sequence: int
    count: int
    section: bytes  # kpd.protocol.records layout: timestamps, lengths, [headers], data
    keyless: bool  # every key is null
    wire_bytes: int  # the batch's size as received (what max.request.size-like limits count)


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
        batch = open_batch(memoryview(data))
    except CorruptBatchError as exc:
        return BatchRefused(ErrorCode.CORRUPT_MESSAGE, str(exc))
    if batch.end != len(data):
        return BatchRefused(
            ErrorCode.INVALID_RECORD,
            f"{len(data) - batch.end} bytes after the record batch: exactly one allowed",
        )
    count = batch.count
    if count < 1 or batch.last_offset_delta != count - 1:
        return BatchRefused(
            ErrorCode.INVALID_RECORD, f"{count} records but lastOffsetDelta "
            f"{batch.last_offset_delta}"
        )  # fmt: skip
    if batch.is_transactional or batch.is_control:
        return BatchRefused(
            ErrorCode.INVALID_RECORD, "transactional and control batches are not accepted by kpd"
        )
    if batch.compression == ZSTD and produce_version < _FIRST_ZSTD_PRODUCE_VERSION:
        return BatchRefused(
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
            f"zstd needs Produce v7+, got v{produce_version}",
        )
    try:
        section, keyless = kafka_section(batch.payload, count, batch.base_timestamp,
                                         batch.fixed_timestamp)  # fmt: skip
    except SectionError as exc:
        return BatchRefused(exc.error_code, str(exc))
    return IncomingBatch(
        producer_id=batch.producer_id,
        producer_epoch=batch.producer_epoch,
        base_sequence=batch.base_sequence,
        count=count,
        section=section,
        keyless=keyless,
        wire_bytes=len(data),
    )
