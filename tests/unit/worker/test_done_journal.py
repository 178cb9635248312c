"""The done journal (daemon/worker/done_journal.py): its slot bytes, what a successor reads
back after a kill at any point, compaction, and journals it must never read."""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c

from daemon.worker.done_journal import (
    DONE_LAYOUT_VERSION,
    HEADER_SIZE,
    INITIAL_SLOTS,
    SLOT_SIZE,
    DoneJournal,
    DoneRun,
    decode_slot,
    encode_slot,
    journal_path,
    live_runs,
)

RING_LAYOUT, ENTRY_FORMAT = 3, 2


def _run(end_pos: int, first: int = 0, count: int = 10, base_offset: int = 100) -> DoneRun:
    return DoneRun(end_pos, 0xABCD0000 + end_pos, first, count, 0, base_offset, -1, 0, 0)


def _open(path, release_pos: int = 0, layout: int = RING_LAYOUT, fmt: int = ENTRY_FORMAT):
    return DoneJournal.open(
        str(path), release_pos=release_pos, ring_layout=layout, entry_format=fmt
    )


def test_a_slot_is_its_fields_little_endian_then_the_crc32c_of_them():
    run = DoneRun(0x0102030405060708, 0xDEADBEEF, 7, 3, -5, 1234, -1, 1, 2)
    body = (
        struct.pack("<Q", 0x0102030405060708)  # end_pos
        + struct.pack("<I", 0xDEADBEEF)  # the entry's seal
        + struct.pack("<I", 7)  # first index
        + struct.pack("<I", 3)  # count
        + struct.pack("<i", -5)  # code
        + struct.pack("<q", 1234)  # base offset
        + struct.pack("<q", -1)  # timestamp
        + bytes([1, 2, 0, 0])  # failed, persistence, 2 pad bytes
    )
    assert encode_slot(run) == body + struct.pack("<I", crc32c(body))
    assert SLOT_SIZE == len(body) + 4 == 48
    assert decode_slot(encode_slot(run)) == run


def test_a_torn_slot_is_never_read_as_a_run():
    slot = bytearray(encode_slot(_run(4096)))
    slot[13] ^= 0x40  # a kill mid-copy: half the old slot, half the new one
    assert decode_slot(slot) is None
    assert decode_slot(bytes(SLOT_SIZE)) is None  # never written: zeros fail the seal too


def test_live_runs_are_those_after_the_release_point_each_once():
    a, b, c = _run(100), _run(200), _run(300, first=10)
    assert live_runs([a, b, c, b], release_pos=100) == [b, c]


def test_a_successor_reads_every_committed_run_and_no_staged_one(tmp_path):
    path = tmp_path / "kpd-records-0.done"
    journal, adopted = _open(path)
    assert adopted == []
    journal.add(_run(64))
    journal.add(_run(64, first=10, count=5))
    journal.commit()
    journal.add(_run(128))  # staged: the worker was killed before commit
    # kill -9: nothing closed, the mapping's stores are the file's pages
    _, adopted = _open(path)
    assert adopted == [_run(64), _run(64, first=10, count=5)]


def test_runs_of_released_entries_are_not_adopted_and_are_dropped_from_the_file(tmp_path):
    path = tmp_path / "j.done"
    journal, _ = _open(path)
    for end in (64, 128, 192):
        journal.add(_run(end))
    journal.commit()
    _, adopted = _open(path, release_pos=128)
    assert adopted == [_run(192)]
    journal, adopted = _open(path, release_pos=128)  # the rewrite kept only the live one
    assert adopted == [_run(192)] and len(journal) == 1


def test_when_every_run_is_released_the_slots_are_reused(tmp_path):
    path = tmp_path / "j.done"
    journal, _ = _open(path)
    journal.add(_run(64))
    journal.add(_run(128))
    journal.commit()
    journal.released(64)
    assert len(journal) == 2  # 128 is still live
    journal.released(128)
    assert len(journal) == 0
    assert _open(path)[1] == []


