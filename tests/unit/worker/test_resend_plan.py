"""Rebuilding the batches a flight journal names (daemon/worker/resend_plan.py): the same
records and boundaries as sent, records that have outcomes left out, and slots that cannot be
rebuilt left to the ordinary replay."""

from __future__ import annotations

from daemon.producer.resend import ResendResult, Verdict
from daemon.wire.ring_entry import RecordsEntry
from daemon.worker.done_journal import DoneRun
from daemon.worker.flight_journal import FlightBatch, topic_crc
from daemon.worker.resend_plan import Piece, TakenEntry, done_runs, rebuild
from kpd.protocol.records import RecordIn, encode_records

RECEIVED_MS = 1_700_000_000_000


def _entry(end_pos: int, values: list[bytes], partition: int = 0, topic: str = "t") -> TakenEntry:
    records = memoryview(encode_records([RecordIn(b"k", value) for value in values]))
    entry = RecordsEntry(1, 0, len(values), partition, RECEIVED_MS, 2, topic, records, None)
    return TakenEntry(end_pos, 0xE000 + end_pos, entry)


def _flight(first, last, count, partition=0, sequence=5, topic="t"):
    return FlightBatch(last[0], 0xE000 + last[0], last[1], first[0], 0xE000 + first[0], first[1],
                       count, partition, 42, sequence, topic_crc(topic), 3)  # fmt: skip


def _done(end_pos: int, first: int, count: int) -> DoneRun:
    return DoneRun(end_pos, 0xE000 + end_pos, first, count, 0, 100, -1, 0, 0)


def _build(records: list[tuple], flight: FlightBatch) -> bytes:
    """A stand-in for resend.stamped_batch: the values and the stamp, to compare."""
    stamp = f"{flight.producer_id}/{flight.epoch}/{flight.base_sequence}:".encode()
    return stamp + b",".join(value for _, _, value, _ in records)


ENTRIES = [
    _entry(100, [b"a0", b"a1", b"a2"]),
    _entry(200, [b"x0", b"x1"], partition=1),  # another partition between: not in the batch
    _entry(300, [b"b0", b"b1", b"b2", b"b3"]),
    _entry(400, [b"o0"], topic="other"),  # another topic, same partition: not in it either
    _entry(500, [b"c0", b"c1"]),
]


def test_a_batch_is_its_partitions_records_from_its_first_to_its_last():
    flight = _flight((100, 1), (500, 0), count=2 + 4 + 1)
    (rebuilt,), broken = rebuild([flight], ENTRIES, {}, _build)
    assert broken == []
    assert rebuilt.batch.payload == b"42/3/5:a1,a2,b0,b1,b2,b3,c0"  # its identity, its records
    assert (rebuilt.batch.topic, rebuilt.batch.partition, rebuilt.batch.record_count) == (
        "t", 0, 7)  # fmt: skip
    assert rebuilt.pieces == [
        Piece(100, 0xE000 + 100, 1, 2),
        Piece(300, 0xE000 + 300, 0, 4),
        Piece(500, 0xE000 + 500, 0, 1),
    ]


def test_records_the_done_journal_had_when_the_batch_was_built_are_not_in_it():
    # A replayed entry: b1 and b2 had outcomes already, so the batch skipped them.
    flight = _flight((300, 0), (500, 1), count=2 + 2)
    (rebuilt,), _ = rebuild([flight], ENTRIES, {300: [_done(300, 1, 2)]}, _build)
    assert rebuilt.batch.payload == b"42/3/5:b0,b3,c0,c1"
    assert [piece.count for piece in rebuilt.pieces] == [1, 1, 2]


def test_a_batch_whose_answer_came_before_the_kill_needs_nothing():
    flight = _flight((100, 0), (100, 2), count=3)
    assert rebuild([flight], ENTRIES, {100: [_done(100, 0, 3)]}, _build) == ([], [])


def test_a_batch_that_cannot_be_rebuilt_is_left_to_the_replay():
    gone = _flight((50, 0), (100, 2), count=4)  # its first entry was released
    other_seal = _flight((100, 0), (100, 2), count=3)._replace(first_seal=1)  # another lap
    wrong_count = _flight((100, 0), (100, 2), count=5)
    half_done = _flight((300, 0), (300, 3), count=4)
    done = {300: [_done(300, 0, 2)]}
    for flight in (gone, other_seal, wrong_count, half_done):  # each alone: they overlap
        assert rebuild([flight], ENTRIES, done, _build) == ([], [flight])


def test_batches_come_out_in_ring_order_and_only_the_latest_of_overlapping_slots():
    later = _flight((300, 0), (300, 3), count=4, sequence=3)
    earlier = _flight((100, 0), (100, 2), count=3, sequence=0)
    restamped = _flight((100, 0), (100, 2), count=3, sequence=0)._replace(epoch=4)
    rebuilt, _ = rebuild([later, earlier, restamped], ENTRIES, {}, _build)
    assert [item.batch.payload for item in rebuilt] == [b"42/4/0:a0,a1,a2", b"42/3/3:b0,b1,b2,b3"]


def test_a_resent_batch_the_broker_has_becomes_done_runs_with_each_pieces_offset():
    flight = _flight((100, 1), (300, 1), count=4)
    (rebuilt,), _ = rebuild([flight], ENTRIES, {}, _build)
    runs = done_runs(rebuilt, ResendResult(Verdict.APPENDED, 1000, 77))
    assert [(r.end_pos, r.first, r.count, r.base_offset, r.timestamp, r.failed) for r in runs] == [
        (100, 1, 2, 1000, 77, 0),
        (300, 0, 2, 1002, 77, 0),
    ]
    duplicate = done_runs(rebuilt, ResendResult(Verdict.DUPLICATE))
    assert [r.base_offset for r in duplicate] == [-1, -1]  # written before, offset unknown
    assert done_runs(rebuilt, ResendResult(Verdict.FORGOTTEN, why="UNKNOWN_PRODUCER_ID")) == []
