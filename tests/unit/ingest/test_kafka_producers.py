"""Idempotent producers of the Kafka listener on the dedupe journal: sequence checks as a
broker's ProducerStateManager makes them (duplicates by first sequence and count among the
last 5 batches, the next sequence wrapping at Integer.MAX_VALUE, a new epoch from 0), state
that survives a restart (the journal reloaded, a torn last line ignored), batches still in
admission recognised when resent, and ids that expire when idle."""

from __future__ import annotations

from daemon.ingest import dedupe
from daemon.ingest.dedupe import DedupeJournal
from daemon.ingest.kafka.producers import BATCHES_KEPT, UNUSED_ID_EXPIRY_S, ProducerRegistry
from daemon.kafka.errors import ErrorCode

OUT_OF_ORDER = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
OLD_EPOCH = ErrorCode.INVALID_PRODUCER_EPOCH
UNKNOWN = ErrorCode.UNKNOWN_PRODUCER_ID
RESEND = "resend"
DAY_S = 86_400.0
INT32_MAX = 2**31 - 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _registry(path=None, clock=None) -> ProducerRegistry:
    clock = clock or Clock()
    journal = DedupeJournal(path, window_records=2**62, idle_expiry_s=DAY_S, clock=clock)
    return ProducerRegistry(journal, clock)


def _check(registry, pid, epoch, seq, count, partition=0):
    got = registry.check(pid, epoch, "t", partition, seq, count)
    return RESEND if got.resend else got.error


def _take(registry, pid, epoch, seq, count, ring_seq, partition=0):
    check = registry.check(pid, epoch, "t", partition, seq, count)
    assert not check.error and not check.resend, check
    registry.admitting(check, count)
    registry.taken(check, count, ring_seq)
    return check


def test_sequences_are_checked_per_producer_and_partition():
    registry = _registry()
    pid, epoch = registry.init_producer()
    assert _check(registry, pid, epoch, 0, 10) == 0
    _take(registry, pid, epoch, 0, 10, ring_seq=1000)
    assert _check(registry, pid, epoch, 10, 5) == 0  # the next one
    assert _check(registry, pid, epoch, 0, 10) == RESEND
    assert _check(registry, pid, epoch, 0, 9) == OUT_OF_ORDER  # not the same batch
    assert _check(registry, pid, epoch, 11, 5) == OUT_OF_ORDER  # a gap
    assert _check(registry, pid, epoch, 3, 1, partition=1) == OUT_OF_ORDER  # must start at 0
    assert _check(registry, pid + 100, 0, 0, 1) == UNKNOWN  # never issued by kpd


def test_an_epoch_bump_fences_the_old_epoch_and_restarts_sequences():
    registry = _registry()
    pid, epoch = registry.init_producer()
    _take(registry, pid, epoch, 0, 10, ring_seq=1)
    same, bumped = registry.init_producer(pid, epoch)  # KIP-360
    assert (same, bumped) == (pid, epoch + 1)
    assert _check(registry, pid, epoch, 10, 1) == OLD_EPOCH
    assert _check(registry, pid, bumped, 10, 1) == OUT_OF_ORDER
    assert _check(registry, pid, bumped, 0, 1) == 0


def test_the_first_outcome_of_a_kept_batch_is_answered_and_only_5_batches_are_kept():
    registry = _registry()
    pid, epoch = registry.init_producer()
    for i in range(BATCHES_KEPT + 1):
        _take(registry, pid, epoch, 2 * i, 2, ring_seq=100 + 2 * i)
        registry.resolved(100 + 2 * i, 2, (0, 500 + 2 * i, -1))
    resent = registry.check(pid, epoch, "t", 0, 2, 2)
    (piece,) = registry.lookup(resent, 2)
    assert (piece.first, piece.count, piece.outcome, piece.delta) == (2, 2, [0, 502, -1], 0)
    # Only the last BATCHES_KEPT batches are kept, as a broker keeps them.
    assert _check(registry, pid, epoch, 0, 2) == OUT_OF_ORDER


