"""The sync Producer's caller-thread write end to end: through a real kpd to tansu.

An app sending one record at a time to an idle connection has each frame written by its own
thread inside send() (no I/O-thread wake-up); a frame larger than the socket holds is written
in part by the caller and finished by the I/O thread; ingest is killed -9 while frames are
pending and the producer reconnects. Every record must be delivered, once, and per key in
send() order (read back by librdkafka).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter, defaultdict

import pytest

import kpd.outbound
from kpd import Producer
from tests.brokers.reader import read_all
from tests.daemon_harness import KpdDaemon
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

DEADLINE_S = 60.0
RECORDS = 400
KILL_AT = 200
KEYS = 8
BIG = 900 * 1024  # more than a UNIX socket holds unread, less than kpd's max frame


def _value(index: int) -> bytes:
    tag = b"r-%06d-" % index
    return tag + (b"x" * BIG if index % 100 == 50 else b"v")


def _idle(producer: Producer) -> bool:
    """The next send() finds the connection idle (or there is no connection to wait for)."""
    outbound = producer._outbound
    return not producer._link.connected or (
        producer._io_idle
        and not outbound.pending
        and time.monotonic() - outbound.wrote_at > kpd.outbound.COALESCE_AFTER_WRITE_S
    )


def test_caller_thread_writes_lose_nothing_double_nothing_and_keep_order_across_an_ingest_kill(
    tansu, tmp_path, monkeypatch
):
    topic = "caller-write"
    tansu.create_topic(topic, 4)
    writers: Counter = Counter()
    write = kpd.outbound.Outbound.write

    def noting_write(self):
        total = sum(len(entry[0]) for entry in self.pending)
        written = write(self)
        writers[threading.current_thread().name, written < total] += 1
        return written

    monkeypatch.setattr(kpd.outbound.Outbound, "write", noting_write)
    with (
        KpdDaemon(tmp_path, tansu.bootstrap, workers=2) as daemon,
        Producer(daemon.socket_path, batch_bytes=1024 * 1024) as producer,
    ):
        producer.partitions_for(topic, timeout=DEADLINE_S)
        futures = []
        for index in range(RECORDS):
            if index == KILL_AT:
                (victim,) = daemon.child_pids("ingest")
                os.kill(victim, signal.SIGKILL)  # frames sent from now on wait for it
            wait_for(lambda: _idle(producer), DEADLINE_S, "an idle connection")
            key = b"key-%d" % (index % KEYS)
            futures.append(producer.send(topic, _value(index), key=key))
        producer.flush(DEADLINE_S)
        metadata = [future.result(0) for future in futures]
    assert writers["MainThread", False] >= RECORDS // 2  # most frames: the caller, whole
    assert writers["MainThread", True] >= 1  # a big frame: the caller wrote a part
    assert writers["kpd-client-io", False] >= 1  # ... and the I/O thread the rest
    records = read_all(tansu.bootstrap, topic, RECORDS, timeout_s=DEADLINE_S, exact=True)
    indexes = Counter(int(r.value.split(b"-")[1]) for r in records)
    assert indexes == Counter(range(RECORDS)), "each record exactly once"
    by_key = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[record.key].append(int(record.value.split(b"-")[1]))
    assert all(order == sorted(order) for order in by_key.values()), "per-key send() order"
    assert {(m.partition, m.offset) for m in metadata} == {(r.partition, r.offset) for r in records}
