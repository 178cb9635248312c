"""Configuration flows down by value: the supervisor validates the file once and hands every
child its settings; a child never reads the file. So an edit (even an invalid one) changes
nothing until SIGHUP; a worker respawned after kill -9 runs its siblings' settings; SIGHUP
applies the log settings at once and names every other change as waiting for a restart, in
the log and in /status; an invalid file on SIGHUP keeps everything running with a clear error.

Observables: ``kafka.acks: 0`` makes every delivery report's offset -1 (Kafka answers nothing
at acks=0), so offsets >= 0 prove a worker still runs acks=all; ``workers.cpu_affinity``
shows in the worker's CPU set.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest
import yaml

from kpd import Producer
from tests.brokers.ports import free_port
from tests.brokers.reader import read_all
from tests.daemon_harness import KpdDaemon, wait_for

pytestmark = pytest.mark.timeout(180)


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
        return json.loads(answer.read())


def _send(daemon: KpdDaemon, topic: str, tag: str, count: int = 10) -> list[int]:
    """Offsets of ``count`` records sent at ack point kafka (each raises if it failed)."""
    with Producer(daemon.socket_path, acks="kafka") as producer:
        futures = [producer.send(topic, f"{tag}-{i}".encode()) for i in range(count)]
        producer.flush(timeout=30)
    return [f.result(timeout=30).offset for f in futures]


def _replace_worker(daemon: KpdDaemon) -> int:
    """kill -9 the one worker; return the PID of its replacement once it serves."""
    (victim,) = daemon.child_pids("worker")
    os.kill(victim, signal.SIGKILL)

    def replaced() -> int | None:
        pids = daemon.child_pids("worker")
        return pids[0] if len(pids) == 1 and pids[0] != victim else None

    pid = wait_for(replaced, 30, "the worker's replacement")
    wait_for(lambda: "kpd: worker 0" in _title(pid), 30, "the replacement to start")
    return pid


def _title(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _edit(daemon: KpdDaemon, **changes: dict) -> None:
    config = yaml.safe_load(daemon.config_path.read_text())
    for section, values in changes.items():
        config.setdefault(section, {}).update(values)
    daemon.config_path.write_text(yaml.safe_dump(config))


def test_children_run_the_supervisors_settings_whatever_the_file_says_until_sighup(tansu, tmp_path):
    topic = "config-by-value"
    tansu.create_topic(topic, 2)
    port = free_port()
    extra = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1, extra=extra) as daemon:
        assert min(_send(daemon, topic, "before")) >= 0
        original = daemon.config_path.read_text()

        # An edit without SIGHUP, then a crash: the replacement runs the old settings.
        _edit(daemon, kafka={"acks": 0}, workers={"cpu_affinity": True})
        pid = _replace_worker(daemon)
        assert min(_send(daemon, topic, "edited")) >= 0, "the replacement read the file"
        assert os.sched_getaffinity(pid) == os.sched_getaffinity(0), "it read the file"

        # An invalid file, then a crash: the replacement still boots and delivers.
        daemon.config_path.write_text("kafka: [not, a, mapping\n")
        _replace_worker(daemon)
        assert min(_send(daemon, topic, "invalid-file")) >= 0

        # SIGHUP with the invalid file: a clear error, nothing stops, nothing changes.
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "is invalid; still running" in daemon.log_tail(), 10, "reload error")
        reload = wait_for(lambda: _status(port)["config"]["last_reload"], 10, "/status reload")
        assert reload["ok"] is False and "invalid YAML at line 2" in reload["error"], reload
        assert min(_send(daemon, topic, "bad-reload")) >= 0
        assert daemon.process.poll() is None

        # SIGHUP with a valid edit: the log level applies live (the worker's debug lines
        # appear), acks waits for a restart and is named in the log and in /status.
        daemon.config_path.write_text(original)
        _edit(daemon, kafka={"acks": 0}, log={"level": "debug"})
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "kpd[worker0] DEBUG" in daemon.log_tail(), 10, "live debug logging")
        wait_for(lambda: "reload: kafka.acks, " in daemon.log_tail(), 10, "restart note")
        state = _status(port)["config"]
        # acks=0 turns idempotence off (the finalize rule), which is a change too.
        assert state["restart_needed"] == ["kafka.acks", "kafka.enable.idempotence"], state
        assert state["last_reload"]["ok"] is True, state
        pid = _replace_worker(daemon)  # a respawn gets the live change, not the pending one
        assert min(_send(daemon, topic, "after-reload")) >= 0
        wait_for(
            lambda: "kpd[worker0] DEBUG" in daemon.log_tail(100_000).rsplit("restarting in")[-1],
            10,
            "the replacement logging at debug",
        )
        assert daemon.stop() == 0
    assert "stopped after" in daemon.log_tail()
    assert len(read_all(tansu.bootstrap, topic, 50, timeout_s=30)) == 50
