"""The accumulator: when batches are ready, what one drain takes, and how retries, recovery,
splits and expiry keep each partition's order and sequence numbers.

Time is the ``now`` argument the engine passes in (loop time); these tests pass their own.
Batches are checked by their tokens (what the caller appended) and by the header fields of the
built bytes, read with ``struct`` at the offsets of Kafka's RecordBatch v2 layout.
"""

from __future__ import annotations

import struct

import pytest

from daemon.kafka.records import decode_batches
from daemon.producer.accumulator import Accumulator, PartitionQueue
from daemon.producer.batch import ProducerBatch
from daemon.producer.engine import accumulator_settings
from daemon.producer.splitting import split_batch
from tests.unit.producer.fakes import config

PRODUCER_ID = 4000
EPOCH = 2
# RecordBatch v2 header (Kafka docs/implementation.html, "Record Batch"): baseOffset int64,
# batchLength int32, partitionLeaderEpoch int32, magic int8, crc uint32, attributes int16,
# lastOffsetDelta int32, baseTimestamp int64, maxTimestamp int64, producerId int64,
# producerEpoch int16, baseSequence int32, recordCount int32.
PRODUCER_FIELDS = struct.Struct(">qhi")
PRODUCER_FIELDS_OFFSET = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8


def producer_fields(batch: ProducerBatch) -> tuple[int, int, int]:
    """(producerId, producerEpoch, baseSequence) as written in the batch's bytes."""
    return PRODUCER_FIELDS.unpack_from(batch.payload, PRODUCER_FIELDS_OFFSET)


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.dues: list[float | None] = []  # what each wake said: sendable now (None) or by

    def __call__(self, due: float | None) -> None:
        self.count += 1
        self.dues.append(due)


def make(**overrides) -> tuple[Accumulator, Wakes]:
    """An accumulator with the schema's defaults, overridden by ``kafka:`` setting attrs."""
    settings = {"batch_size": 1000, "linger_ms": 10, "buffer_memory": 1 << 20, **overrides}
    wakes = Wakes()
    return Accumulator(accumulator_settings(config(**settings)), wakes), wakes


def idempotent_stamp(acc: Accumulator):
    def stamp(batch: ProducerBatch, pq: PartitionQueue) -> None:
        batch.build(PRODUCER_ID, EPOCH, acc.assign_sequence(batch, pq))

    return stamp


# A record of a null key and a 20-byte value takes 26 bytes in a batch: length varint (1),
# attributes (1), timestampDelta 0 (1), offsetDelta (1), keyLength -1 (1), valueLength (1),
# the value (20), header count (1). The batch header is 61 bytes, so with this batch.size the
# fourth record seals a batch (61 + 3 * 26 = 139 < 160 <= 61 + 4 * 26 = 165).
FOUR_PER_BATCH = 160


def append(acc: Accumulator, pq: PartitionQueue, tokens, now: float, size: int = 10) -> None:
    for token in tokens:
        acc.append(pq, 1_700_000_000_000, None, bytes(size), (), token, now)


def drain(acc: Accumulator, pqs, now: float) -> list[ProducerBatch]:
    return acc.drain(list(pqs), now, idempotent_stamp(acc))


# ---- readiness ------------------------------------------------------------------------------


def test_open_batch_waits_for_linger_then_is_drained():
    acc, _ = make(linger_ms=10)
    pq = acc.queue("t", 0)
    append(acc, pq, ["a", "b"], now=100.0)
    assert drain(acc, [pq], now=100.009) == []
    assert acc.next_ready_in(100.005) == pytest.approx(0.005)
    (batch,) = drain(acc, [pq], now=100.010)
    assert batch.tokens == ["a", "b"]
    assert pq.in_flight == [batch] and not pq.batches


