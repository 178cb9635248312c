"""Records a client leaves to kpd (partition -1) are placed by kafka.partitioner's rules."""

from __future__ import annotations

import socket

import pytest

from kpd import protocol as wire
from kpd.protocol.base import AckLevel, Status
from kpd.protocol.produce import encode_produce
from kpd.protocol.records import RecordIn
from tests.brokers.reader import partition_for_key_librdkafka, read_all
from tests.daemon_harness import KpdDaemon


def _produce_and_wait(path: str, topic: str, records: list[RecordIn]) -> dict[int, tuple]:
    """Send ``records`` as one partition -1 frame; return seq -> (partition, offset) as the
    REPORT runs say, each record reported exactly once."""
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(path)
    conn.settimeout(30)
    conn.sendall(wire.encode_hello(1, 1, AckLevel.KAFKA, "partitioning-test"))
    conn.sendall(encode_produce(0, topic, -1, records))
    decoder = wire.FrameDecoder(wire.Role.CLIENT)
    placed: dict[int, tuple] = {}
    while len(placed) < len(records):
        for frame in decoder.feed(conn.recv(65536)):
            if frame.type == wire.FrameType.REPORT:
                for run in wire.decode_reports(frame.payload):
                    assert run.status == Status.DELIVERED, run
                    for i in range(run.count):
                        assert run.first_seq + i not in placed, f"seq {run.first_seq + i} twice"
                        placed[run.first_seq + i] = (run.partition, run.base_offset + i)
    conn.close()
    return placed


@pytest.mark.parametrize(
    ("kafka", "expect"),
    [
        ({}, "murmur2"),
        ({"partitioner": "round_robin"}, "round_robin"),
        ({"partitioner.ignore.keys": True}, "sticky"),
    ],
)
def test_kpd_places_client_left_records_like_kafkas_partitioner(tansu, tmp_path, kafka, expect):
    topic = f"kpd-chooses-{expect}"
    tansu.create_topic(topic, 6)
    keys = [b"key-%d" % i for i in range(12)]
    records = [RecordIn(key, b"value-%d" % i) for i, key in enumerate(keys)]
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra={"kafka": kafka}) as daemon:
        reported = _produce_and_wait(daemon.socket_path, topic, records)
    consumed = read_all(tansu.bootstrap, topic, len(records))
    got = {r.key: r.partition for r in consumed}
    placed = [got[key] for key in keys]
    # Every report names the partition and offset where Kafka holds that very record.
    at = {(r.partition, r.offset): r.key for r in consumed}
    assert [at[reported[seq]] for seq in range(len(keys))] == keys
    if expect == "murmur2":  # the independent reference: librdkafka's murmur2_random
        assert placed == partition_for_key_librdkafka(keys, 6)
    elif expect == "round_robin":
        assert sorted(placed) == sorted(list(range(6)) * 2)
    else:
        assert len(set(placed)) == 1  # 12 small records stay on one sticky partition


@pytest.mark.parametrize("pure", [False, True], ids=["C", "pure Python"])
def test_kpd_groups_a_keyed_frame_by_partition_and_reports_each_record_where_kafka_put_it(
    tansu, tmp_path, pure
):
    # Ingest groups a -1 frame's records by partition (one ring entry per partition, with
    # sequence offsets); the reports must still name each record's own partition and offset,
    # and null keys share one sticky partition. KPD_PURE_PYTHON=1 runs the daemon's pure path.
    topic = f"kpd-groups-{'pure' if pure else 'c'}"
    tansu.create_topic(topic, 5)
    keys = [None if i % 7 == 3 else b"user-%d" % (i % 40) for i in range(300)]
    records = [RecordIn(key, b"value-%d" % i) for i, key in enumerate(keys)]
    env = {"KPD_PURE_PYTHON": "1"} if pure else {}
    daemon = KpdDaemon(tmp_path, tansu.bootstrap, workers=2)
    daemon.start(env=env)
    try:
        reported = _produce_and_wait(daemon.socket_path, topic, records)
    finally:
        assert daemon.stop() == 0
    log = daemon.log_path.read_text()
    assert ("accelerator: pure Python" if pure else "accelerator: C") in log
    consumed = read_all(tansu.bootstrap, topic, len(records), exact=True)
    by_place = {(r.partition, r.offset): r.value for r in consumed}
    assert [by_place[reported[seq]] for seq in range(300)] == [r.value for r in records]
    keyed = [i for i, key in enumerate(keys) if key is not None]
    expected = partition_for_key_librdkafka([keys[i] for i in keyed], 5)
    assert [reported[i][0] for i in keyed] == expected
    assert len({reported[i][0] for i, key in enumerate(keys) if key is None}) == 1
    for partition in range(5):  # order within a partition is the frame's order
        seqs = sorted((reported[s][1], s) for s in reported if reported[s][0] == partition)
        assert [s for _, s in seqs] == sorted(s for _, s in seqs)
