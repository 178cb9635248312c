"""Nothing accepted is lost across a restart of the whole daemon (issue 10).

The real daemon as a subprocess, real brokers (librdkafka's mock cluster where brokers go down
and come back, tansu otherwise), apps sending with kpd at ack level ``accepted``;
every check reads the topic back with confluent-kafka's consumer: accepted ⊆ delivered.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import urllib.request

import pytest

from kpd import Producer
from tests.brokers.ports import free_port
from tests.brokers.reader import read_all
from tests.daemon_harness import KpdDaemon, wait_for
from tests.integration.test_daemon_lifecycle import LoadClient

pytestmark = pytest.mark.timeout(240)

# Quick to notice brokers gone and back, far from delivery.timeout.ms (records must wait).
_MOCK_KAFKA = {"kafka": {"retry.backoff.ms": 100, "request.timeout.ms": 5000}}


def _mock_topic(cluster, name: str, partitions: int = 3) -> str:
    cluster.create_topic(name, partitions, replication=3)
    for partition in range(partitions):
        cluster.set_partition_leader(name, partition, 1 + partition % 3)
    return name


def _all_brokers(cluster, up: bool) -> None:
    for broker in cluster.broker_ids:
        (cluster.broker_up if up else cluster.broker_down)(broker)


def _warm_up(daemon: KpdDaemon, topic: str) -> None:
    """Records through to Kafka first, so ingest and the workers know the topic's partitions
    before the brokers go down (records then wait in the rings, not for metadata)."""
    results = LoadClient(daemon, topic, "warm", 1_000, acks="kafka").wait()
    assert all(status == "ok" for _, status, _, _ in results), results[:3]


def _accepted(results: list[list]) -> set[int]:
    return {index for index, status, _, _ in results if status == "ok"}


def _delivered(bootstrap: str, topic: str, client: str, expected: int) -> set[int]:
    """Indices of ``client``'s records in the topic; every value must be one it sent."""
    records = read_all(bootstrap, topic, expected, timeout_s=60, exact=False)
    indices = set()
    for record in records:
        name, index = record.value.decode().rsplit("-", 1)
        assert record.key == f"{name}-k{int(index) % 100}".encode(), record  # not torn
        if name == client:
            indices.add(int(index))
    return indices


def _published_bytes(daemon: KpdDaemon) -> int:
    """Bytes ingest ever published into the records rings: each file's write_pos, the u64 at
    offset 128 of its header (daemon/ring/region.py), read from the file itself."""
    total = 0
    for path in daemon.rings_dir.glob(f"{daemon.prefix}-records-*"):
        if not path.name.rpartition("-")[2].isdigit():
            continue  # a worker's done journal (records-N.done) beside its ring
        with open(path, "rb") as ring:
            ring.seek(128)
            total += int.from_bytes(ring.read(8), sys.byteorder)
    return total


def _status(daemon: KpdDaemon) -> dict:
    ports = re.findall(
        r"metrics and status on http://127\.0\.0\.1:(\d+)/", daemon.log_path.read_text()
    )
    assert ports, daemon.log_tail()
    url = f"http://127.0.0.1:{ports[-1]}/status"
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


def test_kill_9_of_the_whole_daemon_with_brokers_down_loses_no_accepted_record(
    mock_cluster, tmp_path
):
    topic = _mock_topic(mock_cluster, "durable-kill-9")
    count = 20_000
    daemon = KpdDaemon(tmp_path, mock_cluster.bootstrap, workers=2, extra=_MOCK_KAFKA).start()
    try:
        _warm_up(daemon, topic)
        _all_brokers(mock_cluster, up=False)
        accepted = _accepted(LoadClient(daemon, topic, "a", count, acks="accepted").wait())
        assert len(accepted) == count, "the rings hold them all: every record is accepted"
        daemon.kill_all()  # an OOM kill of the whole service, brokers still down
        assert os.path.exists(daemon.socket_path)  # the dead daemon's socket file is left
        _all_brokers(mock_cluster, up=True)
        daemon.start()  # a stale socket file never prevents a start
        delivered = _delivered(mock_cluster.bootstrap, topic, "a", count)
        lost = accepted - delivered
        assert not lost, f"{len(lost)} accepted records lost, e.g. {sorted(lost)[:5]}"
        assert "adopted ring" in daemon.log_path.read_text()
    finally:
        daemon.stop()


