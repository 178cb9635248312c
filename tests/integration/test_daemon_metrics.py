"""Operators' view of a running daemon: /metrics counts and /status equal what was sent."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import urllib.request

from kpd import Producer
from tests.brokers.ports import free_port
from tests.daemon_harness import REPO, KpdDaemon, wait_for


def _scrape(port: int) -> dict[str, float]:
    """Sum every sample of each metric name (over labels) from /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    totals: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


@contextlib.contextmanager
def _daemon_with_metrics(tansu, tmp_path, topic: str):
    """A two-worker daemon serving /metrics, and ``topic`` of 4 partitions: (daemon, port)."""
    tansu.create_topic(topic, 4)
    port = free_port()
    extra = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=extra) as daemon:
        yield daemon, port


def _send_acked(daemon: KpdDaemon, topic: str, count: int) -> None:
    """Send ``count`` keyed records with ack kafka; every one delivered."""
    with Producer(daemon.socket_path, acks="kafka") as producer:
        futures = [producer.send(topic, b"v%d" % i, key=b"k%d" % i) for i in range(count)]
        producer.flush(timeout=60)
    assert all(f.result().offset >= 0 for f in futures)


def test_metrics_and_status_count_what_was_sent(tansu, tmp_path):
    topic = "metrics-counts"
    count = 5_000
    with _daemon_with_metrics(tansu, tmp_path, topic) as (daemon, port):
        _send_acked(daemon, topic, count)

        def counted() -> dict[str, float] | None:
            metrics = _scrape(port)
            done = metrics.get("kpd_records_sent_total") == count
            return (
                metrics
                if done and metrics.get("kpd_ingest_records_accepted_total") == count
                else None
            )

        metrics = wait_for(counted, 20, "metrics to count every record")
        assert metrics["kpd_records_received_total"] == count
        assert metrics.get("kpd_records_failed_total", 0) == 0
        assert metrics["kpd_record_delivery_seconds_count"] == count

        status = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read()
        )
        snapshots = [c["snapshot"] for c in status["children"] if c["role"] == "worker"]
        assert all(snapshots), status
        owned = sorted(p for snap in snapshots for p in snap["partitions"].get(topic, []))
        assert owned == [0, 1, 2, 3], status

        shown = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "status", "--config", str(daemon.config_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert "worker" in shown.stdout and topic in shown.stdout, shown.stdout

        as_json = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "status", "--json",
             "--config", str(daemon.config_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip
        assert as_json.returncode == 0, as_json.stderr
        document = json.loads(as_json.stdout)  # the whole of stdout is one JSON document
        assert sorted(c["role"] for c in document["children"]) == ["ingest", "worker", "worker"]
        ingest = next(c["snapshot"] for c in document["children"] if c["role"] == "ingest")
        assert ingest["records"]["accepted"] == count, ingest


def test_metrics_port_in_use_stops_the_daemon_at_boot(tansu, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
        daemon = KpdDaemon(tmp_path, tansu.bootstrap, workers=1, extra=extra)
        result = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(daemon.config_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "cannot serve metrics" in result.stderr


def _reports_ring_bytes(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("kpd_ring_bytes_total{") and 'ring="reports"' in line
    )


def test_workers_report_nothing_for_records_no_client_waits_on(tansu, tmp_path):
    # The ring entry carries the ack level: records sent with ack none or accepted are
    # delivered without one byte through the reports rings; ack kafka records use them.
    topic = "quiet-acks"
    tansu.create_topic(topic, 4)
    port = free_port()
    extra = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    count = 2_000
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=extra) as daemon:
        for acks in ("none", "accepted"):
            with Producer(daemon.socket_path, acks=acks) as producer:
                for i in range(count // 2):
                    producer.send(topic, b"v%d" % i, key=b"k%d" % i)
                producer.flush(timeout=60)
        wait_for(
            lambda: _scrape(port).get("kpd_records_sent_total") == count,
            20,
            "every record delivered",
        )
        assert _reports_ring_bytes(port) == 0
        with Producer(daemon.socket_path, acks="kafka") as producer:
            producer.send(topic, b"reported", key=b"k").result(timeout=30)
        # Exactly one report entry went through: conn id + count + written_ns (20), a REPORT
        # frame of one run (5 + 4 + 40). Had the quiet records been reported, the total would
        # never be this.
        wait_for(lambda: _reports_ring_bytes(port) == 69, 20, "exactly the kafka-ack report")


STAGES = ("ring", "batch", "write", "broker", "report", "forward")


def test_every_stage_of_the_stage_trace_counts_the_records_that_passed(tansu, tmp_path):
    # kpd_record_stage_seconds{stage}: each stage observes every ack-kafka record once
    # (ingest's "forward" included), whichever worker it went through.
    topic = "stage-trace"
    count = 2_000
    with _daemon_with_metrics(tansu, tmp_path, topic) as (daemon, port):
        _send_acked(daemon, topic, count)

        def stage_counts() -> dict[str, float] | None:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            counts = dict.fromkeys(STAGES, 0.0)
            for line in body.read().decode().splitlines():
                if line.startswith("kpd_record_stage_seconds_count{"):
                    stage = line.split('stage="', 1)[1].split('"', 1)[0]
                    counts[stage] = counts.get(stage, 0.0) + float(line.rsplit(" ", 1)[1])
            return counts if all(n == count for n in counts.values()) else None

        wait_for(stage_counts, 20, "every stage to count every record")
