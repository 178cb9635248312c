"""The two ends of a single-producer single-consumer byte ring in shared memory.

This module owns the entry format and the producer/consumer protocol over a ``Ring`` region:
staging and publishing entries, reading them without copying, and commit-on-ack release. It
knows bytes, not Kafka, and must not import multiprocessing, uvloop, signal or
prometheus_client.

Entries live in the data area at 8-aligned offsets::

    entry = [u32 payload length][u32 seal][payload][zero to 7 pad bytes up to a multiple of 8]
    wrap  = [u32 0xFFFFFFFF]  -- the rest of the data area is skipped; the next entry is at 0

    seal  = CRC32C of (the entry's position as u64, its length as u32, little-endian) followed
            by the payload

The seal is what makes a ring file trustworthy after a crash of the whole machine: the kernel
writes dirty pages back in any order, so after a power loss the file may hold a ``write_pos``
newer than some of the entries it covers (or, mid-lap, the previous lap's bytes there).
``recover`` accepts entries from ``release_pos`` while each one's seal matches and stops at the
first that does not. Sealing the position in means an old lap's entry at the same offset never
passes for a new one. The seal is written by ``publish`` (one CRC32C per entry, at ~30 GB/s
plus a call) and checked only by ``recover``: between processes of a running daemon the page
cache is coherent and a published entry is always whole.

Positions (``write_pos``, ``release_pos``, the consumer's cursor, an entry's ``end_pos``) are
monotonic byte counts since the ring was created; the offset in the data area is
``pos % capacity``. An entry never straddles the end: when it does not fit before the end the
producer writes a wrap marker and the entry starts at offset 0, and the skipped bytes belong to
that entry (its ``end_pos`` covers them, so releasing it frees them). The producer writes a
wrap marker only together with the entry that follows it, so a consumer never waits on a bare
marker. An entry's padded size is limited to half the capacity: the skipped bytes are always
fewer than the entry's own size, so an entry that may wrap still fits once the ring has drained
(with the whole capacity allowed, a big entry behind a wrap could never fit: a deadlock).

Commit on ack: the consumer's cursor is process-local and starts at ``release_pos``. Reading
moves only the cursor; the producer may reuse space only once the consumer ``release``\\ s it.
A consumer that dies without releasing is replaced by one that starts again at
``release_pos`` and so re-reads exactly the entries that were never released.

Batching: the producer stages any number of entries and makes them visible with one store of
``write_pos`` in ``publish``; the consumer reads everything published with one load of it and
frees space with one store of ``release_pos``. Wake-ups follow the protocol in ``wakeup``: a
side rings the other's doorbell only when the other announced it is asleep.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from crc32c import crc32c

from daemon.ring.ordering import ordering_of
from daemon.ring.region import EntryTooLargeError, Ring, RingError, RingLabels
from daemon.ring.wakeup import DEFAULT_BACKSTOP_S, RingWakeups, Sleeper, WaitHooks, Watch

__all__ = [
    "WRAP_MARKER",
    "Recovery",
    "RingConsumer",
    "RingProducer",
    "entry_size",
    "max_payload",
    "recover",
    "sealed_entries",
]

WRAP_MARKER = 0xFFFFFFFF
# An entry's head: its u32 length and u32 seal; the payload starts 8-aligned after it.
_LENGTH_SIZE = 8
_SEAL_PREFIX = struct.Struct("<QI")  # what the seal covers before the payload: position, length
_UNLIMITED = 1 << 62  # stands for "no limit" in read_entries's countdowns


def entry_size(payload_len: int) -> int:
    """Bytes an entry of ``payload_len`` takes in the data area, length and padding included."""
    return (_LENGTH_SIZE + payload_len + 7) & ~7


def max_payload(capacity: int) -> int:
    """The largest payload a ring of ``capacity`` accepts (see the module docstring: half)."""
    return ((capacity // 2) & ~7) - _LENGTH_SIZE


def _seal(pos: int, payload) -> int:
    return crc32c(payload, crc32c(_SEAL_PREFIX.pack(pos, len(payload))))


class RingProducer:
    """The producing end. One per ring at a time; owns ``write_pos`` and ``producer_wake_at``.

    Nothing written is visible to the consumer until ``publish`` (``write_many`` publishes
    itself). Used from one thread. Counters are plain attributes for the process layer to
    export. A replacement producer starts at the published ``write_pos``: entries a dead
    predecessor staged but never published are gone (they were never accepted).
    """

    def __init__(
        self, ring: Ring, wakeups: RingWakeups, *, backstop_s: float = DEFAULT_BACKSTOP_S
    ) -> None:
        self._ring = ring
        self._cap = ring.capacity
        self._data = ring.data
        self._words = ring.words
        self._bell = wakeups.data
        self._sleeper = Sleeper(wakeups.space, backstop_s)
        self.max_entry_bytes = max_payload(ring.capacity)
        # A predecessor killed while asleep left its flag set: clear it, we own it now.
        ring.producer_wake_at = 0
        self._published = ring.write_pos
        self._pos = self._published  # staged entries end here; >= _published
        # (data offset, position, length) of each staged entry, sealed by publish().
        self._unsealed: list[tuple[int, int, int]] = []
        # Writes ending at or below _limit fit without loading release_pos again.
        self._limit = ring.release_pos + self._cap
        # The consumer_wake_at value last rung for. One ring per value is enough: the eventfd
        # keeps its count until the sleeper drains it, and once rung the sleeper's condition
        # stays true (positions only grow), so ringing again for the same sleep is a wasted
        # syscall. Without this a slow-waking consumer costs a ring per publish.
        self._rung_for = 0
        self.entries_written = 0
        self.bytes_written = 0  # payload bytes
        self.publishes = 0
        self.wraps = 0
        self.wakeups_sent = 0

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def staged_end(self) -> int:
        """Where the entries staged so far end: the position ``publish`` will store as
        ``write_pos`` (an entry is published once ``write_pos`` reaches its end)."""
        return self._pos

    @property
    def published_end(self) -> int:
        """The ``write_pos`` this producer published last (or found, if it published none)."""
        return self._published

    @property
    def sleeps(self) -> int:
        return self._sleeper.sleeps

    @property
    def missed_wakeups(self) -> int:
        return self._sleeper.missed_wakeups

    def used_bytes(self) -> int:
        """Bytes staged or published and not yet released by the consumer."""
        return self._pos - self._ring.release_pos

    def free_bytes(self) -> int:
        """Free bytes in total; an entry may still not fit if they straddle the end."""
        return self._cap - self.used_bytes()

    # -- writing ---------------------------------------------------------------------------

    def unreleased_entries(self) -> Iterator[memoryview]:
        """The payloads published and not yet released by the consumer, in ring order: what
        an earlier producer of this ring handed over (read before writing anything). Views
        into the mapping, valid until this producer writes over them."""
        return sealed_entries(self._ring)

    def reserve(self, nbytes: int) -> memoryview | None:
        """Stage an entry of ``nbytes`` and return its payload area to fill, or None if full.

        The view must be filled before ``publish`` and dropped soon after: it keeps the
        mapping alive (``Ring.close`` fails while it exists).
        """
        size = self._checked_size(nbytes)
        offset = self._claim(size)
        if offset < 0:
            return None
        self._words[offset >> 2] = nbytes
        self._unsealed.append((offset, self._pos - size, nbytes))
        self.entries_written += 1
        self.bytes_written += nbytes
        return self._data[offset + _LENGTH_SIZE : offset + _LENGTH_SIZE + nbytes]

    def write(self, payload: bytes | bytearray | memoryview) -> bool:
        """Stage one entry (a copy of ``payload``); False if the ring has no room for it."""
        n = len(payload)
        size = self._checked_size(n)
        offset = self._claim(size)
        if offset < 0:
            return False
        self._words[offset >> 2] = n
        self._data[offset + _LENGTH_SIZE : offset + _LENGTH_SIZE + n] = payload
        self._unsealed.append((offset, self._pos - size, n))
        self.entries_written += 1
        self.bytes_written += n
        return True

    def write_parts(self, head: bytes, body: bytes | memoryview) -> bool:
        """Stage one entry whose payload is ``head`` then ``body`` (copied in place, never
        joined first) and seal it now; False if the ring has no room for it. The per-frame
        path of ingest: one call, no view to fill and drop, nothing left to seal."""
        split = len(head)
        n = split + len(body)
        size = self._checked_size(n)
        offset = self._claim(size)
        if offset < 0:
            return False
        start = offset + _LENGTH_SIZE
        data, words = self._data, self._words
        data[start : start + split] = head
        data[start + split : start + n] = body
        words[offset >> 2] = n
        seal = crc32c(head, crc32c(_SEAL_PREFIX.pack(self._pos - size, n)))
        words[(offset >> 2) + 1] = crc32c(body, seal)
        self.entries_written += 1
        self.bytes_written += n
        return True

    def write_many(self, payloads: Sequence[bytes | bytearray | memoryview]) -> int:
        """Stage the longest prefix of ``payloads`` that fits, publish, return how many.

        All sizes are checked first, so an oversize entry raises before anything is staged.
        """
        if payloads and max(map(len, payloads)) > self.max_entry_bytes:
            raise self._too_large(max(map(len, payloads)))
        data, words, claim = self._data, self._words, self._claim
        count = nbytes = 0
        for payload in payloads:
            n = len(payload)
            size = (_LENGTH_SIZE + n + 7) & ~7
            offset = claim(size)
            if offset < 0:
                break
            words[offset >> 2] = n
            words[(offset >> 2) + 1] = _seal(self._pos - size, payload)
            data[offset + _LENGTH_SIZE : offset + _LENGTH_SIZE + n] = payload
            count += 1
            nbytes += n
        self.entries_written += count
        self.bytes_written += nbytes
        self.publish()
        return count

    def publish(self) -> None:
        """Make every staged entry visible with one store, and wake the consumer if asleep.

        Ordering: the entries' bytes are stored before ``write_pos``, and the consumer loads
        ``write_pos`` before reading them. x86-64 (TSO) keeps stores in program order as seen
        by other cores and does not reorder a load with a later load, so this is a correct
        release/acquire pair as written. arm64 does not promise that without a barrier, which
        pure Python cannot emit: see the note in ``daemon/ring/__init__.py``.
        """
        pos = self._pos
        if pos == self._published:
            return
        if self._unsealed:
            self._seal_staged()
        self._ring.write_pos = pos
        self._published = pos
        self.publishes += 1
        wake_at = self._ring.consumer_wake_at
        if wake_at and pos >= wake_at and wake_at != self._rung_for:
            self._bell.ring()
            self._rung_for = wake_at
            self.wakeups_sent += 1

    def sync(self) -> None:
        """Write the ring file's dirty pages to the disk (blocking; see ``Ring.sync``)."""
        self._ring.sync()

    def _seal_staged(self) -> None:
        """Seal the entries staged with ``reserve``/``write``: their payloads are final now."""
        data, words = self._data, self._words
        for offset, pos, n in self._unsealed:
            start = offset + _LENGTH_SIZE
            words[(offset >> 2) + 1] = _seal(pos, data[start : start + n])
        self._unsealed.clear()

    # -- waiting for space -----------------------------------------------------------------

    def wait_writable_blocking(self, nbytes: int, timeout: float | None = None) -> bool:
        """Publish, then block until an entry of ``nbytes`` fits; False on ``timeout``."""
        need = self._prepare_wait(nbytes)
        return self._sleeper.block(*self._wait_callbacks(need), timeout)

    async def wait_writable(
        self,
        nbytes: int,
        timeout: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> bool:
        """``wait_writable_blocking`` for asyncio (the loop watches the eventfd)."""
        need = self._prepare_wait(nbytes)
        return await self._sleeper.block_async(*self._wait_callbacks(need), timeout, loop)

    def _prepare_wait(self, nbytes: int) -> int:
        # Publish first: a producer asleep on staged entries would wait for a consumer that is
        # itself asleep waiting for them.
        size = self._checked_size(nbytes)
        self.publish()
        offset = self._pos % self._cap
        skip = self._cap - offset if offset + size > self._cap else 0
        return self._pos + skip + size - self._cap  # the release_pos that makes room

    def _wait_callbacks(self, need: int) -> WaitHooks:
        ring = self._ring

        def ready() -> bool:
            return ring.release_pos >= need

        def announce() -> None:
            ring.producer_wake_at = need  # > release_pos >= 0 here, so never 0 ("awake")

        def retract() -> None:
            ring.producer_wake_at = 0

        return ready, announce, retract

    # -- space accounting ------------------------------------------------------------------

    def _checked_size(self, nbytes: int) -> int:
        if not 0 <= nbytes <= self.max_entry_bytes:
            raise self._too_large(nbytes)
        return (_LENGTH_SIZE + nbytes + 7) & ~7

    def _too_large(self, nbytes: int) -> EntryTooLargeError:
        return EntryTooLargeError(
            f"entry of {nbytes} bytes can never fit ring {self._ring.name!r}: at most "
            f"{self.max_entry_bytes} (half of capacity {self._cap}, less the length word)"
        )

    def _claim(self, size: int) -> int:
        """Claim ``size`` bytes at the staged end, wrapping if needed; data offset or -1."""
        pos = self._pos
        offset = pos % self._cap
        skip = self._cap - offset if offset + size > self._cap else 0
        end = pos + skip + size
        if end > self._limit:
            self._limit = self._ring.release_pos + self._cap
            if end > self._limit:
                return -1
        if skip:
            self._words[offset >> 2] = WRAP_MARKER
            self.wraps += 1
            offset = 0
        self._pos = end
        return offset


class RingConsumer:
    """The consuming end. One per ring at a time; owns ``release_pos`` and
    ``consumer_wake_at``, and a process-local read cursor.

    Views returned by ``read_entries`` point into shared memory: they stay valid until their
    entry is released (after that the producer may overwrite the bytes) and they keep the
    mapping alive. Copy what must outlive the release. Used from one thread.
    """

    def __init__(
        self, ring: Ring, wakeups: RingWakeups, *, backstop_s: float = DEFAULT_BACKSTOP_S
    ) -> None:
        self._ring = ring
        self._cap = ring.capacity
        self._data = ring.data
        self._words = ring.words
        self._bell = wakeups.space
        self._doorbell = wakeups.data
        self._sleeper = Sleeper(wakeups.data, backstop_s)
        self._backstop = backstop_s
        self._watch: Watch | None = None
        self._max_payload = max_payload(ring.capacity)
        ring.consumer_wake_at = 0  # a predecessor killed while asleep left it set
        # Crash replay: start at the release point, so whatever a dead predecessor read but
        # never released is read again.
        self._released = ring.release_pos
        self._cursor = self._released
        self._rung_for = 0  # the producer_wake_at value last rung for; see RingProducer
        self.entries_read = 0
        self.bytes_read = 0  # payload bytes
        self.releases = 0
        self.wakeups_sent = 0

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def cursor(self) -> int:
        """The position after the last entry read: release up to here to free everything."""
        return self._cursor

    @property
    def sleeps(self) -> int:
        watch = self._watch
        return self._sleeper.sleeps + (watch.sleeps if watch is not None else 0)

    @property
    def missed_wakeups(self) -> int:
        watch = self._watch
        return self._sleeper.missed_wakeups + (watch.missed_wakeups if watch is not None else 0)

    @property
    def labels(self) -> RingLabels:
        """What the ring's creator wrote about it (``region.RingLabels``)."""
        return self._ring.labels

    def seal_of(self, end_pos: int, payload_len: int) -> int:
        """The seal of the entry read as ``(end_pos, payload of payload_len bytes)``: its
        CRC32C with its position, so it names that entry among all a ring file ever held
        (a worker's done journal keys its runs with it). Valid until the entry is released.
        The entry starts ``entry_size`` before its end, a wrap's skipped bytes being before it.
        """
        offset = (end_pos - ((_LENGTH_SIZE + payload_len + 7) & ~7)) % self._cap
        return self._words[(offset >> 2) + 1]

    def pending_bytes(self) -> int:
        """Bytes published and not yet read."""
        return self._ring.write_pos - self._cursor

    def held_bytes(self) -> int:
        """Bytes read and not yet released: the records in flight to Kafka."""
        return self._cursor - self._released

    def used_bytes(self) -> int:
        return self._ring.write_pos - self._released

    # -- reading and releasing -------------------------------------------------------------

    def read_entries(
        self, max_entries: int | None = None, max_bytes: int | None = None
    ) -> list[tuple[int, memoryview]]:
        """Read published entries after the cursor: ``[(end_pos, payload view), ...]``.

        Stops at ``max_entries`` entries or before ``max_bytes`` payload bytes would be
        exceeded, but returns at least one entry if any is published. ``end_pos`` is what to
        pass to ``release`` once the entry is done with.
        """
        limit = self._ring.write_pos  # one load per batch; see RingProducer.publish
        left = _UNLIMITED if max_entries is None else max_entries
        budget = _UNLIMITED if max_bytes is None else max_bytes
        cap, words, data = self._cap, self._words, self._data
        pos, got = self._cursor, 0
        out: list[tuple[int, memoryview]] = []
        while pos < limit and left > 0:
            offset = pos % cap
            n = words[offset >> 2]
            if n == WRAP_MARKER:
                pos += cap - offset
                continue
            if n > budget and out:
                break
            end = pos + ((_LENGTH_SIZE + n + 7) & ~7)
            if n > self._max_payload or end > limit:
                raise self._corrupt(pos, n, limit)
            out.append((end, data[offset + _LENGTH_SIZE : offset + _LENGTH_SIZE + n]))
            pos = end
            left -= 1
            budget -= n
            got += n
        self._cursor = pos
        self.entries_read += len(out)
        self.bytes_read += got
        return out

    def rewind(self) -> None:
        """Read again from the release point: what was read and not released comes again
        (a worker that looked at what its predecessor left before taking it)."""
        self._cursor = self._released

    def release(self, pos: int) -> None:
        """Free everything before ``pos`` (an ``end_pos`` from ``read_entries``) for reuse.

        Monotonic: releasing an earlier position than before is an error, releasing the same
        one again does nothing. Wakes the producer if it sleeps for space this release makes.
        """
        if pos == self._released:
            return
        if not self._released < pos <= self._cursor:
            raise RingError(
                f"ring {self._ring.name!r}: release({pos}) outside the read span "
                f"({self._released}, {self._cursor}]"
            )
        self._ring.release_pos = pos
        self._released = pos
        self.releases += 1
        wake_at = self._ring.producer_wake_at
        if wake_at and pos >= wake_at and wake_at != self._rung_for:
            self._bell.ring()
            self._rung_for = wake_at
            self.wakeups_sent += 1

    # -- waiting for data ------------------------------------------------------------------

    def wait_readable_blocking(self, timeout: float | None = None) -> bool:
        """Block until an unread entry is published; False on ``timeout``."""
        return self._sleeper.block(*self._wait_callbacks(), timeout)

    async def wait_readable(
        self, timeout: float | None = None, loop: asyncio.AbstractEventLoop | None = None
    ) -> bool:
        """``wait_readable_blocking`` for asyncio (the loop watches the eventfd)."""
        return await self._sleeper.block_async(*self._wait_callbacks(), timeout, loop)

    def watch(self, loop: asyncio.AbstractEventLoop, on_readable: Callable[[], None]) -> None:
        """Have ``loop`` watch the data doorbell from now on (``wakeup.Watch``): after
        ``sleep_until_readable`` returned False, ``on_readable`` is called once, from the
        loop, when an unread entry is published. The backstop timer is kept only where the
        lost wake-up race is real: without the accelerator's seq_cst words."""
        if self._watch is not None:
            raise RuntimeError(f"ring {self._ring.name!r} is watched already")
        backstop = None if ordering_of() == "C11 atomics" else self._backstop
        self._watch = Watch(self._doorbell, loop, on_readable, backstop)

    def sleep_until_readable(self, min_bytes: int = 1) -> bool:
        """True if at least ``min_bytes`` of unread entries are published now; else False,
        and the watch's callback comes once they are (announced to the producer: it rings
        only for a sleeper, and only once that much is published)."""
        return self._watch.arm(self._wait_callbacks(min_bytes))

    def wake_watch(self) -> None:
        """Stop sleeping on the watch without its callback (the owner woke for another
        reason, e.g. it is stopping). Nothing happens if it was not asleep."""
        if self._watch is not None:
            self._watch.disarm()

    def unwatch(self) -> None:
        watch = self._watch
        if watch is not None:
            watch.close()
            self._watch = None
            # Keep the counts: they are the ring end's, not the watch's.
            self._sleeper.sleeps += watch.sleeps
            self._sleeper.missed_wakeups += watch.missed_wakeups

    def _wait_callbacks(self, min_bytes: int = 1) -> WaitHooks:
        ring, wake_at = self._ring, self._cursor + min_bytes

        def ready() -> bool:
            return ring.write_pos >= wake_at

        def announce() -> None:
            ring.consumer_wake_at = wake_at

        def retract() -> None:
            ring.consumer_wake_at = 0

        return ready, announce, retract

    def _corrupt(self, pos: int, n: int, limit: int) -> RingError:
        return RingError(
            f"ring {self._ring.name!r}: corrupt entry at position {pos}: length {n} "
            f"(max {self._max_payload}) runs past the published end {limit}"
        )


# ---- after a restart ----------------------------------------------------------------------


class Recovery(NamedTuple):
    """What ``recover`` found between ``release_pos`` and ``write_pos`` of a ring file."""

    entries: int  # sealed entries kept, to be read again
    bytes: int  # ring bytes they take (release_pos .. the new write_pos)
    dropped_bytes: int  # bytes after the first entry whose seal did not match (0: none)
    problem: str  # why the scan stopped early ("" when it did not)


def recover(ring: Ring) -> Recovery:
    """Check a ring file left by a previous daemon and cut it at its first torn entry.

    Call it with no producer or consumer attached. Raises RingError when the header's
    positions cannot describe this ring at all (the file is then not adoptable). Otherwise
    every entry from ``release_pos`` on is checked (length in bounds, seal) and ``write_pos``
    is lowered to the end of the last good one, so nothing torn is ever read.
    """
    start, end = ring.release_pos, ring.write_pos
    good, stop, problem = _good_entries(ring)
    if problem:
        ring.write_pos = stop
    return Recovery(len(good), stop - start, end - stop, problem)


def sealed_entries(ring: Ring) -> Iterator[memoryview]:
    """The payloads of the good entries from ``release_pos`` on, in ring order (``recover``
    says where they stop). Views into the mapping: copy what must outlive it."""
    data = ring.data
    for offset, n in _good_entries(ring)[0]:
        yield data[offset + _LENGTH_SIZE : offset + _LENGTH_SIZE + n]


def _good_entries(ring: Ring) -> tuple[list[tuple[int, int]], int, str]:
    """``([(data offset, length)] of the good entries, the position after the last good one,
    why the walk stopped before write_pos or "")``."""
    start, end, cap = ring.release_pos, ring.write_pos, ring.capacity
    if start % 8 or end % 8 or not start <= end <= start + cap:
        raise RingError(
            f"ring {ring.path}: positions release {start}, write {end} do not fit a ring of "
            f"{cap} bytes"
        )
    words, data, largest = ring.words, ring.data, max_payload(cap)
    good: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        offset = pos % cap
        n = words[offset >> 2]
        if n == WRAP_MARKER:
            # Only the seal of the entry at offset 0 can vouch for the skip: if it fails, the
            # walk stops at this marker's position and the skip is dropped with it.
            skip_to = pos + cap - offset
            offset, n, entry_pos = 0, words[0], skip_to
        else:
            entry_pos = pos
        entry_end = entry_pos + ((_LENGTH_SIZE + n + 7) & ~7)
        if n > largest or entry_end > end or offset + _LENGTH_SIZE + n > cap:
            return good, pos, f"entry at position {entry_pos}: length {n} does not fit"
        payload = data[offset + _LENGTH_SIZE : offset + _LENGTH_SIZE + n]
        if words[(offset >> 2) + 1] != _seal(entry_pos, payload):
            return good, pos, f"entry at position {entry_pos}: seal does not match (torn write)"
        good.append((offset, n))
        pos = entry_end
    return good, pos, ""
