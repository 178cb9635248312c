"""The kpd daemon that a kpd contender's app processes send to: one fresh daemon per run.

Owns the daemon of one run: writes its config (the run's tansu as bootstrap, the daemon's
default worker count, rings of a unique prefix, metrics off, the workload's acks /
linger.ms / compression, then the contender's own ``service_settings`` on top, section by
section: another worker count for the scaling table, another ``rings`` setting for a
durability row; ``socket.kafka: auto`` opens the Kafka listener on a free loopback port,
``kafka_bootstrap``), starts ``python -m daemon.cli run`` through the test suite's harness
(tests.daemon_harness), finds its processes (the supervisor and its children, by PPID in
/proc, each named by its role) once the socket accepts, and stops it by pid with SIGTERM.
The runner measures those pids apart from the app's, process by process. When the
contender turns metrics on with ``metrics.listen`` at port 0, the service picks a free
loopback port itself (so it knows where to scrape) and ``scrape()`` reads the supervisor's
/metrics text.

Imports no client library and no kpd code: the daemon is a subprocess.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.procstat import child_pids, process_role
from bench.workloads import Workload
from tests.brokers.ports import free_port
from tests.daemon_harness import KpdDaemon

__all__ = ["KpdService"]


def default_workers() -> int:
    """The daemon's ``workers.count: auto`` on this machine: the usable CPUs less one for
    ingest, at least 1 (``daemon.settings.values.auto_worker_count``; spelled out here, as
    this module imports no kpd code: tests/unit/bench pins the two together)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


WORKERS = default_workers()  # kpd at its defaults, unless a contender sets workers.count
_RECORDS_RING_MIB = 16  # per worker, ingest -> worker
_REPORTS_RING_MIB = 4  # per worker, worker -> ingest
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0
_SOCKET_PATH_MAX = 107  # bytes of a UNIX socket's path (sun_path)


class KpdService:
    """One daemon for one run; a context manager. Raises AssertionError (the harness's) or
    RuntimeError when the daemon does not start, stop or clean up."""

    def __init__(
        self, workdir: Path, bootstrap: str, workload: Workload, settings: dict | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        extra = {
            "kafka": {"acks": workload.acks, "linger.ms": workload.linger_ms,
                      "compression.type": workload.compression},
            "rings": {"records_bytes": f"{_RECORDS_RING_MIB}MiB",
                      "reports_bytes": f"{_REPORTS_RING_MIB}MiB"},
            "log": {"level": "warning"},  # per-record logging would be measured as kpd's CPU
        }  # fmt: skip
        for section, values in (settings or {}).items():
            extra.setdefault(section, {}).update(values)
        self.metrics_url = _metrics_url(extra)
        # A Kafka client's bootstrap.servers when the run goes through kpd's Kafka listener.
        self.kafka_bootstrap: str | None = None
        if extra.get("socket", {}).get("kafka") == "auto":
            self.kafka_bootstrap = f"127.0.0.1:{free_port()}"
            extra["socket"] = {**extra["socket"], "kafka": self.kafka_bootstrap}
        self.workers = int(extra.pop("workers", {}).get("count", WORKERS))
        self._short_dir: Path | None = None
        if len(str(workdir / "kpd.sock").encode()) > _SOCKET_PATH_MAX:
            # A deep log directory (pytest's, with a long contender name) cannot hold the
            # daemon's socket: its files go to a short directory, removed after the run.
            self._short_dir = workdir = Path(tempfile.mkdtemp(prefix="kpd-bench-"))
        self._daemon = KpdDaemon(workdir, bootstrap, workers=self.workers, extra=extra)
        self._workdir = workdir
        self.pids: tuple[int, ...] = ()
        self.roles: dict[int, str] = {}  # pid -> "supervisor", "ingest", "worker 0", ...

    @property
    def socket_path(self) -> str:
        return self._daemon.socket_path

    @property
    def ring_bytes(self) -> int:
        """Shared memory the config asks for: every worker's record and report rings."""
        return self.workers * (_RECORDS_RING_MIB + _REPORTS_RING_MIB) * 1024 * 1024

    def __enter__(self) -> KpdService:
        try:
            return self._start()
        except BaseException:
            self._remove_short_dir()
            raise

    def _start(self) -> KpdService:
        self._daemon.start(timeout_s=_START_TIMEOUT_S)
        supervisor = self._daemon.process.pid
        # The supervisor listens before it spawns ingest and the workers, so the socket may
        # accept before all of them exist: wait for them (every child counts as kpd's).
        deadline = time.monotonic() + _START_TIMEOUT_S
        while len(children := child_pids(supervisor)) < self.workers + 1:
            if time.monotonic() > deadline:
                self._daemon.stop(_STOP_TIMEOUT_S)
                raise RuntimeError(f"kpd has children {children}, expected ingest + {self.workers} "
                                   f"workers:\n{self._daemon.log_tail()}")  # fmt: skip
            time.sleep(0.02)
        self.pids = (supervisor, *children)
        self.roles = {supervisor: "supervisor"}
        self.roles.update({pid: process_role(pid) for pid in children})
        return self

    def scrape(self) -> str | None:
        """The supervisor's /metrics text, or None when metrics are off or it does not answer."""
        if self.metrics_url is None:
            return None
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
                text = response.read().decode("utf-8", errors="replace")
        except OSError:
            return None
        # Kept beside the run's logs: the whole /metrics of the run's end, for questions
        # the report's tables do not answer (records per request, in-flight, errors).
        (self._workdir / "metrics-last.prom").write_text(text)
        return text

    def __exit__(self, *exc_info: object) -> None:
        try:
            status = self._daemon.stop(_STOP_TIMEOUT_S)
            if status != 0:
                raise RuntimeError(f"kpd exited with status {status} after SIGTERM:\n"
                                   f"{self._daemon.log_tail()}")  # fmt: skip
        finally:
            self._remove_short_dir()

    def _remove_short_dir(self) -> None:
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)

    def log_tail(self) -> str:
        return self._daemon.log_tail(2000)


def _metrics_url(extra: dict) -> str | None:
    """Where /metrics will be, with a free port put in for port 0; None when metrics are off."""
    metrics = extra.setdefault("metrics", {})
    if not metrics.get("enabled"):
        return None
    host, _, port = str(metrics.get("listen", "127.0.0.1:0")).rpartition(":")
    if int(port) == 0:
        with socket.socket() as probe:  # a port free now; the daemon binds it a moment later
            probe.bind((host, 0))
            port = str(probe.getsockname()[1])
        metrics["listen"] = f"{host}:{port}"
    return f"http://{host}:{port}/metrics"