def test_sigterm_with_brokers_down_keeps_the_rest_for_the_next_start(mock_cluster, tmp_path):
    topic = _mock_topic(mock_cluster, "durable-sigterm")
    port = free_port()
    extra = {
        **_MOCK_KAFKA,
        "shutdown": {"timeout": "2s"},
        "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"},
    }
    daemon = KpdDaemon(tmp_path, mock_cluster.bootstrap, workers=2, extra=extra).start()
    try:
        _warm_up(daemon, topic)
        _all_brokers(mock_cluster, up=False)
        accepted = _accepted(LoadClient(daemon, topic, "a", 10_000, acks="accepted").wait())
        assert len(accepted) == 10_000
        # An app still waiting for Kafka's acks when the daemon stops (fewer than 1,000
        # records: LoadClient waits for its first record's outcome at the 1,000th).
        waiting = LoadClient(daemon, topic, "k", 900, acks="kafka")

        def ingest_took_everything() -> bool:
            ingest = next(c for c in _status(daemon)["children"] if c["role"] == "ingest")
            snapshot = ingest["snapshot"] or {"records": {"accepted": 0}}
            return snapshot["records"]["accepted"] == 1_000 + 10_000 + 900

        wait_for(ingest_took_everything, 30, "ingest to accept every record", interval_s=0.2)
        # A `systemctl restart` during the outage: the drain cannot deliver, so it keeps.
        assert daemon.stop() == 0, daemon.log_tail()
        log = daemon.log_path.read_text()
        assert "stay in the ring for the next start" in log
        # Kept for the next start, they did not fail: no warning says they did.
        assert "records failed" not in log, log[-3000:]
        # The app's session (protocol v2, docs/protocol.md section 14) keeps the records the
        # drain kept in the rings, and the frames it refused: after the next start the kept
        # ones are delivered and reported to it, the refused ones sent again. No record of
        # the app fails, none is written twice.
        _all_brokers(mock_cluster, up=True)
        daemon.start()
        outcomes = waiting.wait()
        ok = _accepted(outcomes)
        failed = [o for o in outcomes if o[1] != "ok"]
        assert ok == set(range(900)), f"{len(failed)} failed, first {failed[:3]}"
        delivered = _delivered(mock_cluster.bootstrap, topic, "a", len(accepted))
        lost = accepted - delivered
        assert not lost, f"{len(lost)} accepted records lost, e.g. {sorted(lost)[:5]}"
        delivered_k = _delivered(mock_cluster.bootstrap, topic, "k", 1_000 + len(ok))
        assert not ok - delivered_k
    finally:
        daemon.stop()


@pytest.mark.parametrize("fsync", ["never", "50ms", "always"])
def test_kill_9_during_heavy_writes_then_a_start_produces_nothing_torn_and_loses_nothing(
    tansu, tmp_path, fsync
):
    topic = tansu.create_topic(f"durable-heavy-{fsync}", 6)
    count = 150_000
    extra = {"rings": {"fsync": fsync}}
    daemon = KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=extra).start()
    try:
        client = LoadClient(daemon, topic, "h", count, acks="accepted")
        wait_for(lambda: _published_bytes(daemon) >= 1 << 20, 60, "heavy writes under way")
        daemon.kill_all()
        daemon.start()  # the client may reconnect and go on; either way it finishes
        accepted = _accepted(client.wait())
        assert accepted, "the kill came while records were being accepted"
        delivered = _delivered(tansu.bootstrap, topic, "h", len(accepted))
        lost = accepted - delivered
        assert not lost, f"{len(lost)} accepted records lost, e.g. {sorted(lost)[:5]}"
        # A crash of processes cannot tear a published entry (the page cache holds it whole):
        # the adoption must not have found one to cut.
        assert "torn" not in daemon.log_path.read_text()
    finally:
        daemon.stop()


