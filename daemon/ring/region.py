"""One ring's shared-memory region: its file in ``/dev/shm``, its header and its data area.

This module owns the byte layout and the lifecycle of a region (create, attach, unlink, stale
clean-up). It does not know who writes entries (see ``shm_ring``) and it knows nothing of Kafka.
It must not import multiprocessing, uvloop, signal or prometheus_client: the region is a file
opened with ``os.open`` and mapped with ``mmap``, so any process that knows the name can attach.

Layout (all integers native-endian: a ring never leaves its host)::

    offset  size  field            written by   notes
    0       8     magic            creator      b"KPDRING\\0", written last by create()
    8       4     layout version   creator      LAYOUT_VERSION
    12      4     header size      creator      HEADER_SIZE; the data area starts here
    16      8     capacity         creator      data-area bytes; multiple of 8
    128     8     write_pos        producer     bytes ever published (monotonic)
    256     8     consumer_wake_at consumer     0 = awake; else asleep until write_pos >= it
    384     8     release_pos      consumer     bytes ever released (monotonic)
    512     8     producer_wake_at producer     0 = awake; else asleep until release_pos >= it
    4096    cap   data area        producer     entries, see shm_ring

Each shared field has its own 128-byte block, not just its own 64-byte cache line: Intel's
adjacent-line prefetcher pulls cache lines in pairs and Apple/arm64 server cores use 128-byte
lines, so 64 bytes apart would still bounce the producer's and the consumer's lines together.
The data area starts on a page boundary so large entries are copied with aligned moves.

Every field has exactly one writer and is read and written whole (an aligned 8-byte access),
so a reader never sees a torn value. How the accesses are ordered between the two processes —
C11 seq_cst atomics from the accelerator, or plain stores on x86-64 only — is decided in
``ordering`` (``shared_words``), which refuses a weakly-ordered CPU without the accelerator.
"""

from __future__ import annotations

import mmap
import os
import re
import struct

from daemon.ring.ordering import shared_words

__all__ = [
    "DATA_OFFSET",
    "HEADER_SIZE",
    "LAYOUT_VERSION",
    "MAGIC",
    "MAX_CAPACITY",
    "MIN_CAPACITY",
    "SHM_DIR",
    "EntryTooLargeError",
    "Ring",
    "RingError",
    "RingFormatError",
    "remove_stale",
]

SHM_DIR = "/dev/shm"
MAGIC = b"KPDRING\0"
# 2: records-ring entries carry the ack level and, for entries ingest partitioned, sequence
# offsets (daemon/wire/ring_entry.py); a ring of version 1 is not read.
LAYOUT_VERSION = 2
HEADER_SIZE = 4096
DATA_OFFSET = HEADER_SIZE
MIN_CAPACITY = 64
# Entry lengths are u32 and 0xFFFFFFFF is the wrap marker, so no entry may reach 4 GiB.
MAX_CAPACITY = 1 << 32

# The static part of the header: magic, layout version, header size, capacity.
_STATIC = struct.Struct("=8sIIQ")

# Byte offsets of the shared fields (see the table in the module docstring).
_WRITE_POS = 128
_CONSUMER_WAKE_AT = 256
_RELEASE_POS = 384
_PRODUCER_WAKE_AT = 512

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


class RingError(Exception):
    """A ring was used in a way its layout or its single-producer/consumer rules forbid."""


class RingFormatError(RingError):
    """A region is not a kpd ring of the expected layout (bad magic, version or capacity)."""


class EntryTooLargeError(RingError, ValueError):
    """An entry can never fit in this ring, however much of it is free."""


