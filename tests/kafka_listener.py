"""A kpd daemon with its Kafka-protocol listener (`socket.kafka`) on, for client tests.

Shared by the listener's tests (tests/integration/test_daemon_kafka_listener.py with
librdkafka, kafka-python and kcat; test_kafka_listener_clients.py with kafkajs and the Java
client): the daemon on a free loopback port, a probe of the listener, a kill -9 of the process
serving it, and the check that a topic holds every record once, in each key's order, where
the client was told it is.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterable

from tests.brokers import ConsumedRecord
from tests.brokers.ports import free_port
from tests.daemon_harness import KpdDaemon
from tests.waiting import wait_for


def listener_daemon(tmp_path, tansu, **extra) -> KpdDaemon:
    """A two-worker daemon producing to `tansu`; its listener is `daemon.kafka_bootstrap`."""
    port = free_port()
    settings = {"socket": {"kafka": f"127.0.0.1:{port}"}}
    for section, values in extra.items():
        settings.setdefault(section, {}).update(values)
    daemon = KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=settings)
    daemon.kafka_bootstrap = f"127.0.0.1:{port}"
    return daemon


def listening(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def kill_ingest(daemon: KpdDaemon) -> None:
    """kill -9 of the process serving the listener; the supervisor starts another."""
    victim = daemon.child_pids("ingest")[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: daemon.child_pids("ingest") not in ([], [victim]),
        30,
        "the supervisor to replace the killed ingest",
    )


def librdkafka_told(reports: dict[bytes, tuple], order: Iterable[bytes]) -> dict[bytes, tuple]:
    """``{value: (partition, offset)}`` of the records librdkafka was told an offset for, from
    ``reports`` (``{value: (error, partition, offset)}``) and the send order.

    A batch kpd answers without an offset (base offset -1: Kafka acknowledged a resend as a
    duplicate without saying where, or a resend's first outcome was lost with a killed
    daemon) is reported by librdkafka counted up from the base, -1, 0, 1, ... (the same for
    DUPLICATE_SEQUENCE_NUMBER: seen against librdkafka's mock cluster); confluent-kafka
    gives None for the -1. Those records are left out; every other one is told."""
    told: dict[bytes, tuple] = {}
    counting: dict[int, int] = {}  # partition -> the next offset of a batch counted from -1
    for value in order:
        _, partition, offset = reports[value]
        if offset is None or offset < 0:
            counting[partition] = 0
        elif counting.get(partition) == offset:
            counting[partition] = offset + 1
        else:
            counting.pop(partition, None)
            told[value] = (partition, offset)
    return told


def assert_each_once_in_key_order(
    consumed: list[ConsumedRecord], values: Iterable[bytes], reports: dict[bytes, tuple[int, int]]
) -> None:
    """`consumed` (a whole topic, by partition and offset) holds each of `values` once, the
    records of a key in the order of their index (values are b"v<index>"), and each record
    where `reports` ({value: (partition, offset)}, offset -1 or None when the client got none:
    confluent-kafka says None for librdkafka's invalid offset) says."""
    assert sorted(r.value for r in consumed) == sorted(values), "lost or repeated records"
    last: dict[bytes | None, int] = {}
    for r in consumed:
        index = int(r.value[1:])
        assert last.get(r.key, -1) < index, f"key {r.key!r} out of order at {r.value!r}"
        last[r.key] = index
    found = {r.value: (r.partition, r.offset) for r in consumed}
    wrong = [(v, p, found[v]) for v, p in reports.items()
             if p[1] is not None and p[1] >= 0 and found[v] != p]  # fmt: skip
    assert not wrong, f"{len(wrong)} reported elsewhere than found, e.g. {wrong[:3]}"
