"""The flight journal (daemon/worker/flight_journal.py): its slot bytes, what a successor reads
back after a kill, and which slots count when a batch went out more than once."""

from __future__ import annotations

import struct

from crc32c import crc32c

from daemon.worker.flight_journal import (
    FLIGHT_FORMAT,
    FlightBatch,
    FlightJournal,
    flight_journal_path,
    latest_batches,
    topic_crc,
)

RING_LAYOUT, ENTRY_FORMAT = 3, 2


def _flight(first, last, count=10, partition=0, sequence=0, epoch=0, pid=7, topic="t"):
    """A slot whose first and last records are ``(end_pos, index)`` pairs."""
    return FlightBatch(last[0], 0xA000 + last[0], last[1], first[0], 0xA000 + first[0], first[1],
                       count, partition, pid, sequence, topic_crc(topic), epoch)  # fmt: skip


def test_a_slot_is_its_fields_little_endian_then_the_crc32c_of_them():
    flight = FlightBatch(0x0102030405060708, 0xDEADBEEF, 9, 4096, 0xCAFEF00D, 3, 25, 11,
                         0x1122334455, 2_000_000_000, 0x89ABCDEF, -2)  # fmt: skip
    body = (
        struct.pack("<Q", 0x0102030405060708)  # the last record's entry: end position
        + struct.pack("<I", 0xDEADBEEF)  # its seal
        + struct.pack("<I", 9)  # the last record's index in it
        + struct.pack("<Q", 4096)  # the first record's entry: end position
        + struct.pack("<I", 0xCAFEF00D)  # its seal
        + struct.pack("<I", 3)  # the first record's index
        + struct.pack("<I", 25)  # record count
        + struct.pack("<i", 11)  # partition
        + struct.pack("<q", 0x1122334455)  # producer id
        + struct.pack("<i", 2_000_000_000)  # base sequence
        + struct.pack("<I", 0x89ABCDEF)  # CRC32C of the topic name
        + struct.pack("<h", -2)  # producer epoch
        + bytes(2)  # pad
    )
    assert FLIGHT_FORMAT.encode(flight) == body + struct.pack("<I", crc32c(body))
    assert FLIGHT_FORMAT.slot_size == len(body) + 4 == 64
    assert FLIGHT_FORMAT.decode(FLIGHT_FORMAT.encode(flight)) == flight


def test_the_topic_is_named_by_the_crc32c_of_its_utf8_name():
    assert topic_crc("123456789") == 0xE3069283  # the CRC-32C check value


def test_a_successor_reads_the_published_slots_of_unreleased_entries(tmp_path):
    path = flight_journal_path(str(tmp_path / "kpd-records-0"))
    assert path.endswith("kpd-records-0.flight")
    journal, adopted = FlightJournal.open(path, release_pos=0, ring_layout=RING_LAYOUT,
                                          entry_format=ENTRY_FORMAT)  # fmt: skip
    assert adopted == []
    a, b = _flight((64, 0), (128, 4)), _flight((128, 5), (256, 2), sequence=10)
    journal.add(a)
    journal.add(b)
    journal.commit()
    journal.add(_flight((256, 3), (512, 0), sequence=20))  # staged: killed before the write
    # kill -9: nothing closed; the next worker released up to 128 already
    _, adopted = FlightJournal.open(path, release_pos=128, ring_layout=RING_LAYOUT,
                                    entry_format=ENTRY_FORMAT)  # fmt: skip
    assert adopted == [b]  # a died with its last entry's release


def test_a_done_journal_is_never_read_as_a_flight_journal(tmp_path):
    from daemon.worker.done_journal import DoneJournal

    path = str(tmp_path / "kpd-records-0.flight")
    DoneJournal.open(path, release_pos=0, ring_layout=RING_LAYOUT, entry_format=ENTRY_FORMAT)
    _, adopted = FlightJournal.open(path, release_pos=0, ring_layout=RING_LAYOUT,
                                    entry_format=ENTRY_FORMAT)  # fmt: skip
    assert adopted == []


def test_batches_of_different_partitions_and_topics_all_count_in_ring_order():
    a = _flight((64, 0), (64, 9), partition=0)
    b = _flight((64, 0), (64, 9), partition=1)
    c = _flight((64, 0), (64, 9), topic="other")
    d = _flight((32, 0), (32, 9), partition=2)
    assert latest_batches([a, b, c, d]) == [d, a, b, c]


def test_a_batch_sent_again_under_a_new_epoch_replaces_its_first_slot():
    first = _flight((64, 0), (128, 4), sequence=0, epoch=0)
    other = _flight((128, 5), (256, 0), sequence=10, epoch=0)
    again = _flight((64, 0), (128, 4), sequence=0, epoch=1)  # KIP-360 re-stamp
    assert latest_batches([first, other, again]) == [again, other]


def test_the_parts_of_a_split_batch_replace_the_batch():
    whole = _flight((64, 0), (64, 99), count=100, sequence=0)
    part1 = _flight((64, 0), (64, 49), count=50, sequence=0)
    part2 = _flight((64, 50), (64, 99), count=50, sequence=50)
    assert latest_batches([whole, part1, part2]) == [part1, part2]


def test_a_retry_with_the_same_stamp_is_the_same_batch_once():
    batch = _flight((64, 0), (64, 9))
    assert latest_batches([batch, batch]) == [batch]