def test_a_full_journal_is_compacted_keeping_every_live_run(tmp_path):
    path = tmp_path / "j.done"
    journal, _ = _open(path)
    runs = [_run(end * 8, count=1) for end in range(1, INITIAL_SLOTS + 1)]
    for run in runs:
        journal.add(run)
    journal.commit()
    journal.released(600 * 8)  # an older entry still in flight held the rest back
    assert len(journal) == INITIAL_SLOTS  # nothing is rewritten until room is needed
    journal.add(_run(INITIAL_SLOTS * 8 + 8))  # full: compaction makes room
    journal.commit()
    assert journal.compactions == 1 and journal.growths == 0
    _, adopted = _open(path, release_pos=600 * 8)
    assert adopted == [*runs[600:], _run(INITIAL_SLOTS * 8 + 8)]


def test_a_journal_more_than_half_live_grows_instead(tmp_path):
    path = tmp_path / "j.done"
    journal, _ = _open(path)
    for end in range(1, INITIAL_SLOTS + 2):
        journal.add(_run(end * 8, count=1))
    journal.commit()
    assert journal.growths == 1 and journal.compactions == 0
    assert len(_open(path)[1]) == INITIAL_SLOTS + 1


def test_a_kill_mid_compaction_loses_no_live_run(tmp_path):
    # What the file can hold after a kill during a compaction: a live run copied forward
    # (now twice), a slot torn by the copy, the old count. The successor reads each live
    # run once and nothing torn.
    path = tmp_path / "j.done"
    journal, _ = _open(path)
    runs = [_run(64), _run(128), _run(192), _run(256)]
    for run in runs:
        journal.add(run)
    journal.commit()
    journal.close()
    with open(path, "r+b") as raw:
        raw.seek(HEADER_SIZE)  # slot 0 (dead, 64) overwritten by a copy of slot 2 (192)
        raw.write(encode_slot(runs[2]))
        torn = bytearray(encode_slot(runs[3]))
        torn[30:] = encode_slot(runs[1])[30:]  # slot 1 (128) half overwritten by slot 3
        raw.write(bytes(torn))
    _, adopted = _open(path, release_pos=128)
    assert sorted(adopted) == [runs[2], runs[3]]


@pytest.mark.parametrize(
    ("patch_at", "value", "why"),
    [
        (0, b"KPDRING\0", "bad magic"),
        (8, struct.pack("<I", DONE_LAYOUT_VERSION + 1), "layout version"),
        (12, struct.pack("<I", SLOT_SIZE - 8), "layout version"),
        (16, struct.pack("<I", RING_LAYOUT - 1), "ring layout"),
        (20, struct.pack("<I", ENTRY_FORMAT + 1), "entry format"),
    ],
)
def test_a_journal_of_another_layout_is_dropped_never_read(tmp_path, caplog, patch_at, value, why):
    path = tmp_path / "j.done"
    journal, _ = _open(path)
    journal.add(_run(64))
    journal.commit()
    journal.close()
    with open(path, "r+b") as raw:
        raw.seek(patch_at)
        raw.write(value)
    journal, adopted = _open(path)
    assert adopted == []  # its records are produced again: never skipped on its word
    assert why in caplog.text
    journal.add(_run(64))
    journal.commit()
    assert _open(path)[1] == [_run(64)]  # made anew in this build's layout


def test_a_truncated_or_half_made_journal_is_dropped(tmp_path):
    path = tmp_path / "j.done"
    path.write_bytes(b"KPDD")
    assert _open(path)[1] == []
    path.write_bytes(bytes(HEADER_SIZE + SLOT_SIZE))  # the creator died before the magic
    assert _open(path)[1] == []


def test_the_journal_lives_beside_its_ring():
    assert journal_path("/var/lib/kpd/kpd-records-3") == "/var/lib/kpd/kpd-records-3.done"
