"""The supervisor as an operator sees it: a hung child replaced, health and readiness, the
version, counters present from the start, what each process costs."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from daemon.accel import IMPLEMENTATION
from daemon.process.status.text import format_status
from daemon.version import VERSION
from kpd import Producer
from tests.brokers.ports import free_port
from tests.brokers.reader import read_all
from tests.daemon_harness import REPO, KpdDaemon
from tests.waiting import wait_for


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
        return json.loads(answer.read())


def _worker_row(status: dict) -> dict:
    return next(c for c in status["children"] if c["role"] == "worker")


def test_a_stopped_worker_is_replaced_and_its_records_reach_kafka(tansu, tmp_path):
    """SIGSTOP (a deadlock looks the same from outside): kpd status says NOT RESPONDING, the
    supervisor kills and replaces it after supervisor.heartbeat_timeout, and the records sent
    before and while it hung all reach Kafka."""
    topic = "hung-worker"
    tansu.create_topic(topic, 2)
    port = free_port()
    extra = {
        "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"},
        "supervisor": {"heartbeat_timeout": "4s"},
    }
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1, extra=extra) as daemon:
        (victim,) = daemon.child_pids("worker")
        with Producer(daemon.socket_path, acks="kafka") as producer:
            before = [producer.send(topic, b"before-%d" % i) for i in range(100)]
            assert all(f.result(timeout=30).offset >= 0 for f in before)
            os.kill(victim, signal.SIGSTOP)
            try:
                during = [producer.send(topic, b"during-%d" % i) for i in range(100)]
                hung = wait_for(
                    lambda: (
                        _worker_row(_status(port))["not_responding_s"] is not None and _status(port)
                    ),
                    10,
                    "/status to show the worker not responding",
                )
                assert "worker-0: NOT RESPONDING for " in format_status(hung)
                wait_for(
                    lambda: daemon.child_pids("worker") not in ([], [victim]),
                    30,
                    "the supervisor to replace the hung worker",
                )
            finally:
                with contextlib.suppress(ProcessLookupError):  # gone once replaced
                    os.kill(victim, signal.SIGCONT)
            assert all(f.result(timeout=60).offset >= 0 for f in during)
        row = wait_for(lambda: _worker_row(_status(port)), 5, "status")
        assert row["restarts"] == 1 and row["not_responding_s"] is None
        assert daemon.stop() == 0
    log = daemon.log_tail(100_000)
    assert f"worker-0 (pid {victim}) NOT RESPONDING for " in log
    values = sorted(r.value for r in read_all(tansu.bootstrap, topic, 200, exact=False))
    expected = sorted(b"%s-%d" % (when, i) for when in (b"before", b"during") for i in range(100))
    assert sorted(set(values)) == expected  # at least once: nothing lost


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(port: int) -> dict[tuple[str, tuple], float]:
    _, body = _get(port, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_an_operator_sees_version_health_and_every_counter_from_the_start(tansu, tmp_path):
    topic = "operator-view"
    tansu.create_topic(topic, 2)
    port = free_port()
    extra = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    version = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--version"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert version.returncode == 0 and version.stdout == f"kpd {VERSION}\n"
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=extra) as daemon:
        assert f"kpd {VERSION} starting" in daemon.log_tail()
        assert _get(port, "/healthz") == (200, "ok\n")
        # Before any record: the counters an alert's rate() needs are there, at 0.
        retries = ("kpd_batch_retries_total", (("worker", "1"),))
        samples = wait_for(
            lambda: (
                (s := _samples(port)).get(("kpd_ingest_records_accepted_total", ())) == 0
                and s.get(retries) == 0
                and s
            ),
            10,
            "the first flush of ingest and the workers",
        )
        assert (
            samples[("kpd_ingest_records_rejected_total", (("reason", "TOPIC_NOT_ALLOWED"),))] == 0
        )
        build = [k for k in samples if k[0] == "kpd_build_info"]
        assert build == [
            (
                "kpd_build_info",
                (
                    ("accelerator", IMPLEMENTATION),
                    ("python", platform.python_version()),
                    ("version", VERSION),
                ),
            )
        ]
        for child in ("supervisor", "ingest", "worker-0", "worker-1"):
            assert samples[("kpd_process_proportional_bytes", (("child", child),))] > 0
            assert samples[("kpd_process_resident_bytes", (("child", child),))] > 0
            assert samples[("kpd_process_open_fds", (("child", child),))] > 2
            assert ("kpd_process_cpu_seconds_total", (("child", child),)) in samples

        with Producer(daemon.socket_path, acks="kafka") as producer:
            assert producer.server_name.startswith(f"kpd/{VERSION} ")
            for partition in range(2):
                producer.send(topic, b"x", partition=partition).result(timeout=30)
        failed = ("kpd_records_failed_total", (("reason", "DELIVERY_TIMEOUT"), ("topic", topic)))
        wait_for(
            lambda: sum(
                v for (name, labels), v in _samples(port).items()
                if (name, tuple(x for x in labels if x[0] != "worker")) == failed
            ) == 0 and any(k[0] == failed[0] for k in _samples(port)),
            10,
            "kpd_records_failed_total at 0 once the topic is seen",
        )  # fmt: skip
        # Ready: every child beats, every worker owning partitions reaches a broker.
        assert wait_for(lambda: _get(port, "/readyz")[0] == 200, 20, "/readyz")
        (ingest,) = daemon.child_pids("ingest")
        os.kill(ingest, signal.SIGSTOP)
        try:
            _, body = wait_for(
                lambda: (answer := _get(port, "/readyz"))[0] == 503 and answer,
                20,
                "/readyz to notice the stopped ingest",
            )
            assert body.startswith("ingest: not responding for ")
            assert _get(port, "/healthz")[0] == 200  # alive: the supervisor answers
        finally:
            os.kill(ingest, signal.SIGCONT)
        assert wait_for(lambda: _get(port, "/readyz")[0] == 200, 20, "/readyz again")
        assert daemon.stop() == 0


def _kpd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_kpd_status_finds_a_port_0_daemon_and_one_whose_config_broke(tmp_path):
    extra = {"metrics": {"enabled": True, "listen": "127.0.0.1:0"}}
    with KpdDaemon(tmp_path, "embedded", workers=1, extra=extra) as daemon:
        url = wait_for(
            lambda: (
                (tmp_path / "kpd.sock.url").exists()
                and (tmp_path / "kpd.sock.url").read_text().strip()
            ),
            10,
            "the URL file beside the socket",
        )
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        status = _kpd("status", "--config", str(daemon.config_path))
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"kpd supervisor pid {daemon.process.pid}: 2 children")
        for override in (["--url", url], ["--socket", daemon.socket_path]):
            by = _kpd("status", "--config", "/nonexistent/kpd.yaml", *override)
            assert by.returncode == 0, (override, by.stderr)
            assert by.stdout.startswith(f"kpd supervisor pid {daemon.process.pid}")

        daemon.config_path.write_text("kafka: [unclosed\n")
        os.kill(daemon.process.pid, signal.SIGHUP)
        wait_for(lambda: "reload:" in daemon.log_tail(), 10, "the reload to be logged")
        reload_lines = [line for line in daemon.log_tail().splitlines() if "reload:" in line]
        assert len(reload_lines) == 1 and "invalid YAML at line" in reload_lines[0]
        broken = _kpd("status", "--config", str(daemon.config_path))
        assert broken.returncode == 0, broken.stderr
        assert broken.stderr.startswith(f"kpd: warning: {daemon.config_path} does not load now")
        assert "config reload " in broken.stdout and " failed, still running the previous" in (
            broken.stdout
        )
        assert daemon.stop() == 0
    assert not (tmp_path / "kpd.sock.url").exists()


def test_an_idle_healthy_daemon_does_not_look_broken(tansu, tmp_path):
    """Connections closed after connections.max.idle.ms, brokers never needed: the documented
    alert min by (broker) (kpd_broker_connected) == 0 stays quiet, kpd status says no broker
    is unreachable and /readyz says ready."""
    topic = "idle-daemon"
    tansu.create_topic(topic, 2)
    port = free_port()
    extra = {
        "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"},
        "kafka": {"connections.max.idle.ms": 500},
    }
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=extra) as daemon:
        with Producer(daemon.socket_path, acks="kafka") as producer:
            for partition in range(2):
                producer.send(topic, b"once", partition=partition).result(timeout=30)
        before = sum(
            v for (name, _), v in _samples(port).items() if name == "kpd_broker_disconnects_total"
        )

        def idle_closed() -> bool:
            samples = _samples(port)
            closed = sum(v for (n, _), v in samples.items() if n == "kpd_broker_disconnects_total")
            return closed > before

        wait_for(idle_closed, 20, "the idle connections to close")
        connected = {
            labels: v for (name, labels), v in _samples(port).items()
            if name == "kpd_broker_connected"
        }  # fmt: skip
        assert connected and all(v == 1 for v in connected.values()), connected
        text = _kpd("status", "--config", str(daemon.config_path))
        assert text.returncode == 0 and "unreachable" not in text.stdout, text.stdout
        assert _get(port, "/readyz") == (200, "ready\n")
        assert daemon.stop() == 0


def test_the_rings_share_one_budget_and_status_shows_each_process_memory(tmp_path):
    port = free_port()
    extra = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    daemon = KpdDaemon(tmp_path, "embedded", workers=4, extra=extra)
    for size in ("records_bytes", "reports_bytes"):  # the harness's small fixed sizes
        del daemon.config["rings"][size]
    daemon.config["rings"]["memory"] = "16MiB"
    daemon.write_config()
    with daemon:
        # The rings (each worker's done journal, ``records-N.done``, is outside the budget)
        files = [
            p
            for p in daemon.rings_dir.glob(f"{daemon.prefix}-re*")
            if p.name.rpartition("-")[2].isdigit()
        ]
        assert len(files) == 8
        total = sum(path.stat().st_size for path in files)
        assert 15 * 1024 * 1024 < total <= 16 * 1024 * 1024 + 8 * 4096  # + ring headers
        text = _kpd("status", "--config", str(daemon.config_path))
        assert text.returncode == 0, text.stderr
        assert " held (PSS)" in text.stdout.splitlines()[0]
        assert "MEMORY (RSS/PSS)" in text.stdout
        assert daemon.stop() == 0


def test_counts_do_not_drift_when_ingest_is_killed(tansu, tmp_path):
    """Records accepted just before a kill -9 of ingest (inside its once-a-second flush) are
    counted by ingest as by the workers: accepted == received, for good."""
    topic = "no-drift"
    tansu.create_topic(topic, 2)
    port = free_port()
    extra = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=extra) as daemon:
        with Producer(daemon.socket_path, acks="accepted") as producer:
            for i in range(3000):
                producer.send(topic, b"r%d" % i)
            producer.flush(timeout=30)
        (ingest,) = daemon.child_pids("ingest")
        os.kill(ingest, signal.SIGKILL)  # before its next periodic flush, most likely
        wait_for(lambda: daemon.child_pids("ingest") not in ([], [ingest]), 30, "a new ingest")

        def totals() -> tuple[float, float] | None:
            samples = _samples(port)
            accepted = samples.get(("kpd_ingest_records_accepted_total", ()), 0)
            received = sum(v for (n, _), v in samples.items() if n == "kpd_records_received_total")
            return (accepted, received) if received == 3000 else None

        assert wait_for(totals, 20, "the workers to count every record") == (3000, 3000)
        assert daemon.stop() == 0