def test_a_head_the_deadline_says_is_due_is_drained_whatever_the_rounding():
    # The event loop's clock ticks in ms: 11548.804 - 11548.799 is 0.004999…, below a 5 ms
    # linger, while 11548.799 + 0.005 <= 11548.804. A head that next_deadline_in called due
    # but drain did not take waited for the sender's 50 ms "due but blocked" recheck.
    for created_ms in range(11_548_000, 11_549_000):
        acc, _ = make(linger_ms=5)
        pq = acc.queue("t", 0)
        created = created_ms / 1000
        append(acc, pq, ["x"], now=created)
        now = (created_ms + 5) / 1000
        due_now, _ = acc.next_deadline_in(now)
        assert due_now and len(drain(acc, [pq], now=now)) == 1, created


def test_batch_reaching_batch_size_is_sealed_and_sent_without_waiting_for_linger():
    acc, wakes = make(batch_size=200, linger_ms=60_000)
    pq = acc.queue("t", 0)
    append(acc, pq, range(30), now=5.0, size=20)  # ~25 bytes each: several batches
    assert len(pq.batches) > 1
    assert all(b.sealed for b in list(pq.batches)[:-1])
    # Every full batch fits under batch.size plus the one record that crossed it.
    assert all(b.size_in_bytes < 200 + 30 for b in pq.batches)
    (first,) = drain(acc, [pq], now=5.0)
    assert first.tokens[0] == 0
    assert wakes.count >= len(pq.batches)  # each opened or sealed batch woke the sender


def test_an_open_batch_behind_another_is_not_held_by_linger_once_it_is_the_head():
    acc, _ = make(batch_size=FOUR_PER_BATCH, linger_ms=60_000)
    pq = acc.queue("t", 0)
    append(acc, pq, range(6), now=1.0, size=20)  # first batch seals, second stays open
    assert len(pq.batches) == 2 and not pq.batches[1].sealed
    drain(acc, [pq], now=1.0)
    # The open batch is now alone and young: linger applies to it again.
    assert drain(acc, [pq], now=1.0) == []


def test_flush_makes_open_batches_ready_at_once():
    acc, _ = make(linger_ms=60_000)
    pq = acc.queue("t", 0)
    append(acc, pq, ["x"], now=1.0)
    acc.begin_flush()
    assert [b.tokens for b in drain(acc, [pq], now=1.0)] == [["x"]]


def test_send_now_makes_the_open_batch_due_while_later_records_still_join_it():
    # send_now(): the records of a ring entry its source batched already (ring_entry.BATCHED)
    # go without a second linger; until the sender takes the batch, more records join it.
    acc, wakes = make(linger_ms=60_000)
    pq = acc.queue("t", 0)
    append(acc, pq, ["a", "b"], now=1.0)
    woken = wakes.count
    acc.send_now(pq)
    assert wakes.count == woken + 1  # the sender hears of it
    assert acc.next_ready_in(1.0) == 0.0
    append(acc, pq, ["c"], now=1.0)  # the sender was busy: "c" joins the due batch
    assert [b.tokens for b in drain(acc, [pq], now=1.0)] == [["a", "b", "c"]]
    append(acc, pq, ["d"], now=1.0)
    acc.send_now(acc.queue("t", 1))  # nothing open there: nothing to do
    assert drain(acc, [pq], now=1.0) == []  # "d" is in a new batch: linger applies


def test_nearly_full_buffer_sends_without_waiting_for_linger():
    acc, _ = make(linger_ms=60_000, buffer_memory=200)
    pq = acc.queue("t", 0)
    append(acc, pq, range(4), now=1.0, size=40)  # ~43 bytes each: 172 >= 90% of 200
    assert len(drain(acc, [pq], now=1.0)) == 1


# ---- draining -------------------------------------------------------------------------------


def test_one_drain_takes_at_most_one_batch_per_partition_oldest_first():
    acc, _ = make(batch_size=100, linger_ms=0)
    p0, p1 = acc.queue("t", 0), acc.queue("t", 1)
    append(acc, p0, [f"p0-{i}" for i in range(12)], now=1.0, size=20)
    append(acc, p1, ["p1-0"], now=1.0)
    taken = drain(acc, [p0, p1], now=1.0)
    assert [(b.partition, b.tokens[0]) for b in taken] == [(0, "p0-0"), (1, "p1-0")]


