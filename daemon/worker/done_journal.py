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

Layout (little-endian)::

    offset  size  field
    0       8     magic              b"KPDDONE\\0", written last by the creator
    8       4     layout version     DONE_LAYOUT_VERSION
    12      4     slot size          SLOT_SIZE
    16      4     ring layout        the records ring's LAYOUT_VERSION the runs refer to
    20      4     entry format       the records ring's entry format (RECORDS_ENTRY_VERSION)
    32      8     count              slots in use; the only field written after creation
    64      ...   slots              SLOT_SIZE bytes each

    slot = end_pos u64 | entry seal u32 | first u32 | count u32 | code i32 | base_offset i64
           | timestamp i64 | failed u8 | persistence u8 | 2 pad | slot seal u32 (CRC32C of
           the 44 bytes before it)

A run names its entry by the entry's end position in the ring (positions are monotonic byte
counts, never reused by a ring file) *and* the entry's own seal (its CRC32C, position
included: ``ring.file_ring``), so a run can only ever match the very entry it was written for:
not one of a ring file made anew, nor of a lap of another file that happens to end at the same
position. A journal of another layout or ring version is never read (its runs are dropped, the
records replayed: at-least-once, never a record skipped wrongly).

Compaction: runs whose entry was released (``end_pos <= release_pos``) are dead. When every
run is dead the count goes back to 0; when the slots are full, the live runs are copied to the
front in order and the count lowered (or the file doubles when more than half are live). A kill
during the copy leaves each live run whole in some slot below the old count (slots are copied
forward only, onto slots already read), and a slot torn mid-copy fails its seal and is skipped;
a run found twice is the same run.

Owned by the worker's event loop (the only writer); read by its successor once it is dead.
Must not import the engine, the rings' ends or the process layer.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
from collections.abc import Iterable
from typing import NamedTuple

from crc32c import crc32c

__all__ = [
    "DONE_LAYOUT_VERSION",
    "SLOT_SIZE",
    "DoneJournal",
    "DoneRun",
    "decode_slot",
    "encode_slot",
    "journal_path",
    "live_runs",
]

log = logging.getLogger(__name__)

MAGIC = b"KPDDONE\0"
# 1: the first done journal. Bump it whenever the header or the slot layout changes: a journal
# of another version is dropped (its records are replayed), never read.
DONE_LAYOUT_VERSION = 1
_HEADER = struct.Struct("<8sIIII")  # magic, version, slot size, ring layout, entry format
_COUNT = struct.Struct("<Q")
_COUNT_AT = 32
HEADER_SIZE = 64
_BODY = struct.Struct("<QIIIiqqBB2x")  # a slot without its seal
SLOT_SIZE = _BODY.size + 4
_SEAL = struct.Struct("<I")
INITIAL_SLOTS = 1024


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


def journal_path(records_ring_path: str) -> str:
    """The done journal of the records ring at ``records_ring_path`` (beside it)."""
    return records_ring_path + ".done"


def encode_slot(run: DoneRun) -> bytes:
    body = _BODY.pack(*run)
    return body + _SEAL.pack(crc32c(body))


def decode_slot(buf, offset: int = 0) -> DoneRun | None:
    """The run in the slot at ``offset``, or None when its seal does not match (torn, or
    never written)."""
    if len(buf) < offset + SLOT_SIZE:
        return None
    body = bytes(buf[offset : offset + _BODY.size])
    (seal,) = _SEAL.unpack_from(buf, offset + _BODY.size)
    if crc32c(body) != seal:
        return None
    return DoneRun(*_BODY.unpack(body))


def live_runs(runs: Iterable[DoneRun], release_pos: int) -> list[DoneRun]:
    """The runs whose entries are not released yet, each once, in their order."""
    seen: set[tuple[int, int]] = set()
    live = []
    for run in runs:
        key = (run.end_pos, run.first)
        if run.end_pos > release_pos and key not in seen:
            seen.add(key)
            live.append(run)
    return live


