"""Ring files a previous daemon left: recovery of torn tails, adoption, re-routing, moving aside.

Real ring files in a temporary directory, written through the rings' own producer (as ingest
writes them) and then damaged with plain file writes, the way a crash of the machine leaves
them: the page with write_pos reached the disk, some data pages did not.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from daemon.ownership import worker_for
from daemon.process.ring_files import prepare_ring_files
from daemon.ring import (
    Ring,
    RingConsumer,
    RingError,
    RingLabels,
    RingProducer,
    RingWakeups,
    recover,
    sealed_entries,
)
from daemon.wire.ring_entry import (
    RECORDS_ENTRY_VERSION,
    decode_records_entry,
    entry_head,
)
from daemon.worker.commit_journal import commit_journal_path, marker_path
from daemon.worker.done_journal import journal_path
from daemon.worker.flight_journal import flight_journal_path

HEADER = 4096
OFF_WRITE_POS = 128
OFF_RELEASE_POS = 384
CAPACITY = 64 * 1024


def records_entry(topic: str, partition: int, seq: int) -> bytes:
    # Every ack level (1 none, 2 accepted, 3 kafka), and every third entry one ingest
    # partitioned itself (a seq_offsets column): re-routing must keep both as they were.
    ack = 1 + seq % 3
    offsets = struct.pack(">I", seq % 5) if seq % 3 == 0 else None
    return entry_head(7, seq, 1, partition, 1000, ack, topic.encode(), offsets) + b"rec-%d" % seq


def write_ring(path: Path, entries: list[bytes], labels=None, capacity=CAPACITY) -> None:
    labels = labels or RingLabels(RECORDS_ENTRY_VERSION, 0, 1)
    ring = Ring.create(path, capacity, labels)
    wakeups = RingWakeups.create()
    producer = RingProducer(ring, wakeups)
    assert producer.write_many(entries) == len(entries)
    del producer
    wakeups.close()
    ring.close()


def u64_at(path: Path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("=Q", f.read(8))[0]


def poke(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def payloads(path: Path) -> list[bytes]:
    ring = Ring.attach(path)
    try:
        return [bytes(p) for p in sealed_entries(ring)]
    finally:
        ring.close()


# -- recover: a torn tail is cut, never read -------------------------------------------------


def test_recover_keeps_every_sealed_entry_of_an_intact_ring(tmp_path):
    path = tmp_path / "r"
    entries = [b"entry-%d" % i * (i + 1) for i in range(50)]
    write_ring(path, entries)
    ring = Ring.attach(path)
    try:
        found = recover(ring)
        assert (found.entries, found.dropped_bytes, found.problem) == (50, 0, "")
    finally:
        ring.close()
    assert payloads(path) == entries


@pytest.mark.parametrize("damage", ["zeroed", "flipped byte", "cut length"])
def test_a_torn_last_entry_is_dropped_and_the_ones_before_it_kept(tmp_path, damage):
    path = tmp_path / "r"
    entries = [b"x" * 100 for _ in range(9)] + [b"last entry" * 10]
    write_ring(path, entries)
    last = HEADER + 9 * 112  # 8-byte head + 100 bytes, padded: 112 per entry
    if damage == "zeroed":  # the data page never reached the disk
        poke(path, last, b"\0" * 120)
    elif damage == "flipped byte":  # half of it did
        poke(path, last + 50, b"?")
    else:  # a garbage length word
        poke(path, last, struct.pack("=I", 0x7FFF0000))
    ring = Ring.attach(path)
    try:
        found = recover(ring)
        assert found.entries == 9
        assert found.dropped_bytes == 112
        assert found.problem
        assert ring.write_pos == 9 * 112  # cut: nobody will ever read the torn bytes
    finally:
        ring.close()
    assert u64_at(path, OFF_WRITE_POS) == 9 * 112
    assert payloads(path) == entries[:9]


def test_an_old_laps_entry_at_the_same_offset_never_passes_for_a_new_one(tmp_path):
    # Lap 1 wrote entries everywhere; lap 2 published one more entry at offset 0 whose data
    # never reached the disk: the bytes there are lap 1's, well formed, sealed for another
    # position. They must not be produced again.
    path = tmp_path / "r"
    capacity = 1024
    ring = Ring.create(path, capacity, RingLabels(RECORDS_ENTRY_VERSION, 0, 1))
    wakeups = RingWakeups.create()
    producer, consumer = RingProducer(ring, wakeups), RingConsumer(ring, wakeups)
    old = b"o" * 120
    while ring.write_pos < capacity:  # fill lap 1 exactly: 8 entries of 128 bytes
        assert producer.write_many([old]) == 1
    batch = consumer.read_entries()
    consumer.release(batch[-1][0])
    del batch, producer, consumer
    wakeups.close()
    ring.close()
    poke(path, OFF_WRITE_POS, struct.pack("=Q", capacity + 128))  # a lap-2 entry "published"
    ring = Ring.attach(path)
    try:
        found = recover(ring)
        assert (found.entries, found.dropped_bytes) == (0, 128)
        assert "seal" in found.problem
    finally:
        ring.close()


def test_positions_that_cannot_describe_the_ring_are_refused_not_read(tmp_path):
    path = tmp_path / "r"
    write_ring(path, [b"a"])
    poke(path, OFF_RELEASE_POS, struct.pack("=Q", 10**6))  # released past what was written
    ring = Ring.attach(path)
    try:
        with pytest.raises(RingError, match="do not fit"):
            recover(ring)
    finally:
        ring.close()


# -- prepare_ring_files: adopt, re-route, move aside ----------------------------------------


def prepare(directory: Path, workers: int, capacity: int = CAPACITY):
    return prepare_ring_files(str(directory), "kpd", workers, capacity, CAPACITY)


def test_adopts_its_own_rings_in_place_and_remakes_the_reports_rings(tmp_path):
    first = prepare(tmp_path, 2)
    entries = [records_entry("t", 0, i) for i in range(5)]
    ring = Ring.attach(first.records[1])
    wakeups = RingWakeups.create()
    producer = RingProducer(ring, wakeups)
    producer.write_many(entries)
    del producer
    ring.close()
    Ring.attach(first.reports[0]).close()
    again = prepare(tmp_path, 2)
    assert again.records == first.records
    assert payloads(Path(again.records[1])) == entries
    assert payloads(Path(again.records[0])) == []
    # u32 length, u32 seal and the payload, padded to 8 bytes
    assert [a["bytes"] for a in again.adopted] == [
        0,
        sum(-(-(8 + len(e)) // 8) * 8 for e in entries),
    ]
    assert again.rerouted == again.moved_aside == []
    assert again.status()["leftovers"] == []
    wakeups.close()


def test_another_worker_count_reroutes_every_entry_by_worker_for(tmp_path):
    old = prepare(tmp_path, 3)
    sent = []
    for index, path in enumerate(old.records):
        entries = [
            records_entry(topic, partition, seq)
            for seq, (topic, partition) in enumerate(
                (t, p) for t in ("a", "b", "c") for p in range(8) if worker_for(t, p, 3) == index
            )
        ]
        ring = Ring.attach(path)
        wakeups = RingWakeups.create()
        RingProducer(ring, wakeups).write_many(entries)
        ring.close()
        wakeups.close()
        sent += entries
    new = prepare(tmp_path, 2)
    assert len(new.records) == 2
    assert not os.path.exists(os.path.join(tmp_path, "kpd-records-2"))
    assert sorted(r["workers"] for r in new.rerouted) == [3, 3, 3]
    got = []
    for index, path in enumerate(new.records):
        ring = Ring.attach(path)
        assert ring.labels == RingLabels(RECORDS_ENTRY_VERSION, index, 2)
        ring.close()
        for payload in payloads(Path(path)):
            entry = decode_records_entry(memoryview(payload))
            assert worker_for(entry.topic, entry.partition, 2) == index
            assert entry.ack == 1 + entry.base_seq % 3
            if entry.base_seq % 3 == 0:
                assert bytes(entry.seq_offsets) == struct.pack(">I", entry.base_seq % 5)
            else:
                assert entry.seq_offsets is None
            assert bytes(entry.records) == b"rec-%d" % entry.base_seq
            got.append(payload)
    assert sorted(got) == sorted(sent)
    assert new.moved_aside == []
    assert not [n for n in os.listdir(tmp_path) if "rerouting" in n]


def test_a_ring_of_another_layout_is_moved_aside_with_a_reason_never_deleted(tmp_path):
    old = prepare(tmp_path, 1)
    path = Path(old.records[0])
    ring = Ring.attach(path)
    wakeups = RingWakeups.create()
    RingProducer(ring, wakeups).write_many([records_entry("t", 0, 1)])
    ring.close()
    wakeups.close()
    poke(path, 8, struct.pack("=I", 99))  # a future layout version
    original = path.read_bytes()
    new = prepare(tmp_path, 1)
    [moved] = new.moved_aside
    aside = Path(moved["path"])
    assert (aside / "kpd-records-0").read_bytes() == original
    assert "layout version 99" in (aside / "README.txt").read_text()
    assert new.status()["leftovers"] == [str(aside)]
    assert payloads(Path(new.records[0])) == []  # a fresh ring took its place


def test_a_done_journal_goes_with_its_ring_and_never_outlives_it(tmp_path):
    # Adopted in place: the journal stays for the ring's worker. Moved aside: it goes along,
    # and the README says what it is. Re-routed, or a ring made anew: it is gone, so no run
    # can name an entry of another ring.
    first = prepare(tmp_path, 2)
    for path in first.records:
        Path(journal_path(path)).write_bytes(b"journal of " + path.encode())
    again = prepare(tmp_path, 2)
    assert [Path(journal_path(p)).exists() for p in again.records] == [True, True]
    poke(Path(again.records[0]), 8, struct.pack("=I", 99))  # ring 0 of a future layout
    aside = prepare(tmp_path, 2)
    [moved] = aside.moved_aside
    assert (Path(moved["path"]) / "kpd-records-0.done").read_bytes().startswith(b"journal of")
    assert (
        "kpd-records-0.done: the records of that ring"
        in (Path(moved["path"]) / "README.txt").read_text()
    )
    assert not Path(journal_path(aside.records[0])).exists()  # its new ring has none
    assert Path(journal_path(aside.records[1])).exists()
    rerouted = prepare(tmp_path, 3)
    assert rerouted.rerouted
    assert not [p for p in rerouted.records if Path(journal_path(p)).exists()]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".done")]


def test_every_journal_beside_a_ring_moved_aside_is_named_in_the_readme(tmp_path):
    # The flight, commit and marker files name entries of the ring they were written beside
    # as the done journal does: they go aside with it, and whoever reads the README learns
    # what each one is.
    first = prepare(tmp_path, 1)
    ring = first.records[0]
    for beside in (journal_path, flight_journal_path, commit_journal_path, marker_path):
        Path(beside(ring)).write_bytes(b"kept")
    prepare(tmp_path, 1)  # adopted in place: they stay
    poke(Path(ring), 8, struct.pack("=I", 99))  # a future layout
    [moved] = prepare(tmp_path, 1).moved_aside
    readme = (Path(moved["path"]) / "README.txt").read_text()
    expected = ((journal_path, "had an outcome"), (flight_journal_path, "in flight"),
                (commit_journal_path, "transaction"), (marker_path, "marker"))  # fmt: skip
    for beside, says in expected:
        name = os.path.basename(beside(ring))
        assert (Path(moved["path"]) / name).read_bytes() == b"kept"
        assert f"{name}: " in readme and says in readme.split(f"{name}: ", 1)[1].split("\n")[0]
        assert not Path(beside(ring)).exists()


def test_entries_of_another_format_version_are_moved_aside(tmp_path):
    path = tmp_path / "kpd-records-0"
    write_ring(path, [b"opaque"], RingLabels(RECORDS_ENTRY_VERSION + 1, 0, 1))
    new = prepare(tmp_path, 1)
    [moved] = new.moved_aside
    assert "records entries of version" in moved["files"][0][1]


def test_entries_that_do_not_fit_the_new_rings_are_moved_aside(tmp_path):
    # Two full rings of 64 KiB re-routed into one: they cannot fit, so nothing is copied.
    entries = [records_entry("t", p, seq) + b"." * 900 for seq, p in enumerate([0] * 60)]
    for index in range(2):
        write_ring(
            tmp_path / f"kpd-records-{index}", entries, RingLabels(RECORDS_ENTRY_VERSION, index, 2)
        )
    new = prepare(tmp_path, 1)
    assert new.rerouted == []
    [moved] = new.moved_aside
    assert sorted(name for name, _ in moved["files"]) == ["kpd-records-0", "kpd-records-1"]
    assert payloads(Path(new.records[0])) == []


def test_the_records_entry_layout_is_pinned_to_its_version():
    # Ring files outlive the daemon: an entry written by one build is read by the next. If
    # this fails, the records-entry layout changed: bump RECORDS_ENTRY_VERSION with it (older
    # rings are then moved aside, never misread) and update this pair.
    # conn_id u64, base_seq u64, count u32, partition i32, received_ms i64, ack u8, flags u8,
    # topic_len u16, topic, then (flags & 1, scattered) count x u32 sequence offsets
    consecutive = entry_head(1, 2, 3, 4, 5, 3, b"t")
    scattered = entry_head(1, 2, 3, 4, 5, 2, b"t", struct.pack(">3I", 0, 4, 9))
    # A flag is no layout change: flags & 2 (batched by its source) only says "no linger".
    batched = entry_head(1, 2, 3, 4, 5, 3, b"t", None, True)
    assert (RECORDS_ENTRY_VERSION, consecutive, scattered, batched) == (
        2,
        struct.pack(">QQIiqBBH", 1, 2, 3, 4, 5, 3, 0, 1) + b"t",
        struct.pack(">QQIiqBBH", 1, 2, 3, 4, 5, 2, 1, 1) + b"t" + struct.pack(">3I", 0, 4, 9),
        struct.pack(">QQIiqBBH", 1, 2, 3, 4, 5, 3, 2, 1) + b"t",
    )
    assert decode_records_entry(memoryview(batched + b"\x00")).batched
    assert not decode_records_entry(memoryview(scattered + b"\x00")).batched
