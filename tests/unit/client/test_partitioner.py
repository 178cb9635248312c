"""The partitioner: Java-compatible keyed placement, KIP-794 sticky runs, round robin.

Keyed placement is checked against partitions the Java producer computes for Kafka's own
published murmur2 test keys (``BuiltInPartitionerTest`` / ``UtilsTest`` vectors: the murmur2
hashes below are Kafka's, the partitions follow from Java's ``toPositive(hash) % n``).
End-to-end agreement with librdkafka's ``murmur2_random`` over thousands of keys is in
tests/integration/test_engine_tansu.py.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from daemon.ingest.routing import EntryPlanner
from kpd.common import ClientSettings
from kpd.partitioner import Partitioner
from kpd.protocol import (
    Frame,
    FrameDecoder,
    FrameType,
    KpdErrorCode,
    Role,
    TopicMetadata,
    Welcome,
    decode_produce_header,
    encode_metadata_response,
    iter_records,
)
from kpd.protocol.produce import encode_produce_frame
from kpd.session import ProducerSession

# Kafka UtilsTest.testMurmur2: key -> murmur2 hash as Java computes it (a signed int32).
KAFKA_MURMUR2_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def java_partition(murmur2_hash: int, partitions: int) -> int:
    # Java Utils.toPositive: hash & 0x7fffffff (not Math.abs), then modulo.
    return (murmur2_hash & 0x7FFFFFFF) % partitions


def sticky(batch_bytes: int = 100, seed: int = 7) -> Partitioner:
    return Partitioner("default", batch_bytes, False, random.Random(seed))


@pytest.mark.parametrize("partitions", [1, 3, 7, 100])
def test_keyed_records_go_where_the_java_producer_puts_them(partitions):
    partitioner = sticky()
    for key, murmur2_hash in KAFKA_MURMUR2_VECTORS.items():
        expected = java_partition(murmur2_hash, partitions)
        assert partitioner.partition("t", key, 10, partitions, range(partitions)) == expected


def test_keyed_records_ignore_availability_and_leave_sticky_state_alone():
    partitioner = sticky(batch_bytes=1000)
    first = partitioner.partition("t", None, 10, 8, range(8))
    for key, murmur2_hash in KAFKA_MURMUR2_VECTORS.items():
        # Only partition 0 has a leader: a key still goes to its own partition (Java does the
        # same: keyed placement never depends on leadership).
        assert partitioner.partition("t", key, 500, 8, [0]) == java_partition(murmur2_hash, 8)
    # The keyed records' bytes did not count towards the keyless run.
    assert partitioner.partition("t", None, 10, 8, range(8)) == first


def test_keyless_records_stay_on_one_partition_until_batch_size_bytes_went_there():
    partitioner = sticky(batch_bytes=100)
    picks = [partitioner.partition("t", None, 30, 5, range(5)) for _ in range(4)]
    # 30 + 30 + 30 = 90 < 100: the fourth record still fits the run; 120 >= 100 ends it.
    assert len(set(picks)) == 1
    fifth = partitioner.partition("t", None, 30, 5, range(5))
    assert fifth != picks[0]


def test_sticky_runs_switch_to_a_different_available_partition_every_time():
    partitioner = sticky(batch_bytes=50)
    available = [1, 3, 4]
    runs = []
    for _ in range(300):
        partition = partitioner.partition("t", None, 50, 6, available)
        runs.append(partition)
    # One record fills a run, so every record starts a new one.
    assert all(a != b for a, b in itertools.pairwise(runs))
    assert set(runs) == set(available)


def test_sticky_runs_spread_over_every_partition():
    partitioner = sticky(batch_bytes=10, seed=1)
    counts = Counter(partitioner.partition("t", None, 10, 4, range(4)) for _ in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 800  # uniform choice: ~1000 each


def test_sticky_state_is_per_topic():
    partitioner = sticky(batch_bytes=100)
    a = partitioner.partition("a", None, 90, 50, range(50))
    partitioner.partition("b", None, 90, 50, range(50))  # must not end topic a's run
    assert partitioner.partition("a", None, 5, 50, range(50)) == a


def test_sticky_partition_moves_when_the_topic_shrinks_below_it():
    partitioner = sticky(batch_bytes=1000)
    partitioner.partition("t", None, 1, 50, range(50))
    assert partitioner.partition("t", None, 1, 1, range(1)) == 0


def test_no_available_partition_falls_back_to_any_partition():
    partitioner = sticky(batch_bytes=1)
    picks = {partitioner.partition("t", None, 1, 3, []) for _ in range(200)}
    assert picks == {0, 1, 2}


def test_ignore_keys_makes_keyed_records_sticky():
    partitioner = Partitioner("default", 1000, True, random.Random(3))
    picks = {partitioner.partition("t", key, 10, 16, range(16)) for key in KAFKA_MURMUR2_VECTORS}
    assert len(picks) == 1


def test_round_robin_cycles_over_available_partitions_keys_or_not():
    partitioner = Partitioner("round_robin", 16384, False, random.Random(0))
    picks = [partitioner.partition("t", b"same-key", 10, 5, [0, 2, 4]) for _ in range(7)]
    assert picks == [0, 2, 4, 0, 2, 4, 0]


def test_round_robin_without_available_partitions_cycles_over_all():
    partitioner = Partitioner("round_robin")
    assert [partitioner.partition("t", None, 1, 3, []) for _ in range(4)] == [0, 1, 2, 0]


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown partitioner"):
        Partitioner("uniform_sticky")


def test_the_client_and_ingest_place_every_key_on_the_same_partition():
    # The client places keyed records before they leave the app; ingest places the ones a
    # client left to kpd (partition -1). Both go through this one Partitioner and must agree
    # with each other and with Java whatever the key: each is driven through its real entry
    # point, and the client's placement is read from the PRODUCE frames it wrote.
    rng = random.Random(11)
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(3000)]
    keys += list(KAFKA_MURMUR2_VECTORS)
    partitions = 7

    session = ProducerSession(
        ClientSettings(), Welcome(1, 1 << 24, 0, "t"), FrameDecoder(Role.CLIENT), lambda: 0.0, None
    )
    session.watch("t")
    session.take_output()  # its METADATA request; answered as kpd would:
    answer = encode_metadata_response(0, [TopicMetadata("t", KpdErrorCode.NONE, partitions)])
    session.accept([Frame(FrameType.METADATA_RESPONSE, memoryview(answer)[5:])])
    for key in keys:
        session.add("t", key, b"v")
    session.seal_all()
    client = {}
    for out in session.take_output():
        header = decode_produce_header(memoryview(out.data)[5:])
        for record in iter_records(header.records, header.count):
            client[bytes(record.key)] = header.partition

    frame = encode_produce_frame(b"\x00\x01t", -1, 0, keys, [b"v"] * len(keys))
    header = decode_produce_header(memoryview(frame)[5:])
    ingest = {}
    for partition, records, _, count, _ in EntryPlanner("default", 16384, False, 1 << 30).split(
        header, partitions
    ):
        for record in iter_records(records, count):
            ingest[bytes(record.key)] = partition

    assert client == ingest and len(client) == len(set(keys))
    for key, murmur2_hash in KAFKA_MURMUR2_VECTORS.items():
        assert client[key] == java_partition(murmur2_hash, partitions)


@pytest.mark.parametrize(
    ("key", "partition"), [(b"", 9), (b"a", 4), (b"key1", 8), (b"hello world", 7)]
)
def test_a_topic_placement_puts_keys_where_java_does_and_remembers_them(key, partition):
    # Java's partitions of 12 for these keys (see test_murmur2.py), asked twice: computed,
    # then from the memo; a new partition count forgets the memo.
    placement = Partitioner().topic("t", 12)
    assert placement.for_key(key) == partition
    assert placement.keys == {key: partition} and placement.for_key(key) == partition
    assert Partitioner().topic("t", 12) is not placement
    partitioner = Partitioner()
    same = partitioner.topic("t", 12)
    same.for_key(key)
    assert partitioner.topic("t", 5) is same and same.keys == {}


def test_placing_many_keys_at_once_matches_placing_each():
    rng = random.Random(5)
    keys = [rng.randbytes(rng.randrange(0, 30)) for _ in range(2000)] + list(KAFKA_MURMUR2_VECTORS)
    one_by_one = Partitioner().topic("t", 9)
    at_once = Partitioner().topic("t", 9)
    assert at_once.for_keys(keys) == [one_by_one.for_key(key) for key in keys]
    assert at_once.for_keys(keys) == at_once.for_keys(keys)  # now from the memo
