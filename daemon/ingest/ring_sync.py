"""When the records rings' files reach the disk: ``rings.fsync``, owned by ingest.

Ingest is the producing end of every records ring, so it decides when what it published is
synced (``fdatasync`` of the ring file, in a worker thread so the event loop keeps serving):

* ``never``: the kernel writes the pages back when it likes. ``ACCEPTED`` is said once the
  entry is published: it survives any crash of kpd's processes (the page cache holds it), not
  a crash of the machine.
* an interval (ms): every interval, the rings published to since the last sync are synced.
  A crash of the machine loses at most about one interval of accepted records.
* ``always``: ``ACCEPTED`` is said only after a sync that began after the entry was published
  (group commit: while one sync runs, publishes gather for the next, so a sync covers many
  frames of many clients).

The dedupe journals beside the ring files (``dedupe.DedupeJournal``: the protocol v2
sessions', the Kafka listener's producers') follow the same rule (``watch``): a sync covers
their lines written before it began, so with ``always`` a line written before an answer is
held is on the disk before the answer goes, and ``after_sync`` holds any other answer (the
Kafka listener's acks=all outcomes) until the lines written before it are synced.

What a sync covers is whatever the file holds when it runs; entries torn by a crash during or
between syncs are cut by the next start's ``recover`` (their seals do not match), so no policy
ever produces a torn entry: the policy only decides how much of what was accepted survives.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable

from daemon.ingest.dedupe import DedupeJournal
from daemon.ring import RingProducer

__all__ = ["RingSync"]

log = logging.getLogger(__name__)

Announce = Callable[[], None]  # sends one ACCEPTED report to its client


class RingSync:
    """Owned by ingest's event loop. ``published`` after every publish with the rings it
    published to and the ACCEPTED announcements those entries allow."""

    def __init__(self, policy: str | int, rings: list[RingProducer]) -> None:
        self.policy = policy
        self._rings = rings
        self._journals: list[DedupeJournal] = []  # synced with the rings (``watch``)
        self._dirty: set[int] = set()  # rings published to since the last sync began
        self._waiting: list[Announce] = []  # announcements held for the next sync (always)
        self._running: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self.syncs = 0

    def start(self) -> None:
        if isinstance(self.policy, int):
            self._ticker = asyncio.get_running_loop().create_task(self._every(self.policy))

    def watch(self, journal: DedupeJournal) -> None:
        """Sync ``journal`` with the rings, by the same policy."""
        self._journals.append(journal)

    def after_sync(self, call: Announce) -> None:
        """Call ``call`` once what was written so far is synced (``always``; at once
        otherwise, or when nothing written waits for a sync)."""
        if self.policy != "always" or (
            self._running is None and not self._dirty and not self._dirty_journals()
        ):
            call()
            return
        self._waiting.append(call)
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._group_commit())

    def _dirty_journals(self) -> bool:
        return any(journal.dirty for journal in self._journals)

    def published(self, ring_indices: Iterable[int], announce: list[Announce]) -> None:
        if self.policy == "never":
            for call in announce:
                call()
            return
        self._dirty.update(ring_indices)
        if self.policy != "always":
            for call in announce:
                call()
            return
        self._waiting.extend(announce)
        if self._running is None and (self._dirty or self._waiting):
            self._running = asyncio.get_running_loop().create_task(self._group_commit())

    async def close(self) -> None:
        """Sync what is still dirty and send what waits for it (at the end of a drain)."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._running is not None:
            await self._running
        if self.policy != "never" and (self._dirty or self._dirty_journals()):
            await self._sync_dirty()

    async def _group_commit(self) -> None:
        try:
            while self._dirty or self._waiting:
                waiting, self._waiting = self._waiting, []
                await self._sync_dirty()
                for call in waiting:
                    call()
        finally:
            self._running = None

    async def _every(self, interval_ms: int) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            if self._dirty or self._dirty_journals():
                await self._sync_dirty()

    async def _sync_dirty(self) -> None:
        rings = [self._rings[i] for i in sorted(self._dirty)]
        self._dirty.clear()
        # Duplicates of the journals' descriptors, taken on the loop: a compaction may close
        # and replace a journal's own descriptor while the thread syncs.
        files = [fd for fd in (journal.sync_fd() for journal in self._journals) if fd is not None]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, _sync_all, rings, files)
        except OSError:
            # The disk refused (EIO, ENOSPC on some file systems): the entries are still in
            # the page cache and reach Kafka as usual; only their power-loss safety is gone.
            log.exception("rings.fsync: syncing the ring files failed")
        self.syncs += 1


def _sync_all(rings: list[RingProducer], files: list[int]) -> None:
    try:
        for ring in rings:
            ring.sync()
        for fd in files:
            os.fdatasync(fd)
    finally:
        for fd in files:
            os.close(fd)
