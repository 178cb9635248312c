"""rings.fsync for the dedupe journals beside the ring files: synced with the rings by the same
rule, and with ``always`` an answer held by ``after_sync`` goes only once the journal's lines
written before it are on the disk."""

from __future__ import annotations

import asyncio
import os

from daemon.ingest.dedupe import DedupeJournal
from daemon.ingest.ring_sync import RingSync
from tests.waiting import wait_for_async


def _journal(path) -> DedupeJournal:
    return DedupeJournal(str(path), window_records=1000, idle_expiry_s=60.0)


def test_without_always_an_answer_goes_at_once(tmp_path):
    async def scenario():
        sync = RingSync("never", [])
        journal = _journal(tmp_path / "j")
        sync.watch(journal)
        journal.taken("k", 0, 1)
        said = []
        sync.after_sync(lambda: said.append(1))
        return said

    assert asyncio.run(scenario()) == [1]


def test_with_always_an_answer_waits_for_the_journal_sync(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    path = str(tmp_path / "j")

    async def scenario():
        sync = RingSync("always", [])
        journal = _journal(path)
        sync.watch(journal)
        said = []
        sync.after_sync(lambda: said.append("clean"))  # nothing written waits: at once
        journal.taken("k", 0, 1)
        sync.after_sync(lambda: said.append(list(synced)))
        assert said == ["clean"]
        await wait_for_async(lambda: len(said) == 2, what="the held answer")
        await sync.close()
        return said

    said = asyncio.run(scenario())
    assert said == ["clean", [path]]  # the journal was synced before the answer went
