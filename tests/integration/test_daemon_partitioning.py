"""Records a client leaves to kpd (partition -1) are placed by kafka.partitioner's rules."""

from __future__ import annotations

import socket

import pytest

from daemon import wire
from daemon.wire.base import AckLevel, Status
from daemon.wire.produce import encode_produce
from daemon.wire.records import RecordIn
from tests.brokers.reader import partition_for_key_librdkafka, read_all
from tests.daemon_harness import KpdDaemon


def _produce_and_wait(path: str, topic: str, records: list[RecordIn]) -> None:
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(path)
    conn.settimeout(30)
    conn.sendall(wire.encode_hello(1, 1, AckLevel.KAFKA, "partitioning-test"))
    conn.sendall(encode_produce(0, topic, -1, records))
    decoder = wire.FrameDecoder(wire.Role.CLIENT)
    delivered = 0
    while delivered < len(records):
        for frame in decoder.feed(conn.recv(65536)):
            if frame.type == wire.FrameType.REPORT:
                for run in wire.decode_reports(frame.payload):
                    assert run.status == Status.DELIVERED, run
                    delivered += run.count
    conn.close()


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
        _produce_and_wait(daemon.socket_path, topic, records)
    got = {r.key: r.partition for r in read_all(tansu.bootstrap, topic, len(records))}
    placed = [got[key] for key in keys]
    if expect == "murmur2":  # the independent reference: librdkafka's murmur2_random
        assert placed == partition_for_key_librdkafka(keys, 6)
    elif expect == "round_robin":
        assert sorted(placed) == sorted(list(range(6)) * 2)
    else:
        assert len(set(placed)) == 1  # 12 small records stay on one sticky partition