def test_once_one_head_is_ready_the_other_heads_ride_along_before_their_linger():
    # Java's drain: readiness is the broker's; a request that goes anyway takes every
    # partition's head, so no partition spends a request (and an in-flight slot) of its own.
    acc, _ = make(linger_ms=10)
    p0, p1, p2 = acc.queue("t", 0), acc.queue("t", 1), acc.queue("t", 2)
    append(acc, p0, ["old"], now=1.000)
    append(acc, p1, ["young"], now=1.008)
    assert drain(acc, [p0, p1, p2], now=1.009) == []  # nobody's linger is over yet
    taken = drain(acc, [p1, p2, p0], now=1.010)
    assert sorted(b.tokens[0] for b in taken) == ["old", "young"]
    assert not p0.batches and not p1.batches


def test_a_head_riding_along_still_honours_retry_backoff_and_recovery():
    acc, _ = make(linger_ms=0, batch_size=100)
    p0, p1, p2 = acc.queue("t", 0), acc.queue("t", 1), acc.queue("t", 2)
    append(acc, p1, ["retry"], now=1.0)
    append(acc, p2, ["recover"], now=1.0)
    first = drain(acc, [p1, p2], now=1.0)
    for batch in first:
        acc.schedule_retry(batch, retry_at=2.0, recover=False)
    append(acc, p2, ["behind"], now=1.0)
    append(acc, p0, ["ready"], now=1.0)
    taken = drain(acc, [p0, p1, p2], now=1.5)
    assert [b.tokens[0] for b in taken] == ["ready"]


def test_max_request_size_stops_the_drain_but_the_first_batch_always_goes():
    acc, _ = make(batch_size=10_000, linger_ms=0, max_request_size=300)
    queues = [acc.queue("t", p) for p in range(3)]
    for pq in queues:
        append(acc, pq, [pq.partition], now=1.0, size=250)  # each batch alone > 300/2
    first = drain(acc, queues, now=1.0)
    assert [b.partition for b in first] == [0]  # over the limit on its own, yet sent
    assert [b.partition for b in drain(acc, queues, now=1.0)] == [1]


def test_consecutive_batches_of_a_partition_get_consecutive_sequence_numbers():
    acc, _ = make(batch_size=100, linger_ms=0)
    pq = acc.queue("t", 0)
    append(acc, pq, range(12), now=1.0, size=20)
    sent = []
    while pq.batches:
        sent += drain(acc, [pq], now=1.0)
    expected, sequence = [], 0
    for batch in sent:
        expected.append((PRODUCER_ID, EPOCH, sequence))
        sequence += batch.record_count
    assert [producer_fields(b) for b in sent] == expected
    assert sum(b.record_count for b in sent) == 12


def test_sequence_numbers_wrap_to_zero_after_int32_max():
    acc, _ = make(linger_ms=0)
    pq = acc.queue("t", 0)
    pq.next_sequence = 2**31 - 2
    append(acc, pq, ["a", "b", "c"], now=1.0)
    (batch,) = drain(acc, [pq], now=1.0)
    assert producer_fields(batch)[2] == 2**31 - 2
    # DefaultRecordBatch.incrementSequence: the records take MAX_VALUE - 1, MAX_VALUE and 0,
    # so the next batch starts at 1.
    assert pq.next_sequence == 1


def test_without_idempotence_one_batch_in_flight_mutes_its_partition():
    acc, _ = make(batch_size=100, linger_ms=0, enable_idempotence=False, max_in_flight=1)
    pq = acc.queue("t", 0)
    append(acc, pq, range(12), now=1.0, size=20)
    (first,) = drain(acc, [pq], now=1.0)
    assert drain(acc, [pq], now=1.0) == []
    acc.completed(first)
    assert len(drain(acc, [pq], now=1.0)) == 1


