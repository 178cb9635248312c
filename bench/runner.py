"""One measured run: one contender, one workload, one freshly started tansu.

Owns the broker and the contender's child processes for the length of a run, and the parent's
half of the protocol in bench.child. It reads ``/proc`` of the children and the broker just
before "go" and just after "done", so CPU and memory are attributed per process (and the
daemon's /metrics, for its stage trace, when it serves them), then reads
the topic back (bench.verify) before stopping the broker. Every child is stopped by its own
pid, also when the run fails. A contender with ``service="kpd"`` gets a fresh kpd daemon
(bench.kpd_service) between the broker and its children; the daemon's processes are measured
apart from the app's and it is stopped with SIGTERM before the read-back. A contender whose
``binary`` is missing is skipped, not failed; so is one whose child says it cannot run here
(the ``skip`` event of bench.child).

Imports tests.brokers.tansu for the broker (the same one the test suite starts) and no client
library of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from bench.child import ChildSpec
from bench.contenders import Contender
from bench.kpd_service import KpdService
from bench.procstat import cpu_seconds, memory_kib
from bench.stages import stage_figures
from bench.verify import Delivery, count_delivered
from bench.workloads import Workload
from tests.brokers.tansu import TansuBroker

__all__ = ["RunResult", "run_once"]

REPO_ROOT = Path(__file__).resolve().parent.parent
_READY_TIMEOUT_S = 120.0  # imports, building up to 1M records, connecting
_STOP_TIMEOUT_S = 30.0
_METRICS_FLUSH_S = 1.1  # the daemon's processes flush their metrics once a second
_METRICS_SETTLE_S = 5.0


@dataclass
class RunResult:
    contender: str
    workload: str
    run: int
    records: int
    payload_bytes: int  # key + value bytes of one record
    wall_s: float = 0.0
    producer_cpu_s: float = 0.0  # the app: contender children and what they drive
    broker_cpu_s: float = 0.0
    rss_ready_kib: int = 0  # resident set when the clock started (records already built)
    rss_peak_kib: int = 0  # VmHWM at the end: the run's peak, records included
    reaped_cpu_s: float = 0.0  # CPU of a program the child ran (kcat, kpd send, rsyslogd)
    reaped_rss_kib: int = 0  # its peak RSS
    kpd_processes: int = 0  # the daemon's processes (0: no daemon in this run)
    kpd_workers: int = 0
    kpd_cpu_s: float = 0.0
    kpd_cpu_by_process: dict[str, float] = field(default_factory=dict)  # role -> CPU s
    kpd_rss_peak_kib: int = 0  # sum of VmHWM over the daemon's processes
    kpd_ring_bytes: int = 0  # shared memory the daemon's config asks for
    latency: dict | None = None  # a paced run's figures (bench.pacing.latency_summary)
    # The daemon's stage trace over the run (bench.stages.StageFigures as dicts); None when
    # /metrics was not scraped (metrics off), [] when it has no stage trace.
    stages: list[dict] | None = None
    skipped: str = ""  # why the run did not happen (a missing program); not a failure
    warm_ups: int = 0  # records the contender sent before the clock (bench.verify)
    delivered: int = 0  # as the client's delivery reports say
    failed: int = 0
    client_errors: list[str] = field(default_factory=list)
    delivery: Delivery | None = None  # as read back from the broker
    error: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and self.failed == 0
            and self.delivered == self.records
            and self.delivery is not None
            and self.delivery.ok
        )

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s if self.wall_s else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.records * self.payload_bytes / self.wall_s / 1e6 if self.wall_s else 0.0

    def to_json(self) -> dict:
        data = dict(self.__dict__)
        data["delivery"] = None if self.delivery is None else self.delivery.__dict__
        data.update(ok=self.ok, records_per_s=self.records_per_s, mb_per_s=self.mb_per_s)
        return data


# Called with the pids that will be measured, once they are ready; returns a stopper that the
# runner calls after the run. The profiler (bench.profile) plugs in here.
Attach = Callable[[list[int]], Callable[[], None]]


def run_once(
    contender: Contender,
    workload: Workload,
    run: int,
    log_dir: Path,
    done_timeout_s: float = 900.0,
    attach: Attach | None = None,
) -> RunResult:
    if contender.max_records is not None and workload.records > contender.max_records:
        workload = replace(workload, records=contender.max_records)
    result = RunResult(contender.name, workload.name, run, workload.records,
                       workload.payload_bytes)  # fmt: skip
    if contender.binary and shutil.which(contender.binary) is None:
        result.skipped = f"{contender.binary} not installed ({contender.install_hint})"
        return result
    with TansuBroker(log_dir / "tansu") as broker:
        topic = broker.create_topic(f"bench-{workload.name}-{uuid.uuid4().hex[:8]}",
                                    workload.partitions)  # fmt: skip
        try:
            with _service(contender, broker.bootstrap, workload, log_dir) as service:
                _run_children(contender, workload, broker, topic, service, result,
                              log_dir, done_timeout_s, attach)  # fmt: skip
        except (AssertionError, RuntimeError, OSError) as exc:  # the daemon failed
            result.error = result.error or f"kpd: {type(exc).__name__}: {exc}"
        if result.skipped:
            return result
        if not result.error:
            result.delivery = count_delivered(broker.bootstrap, topic, workload,
                                              warm_ups=result.warm_ups)  # fmt: skip
        if not result.ok:
            result.error = result.error or "delivery not verified"
            result.client_errors.append(f"tansu log tail: {broker.log_tail(1500)}")
    return result


def _service(
    contender: Contender, bootstrap: str, workload: Workload, log_dir: Path
) -> contextlib.AbstractContextManager[KpdService | None]:
    if contender.service is None:
        return contextlib.nullcontext()
    if contender.service != "kpd":
        raise ValueError(f"unknown service {contender.service!r}")
    return KpdService(log_dir / "kpd", bootstrap, workload, contender.service_settings)


def _run_children(
    contender: Contender,
    workload: Workload,
    broker: TansuBroker,
    topic: str,
    service: KpdService | None,
    result: RunResult,
    log_dir: Path,
    done_timeout_s: float,
    attach: Attach | None,
) -> None:
    options = dict(contender.options)
    if service is not None:
        options["socket"] = service.socket_path
        result.kpd_processes = len(service.pids)
        result.kpd_workers = service.workers
        result.kpd_ring_bytes = service.ring_bytes
    # A Kafka client through kpd's Kafka listener is pointed at kpd instead of the broker.
    bootstrap = (service and service.kafka_bootstrap) or broker.bootstrap
    children = _spawn(contender, workload, bootstrap, topic, options, log_dir)
    measured = False
    try:
        _measure(children, broker, service, result, done_timeout_s, attach)
        measured = True
    except _Skipped:
        pass
    except (TimeoutError, RuntimeError, OSError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if service is not None:
            result.client_errors.append(f"kpd log tail: {service.log_tail()}")
    finally:
        _stop(children, graceful=measured)


class _Skipped(Exception):
    """A child said it cannot run here (RunResult.skipped says why)."""


class _Child:
    """One contender process and its protocol pipes; owned by run_once."""

    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def receive(self, event: str, deadline: float, alternative: str = "") -> dict:
        """The next message, which must be ``event`` (or ``alternative``, when given)."""
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = stdout.readline() if ready else ""
        if not line:
            why = "timed out" if not ready else self._exit_status()
            raise RuntimeError(f"contender {why} before {event!r}: {self.stderr_tail()}")
        message = json.loads(line)
        if message.get("event") not in (event, alternative or event):
            raise RuntimeError(f"expected {event!r} from the contender, got {message}")
        return message

    def _exit_status(self) -> str:
        # Its output closed: it is exiting, give it a moment to be reaped.
        try:
            return f"exited with status {self.proc.wait(timeout=5)}"
        except subprocess.TimeoutExpired:
            return "closed its output"

    def send(self, command: str) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()

    def stderr_tail(self, max_bytes: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-max_bytes:].decode(errors="replace")
        except FileNotFoundError:
            return "(no output)"


def _spawn(
    contender: Contender,
    workload: Workload,
    bootstrap: str,
    topic: str,
    options: dict,
    log_dir: Path,
) -> list[_Child]:
    children = []
    for shard in range(contender.processes):
        spec = ChildSpec(contender.name, contender.module, bootstrap, topic, workload,
                         shard, contender.processes, options)  # fmt: skip
        log_path = log_dir / f"{contender.name}-{shard}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.child", spec.to_json()],
                cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True,
            )  # fmt: skip
        children.append(_Child(proc, log_path))
    return children


def _measure(
    children: list[_Child],
    broker: TansuBroker,
    service: KpdService | None,
    result: RunResult,
    done_timeout_s: float,
    attach: Attach | None,
) -> None:
    """The protocol: all ready, read /proc (and /metrics), go, all done, read /proc, exit."""
    kpd_pids = service.pids if service else ()
    deadline = time.monotonic() + _READY_TIMEOUT_S
    pids: list[int] = []
    for child in children:
        ready = child.receive("ready", deadline, alternative="skip")
        if ready["event"] == "skip":
            result.skipped = ready["reason"]  # the others are killed by _stop
            raise _Skipped
        pids += [ready["pid"], *ready["measure_pids"]]
    broker_pid = broker.pid
    assert broker_pid is not None
    stop_attached = attach(pids) if attach else None
    try:
        # Scraped before the CPU readings: serving /metrics is not the run's work.
        metrics_before = service.scrape() if service else None
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        kpd_before = {pid: cpu_seconds(pid) for pid in kpd_pids}
        broker_before = cpu_seconds(broker_pid)
        result.rss_ready_kib = sum(memory_kib(pid)["VmRSS"] for pid in pids)
        for child in children:
            child.send("go")
        deadline = time.monotonic() + done_timeout_s
        dones = [child.receive("done", deadline) for child in children]
        result.producer_cpu_s = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        kpd_after = {pid: cpu_seconds(pid) for pid in kpd_pids}
        result.broker_cpu_s = cpu_seconds(broker_pid) - broker_before
        result.kpd_cpu_s = sum(kpd_after.values()) - sum(kpd_before.values())
        if service is not None:
            result.kpd_cpu_by_process = {
                service.roles.get(pid, f"pid {pid}"): kpd_after[pid] - kpd_before[pid]
                for pid in kpd_pids
            }
            result.stages = _stages(service, metrics_before)
        # With several processes this is the sum of their peaks: an upper bound of the total.
        result.rss_peak_kib = sum(memory_kib(pid)["VmHWM"] for pid in pids)
        # Each ring is mapped by two processes (ingest and its worker) and counts in both.
        result.kpd_rss_peak_kib = sum(memory_kib(pid)["VmHWM"] for pid in kpd_pids)
        for child in children:
            child.send("exit")
    finally:
        if stop_attached:
            stop_attached()
    result.wall_s = max(done["wall_s"] for done in dones)
    result.delivered = sum(done["delivered"] for done in dones)
    result.failed = sum(done["failed"] for done in dones)
    result.client_errors = [e for done in dones for e in done["errors"]]
    # Programs a child ran and reaped while timed (kcat): their rusage, as the child read it.
    result.reaped_cpu_s = sum(done["reaped_cpu_s"] for done in dones)
    result.producer_cpu_s += result.reaped_cpu_s
    result.reaped_rss_kib = sum(done["reaped_rss_kib"] for done in dones)
    result.rss_peak_kib += result.reaped_rss_kib
    result.warm_ups = sum(done["warm_ups"] for done in dones)
    latencies = [done["latency"] for done in dones if done["latency"]]
    result.latency = latencies[0] if len(latencies) == 1 else None


def _stages(service: KpdService, before: str | None) -> list[dict] | None:
    """The stage trace of the run's records: /metrics now minus /metrics before "go". The
    daemon's processes flush their histograms on an interval, so scrape until the stage
    counts stop moving (at most ``_METRICS_SETTLE_S``)."""
    if before is None:
        return None
    deadline = time.monotonic() + _METRICS_SETTLE_S
    figures = stage_figures(service.scrape(), before)
    while figures and time.monotonic() < deadline:
        time.sleep(_METRICS_FLUSH_S)
        again = stage_figures(service.scrape(), before)
        if [f.count for f in again] == [f.count for f in figures]:
            break
        figures = again
    return [dataclasses.asdict(f) for f in figures]


def _stop(children: list[_Child], graceful: bool) -> None:
    """Let each child close its client after "exit" (kill it if it hangs); after a failed
    run, kill it at once: it may still be producing."""
    for child in children:
        proc = child.proc
        if not graceful and proc.poll() is None:
            proc.kill()
        if proc.stdin is not None and not proc.stdin.closed:
            # A child still waiting for a command reads EOF and exits.
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
