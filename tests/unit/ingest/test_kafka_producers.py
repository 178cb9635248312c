"""Idempotent producers of the Kafka listener: sequence checks as a broker makes them, dedupe
state that survives a restart (reloaded from its file, torn last line ignored), and ids that
expire when idle instead of growing without bound."""

from __future__ import annotations

from daemon.ingest.kafka import producers
from daemon.ingest.kafka.producers import (
    BATCHES_KEPT,
    IDLE_ID_EXPIRY_S,
    UNUSED_ID_EXPIRY_S,
    ProducerRegistry,
)
from daemon.kafka.errors import ErrorCode

OUT_OF_ORDER = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
OLD_EPOCH = ErrorCode.INVALID_PRODUCER_EPOCH
UNKNOWN = ErrorCode.UNKNOWN_PRODUCER_ID
DUPLICATE_KEPT = "dup"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _check(registry, pid, epoch, seq, count, partition=0):
    got = registry.check(pid, epoch, "t", partition, seq, count)
    if got.duplicate is not None:
        return DUPLICATE_KEPT
    return got.error


def test_sequences_are_checked_per_producer_and_partition():
    registry = ProducerRegistry(None)
    pid, epoch = registry.init_producer()
    assert _check(registry, pid, epoch, 0, 10) == 0
    registry.accepted(pid, epoch, "t", 0, 0, 10, ring_seq=1000)
    assert _check(registry, pid, epoch, 10, 5) == 0  # the next one
    assert _check(registry, pid, epoch, 0, 10) == DUPLICATE_KEPT  # resent
    assert _check(registry, pid, epoch, 11, 5) == OUT_OF_ORDER  # a gap
    assert _check(registry, pid, epoch, 3, 1, partition=1) == OUT_OF_ORDER  # must start at 0
    assert _check(registry, pid + 100, 0, 0, 1) == UNKNOWN  # never issued by kpd


def test_an_epoch_bump_fences_the_old_epoch_and_restarts_sequences():
    registry = ProducerRegistry(None)
    pid, epoch = registry.init_producer()
    registry.accepted(pid, epoch, "t", 0, 0, 10, ring_seq=1)
    same, bumped = registry.init_producer(pid, epoch)  # KIP-360
    assert (same, bumped) == (pid, epoch + 1)
    assert _check(registry, pid, epoch, 10, 1) == OLD_EPOCH
    assert _check(registry, pid, bumped, 0, 1) == 0


def test_the_first_outcome_of_a_kept_batch_is_answered_to_its_resend():
    registry = ProducerRegistry(None)
    pid, epoch = registry.init_producer()
    for i in range(BATCHES_KEPT + 1):
        registry.accepted(pid, epoch, "t", 0, 2 * i, 2, ring_seq=100 + 2 * i)
        registry.resolved(100 + 2 * i, 0, 500 + 2 * i, -1)
    dup = registry.check(pid, epoch, "t", 0, 2, 2).duplicate
    assert dup.outcome == (0, 502, -1)
    # Only the last BATCHES_KEPT batches are kept, as a broker keeps them.
    assert registry.check(pid, epoch, "t", 0, 0, 2).error == OUT_OF_ORDER


def test_a_withdrawn_batch_frees_its_sequence():
    registry = ProducerRegistry(None)
    pid, epoch = registry.init_producer()
    registry.accepted(pid, epoch, "t", 0, 0, 4, ring_seq=7)
    registry.withdrawn(7)  # refused NOT_PERSISTED after the check
    assert _check(registry, pid, epoch, 0, 4) == 0


def test_the_state_survives_a_restart_and_a_torn_last_line(tmp_path):
    path = str(tmp_path / "kpd-kafka-producers.jsonl")
    registry = ProducerRegistry(path)
    pid, epoch = registry.init_producer()
    registry.accepted(pid, epoch, "t", 3, 0, 5, ring_seq=10_000)
    registry.resolved(10_000, 0, 42, 1_700_000_000_000)
    registry.accepted(pid, epoch, "t", 3, 5, 5, ring_seq=10_005)  # outcome unknown: a kill -9
    registry.close()
    with open(path, "ab") as file:
        file.write(b'{"k":[1,"t"')  # torn by the kill
    again = ProducerRegistry(path)
    assert again.check(pid, epoch, "t", 3, 0, 5).duplicate.outcome == (0, 42, 1_700_000_000_000)
    assert again.check(pid, epoch, "t", 3, 5, 5).duplicate.outcome is None
    assert again.check(pid, epoch, "t", 3, 10, 1).error == 0
    assert again.highest_ring_seq() == 10_010
    assert again.init_producer()[0] == pid + 1  # ids are never issued twice
    again.close()


def test_an_id_that_never_produced_is_forgotten_after_its_idle_time():
    clock = Clock()
    registry = ProducerRegistry(None, clock)
    left, _ = registry.init_producer()  # a process that initialised and left
    busy, epoch = registry.init_producer()
    registry.accepted(busy, epoch, "t", 0, 0, 1, ring_seq=1)
    clock.now += UNUSED_ID_EXPIRY_S + 1
    assert registry.expire(clock.now) == 1
    assert registry.stats() == (1, 1)
    assert _check(registry, left, 0, 0, 1) == UNKNOWN  # the client asks for a new id
    assert _check(registry, busy, epoch, 1, 1) == 0


def test_an_id_with_kept_batches_is_forgotten_after_a_day_idle():
    clock = Clock()
    registry = ProducerRegistry(None, clock)
    pid, epoch = registry.init_producer()
    registry.accepted(pid, epoch, "t", 0, 0, 1, ring_seq=1)
    clock.now += UNUSED_ID_EXPIRY_S + 1
    assert _check(registry, pid, epoch, 1, 1) == 0  # in use: its idle time starts again
    clock.now += IDLE_ID_EXPIRY_S - 1
    assert registry.expire(clock.now) == 0
    clock.now += 61
    registry.init_producer()  # scans for expired ids (at most once a minute)
    assert registry.stats() == (1, 0)


def test_forgotten_ids_stay_forgotten_and_are_never_issued_again(tmp_path):
    path = str(tmp_path / "kpd-kafka-producers.jsonl")
    clock = Clock()
    registry = ProducerRegistry(path, clock)
    first, _ = registry.init_producer()
    second, _ = registry.init_producer()
    clock.now += UNUSED_ID_EXPIRY_S + 1
    registry.expire(clock.now)
    registry.close()
    again = ProducerRegistry(path, clock)  # loads the "gone" lines, then compacts them away
    again.close()
    again = ProducerRegistry(path, clock)
    assert again.stats() == (0, 0)
    assert again.init_producer()[0] == second + 1 == first + 2
    again.close()


def test_the_file_is_compacted_once_it_holds_mostly_dead_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(producers, "_COMPACT_MIN_LINES", 20)
    path = tmp_path / "kpd-kafka-producers.jsonl"
    registry = ProducerRegistry(str(path))
    pid, epoch = registry.init_producer()
    for i in range(200):  # only the last BATCHES_KEPT batches stay live
        registry.accepted(pid, epoch, "t", 0, i, 1, ring_seq=10 + i)
        registry.resolved(10 + i, 0, i, -1)
    registry.close()
    assert len(path.read_bytes().splitlines()) < 4 * (2 * BATCHES_KEPT + 2)
    again = ProducerRegistry(str(path))
    assert again.check(pid, epoch, "t", 0, 199, 1).duplicate.outcome == (0, 199, -1)
    assert again.check(pid, epoch, "t", 0, 200, 1).error == 0
    again.close()
