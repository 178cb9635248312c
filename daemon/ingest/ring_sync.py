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

What a sync covers is whatever the file holds when it runs; entries torn by a crash during or
between syncs are cut by the next start's ``recover`` (their seals do not match), so no policy
ever produces a torn entry: the policy only decides how much of what was accepted survives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

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
        self._dirty: set[int] = set()  # rings published to since the last sync began
        self._waiting: list[Announce] = []  # announcements held for the next sync (always)
        self._running: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self.syncs = 0

    def start(self) -> None:
        if isinstance(self.policy, int):
            self._ticker = asyncio.get_running_loop().create_task(self._every(self.policy))

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
        if self.policy != "never" and self._dirty:
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
            if self._dirty:
                await self._sync_dirty()

    async def _sync_dirty(self) -> None:
        rings = [self._rings[i] for i in sorted(self._dirty)]
        self._dirty.clear()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, _sync_all, rings)
        except OSError:
            # The disk refused (EIO, ENOSPC on some file systems): the entries are still in
            # the page cache and reach Kafka as usual; only their power-loss safety is gone.
            log.exception("rings.fsync: syncing the ring files failed")
        self.syncs += 1


def _sync_all(rings: list[RingProducer]) -> None:
    for ring in rings:
        ring.sync()