def test_a_report_for_part_of_a_batch_resolves_that_part():
    registry = _registry()
    pid, epoch = registry.init_producer()
    check = _take(registry, pid, epoch, 0, 10, ring_seq=5000)
    registry.resolved(5004, 6, (0, 44, 7))  # a second ring entry of the batch, from ring seq 5004
    pieces = registry.lookup(check, 10)
    assert [(p.first, p.count, p.outcome) for p in pieces] == [(0, 4, None), (4, 6, [0, 44, 7])]


def test_a_withdrawn_batch_frees_its_sequence():
    registry = _registry()
    pid, epoch = registry.init_producer()
    _take(registry, pid, epoch, 0, 4, ring_seq=7)
    registry.withdrawn(7)  # failed NOT_PERSISTED as a whole: never produced
    assert _check(registry, pid, epoch, 0, 4) == 0


def test_a_batch_still_in_admission_is_a_resend_and_the_next_one_follows_it():
    # Ring full: the first copy waits in Admission.admit while the client, its request timed
    # out, reconnects and sends the batch again (issue 20, edge b): never taken twice.
    registry = _registry()
    pid, epoch = registry.init_producer()
    check = registry.check(pid, epoch, "t", 0, 0, 3)
    registry.admitting(check, 3)
    assert _check(registry, pid, epoch, 0, 3) == RESEND
    assert _check(registry, pid, epoch, 3, 2) == 0  # the next batch follows the admitting one
    registry.refused(check)  # the ring stayed full: not taken, its sequence free again
    assert _check(registry, pid, epoch, 0, 3) == 0
    assert _check(registry, pid, epoch, 3, 2) == OUT_OF_ORDER


def test_sequences_wrap_at_int32_max_and_stay_ascending_in_the_journal():
    # Kafka's DefaultRecordBatch.incrementSequence: after Integer.MAX_VALUE comes 0.
    registry = _registry()
    pid, epoch = registry.init_producer()
    first = 0
    for count in (INT32_MAX - 2, 5):  # the second batch: MAX - 2, MAX - 1, MAX, 0, 1
        check = _take(registry, pid, epoch, first, count, ring_seq=first + 1)
        first = (first + count) % (INT32_MAX + 1)
    assert check.first == INT32_MAX - 2  # unwrapped: one u64 line of sequence numbers
    assert first == 2
    nxt = registry.check(pid, epoch, "t", 0, 2, 1)
    assert (nxt.error, nxt.first) == (0, INT32_MAX + 1 + 2)
    assert _check(registry, pid, epoch, INT32_MAX - 2, 5) == RESEND


def test_the_state_survives_a_restart_and_a_torn_last_line(tmp_path):
    path = str(tmp_path / "kpd-kafka-producers.jsonl")
    clock = Clock()
    registry = _registry(path, clock)
    pid, epoch = registry.init_producer()
    _take(registry, pid, epoch, 0, 5, ring_seq=10_000, partition=3)
    registry.resolved(10_000, 5, (0, 42, 1_700_000_000_000))
    _take(registry, pid, epoch, 5, 5, ring_seq=10_005, partition=3)  # no outcome: a kill -9
    registry.close()
    with open(path, "ab") as file:
        file.write(b'{"k":"kafka:1:0:3:t","t":[10')  # torn by the kill
    again = _registry(path, clock)
    first = again.check(pid, epoch, "t", 3, 0, 5)
    assert [p.outcome for p in again.lookup(first, 5)] == [[0, 42, 1_700_000_000_000]]
    second = again.check(pid, epoch, "t", 3, 5, 5)
    assert second.resend and [p.outcome for p in again.lookup(second, 5)] == [None]
    assert again.ring_seq_of(second) == 10_005
    again.resolved(10_007, 3, (0, 50, 1))  # a report of the old ingest's entry, read again
    assert [p.outcome for p in again.lookup(second, 5)] == [None, [0, 50, 1]]
    assert again.check(pid, epoch, "t", 3, 10, 1).error == 0
    assert again.highest_ring_seq() == 10_010
    assert again.init_producer()[0] > pid  # ids are never issued twice
    again.close()