class DoneJournal:
    """One records ring's done journal, open for appending. Build it with ``open``."""

    def __init__(self, path: str, fd: int, mm: mmap.mmap, runs: list[DoneRun]) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self._capacity = (len(mm) - HEADER_SIZE) // SLOT_SIZE
        # A mirror of the slots in use (their encoded bytes and end positions): compaction
        # copies from it instead of decoding the file again.
        self._slots: list[bytes] = [encode_slot(run) for run in runs]
        self._ends: list[int] = [run.end_pos for run in runs]
        self._count = len(runs)  # published
        self._max_end = max(self._ends, default=0)
        self._release_pos = 0
        self.compactions = 0  # counters for status and tests
        self.growths = 0

    @classmethod
    def open(
        cls, path: str, *, release_pos: int, ring_layout: int, entry_format: int
    ) -> tuple[DoneJournal, list[DoneRun]]:
        """Open (or make) the journal at ``path``: ``(journal, live runs a predecessor left)``.

        The live runs are those of entries after ``release_pos`` in a journal written for the
        same ring layout and entry format; they stay in the journal (rewritten to its front)
        until their entries are released, so a kill during the replay keeps them too. Anything
        else found is dropped with a warning: its records are replayed, never skipped.
        """
        runs: list[DoneRun] = []
        try:
            runs, problem = _read(path, ring_layout, entry_format)
        except FileNotFoundError:
            problem = ""
        if problem:
            log.warning("done journal %s dropped (%s): its records are produced again",
                        path, problem)  # fmt: skip
        live = live_runs(runs, release_pos)
        if problem or not os.path.exists(path):
            journal = cls._create(path, ring_layout, entry_format, live)
        else:
            journal = cls._attach(path, live)
        journal._release_pos = release_pos
        return journal, live

    @classmethod
    def _create(
        cls, path: str, ring_layout: int, entry_format: int, runs: list[DoneRun]
    ) -> DoneJournal:
        tmp = path + ".tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        slots = max(INITIAL_SLOTS, 2 * len(runs))
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            mm = _map(fd, slots)
            _HEADER.pack_into(mm, 0, b"\0" * 8, DONE_LAYOUT_VERSION, SLOT_SIZE, ring_layout,
                              entry_format)  # fmt: skip
            for i, run in enumerate(runs):
                mm[_slot_at(i) : _slot_at(i + 1)] = encode_slot(run)
            _COUNT.pack_into(mm, _COUNT_AT, len(runs))
            mm[0:8] = MAGIC  # last: a half-made file is never taken for a journal
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mm, runs)

    @classmethod
    def _attach(cls, path: str, runs: list[DoneRun]) -> DoneJournal:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            slots = (os.fstat(fd).st_size - HEADER_SIZE) // SLOT_SIZE
            mm = _map(fd, max(slots, 2 * len(runs), INITIAL_SLOTS))
        except BaseException:
            os.close(fd)
            raise
        journal = cls(path, fd, mm, [])
        journal._count = _COUNT.unpack_from(mm, _COUNT_AT)[0]  # what is on file, until rewritten
        journal._rewrite(runs)
        return journal

    # ---- writing ---------------------------------------------------------------------------

    def add(self, run: DoneRun) -> None:
        """Stage a run: written to its slot now, visible once ``commit`` publishes it."""
        if len(self._slots) == self._capacity:
            self._make_room()
        slot = encode_slot(run)
        at = _slot_at(len(self._slots))
        self._mm[at : at + SLOT_SIZE] = slot
        self._slots.append(slot)
        self._ends.append(run.end_pos)
        if run.end_pos > self._max_end:
            self._max_end = run.end_pos

    def commit(self) -> None:
        """Publish every staged run with one store of the count (call before reporting)."""
        n = len(self._slots)
        if n != self._count:
            _COUNT.pack_into(self._mm, _COUNT_AT, n)
            self._count = n

    def released(self, release_pos: int) -> None:
        """The ring is released up to ``release_pos``: runs of entries before it are dead.
        Cheap: the slots are reused at once only when every run is dead, else at the next
        compaction."""
        self._release_pos = release_pos
        if self._slots and self._max_end <= release_pos and len(self._slots) == self._count:
            _COUNT.pack_into(self._mm, _COUNT_AT, 0)
            self._count = 0
            self._slots.clear()
            self._ends.clear()
            self._max_end = 0

    def __len__(self) -> int:
        return len(self._slots)

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)

    def _make_room(self) -> None:
        self.commit()  # staged runs are outcomes already: publishing them early is harmless
        release = self._release_pos
        live = [i for i, end in enumerate(self._ends) if end > release]
        if 2 * len(live) > self._capacity:
            self._grow()
        else:
            self._compact(live)

    def _compact(self, live: list[int]) -> None:
        """Copy the live slots to the front, in order, then lower the count (see the module
        docstring for why a kill at any point loses no live run)."""
        slots, ends, mm = self._slots, self._ends, self._mm
        for to, i in enumerate(live):
            if to != i:
                mm[_slot_at(to) : _slot_at(to + 1)] = slots[i]
        self._slots = [slots[i] for i in live]
        self._ends = [ends[i] for i in live]
        self._count = len(live)
        _COUNT.pack_into(mm, _COUNT_AT, self._count)
        self._max_end = max(self._ends, default=0)
        self.compactions += 1

    def _grow(self) -> None:
        self._mm.close()
        self._capacity *= 2
        self._mm = _map(self._fd, self._capacity)
        self.growths += 1

    def _rewrite(self, runs: list[DoneRun]) -> None:
        """Put ``runs`` (read from the file) at its front, as compaction does."""
        mm = self._mm
        for i, run in enumerate(runs):
            mm[_slot_at(i) : _slot_at(i + 1)] = encode_slot(run)
        _COUNT.pack_into(mm, _COUNT_AT, len(runs))
        self._slots = [encode_slot(run) for run in runs]
        self._ends = [run.end_pos for run in runs]
        self._count = len(runs)
        self._max_end = max(self._ends, default=0)