def _path(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid ring name {name!r}: use [A-Za-z0-9._-], no leading dot")
    return os.path.join(SHM_DIR, name)


def _check_capacity(capacity: int) -> None:
    if not MIN_CAPACITY <= capacity <= MAX_CAPACITY or capacity % 8:
        raise ValueError(
            f"ring capacity {capacity} must be a multiple of 8 in "
            f"[{MIN_CAPACITY}, {MAX_CAPACITY}]"
        )


class Ring:
    """One mapped ring region. Owns the mapping; the endpoints borrow it.

    Build it with ``create`` or ``attach``, not the constructor.

    The indices are exposed as properties for the two endpoints and for observers (metrics,
    tests). Only the owner named in the layout table may assign a field.
    """

    def __init__(self, name: str, mm: mmap.mmap, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self._mm = mm
        self._fields = shared_words(memoryview(mm)[:HEADER_SIZE])
        # The data area as raw bytes, and the same bytes as u32 words for entry lengths.
        self.data = memoryview(mm)[DATA_OFFSET : DATA_OFFSET + capacity]
        self.words = self.data.cast("I")

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, capacity: int, *, replace: bool = False) -> Ring:
        """Create and map a new, empty ring; fail if ``name`` exists unless ``replace``.

        Replacing unlinks the old file first instead of reusing it, so a process that still
        maps the old ring keeps its own (now nameless) copy and cannot scribble on the new one.
        """
        _check_capacity(capacity)
        path = _path(name)
        if replace:
            cls.unlink(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, HEADER_SIZE + capacity)  # zero-filled: all indices start at 0
            mm = mmap.mmap(fd, HEADER_SIZE + capacity)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)  # the mapping keeps the memory; the fd is not needed any more
        _STATIC.pack_into(mm, 0, b"\0" * 8, LAYOUT_VERSION, HEADER_SIZE, capacity)
        # Magic last: an attach() racing with create() sees "not a ring", never half a header.
        mm[0:8] = MAGIC
        return cls(name, mm, capacity)

    @classmethod
    def attach(cls, name: str, *, capacity: int | None = None) -> Ring:
        """Map an existing ring, checking that it is one and, if given, its capacity."""
        fd = os.open(_path(name), os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise RingFormatError(f"ring {name!r}: {size} bytes is smaller than a header")
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        try:
            found = _validate_header(name, mm, size, capacity)
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, found)

    @staticmethod
    def unlink(name: str) -> bool:
        """Remove the ring's name; mappings stay valid until closed. False if it was absent."""
        try:
            os.unlink(_path(name))
        except FileNotFoundError:
            return False
        return True

    def close(self) -> None:
        """Unmap. Drop every view from the endpoints first: while one is alive this raises
        BufferError, the ring is unusable and the memory is unmapped when the views go."""
        self.words.release()
        self.data.release()
        self._fields.release()
        self._mm.close()

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


def _validate_header(name: str, mm: mmap.mmap, size: int, expected: int | None) -> int:
    magic, version, header_size, capacity = _STATIC.unpack_from(mm, 0)
    if magic != MAGIC:
        raise RingFormatError(f"ring {name!r}: bad magic {magic!r}, expected {MAGIC!r}")
    if version != LAYOUT_VERSION or header_size != HEADER_SIZE:
        raise RingFormatError(
            f"ring {name!r}: layout version {version} (header {header_size} bytes), "
            f"this build reads version {LAYOUT_VERSION} (header {HEADER_SIZE} bytes)"
        )
    if size != HEADER_SIZE + capacity:
        raise RingFormatError(
            f"ring {name!r}: header says capacity {capacity} but the file holds "
            f"{size - HEADER_SIZE} data bytes"
        )
    if expected is not None and capacity != expected:
        raise RingFormatError(
            f"ring {name!r}: capacity {capacity} does not match the configured {expected}"
        )
    return capacity


def remove_stale(prefix: str) -> list[str]:
    """Unlink the rings whose names start with ``prefix``; return the names removed.

    The supervisor calls this at start-up for its own instance's prefix: rings left by a
    killed daemon would otherwise pin shared memory until reboot. Files with the prefix that
    are not kpd rings are left alone, except empty or half-created ones (no magic yet).
    """
    if not prefix or "/" in prefix:
        raise ValueError(f"invalid ring prefix {prefix!r}")
    candidates = (n for n in sorted(os.listdir(SHM_DIR)) if n.startswith(prefix))
    return [
        name
        for name in candidates
        if _is_ring_or_blank(os.path.join(SHM_DIR, name)) and Ring.unlink(name)
    ]


def _is_ring_or_blank(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return False
    return head in (MAGIC, b"\0" * len(MAGIC)) or len(head) < len(MAGIC)
