"""A journal of fixed-size sealed slots in a memory-mapped file beside a records ring: what a
worker writes so that the worker adopting its ring after a kill -9 knows what it knew.

Two journals use it: the done journal (``done_journal``: which records already have their
outcome) and the flight journal (``flight_journal``: which batches were written to Kafka
without an answer yet). Each gives a ``SlotFormat`` (magic, layout version, the slot's fields);
this module owns the file: its header, sealing, publishing, compaction and growth.

Why a kill loses nothing committed: MAP_SHARED stores are the file's pages, and a kill does not
take them back (a power loss can; the ring files' own fsync choice covers that, not this file).
A slot is staged by ``add`` and made visible by one store of the slot count in ``commit``.

Layout (little-endian)::

    offset  size  field
    0       8     magic              the format's, written last by the creator
    8       4     layout version     the format's
    12      4     slot size
    16      4     ring layout        the records ring's LAYOUT_VERSION the slots refer to
    20      4     entry format       the records ring's entry format (RECORDS_ENTRY_VERSION)
    32      8     count              slots in use; the only field written after creation
    64      ...   slots              each: the format's fields, then the CRC32C of them (u32)

Every slot's first field is an end position in the ring (positions are monotonic byte counts,
never reused by a ring file): the slot is dead once the ring is released up to it.

Compaction: when every slot is dead the count goes back to 0; when the slots are full, the live
slots are copied to the front in order and the count lowered (or the file doubles when more
than half are live). A kill during the copy leaves each live slot whole in some slot below the
old count (slots are copied forward only, onto slots already read), and a slot torn mid-copy
fails its seal and is skipped; a slot found twice is the same slot, and its first occurrence
keeps the order the slots were written in. A journal of another format, layout version or ring
version is never read: it is dropped with a warning (what it said is lost, never misread).

Owned by the worker's event loop (the only writer); read by its successor once it is dead.
Must not import the engine, the rings' ends or the process layer.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from crc32c import crc32c

__all__ = ["HEADER_SIZE", "INITIAL_SLOTS", "SlotFormat", "SlotJournal"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<8sIIII")  # magic, version, slot size, ring layout, entry format
_COUNT = struct.Struct("<Q")
_COUNT_AT = 32
HEADER_SIZE = 64
_SEAL = struct.Struct("<I")
INITIAL_SLOTS = 1024


class SlotFormat(NamedTuple):
    """One journal's slots: ``body`` packs a ``make`` tuple whose first field is the end
    position of the ring entry the slot dies with; a CRC32C seal follows the body."""

    name: str  # "done journal", for logs
    magic: bytes  # 8 bytes
    version: int  # bump whenever the header or the slot layout changes
    body: struct.Struct
    make: Callable[..., Any]

    @property
    def slot_size(self) -> int:
        return self.body.size + _SEAL.size

    def encode(self, item: tuple) -> bytes:
        body = self.body.pack(*item)
        return body + _SEAL.pack(crc32c(body))

    def decode(self, buf, offset: int = 0):
        """The item in the slot at ``offset``, or None when its seal does not match (torn, or
        never written)."""
        size = self.body.size
        if len(buf) < offset + size + _SEAL.size:
            return None
        body = bytes(buf[offset : offset + size])
        (seal,) = _SEAL.unpack_from(buf, offset + size)
        if crc32c(body) != seal:
            return None
        return self.make(*self.body.unpack(body))


def live(items: Iterable[tuple], release_pos: int) -> list:
    """The items whose entries are not released yet, each once, in their order."""
    seen: set[tuple] = set()
    kept = []
    for item in items:
        if item[0] > release_pos and item not in seen:
            seen.add(item)
            kept.append(item)
    return kept


class SlotJournal:
    """One journal file, open for appending. Subclasses set ``FORMAT``; build with ``open``."""

    FORMAT: SlotFormat

    def __init__(self, path: str, fd: int, mm: mmap.mmap, items: list) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self._size = self.FORMAT.slot_size
        self._capacity = (len(mm) - HEADER_SIZE) // self._size
        # A mirror of the slots in use (their encoded bytes and end positions): compaction
        # copies from it instead of decoding the file again.
        self._slots: list[bytes] = [self.FORMAT.encode(item) for item in items]
        self._ends: list[int] = [item[0] for item in items]
        self._count = len(items)  # published
        self._max_end = max(self._ends, default=0)
        self._release_pos = 0
        self.compactions = 0  # counters for status and tests
        self.growths = 0

    @classmethod
    def open(cls, path: str, *, release_pos: int, ring_layout: int, entry_format: int):
        """Open (or make) the journal at ``path``: ``(journal, live items a predecessor
        left)``. The live items are those of entries after ``release_pos`` in a journal of
        this format written for the same ring layout and entry format; they stay in the
        journal (rewritten to its front) until their entries are released, so a kill during
        the replay keeps them too. Anything else found is dropped with a warning."""
        items: list = []
        try:
            items, problem = cls._read(path, ring_layout, entry_format)
        except FileNotFoundError:
            problem = ""
        if problem:
            log.warning("%s %s dropped (%s)", cls.FORMAT.name, path, problem)
        kept = live(items, release_pos)
        if problem or not os.path.exists(path):
            journal = cls._create(path, ring_layout, entry_format, kept)
        else:
            journal = cls._attach(path, kept)
        journal._release_pos = release_pos
        return journal, kept

    @classmethod
    def _create(cls, path: str, ring_layout: int, entry_format: int, items: list) -> SlotJournal:
        fmt = cls.FORMAT
        tmp = path + ".tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            mm = _map(fd, max(INITIAL_SLOTS, 2 * len(items)), fmt.slot_size)
            _HEADER.pack_into(mm, 0, b"\0" * 8, fmt.version, fmt.slot_size, ring_layout,
                              entry_format)  # fmt: skip
            for i, item in enumerate(items):
                at = HEADER_SIZE + i * fmt.slot_size
                mm[at : at + fmt.slot_size] = fmt.encode(item)
            _COUNT.pack_into(mm, _COUNT_AT, len(items))
            mm[0:8] = fmt.magic  # last: a half-made file is never taken for a journal
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mm, items)

    @classmethod
    def _attach(cls, path: str, items: list) -> SlotJournal:
        size = cls.FORMAT.slot_size
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            slots = (os.fstat(fd).st_size - HEADER_SIZE) // size
            mm = _map(fd, max(slots, 2 * len(items), INITIAL_SLOTS), size)
        except BaseException:
            os.close(fd)
            raise
        journal = cls(path, fd, mm, [])
        journal._rewrite(items)
        return journal

    @classmethod
    def _read(cls, path: str, ring_layout: int, entry_format: int) -> tuple[list, str]:
        """The items a journal file holds (each slot below its count whose seal matches), or
        ``([], why it cannot be read)``."""
        fmt = cls.FORMAT
        with open(path, "rb") as source:
            data = source.read()
        if len(data) < HEADER_SIZE:
            return [], f"{len(data)} bytes is smaller than a header"
        magic, version, slot_size, layout, entry = _HEADER.unpack_from(data, 0)
        if magic != fmt.magic:
            return [], f"bad magic {magic!r}"
        if version != fmt.version or slot_size != fmt.slot_size:
            return [], (
                f"layout version {version} (slots of {slot_size} bytes); this build reads "
                f"version {fmt.version} ({fmt.slot_size} bytes)"
            )
        if (layout, entry) != (ring_layout, entry_format):
            return [], (
                f"written for ring layout {layout}, entry format {entry}; the ring is layout "
                f"{ring_layout}, entry format {entry_format}"
            )
        (count,) = _COUNT.unpack_from(data, _COUNT_AT)
        count = min(count, (len(data) - HEADER_SIZE) // slot_size)
        items = [fmt.decode(data, HEADER_SIZE + i * slot_size) for i in range(count)]
        return [item for item in items if item is not None], ""

    # ---- writing ---------------------------------------------------------------------------

    def add(self, item: tuple) -> None:
        """Stage an item: written to its slot now, visible once ``commit`` publishes it."""
        if len(self._slots) == self._capacity:
            self._make_room()
        slot = self.FORMAT.encode(item)
        at = HEADER_SIZE + len(self._slots) * self._size
        self._mm[at : at + self._size] = slot
        self._slots.append(slot)
        end = item[0]
        self._ends.append(end)
        if end > self._max_end:
            self._max_end = end

    def commit(self) -> None:
        """Publish every staged item with one store of the count."""
        n = len(self._slots)
        if n != self._count:
            _COUNT.pack_into(self._mm, _COUNT_AT, n)
            self._count = n

    def released(self, release_pos: int) -> None:
        """The ring is released up to ``release_pos``: items of entries before it are dead.
        Cheap: the slots are reused at once only when every item is dead, else at the next
        compaction."""
        self._release_pos = release_pos
        if self._slots and self._max_end <= release_pos and len(self._slots) == self._count:
            self.clear()

    def clear(self) -> None:
        """Forget every item, live or not, with one store of the count (what they said is
        known elsewhere now)."""
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
        self.commit()  # staged items are facts already: publishing them early is harmless
        release = self._release_pos
        kept = [i for i, end in enumerate(self._ends) if end > release]
        if 2 * len(kept) > self._capacity:
            self._grow()
        else:
            self._compact(kept)

    def _compact(self, kept: list[int]) -> None:
        """Copy the live slots to the front, in order, then lower the count (see the module
        docstring for why a kill at any point loses no live slot)."""
        slots, ends, mm, size = self._slots, self._ends, self._mm, self._size
        for to, i in enumerate(kept):
            if to != i:
                at = HEADER_SIZE + to * size
                mm[at : at + size] = slots[i]
        self._slots = [slots[i] for i in kept]
        self._ends = [ends[i] for i in kept]
        self._count = len(kept)
        _COUNT.pack_into(mm, _COUNT_AT, self._count)
        self._max_end = max(self._ends, default=0)
        self.compactions += 1

    def _grow(self) -> None:
        self._mm.close()
        self._capacity *= 2
        self._mm = _map(self._fd, self._capacity, self._size)
        self.growths += 1

    def _rewrite(self, items: list) -> None:
        """Put ``items`` (read from the file) at its front, as compaction does."""
        mm, size, encode = self._mm, self._size, self.FORMAT.encode
        self._slots = [encode(item) for item in items]
        for i, slot in enumerate(self._slots):
            at = HEADER_SIZE + i * size
            mm[at : at + size] = slot
        _COUNT.pack_into(mm, _COUNT_AT, len(items))
        self._ends = [item[0] for item in items]
        self._count = len(items)
        self._max_end = max(self._ends, default=0)


def _map(fd: int, slots: int, slot_size: int) -> mmap.mmap:
    """Map the file with room for ``slots`` slots, growing it first if it is smaller. The
    blocks are reserved (``posix_fallocate``): a store into a page the disk has no room for
    would kill the worker with SIGBUS; here it is an OSError."""
    size = HEADER_SIZE + slots * slot_size
    if os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)
        os.posix_fallocate(fd, 0, size)
    return mmap.mmap(fd, size)
