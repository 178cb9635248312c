"""Idempotent producers of the Kafka listener: sequence checks as a broker makes them, and
dedupe state that survives a restart (reloaded from its file, torn last line ignored)."""

from __future__ import annotations

from daemon.ingest.kafka.producers import BATCHES_KEPT, ProducerRegistry

OUT_OF_ORDER, DUPLICATE_KEPT, OLD_EPOCH, UNKNOWN = 45, "dup", 47, 59


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
