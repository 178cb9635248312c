"""What an operator sees of the daemon's processes: titles in ps, one instance per config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from kpd import Producer
from tests.brokers.ports import free_port
from tests.brokers.reader import read_all
from tests.daemon_harness import REPO, KpdDaemon, wait_for

EX_TEMPFAIL = 75


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_every_process_shows_its_role_in_its_title(tansu, tmp_path):
    topic = "titles"
    tansu.create_topic(topic, 4)
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2) as daemon:
        assert _cmdline(daemon.process.pid) == f"kpd: supervisor {daemon.config_path}"
        with Producer(daemon.socket_path, acks="kafka") as producer:
            for partition in range(4):
                producer.send(topic, b"x", partition=partition)
            producer.flush(timeout=30)
        (ingest,) = daemon.child_pids("ingest")
        assert _cmdline(ingest) == "kpd: ingest"

        def worker_titles() -> list[str] | None:
            titles = sorted(_cmdline(pid) for pid in daemon.child_pids("worker"))
            return titles if all("[partitions" in t for t in titles) else None

        titles = wait_for(worker_titles, 10, "worker titles with their partitions")
        # worker_for() spreads a topic's partitions over the workers; together they own all.
        assert [t.split(" [")[0] for t in titles] == ["kpd: worker 0", "kpd: worker 1"]
        owned = sorted(
            int(p)
            for t in titles
            for part in t.split(f"[partitions {topic} ")[1].rstrip("]").split(",")
            for p in (range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1))
        )
        assert owned == [0, 1, 2, 3], titles
        assert daemon.stop() == 0


def test_a_second_instance_of_a_config_exits_75_and_touches_nothing_of_the_first(tmp_path):
    port = free_port()
    extra = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    with KpdDaemon(tmp_path, "embedded", workers=1, extra=extra) as daemon:
        address_file = tmp_path / "embedded-broker.address"
        address = wait_for(lambda: address_file.read_text(), 10, "the broker's address file")
        second = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(daemon.config_path)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == EX_TEMPFAIL, second.stderr
        assert second.stderr == (
            f"kpd: kpd is already running for socket {daemon.socket_path} "
            f"(pid {daemon.process.pid}, lock {daemon.socket_path}.lock); stop it first, "
            "or give this instance its own socket.path\n"
        )
        # The first daemon's broker, address file, socket and metrics port are untouched.
        assert address_file.read_text() == address
        host, broker_port = address.strip().rsplit(":", 1)
        socket.create_connection((host, int(broker_port)), timeout=5).close()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with Producer(daemon.socket_path, acks="kafka") as producer:
            assert producer.send("second-instance", b"still here").result(timeout=30).offset >= 0
        assert daemon.stop() == 0
    assert not address_file.exists()
    # Once the first has stopped, the lock is free: the same config starts again.
    with KpdDaemon(tmp_path, "embedded", workers=1, extra=extra) as again:
        assert again.stop() == 0
    assert not any(name.startswith(daemon.prefix) for name in os.listdir("/dev/shm"))


def test_debug_log_tells_brokers_metadata_and_clients_and_stopped_gives_the_account(
    tansu, tmp_path
):
    topic = "debug-log"
    tansu.create_topic(topic, 2)
    extra = {"log": {"level": "debug"}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1, extra=extra) as daemon:
        with Producer(daemon.socket_path, acks="kafka") as producer:
            for i in range(20):
                producer.send(topic, b"%d" % i)
            producer.flush(timeout=30)
        assert daemon.stop() == 0
    log = daemon.log_tail(200_000)
    host, port = tansu.bootstrap.split(",")[0].rsplit(":", 1)
    for line in (
        f"kpd[worker0] DEBUG broker -1 ({host}:{port}): connected",
        f"kpd[worker0] DEBUG metadata: topic {topic} now 2 partitions",
        f"kpd[ingest] DEBUG client 0 (pid {os.getpid()}) connected",
        f"kpd[ingest] DEBUG client 0 (pid {os.getpid()}) disconnected",
        "kpd[supervisor] INFO stopped after",
        "20 records delivered and 0 failed since the workers started; nothing left behind",
    ):
        assert line in log, line


def test_a_topic_the_cluster_does_not_create_fails_at_once_not_after_max_block_ms(tansu, tmp_path):
    # tansu creates topics when asked; topics.auto_create: false makes kpd not ask, so tansu
    # answers UNKNOWN_TOPIC_OR_PARTITION as a cluster with auto.create.topics.enable=false does.
    # max.block.ms is far beyond the test's timeout: only the fresh answer can end the wait.
    from kpd import DeliveryError

    topic = "never-created"
    extra = {"kafka": {"max.block.ms": 600_000}, "topics": {"auto_create": False}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1, extra=extra) as daemon:
        with Producer(daemon.socket_path, acks="kafka") as producer:
            futures = [producer.send(topic, b"%d" % i) for i in range(3)]
            for future in futures:
                error = future.exception(timeout=60)
                assert isinstance(error, DeliveryError), error
                assert error.code.name == "UNKNOWN_TOPIC"
                assert "does not exist (UNKNOWN_TOPIC_OR_PARTITION)" in error.message
            # Nothing negative is remembered: once the topic exists, records go through.
            tansu.create_topic(topic, 1)
            assert producer.send(topic, b"now").result(timeout=60).offset >= 0
        assert daemon.stop() == 0


def test_record_metadata_timestamp_is_the_records_create_time(tansu, tmp_path):
    # Java's RecordMetadata.timestamp(): the record's CreateTime (the one it was sent with, or
    # the one the producer gave it), or the broker's LogAppendTime on such topics.
    import time

    topic = "metadata-timestamps"
    tansu.create_topic(topic, 1)
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1) as daemon:
        with Producer(daemon.socket_path, acks="kafka") as producer:
            before = time.time_ns() // 1_000_000
            plain = producer.send(topic, b"plain")
            with_headers = producer.send(topic, b"headers", headers=[("h", b"1")])
            producer.flush(timeout=30)
            after = time.time_ns() // 1_000_000
            own = producer.send(topic, b"own", timestamp_ms=1_234_567)
            results = [f.result(timeout=30) for f in (plain, with_headers, own)]
        assert daemon.stop() == 0
    stored = {r.value: r.timestamp for r in read_all(tansu.bootstrap, topic, 3, timeout_s=30)}
    for name, result in zip((b"plain", b"headers", b"own"), results, strict=True):
        assert result.timestamp == stored[name], (name, result)
    assert before <= results[0].timestamp <= after and before <= results[1].timestamp <= after
    assert results[2].timestamp == 1_234_567


def test_children_die_with_a_killed_supervisor_and_the_next_start_delivers_what_they_took(
    tansu, tmp_path
):
    """kill -9 of the supervisor alone: an orphaned ingest would go on accepting into ring
    files the next kpd adopts. The children die with it; the next start delivers everything
    that was accepted (at ack level accepted the app got its answer before the kill)."""
    topic = "orphans"
    tansu.create_topic(topic, 2)
    daemon = KpdDaemon(tmp_path, tansu.bootstrap, workers=2).start()
    children = daemon.child_pids("ingest") + daemon.child_pids("worker")
    assert len(children) == 3
    with Producer(daemon.socket_path, acks="accepted") as producer:
        for i in range(2000):
            producer.send(topic, b"%d" % i)
        producer.flush(timeout=30)
    os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.process.wait()

    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    wait_for(lambda: not any(map(running, children)), 10, "the children to exit")
    daemon.start()  # the same config and ring files: the next start adopts them
    try:
        values = {r.value for r in read_all(tansu.bootstrap, topic, 2000, exact=False)}
        assert values >= {b"%d" % i for i in range(2000)}
    finally:
        assert daemon.stop() == 0