# ---- retries and recovery -------------------------------------------------------------------


def three_in_flight() -> tuple[Accumulator, PartitionQueue, list[ProducerBatch]]:
    acc, _ = make(batch_size=FOUR_PER_BATCH, linger_ms=0)
    pq = acc.queue("t", 0)
    append(acc, pq, range(16), now=1.0, size=20)  # 4 records per batch: 4 batches
    sent = [drain(acc, [pq], now=1.0)[0] for _ in range(3)]
    return acc, pq, sent


def test_retried_batches_go_back_in_front_of_unsent_ones_in_their_original_order():
    acc, pq, (a, b, c) = three_in_flight()
    # Answers come back in any order; the queue must still read a, b, c, then the unsent one.
    acc.schedule_retry(c, retry_at=2.0, recover=False)
    acc.schedule_retry(a, retry_at=2.0, recover=False)
    acc.schedule_retry(b, retry_at=2.0, recover=False)
    assert [batch.tokens[0] for batch in pq.batches] == [0, 4, 8, 12]


def test_retry_backoff_holds_a_retried_batch_until_its_time():
    acc, pq, (a, b, c) = three_in_flight()
    acc.completed(b)
    acc.completed(c)
    acc.schedule_retry(a, retry_at=1.5, recover=False)
    assert drain(acc, [pq], now=1.4) == []
    assert acc.next_ready_in(1.4) == pytest.approx(0.1)
    assert drain(acc, [pq], now=1.5) == [a]


def test_recovering_partition_drains_nothing_until_every_in_flight_batch_is_back():
    acc, pq, (a, b, c) = three_in_flight()
    acc.schedule_retry(a, retry_at=0.0, recover=True)
    assert drain(acc, [pq], now=1.0) == []  # b and c still in flight
    acc.completed(b)
    acc.schedule_retry(c, retry_at=0.0, recover=True)
    acc.finish_recovery(pq)
    assert not pq.recovering
    # b was written (sequences 4-7); a and c were not. Renumbered from a's own sequence 0,
    # the queue goes out as 0, 4 (c, shifted down over the gap b left), 8 (never sent).
    sent = [drain(acc, [pq], now=1.0)[0] for _ in range(3)]
    assert [s.tokens[0] for s in sent] == [0, 8, 12]
    assert [producer_fields(s)[2] for s in sent] == [0, 4, 8]


def test_recovery_keeps_the_sequence_of_an_in_doubt_batch_so_the_broker_can_dedupe_it():
    acc, pq, (a, b, c) = three_in_flight()
    for batch in (a, b, c):
        batch.in_doubt = True
        acc.schedule_retry(batch, retry_at=0.0, recover=True)
    acc.finish_recovery(pq)
    resent = [drain(acc, [pq], now=1.0)[0] for _ in range(3)]
    assert [producer_fields(s)[2] for s in resent] == [0, 4, 8]
    assert resent == [a, b, c]


def test_new_epoch_resets_every_partition_to_sequence_zero():
    acc, pq, (a, b, c) = three_in_flight()
    for batch in (a, b, c):
        acc.schedule_retry(batch, retry_at=0.0, recover=True)
    acc.reset_sequences()

    def stamp_new_epoch(batch: ProducerBatch, q: PartitionQueue) -> None:
        batch.build(PRODUCER_ID, EPOCH + 1, acc.assign_sequence(batch, q))

    resent = [acc.drain([pq], 1.0, stamp_new_epoch)[0] for _ in range(3)]
    assert [producer_fields(s) for s in resent] == [
        (PRODUCER_ID, EPOCH + 1, 0),
        (PRODUCER_ID, EPOCH + 1, 4),
        (PRODUCER_ID, EPOCH + 1, 8),
    ]
    # The bytes changed only in the restamped fields: the records and CRC still decode.
    assert [r.value for r in decode_batches(resent[0].payload)[0].records] == [bytes(20)] * 4