def test_an_id_that_never_produced_is_forgotten_after_its_idle_time():
    clock = Clock()
    registry = _registry(clock=clock)
    left, _ = registry.init_producer()  # a process that initialised and left
    busy, epoch = registry.init_producer()
    _take(registry, busy, epoch, 0, 1, ring_seq=1)
    clock.now += UNUSED_ID_EXPIRY_S + 1
    assert registry.expire() == 1
    assert registry.stats() == (1, 1)
    assert _check(registry, left, 0, 0, 1) == UNKNOWN  # the client asks for a new id
    assert _check(registry, busy, epoch, 1, 1) == 0


def test_an_id_with_kept_batches_is_forgotten_after_the_producer_expiry():
    clock = Clock()
    registry = _registry(clock=clock)
    pid, epoch = registry.init_producer()
    _take(registry, pid, epoch, 0, 1, ring_seq=1)
    clock.now += UNUSED_ID_EXPIRY_S + 1
    assert _check(registry, pid, epoch, 1, 1) == 0  # in use: its idle time starts again
    _take(registry, pid, epoch, 1, 1, ring_seq=2)
    clock.now += DAY_S - 1
    assert registry.expire() == 0
    clock.now += 61
    registry.init_producer()  # scans for expired ids (at most once a minute)
    assert registry.stats() == (1, 0)
    assert _check(registry, pid, epoch, 2, 1) == UNKNOWN


def test_forgotten_ids_stay_forgotten_and_are_never_issued_again(tmp_path):
    path = str(tmp_path / "kpd-kafka-producers.jsonl")
    clock = Clock()
    registry = _registry(path, clock)
    first, _ = registry.init_producer()
    second, _ = registry.init_producer()
    clock.now += UNUSED_ID_EXPIRY_S + 1
    registry.expire()
    registry.close()
    again = _registry(path, clock)
    assert again.stats() == (0, 0)
    assert again.init_producer()[0] > second > first
    again.close()


def test_the_journal_stays_small_with_only_5_batches_live(tmp_path, monkeypatch):
    monkeypatch.setattr(dedupe, "_COMPACT_MIN_LINES", 20)
    path = tmp_path / "kpd-kafka-producers.jsonl"
    registry = _registry(str(path))
    pid, epoch = registry.init_producer()
    for i in range(200):
        _take(registry, pid, epoch, i, 1, ring_seq=10 + i)
        registry.resolved(10 + i, 1, (0, i, -1))
    registry.close()
    assert len(path.read_bytes().splitlines()) < 4 * (2 * BATCHES_KEPT + 2) * 4
    again = _registry(str(path))
    resent = again.check(pid, epoch, "t", 0, 199, 1)
    assert [p.outcome for p in again.lookup(resent, 1)] == [[0, 199, -1]]
    assert again.check(pid, epoch, "t", 0, 200, 1).error == 0
    again.close()


def test_only_batches_whose_entry_was_never_published_are_withdrawn_at_a_start(tmp_path):
    # The taken line names where the batch's first entry ends: (ring, end, workers, capacity).
    path = str(tmp_path / "producers.jsonl")
    registry = _registry(path)
    pid, epoch = registry.init_producer()
    for partition, ring_seq, where in (
        (0, 100, [0, 4096, 2, 65536]),  # published
        (1, 101, [0, 8192, 2, 65536]),  # past write_pos
        (2, 102, [1, 9000, 3, 65536]),
    ):  # another worker count
        check = registry.check(pid, epoch, "t", partition, 0, 1)
        registry.admitting(check, 1)
        registry.taken(check, 1, [ring_seq, *where])
    registry.close()

    again = _registry(path)
    write_pos = {0: 4096, 1: 0}
    withdrawn = again.withdraw_unpublished(
        lambda ring, end, workers, capacity: (
            (workers, capacity) != (2, 65536) or end <= write_pos[ring]
        )
    )
    assert withdrawn == 1
    assert _check(again, pid, epoch, 0, 1, partition=0) == RESEND  # in a ring: same batch
    assert _check(again, pid, epoch, 0, 1, partition=2) == RESEND  # may be in any ring now
    assert _check(again, pid, epoch, 0, 1, partition=1) == ErrorCode.NONE  # new again