def _slot_at(index: int) -> int:
    return HEADER_SIZE + index * SLOT_SIZE


def _map(fd: int, slots: int) -> mmap.mmap:
    """Map the file with room for ``slots`` slots, growing it first if it is smaller. The
    blocks are reserved (``posix_fallocate``): a store into a page the disk has no room for
    would kill the worker with SIGBUS; here it is an OSError."""
    size = HEADER_SIZE + slots * SLOT_SIZE
    if os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)
        os.posix_fallocate(fd, 0, size)
    return mmap.mmap(fd, size)


def _read(path: str, ring_layout: int, entry_format: int) -> tuple[list[DoneRun], str]:
    """The runs a journal file holds (each slot below its count whose seal matches), or
    ``([], why it cannot be read)``."""
    with open(path, "rb") as source:
        data = source.read()
    if len(data) < HEADER_SIZE:
        return [], f"{len(data)} bytes is smaller than a header"
    magic, version, slot_size, layout, fmt = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        return [], f"bad magic {magic!r}"
    if version != DONE_LAYOUT_VERSION or slot_size != SLOT_SIZE:
        return [], (
            f"layout version {version} (slots of {slot_size} bytes); this build reads version "
            f"{DONE_LAYOUT_VERSION} ({SLOT_SIZE} bytes)"
        )
    if (layout, fmt) != (ring_layout, entry_format):
        return [], (
            f"written for ring layout {layout}, entry format {fmt}; the ring is layout "
            f"{ring_layout}, entry format {entry_format}"
        )
    (count,) = _COUNT.unpack_from(data, _COUNT_AT)
    count = min(count, (len(data) - HEADER_SIZE) // SLOT_SIZE)
    runs = [decode_slot(data, _slot_at(i)) for i in range(count)]
    return [run for run in runs if run is not None], ""