# ---- split ----------------------------------------------------------------------------------


def test_split_batch_halves_in_order_and_keeps_tokens_bytes_and_sequence_place():
    acc, pq, (a, b, c) = three_in_flight()
    used = acc.buffer_used
    parts = split_batch(b)
    acc.replace(b, parts, retry_at=1.0)
    assert acc.buffer_used == used
    assert [p.tokens for p in parts] == [[4, 5], [6, 7]]
    assert pq.recovering and b not in pq.in_flight
    acc.completed(a)
    acc.schedule_retry(c, retry_at=1.0, recover=True)  # rejected as out of order after b
    acc.finish_recovery(pq)
    resent = [drain(acc, [pq], now=1.0)[0] for _ in range(4)]
    assert [r.tokens for r in resent] == [[4, 5], [6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert [producer_fields(r)[2] for r in resent] == [4, 6, 8, 12]
    for part in resent[:2]:
        (decoded,) = decode_batches(part.payload)
        assert [r.value for r in decoded.records] == [bytes(20)] * 2


def test_split_of_an_odd_batch_puts_the_extra_record_first():
    acc, _ = make(linger_ms=0)
    pq = acc.queue("t", 0)
    append(acc, pq, ["a", "b", "c"], now=1.0)
    (batch,) = drain(acc, [pq], now=1.0)
    assert [p.tokens for p in split_batch(batch)] == [["a", "b"], ["c"]]


# ---- expiry and accounting ------------------------------------------------------------------


def test_only_batches_older_than_the_delivery_timeout_expire_and_free_their_buffer():
    acc, _ = make(batch_size=FOUR_PER_BATCH, linger_ms=0)
    pq = acc.queue("t", 0)
    append(acc, pq, range(4), now=1.0, size=20)  # one full batch created at 1.0
    append(acc, pq, range(4, 6), now=3.0, size=20)  # a young one created at 3.0
    before = acc.buffer_used
    assert acc.take_expired(now=5.9, delivery_timeout_s=5.0) == []
    (old,) = acc.take_expired(now=6.0, delivery_timeout_s=5.0)
    assert old.tokens == [0, 1, 2, 3]
    assert acc.buffer_used == before - old.buffer_bytes
    assert [b.tokens for b in pq.batches] == [[4, 5]]


def test_a_recovering_partition_does_not_expire_while_its_answers_are_outstanding():
    acc, _pq, (a, _, _) = three_in_flight()
    acc.schedule_retry(a, retry_at=0.0, recover=True)
    assert acc.take_expired(now=100.0, delivery_timeout_s=5.0) == []


def test_buffer_is_fully_returned_once_every_batch_completed():
    acc, pq, sent = three_in_flight()
    for batch in sent:
        acc.completed(batch)
    acc.take_expired(now=1000.0, delivery_timeout_s=1.0)
    assert acc.buffer_used == 0
    assert not pq.batches and not pq.in_flight


def test_is_oldest_in_flight_compares_drain_order():
    acc, _, (a, b, c) = three_in_flight()
    assert acc.is_oldest_in_flight(a)
    assert not acc.is_oldest_in_flight(c)
    acc.completed(a)
    assert acc.is_oldest_in_flight(b)


def test_opening_a_head_batch_tells_the_sender_when_its_linger_ends():
    acc, wakes = make(linger_ms=10)
    append(acc, acc.queue("t", 0), ["a"], now=1.0)
    assert wakes.dues == [pytest.approx(1.01)]


def test_opening_a_batch_while_flushing_or_pressed_for_buffer_wakes_the_sender_now():
    acc, wakes = make(linger_ms=10, buffer_memory=1000)
    acc.begin_flush()
    append(acc, acc.queue("t", 0), ["a"], now=1.0)
    acc.end_flush()
    acc.buffer_used = 950  # over 90 %: Java's "exhausted" readiness, linger does not hold
    append(acc, acc.queue("t", 1), ["b"], now=1.0)
    assert wakes.dues == [None, None]
