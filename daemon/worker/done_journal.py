"""The done journal: which records of a worker's unreleased ring entries already have their
outcome, kept in a memory-mapped file beside the records ring so that it survives a kill -9.

Why: ring space is released contiguously (``ring.AckWindow``), so an entry Kafka acknowledged
behind an older entry still in flight stays unreleased. Without this journal only the dead
worker's memory knew it was done, and the worker that adopts the ring (a replacement worker, or
the next daemon) produced it a second time, under a new producer id that Kafka's idempotence
cannot recognise. With it, the adopter skips those records and reports their first outcome.

What is written, and when: one *run* per (ring entry, stretch of its records that shared one
batch outcome), staged by ``add`` in the same synchronous callback that hands the worker the
outcome (the Kafka answer; in exactly-once mode the EndTxn commit answer), and made visible by
one store of the slot count in ``commit`` before any report of it is published. A process killed
at any instruction therefore leaves every run it ``commit``\\ ted in the page cache of the file:
MAP_SHARED stores are the file's pages, and a kill does not take them back (a power loss can;
the ring files' own fsync choice covers that, not this file).

Its file is a ``slot_journal.SlotJournal``: header, publishing, compaction and growth are
described there. A slot (little-endian)::

    end_pos u64 | entry seal u32 | first u32 | count u32 | code i32 | base_offset i64
    | timestamp i64 | failed u8 | persistence u8 | 2 pad | slot seal u32 (CRC32C of the 44
    bytes before it)

A run names its entry by the entry's end position in the ring (positions are monotonic byte
counts, never reused by a ring file) *and* the entry's own seal (its CRC32C, position
included: ``ring.file_ring``), so a run can only ever match the very entry it was written for:
not one of a ring file made anew, nor of a lap of another file that happens to end at the same
position. A journal of another layout or ring version is never read (its runs are dropped, the
records replayed: at-least-once, never a record skipped wrongly).

Owned by the worker's event loop (the only writer); read by its successor once it is dead.
Must not import the engine, the rings' ends or the process layer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

from daemon.worker.slot_journal import HEADER_SIZE, INITIAL_SLOTS, SlotFormat, SlotJournal, live

__all__ = [
    "DONE_LAYOUT_VERSION",
    "HEADER_SIZE",
    "INITIAL_SLOTS",
    "SLOT_SIZE",
    "DoneJournal",
    "DoneRun",
    "decode_slot",
    "encode_slot",
    "journal_path",
    "live_runs",
]

# 1: the first done journal. Bump it whenever the header or the slot layout changes: a journal
# of another version is dropped (its records are replayed), never read.
DONE_LAYOUT_VERSION = 1


class DoneRun(NamedTuple):
    """Records ``first .. first + count`` of the ring entry ending at ``end_pos`` (whose seal
    is ``seal``) have their outcome: delivered at ``base_offset`` (-1: unknown) with
    log-append time ``timestamp`` (-1: create time), or ``failed`` with ``code`` (a Kafka
    error code, or an engine's negative one) and ``persistence`` (``Persistence``'s value)."""

    end_pos: int
    seal: int
    first: int
    count: int
    code: int
    base_offset: int
    timestamp: int
    failed: int
    persistence: int


DONE_FORMAT = SlotFormat(
    "done journal", b"KPDDONE\0", DONE_LAYOUT_VERSION, struct.Struct("<QIIIiqqBB2x"), DoneRun
)
SLOT_SIZE = DONE_FORMAT.slot_size


def journal_path(records_ring_path: str) -> str:
    """The done journal of the records ring at ``records_ring_path`` (beside it)."""
    return records_ring_path + ".done"


def encode_slot(run: DoneRun) -> bytes:
    return DONE_FORMAT.encode(run)


def decode_slot(buf, offset: int = 0) -> DoneRun | None:
    """The run in the slot at ``offset``, or None when its seal does not match (torn, or
    never written)."""
    return DONE_FORMAT.decode(buf, offset)


def live_runs(runs: Iterable[DoneRun], release_pos: int) -> list[DoneRun]:
    """The runs whose entries are not released yet, each once, in their order."""
    return live(runs, release_pos)


class DoneJournal(SlotJournal):
    """One records ring's done journal, open for appending. Build it with ``open``: a journal
    it cannot read is dropped and its records are produced again (at-least-once, never a
    record skipped wrongly)."""

    FORMAT = DONE_FORMAT
