"""One ring's region: a memory-mapped file, its header and its data area.

This module owns the byte layout and the lifecycle of a region (create, attach, sync, unlink).
It does not know who writes entries (see ``file_ring``) and it knows nothing of Kafka. It must
not import multiprocessing, uvloop, signal or prometheus_client: the region is a file opened
with ``os.open`` and mapped with ``mmap`` (``MAP_SHARED``), so any process that knows the path
can attach, and what a process stored survives that process: the page cache holds it until
the kernel writes it back, so a ring outlives a crash of every kpd process (not a power loss,
unless the file was synced: ``sync``).

Layout (all integers native-endian: a ring never leaves its host)::

    offset  size  field            written by   notes
    0       8     magic            creator      b"KPDRING\0", written last by create()
    8       4     layout version   creator      LAYOUT_VERSION
    12      4     header size      creator      HEADER_SIZE; the data area starts here
    16      8     capacity         creator      data-area bytes; multiple of 8
    24      4     format           creator      version of the entries' payloads (opaque here)
    28      4     set index        creator      which ring of its set (a worker's index)
    32      4     set size         creator      how many rings the set had (the worker count)
    128     8     write_pos        producer     bytes ever published (monotonic)
    256     8     consumer_wake_at consumer     0 = awake; else asleep until write_pos >= it
    384     8     release_pos      consumer     bytes ever released (monotonic)
    512     8     producer_wake_at producer     0 = awake; else asleep until release_pos >= it
    4096    cap   data area        producer     entries, see file_ring

The creator's labels (format, set index and size) let the next daemon decide whether it can
adopt a ring left by its predecessor as it is, must re-route its entries, or must leave it
alone: ``Ring.attach`` returns them, it does not judge them.

Each shared field has its own 128-byte block, not just its own 64-byte cache line: Intel's
adjacent-line prefetcher pulls cache lines in pairs and Apple/arm64 server cores use 128-byte
lines, so 64 bytes apart would still bounce the producer's and the consumer's lines together.
The data area starts on a page boundary so large entries are copied with aligned moves.

Every field has exactly one writer and is read and written whole (an aligned 8-byte access),
so a reader never sees a torn value. How the accesses are ordered between the two processes —
C11 seq_cst atomics from the accelerator, or plain stores on x86-64 only — is decided in
``ordering`` (``shared_words``), which refuses a weakly-ordered CPU without the accelerator.
What reaches the disk, and in which order, is not ordered at all (the kernel writes dirty pages
back when it likes): ``file_ring`` seals every entry with a checksum so that ``recover`` can tell
a complete entry from a torn one.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import NamedTuple

from daemon.ring.ordering import shared_words

__all__ = [
    "DATA_OFFSET",
    "HEADER_SIZE",
    "LAYOUT_VERSION",
    "MAGIC",
    "MAX_CAPACITY",
    "MIN_CAPACITY",
    "EntryTooLargeError",
    "Ring",
    "RingError",
    "RingFormatError",
    "RingLabels",
]

MAGIC = b"KPDRING\0"
# 2 (perf-daemon): records-ring entries carry the ack level and, for entries ingest
# partitioned, sequence offsets (daemon/wire/ring_entry.py).
# 3: file-backed rings whose header carries the creator's labels, and sealed entries
# (``file_ring``), on top of 2's records entries.
# Bump it whenever this header, the entry framing in ``file_ring`` or the records-entry layout
# (``RECORDS_ENTRY_VERSION``) changes: a daemon never adopts a ring of another layout version
# (it moves the file aside instead).
LAYOUT_VERSION = 3
HEADER_SIZE = 4096
DATA_OFFSET = HEADER_SIZE
MIN_CAPACITY = 64
# Entry lengths are u32 and 0xFFFFFFFF is the wrap marker, so no entry may reach 4 GiB.
MAX_CAPACITY = 1 << 32

# The static part of the header: magic, layout version, header size, capacity, labels.
_STATIC = struct.Struct("=8sIIQIII")

# Byte offsets of the shared fields (see the table in the module docstring).
_WRITE_POS = 128
_CONSUMER_WAKE_AT = 256
_RELEASE_POS = 384
_PRODUCER_WAKE_AT = 512


class RingError(Exception):
    """A ring was used in a way its layout or its single-producer/consumer rules forbid."""


class RingFormatError(RingError):
    """A region is not a kpd ring of the expected layout (bad magic, version or capacity)."""


class EntryTooLargeError(RingError, ValueError):
    """An entry can never fit in this ring, however much of it is free."""


def _check_capacity(capacity: int) -> None:
    if not MIN_CAPACITY <= capacity <= MAX_CAPACITY or capacity % 8:
        raise ValueError(
            f"ring capacity {capacity} must be a multiple of 8 in [{MIN_CAPACITY}, {MAX_CAPACITY}]"
        )


class RingLabels(NamedTuple):
    """What the creator wrote about a ring: opaque to the ring, meaningful to the daemon."""

    format: int = 0  # version of the entries' payload format
    index: int = 0  # the ring's place in its set
    count: int = 1  # the size of its set


_NO_LABELS = RingLabels()


class Ring:
    """One mapped ring region. Owns the mapping and the file descriptor; the endpoints
    borrow it.

    Build it with ``create`` or ``attach``, not the constructor.

    The indices are exposed as properties for the two endpoints and for observers (metrics,
    tests). Only the owner named in the layout table may assign a field.
    """

    def __init__(
        self, path: str, fd: int, mm: mmap.mmap, capacity: int, labels: RingLabels
    ) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.capacity = capacity
        self.labels = labels
        self._fd = fd  # kept open for sync(): fdatasync needs a descriptor, not a mapping
        self._mm = mm
        self._fields = shared_words(memoryview(mm)[:HEADER_SIZE])
        # The data area as raw bytes, and the same bytes as u32 words for entry lengths.
        self.data = memoryview(mm)[DATA_OFFSET : DATA_OFFSET + capacity]
        self.words = self.data.cast("I")

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        capacity: int,
        labels: RingLabels = _NO_LABELS,
        *,
        replace: bool = False,
    ) -> Ring:
        """Create and map a new, empty ring file; fail if ``path`` exists unless ``replace``.

        Replacing unlinks the old file first instead of reusing it, so a process that still
        maps the old ring keeps its own (now nameless) copy and cannot scribble on the new one.
        """
        _check_capacity(capacity)
        path = os.fspath(path)
        if replace:
            cls.unlink(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, HEADER_SIZE + capacity)  # zero-filled: all indices start at 0
            # Reserve the blocks now: a store into a page of a sparse file that the disk has
            # no room for kills the process with SIGBUS; here it is an OSError at start.
            os.posix_fallocate(fd, 0, HEADER_SIZE + capacity)
            mm = mmap.mmap(fd, HEADER_SIZE + capacity)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        _STATIC.pack_into(mm, 0, b"\0" * 8, LAYOUT_VERSION, HEADER_SIZE, capacity, *labels)
        # Magic last: an attach() racing with create() sees "not a ring", never half a header.
        mm[0:8] = MAGIC
        return cls(path, fd, mm, capacity, labels)

    @classmethod
    def attach(cls, path: str | os.PathLike, *, capacity: int | None = None) -> Ring:
        """Map an existing ring, checking that it is one and, if given, its capacity."""
        path = os.fspath(path)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise RingFormatError(f"ring {path}: {size} bytes is smaller than a header")
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        try:
            found, labels = _validate_header(path, mm, size, capacity)
        except BaseException:
            mm.close()
            os.close(fd)
            raise
        return cls(path, fd, mm, found, labels)

    @staticmethod
    def unlink(path: str | os.PathLike) -> bool:
        """Remove the ring's file; mappings stay valid until closed. False if it was absent."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def sync(self) -> None:
        """Write the ring's dirty pages to the disk and wait (``fdatasync``).

        Blocks for the disk's latency; releases the GIL, so a thread can do it for an event
        loop. On Linux ``msync(MS_SYNC)`` is this same call: the page cache is what the
        mapping is, so syncing the file syncs what every process stored through it.
        """
        os.fdatasync(self._fd)

    def close(self) -> None:
        """Unmap. Drop every view from the endpoints first: while one is alive this raises
        BufferError, the ring is unusable and the memory is unmapped when the views go."""
        self.words.release()
        self.data.release()
        self._fields.release()
        self._mm.close()
        os.close(self._fd)

    # -- shared fields (owner in brackets) -------------------------------------------------

    @property
    def write_pos(self) -> int:  # [producer]
        return self._fields[_WRITE_POS >> 3]

    @write_pos.setter
    def write_pos(self, value: int) -> None:
        self._fields[_WRITE_POS >> 3] = value

    @property
    def release_pos(self) -> int:  # [consumer]
        return self._fields[_RELEASE_POS >> 3]

    @release_pos.setter
    def release_pos(self, value: int) -> None:
        self._fields[_RELEASE_POS >> 3] = value

    @property
    def consumer_wake_at(self) -> int:  # [consumer]
        return self._fields[_CONSUMER_WAKE_AT >> 3]

    @consumer_wake_at.setter
    def consumer_wake_at(self, value: int) -> None:
        self._fields[_CONSUMER_WAKE_AT >> 3] = value

    @property
    def producer_wake_at(self) -> int:  # [producer]
        return self._fields[_PRODUCER_WAKE_AT >> 3]

    @producer_wake_at.setter
    def producer_wake_at(self, value: int) -> None:
        self._fields[_PRODUCER_WAKE_AT >> 3] = value

    def used_bytes(self) -> int:
        """Bytes published and not yet released (read or not): the ring fill for metrics."""
        return self.write_pos - self.release_pos


def _validate_header(
    path: str, mm: mmap.mmap, size: int, expected: int | None
) -> tuple[int, RingLabels]:
    magic, version, header_size, capacity, *labels = _STATIC.unpack_from(mm, 0)
    if magic != MAGIC:
        raise RingFormatError(f"ring {path}: bad magic {magic!r}, expected {MAGIC!r}")
    if version != LAYOUT_VERSION or header_size != HEADER_SIZE:
        raise RingFormatError(
            f"ring {path}: layout version {version} (header {header_size} bytes), "
            f"this build reads version {LAYOUT_VERSION} (header {HEADER_SIZE} bytes)"
        )
    if size != HEADER_SIZE + capacity:
        raise RingFormatError(
            f"ring {path}: header says capacity {capacity} but the file holds "
            f"{size - HEADER_SIZE} data bytes"
        )
    if expected is not None and capacity != expected:
        raise RingFormatError(
            f"ring {path}: capacity {capacity} does not match the configured {expected}"
        )
    return capacity, RingLabels(*labels)
