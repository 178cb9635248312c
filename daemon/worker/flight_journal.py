"""The flight journal: which batches a worker wrote to Kafka without an answer yet, with the
producer id, epoch and sequence numbers they went under, kept in a memory-mapped file beside
the records ring so that it survives a kill -9 of the worker or of the whole daemon.

Why: a batch in flight at a kill was usually appended by Kafka before its answer could be read.
The worker that adopts the ring replays the unreleased entries; under a new producer id, Kafka's
idempotence cannot recognise those records and appends them twice. With this journal the
adopter first rebuilds exactly those batches (same records, same boundaries, same base
sequences: ``resend_plan``) and sends them under the old producer id and epoch, so the broker
answers the ones it appended as duplicates and appends only the others.

What is written, and when: one slot per batch per Produce request that carries it, staged by the
sender's hook just before the request is written (``Worker`` hands the engine the hook) and
published with one store of the count for the whole request. A batch is named by its first and
last records (ring entry end position + entry seal + record index): a batch holds a stretch of
its partition's records in ring order, less those a done journal had (replay), so the two ends
and the record count pin every record in it. The topic is checked by its CRC32C. Retries write
the slot again; a later slot of the same partition overlapping earlier ones supersedes them (a
new epoch re-stamped the batch, or a split replaced it: ``latest_batches``).

A slot (little-endian; see ``slot_journal`` for the file)::

    last_end u64 | last_seal u32 | last_index u32 | first_end u64 | first_seal u32
    | first_index u32 | count u32 | partition i32 | producer_id i64 | base_sequence i32
    | topic_crc u32 | epoch i16 | 2 pad | slot seal u32 (CRC32C of the 60 bytes before it)

A slot dies when the entry of its last record is released. Written only with idempotence on
and outside exactly-once mode (a transaction's open batches are aborted by the next epoch).

Written by the worker's event loop alone, read by the worker that adopts the ring once the
writer is dead. Imports neither the engine, nor the rings' ends, nor the process layer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

from crc32c import crc32c

from daemon.worker.slot_journal import SlotFormat, SlotJournal

__all__ = [
    "FLIGHT_FORMAT",
    "FLIGHT_LAYOUT_VERSION",
    "FlightBatch",
    "FlightJournal",
    "flight_journal_path",
    "latest_batches",
    "topic_crc",
]

# 1: the first flight journal. Bump it whenever the slot layout changes.
FLIGHT_LAYOUT_VERSION = 1


class FlightBatch(NamedTuple):
    """A batch written under (``producer_id``, ``epoch``) from ``base_sequence``: ``count``
    records of ``partition`` of the topic whose name's CRC32C is ``topic_crc``, from record
    ``first_index`` of the entry ending at ``first_end`` (seal ``first_seal``) to record
    ``last_index`` (inclusive) of the entry ending at ``last_end`` (seal ``last_seal``)."""

    last_end: int
    last_seal: int
    last_index: int
    first_end: int
    first_seal: int
    first_index: int
    count: int
    partition: int
    producer_id: int
    base_sequence: int
    topic_crc: int
    epoch: int

    @property
    def first(self) -> tuple[int, int]:
        """Its first record's place in ring order."""
        return (self.first_end, self.first_index)

    @property
    def last(self) -> tuple[int, int]:
        return (self.last_end, self.last_index)


FLIGHT_FORMAT = SlotFormat(
    "flight journal",
    b"KPDFLGT\0",
    FLIGHT_LAYOUT_VERSION,
    struct.Struct("<QIIQIIIiqiIh2x"),
    FlightBatch,
)


def flight_journal_path(records_ring_path: str) -> str:
    """The flight journal of the records ring at ``records_ring_path`` (beside it)."""
    return records_ring_path + ".flight"


def topic_crc(topic: str) -> int:
    return crc32c(topic.encode())


def latest_batches(slots: Iterable[FlightBatch]) -> list[FlightBatch]:
    """The batches a dead worker may have had appended, oldest slot first: of slots of one
    partition whose records overlap, only the last written counts (the batch went out again
    re-stamped under a new epoch, re-sequenced after a gap, or split into smaller ones)."""
    kept: dict[tuple[int, int], list[FlightBatch]] = {}
    for slot in slots:
        same = kept.setdefault((slot.topic_crc, slot.partition), [])
        same[:] = [old for old in same if old.last < slot.first or slot.last < old.first]
        same.append(slot)
    ordered = [slot for same in kept.values() for slot in same]
    return sorted(ordered, key=lambda slot: slot.first)


class FlightJournal(SlotJournal):
    """One records ring's flight journal, open for appending. Build it with ``open``: a
    journal it cannot read is dropped (what was in flight is then produced again under a new
    producer id, as before this journal existed)."""

    FORMAT = FLIGHT_FORMAT