def test_a_restart_with_another_worker_count_reroutes_the_kept_entries(mock_cluster, tmp_path):
    topic = _mock_topic(mock_cluster, "durable-workers", partitions=6)
    port = free_port()
    extra = {**_MOCK_KAFKA, "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    daemon = KpdDaemon(tmp_path, mock_cluster.bootstrap, workers=2, extra=extra).start()
    try:
        _warm_up(daemon, topic)
        _all_brokers(mock_cluster, up=False)
        accepted = _accepted(LoadClient(daemon, topic, "w", 10_000, acks="accepted").wait())
        assert len(accepted) == 10_000
        daemon.kill_all()
        daemon.config["workers"]["count"] = 3
        daemon.write_config()
        _all_brokers(mock_cluster, up=True)
        daemon.start()
        log = daemon.log_path.read_text()
        assert "re-routed" in log and "written for 2 workers" in log, log
        rings = _status(daemon)["rings"]
        assert sorted(r["workers"] for r in rings["rerouted"]) == [2, 2]
        assert rings["leftovers"] == []
        names = os.listdir(daemon.rings_dir)
        journals = (".done", ".flight")
        assert sorted(n for n in names if not n.endswith(journals)) == sorted(
            [f"{daemon.prefix}-{kind}-{i}" for kind in ("records", "reports") for i in range(3)]
            + [f"{daemon.prefix}.lock"]  # the ring files' instance lock (daemon.process.instance)
            + [f"{daemon.prefix}-sessions.journal"]  # protocol v2 sessions, beside the rings
        )
        # Each worker's done and flight journals (daemon/worker/done_journal.py,
        # flight_journal.py) are made by the worker as it starts: only ever those of a ring of
        # this run, none of the re-routed ones.
        ours = {f"{daemon.prefix}-records-{i}{suffix}" for i in range(3) for suffix in journals}
        assert {n for n in names if n.endswith(journals)} <= ours
        delivered = _delivered(mock_cluster.bootstrap, topic, "w", len(accepted))
        lost = accepted - delivered
        assert not lost, f"{len(lost)} accepted records lost, e.g. {sorted(lost)[:5]}"
    finally:
        daemon.stop()


def test_a_killed_ingest_is_restarted_and_serves_again(tansu, tmp_path):
    topic = tansu.create_topic("durable-ingest", 3)
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2) as daemon:
        [victim] = daemon.child_pids("ingest")
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: daemon.child_pids("ingest") not in ([], [victim]),
            30,
            f"ingest to be restarted\n{daemon.log_tail()}",
        )
        wait_for(daemon._accepting, 30, "the socket to serve again")
        results = LoadClient(daemon, topic, "i", 2_000).wait()
        assert all(status == "ok" for _, status, _, _ in results), results[:3]
        assert "ingest exited with" in daemon.log_path.read_text()


def test_kill_9_of_the_whole_daemon_never_produces_again_what_kafka_acknowledged_behind_an_entry_in_flight(  # noqa: E501
    mock_cluster, tmp_path
):
    # One worker; partition 1's leader is down, so its entries stay in flight at the front
    # of the ring while partition 0's entries behind them are acknowledged by Kafka (and
    # reported to the app) but cannot be released. kill -9 of the whole daemon, the leader
    # back, a new daemon: the done journal makes it produce partition 1's records and not
    # partition 0's again. An independent reader counts every record exactly once.
    topic = _mock_topic(mock_cluster, "durable-behind", partitions=2)
    daemon = KpdDaemon(tmp_path, mock_cluster.bootstrap, workers=1, extra=_MOCK_KAFKA).start()
    try:
        _warm_up(daemon, topic)
        mock_cluster.broker_down(2)  # the leader of partition 1
        with Producer(daemon.socket_path, acks="accepted") as producer:
            held = [producer.send(topic, b"held-%d" % i, partition=1) for i in range(500)]
            producer.flush(timeout=60)
        assert all(future.exception(timeout=0) is None for future in held)
        with Producer(daemon.socket_path, acks="kafka") as producer:
            done = [producer.send(topic, b"done-%d" % i, partition=0) for i in range(3000)]
            metas = [future.result(timeout=60) for future in done]
        assert {meta.partition for meta in metas} == {0}
        daemon.kill_all()
        mock_cluster.broker_up(2)
        daemon.start()
        records = read_all(mock_cluster.bootstrap, topic, 1_000 + 500 + 3000, timeout_s=60)
        assert "already have outcomes" in daemon.log_path.read_text()
    finally:
        daemon.stop()
    ours = sorted(r.value for r in records if not r.value.startswith(b"warm"))
    expected = sorted([b"held-%d" % i for i in range(500)] + [b"done-%d" % i for i in range(3000)])
    assert ours == expected  # nothing missing, nothing twice
    where = {r.value: (r.partition, r.offset) for r in records}
    assert all(where[b"done-%d" % i] == (0, m.offset) for i, m in enumerate(metas))
