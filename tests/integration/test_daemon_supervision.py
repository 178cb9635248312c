"""The supervisor watching its children, as an operator sees it: a hung child replaced."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.request

from daemon.process.status.text import format_status
from kpd import Producer
from tests.brokers.ports import free_port
from tests.brokers.reader import read_all
from tests.daemon_harness import KpdDaemon, wait_for


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
