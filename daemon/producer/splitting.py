"""Splitting a batch the broker rejected as too large (MESSAGE_TOO_LARGE).

Java's ``RecordAccumulator.splitAndReenqueue`` re-reads the records of a rejected batch and
appends them to new batches of at most ``batch.size``; kpd halves instead, because the broker's
``max.message.bytes`` (not our batch.size) is the limit that was hit and it is unknown to the
client. Halving converges in log2(records) rounds at worst. The rare path, so it decodes the
built payload rather than keeping every record twice.
"""

from __future__ import annotations

from daemon.kafka.records import BatchBuilder, decode_batches
from daemon.producer.batch import ProducerBatch

__all__ = ["split_batch"]


def split_batch(batch: ProducerBatch) -> list[ProducerBatch]:
    """Two batches holding the records (and tokens) of ``batch`` in order, first half first."""
    assert batch.payload is not None, "only a sent batch can be rejected as too large"
    (decoded,) = decode_batches(batch.payload)
    records = decoded.records
    half = (len(records) + 1) // 2
    compression = decoded.compression
    parts = []
    for start, stop in ((0, half), (half, len(records))):
        builder = BatchBuilder(compression, None, False)
        part = ProducerBatch(batch.topic, batch.partition, builder, batch.created, batch.appended)
        for record in records[start:stop]:
            part.buffer_bytes += builder.append(
                record.timestamp, record.key, record.value, record.headers
            )
        part.tokens = batch.tokens[start:stop]
        part.sealed = True
        part.attempts = batch.attempts
        # Keep the rejected batch's place in the sequence space; the partition's recovery
        # re-numbers its queue from the lowest sequence it finds (accumulator.finish_recovery).
        if batch.base_sequence >= 0:
            part.base_sequence = batch.base_sequence + start
        parts.append(part)
    # buffer.memory accounting moves with the records: the parts hold what the batch held.
    parts[1].buffer_bytes = batch.buffer_bytes - parts[0].buffer_bytes
    return parts
