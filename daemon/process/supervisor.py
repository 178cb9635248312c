"""The supervisor: rings, children, signals, restarts. It never touches record data.

Owns the rings' eventfds (created here, inherited by children, kept open across child
restarts so a replacement attaches to the very same ring), the child processes, and the
embedded broker when configured. The ring files themselves outlive it: at start it adopts
what the previous daemon left (``ring_files``) before any child runs, so every worker starts
with its predecessor's unreleased entries ahead of anything new, and ingest opens the socket
only after that. Signal handlers only enqueue; the main loop dispatches to ``handle_<signal>``.

Shutdown (SIGTERM/SIGINT) is a bounded drain: ingest quiesces (accepts and reads nothing
more), then the workers read their rings dry and flush to Kafka within ``shutdown.timeout``;
what is not delivered by then stays in the ring files for the next start. Then ingest
forwards the last reports and exits; the supervisor logs "stopped" with what the workers
delivered and left.

Configuration flows down by value: the supervisor validated the file once (``kpd run``) and
hands each child its settings (``daemon.process.handoff``); children never read the file. A
SIGHUP re-reads and validates it here: settings in ``LIVE_SETTINGS`` apply at once to the
supervisor and every child; any other change is named in the log and in ``/status`` as
waiting for a restart, and until then every child, including one respawned after a crash,
keeps running the settings its siblings run. An invalid file changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from pathlib import Path

from daemon.accel import IMPLEMENTATION, native
from daemon.config import ConfigError, DaemonConfig, changed_settings, load_config
from daemon.metrics import mark_dead, prepare_multiprocess_dir
from daemon.process.children import Child
from daemon.process.embedded import EmbeddedBroker
from daemon.process.handoff import ChildSpec, LiveSettings, RingEnd
from daemon.process.http import MetricsServer
from daemon.process.logs import setup_logging
from daemon.process.ring_files import RingFiles, prepare_ring_files
from daemon.process.sdnotify import SystemdNotifier, listen_fds, run_watchdog
from daemon.process.status.document import prepare_status_dir
from daemon.process.txn_layout import fence_previous_layout
from daemon.ring import MemoryOrderingError, RingWakeups, ordering_of

__all__ = ["LIVE_SETTINGS", "Supervisor"]

log = logging.getLogger(__name__)

_BOOT_TIMEOUT_S = 30.0

# Settings a SIGHUP applies to the running daemon; every other change waits for a restart.
LIVE_SETTINGS = frozenset({"log.level", "log.format"})


class BootFailure(RuntimeError):
    pass


class Supervisor:
    def __init__(self, config: DaemonConfig, config_path: str) -> None:
        self._config = config
        self._config_path = config_path
        self._wakeups: list[RingWakeups] = []
        self._ring_files: RingFiles | None = None
        self._children: list[Child] = []
        self._signals: asyncio.Queue[int] = asyncio.Queue()
        self._broker: EmbeddedBroker | None = None
        self._stopping = False
        self._notifier = SystemdNotifier.from_environ()
        self._listen_fd: int | None = None  # the socket systemd passed us (kpd.socket), if any
        self._tasks: set[asyncio.Task] = set()
        self._http: MetricsServer | None = None
        self._status_dir: Path | None = None
        self._restart_needed: list[str] = []  # YAML paths changed in the file since start
        self._last_reload: dict | None = None  # {"time", "ok", "error"} of the last SIGHUP
        self._started = time.monotonic()
        self.exit_code = 0

    # ---- setup -------------------------------------------------------------------------

    def _adopt_ring_files(self) -> RingFiles:
        """The previous daemon's ring files adopted (or set aside), the missing ones made."""
        rings = self._config.rings
        try:
            return prepare_ring_files(
                rings.directory,
                rings.prefix,
                self._config.workers.count,
                rings.records_bytes,
                rings.reports_bytes,
            )
        except OSError as exc:
            raise BootFailure(f"rings.directory {rings.directory}: {exc}") from exc

    def _ring_end(self, path: str) -> RingEnd:
        wakeups = RingWakeups.create()
        self._wakeups.append(wakeups)
        return RingEnd(path, tuple(wakeups.fds()))

    def _child_config(self, bootstrap: tuple[tuple[str, int], ...] | None) -> DaemonConfig:
        """The configuration children run: the validated file, with ``bootstrap.servers:
        embedded`` resolved to the embedded broker's address."""
        config = self._config
        if bootstrap is None:
            return config
        producer = dataclasses.replace(config.producer, bootstrap_servers=bootstrap)
        return dataclasses.replace(config, producer=producer)

    def _children_specs(self, bootstrap) -> list[Child]:
        cfg = self._config
        workers = cfg.workers.count
        self._ring_files = self._adopt_ring_files()
        records = [self._ring_end(path) for path in self._ring_files.records]
        reports = [self._ring_end(path) for path in self._ring_files.reports]
        config = self._child_config(bootstrap)
        status_dir = str(self._status_dir) if self._status_dir else None
        children = []
        for index in range(workers):
            spec = ChildSpec(
                "worker", index, config, (records[index],), (reports[index],), status_dir, None
            )
            children.append(Child(spec, (*records[index].fds, *reports[index].fds)))
        ingest = ChildSpec(
            "ingest", 0, config, tuple(records), tuple(reports), status_dir, self._listen_fd
        )
        all_fds = tuple(fd for ring in records + reports for fd in ring.fds)
        if self._listen_fd is not None:
            all_fds += (self._listen_fd,)
        children.append(Child(ingest, all_fds))
        return children

    # ---- running -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._signals.put_nowait, signum)
        # Children inherit the environment, so they choose the same implementation.
        log.log(logging.INFO if native is not None else logging.WARNING,
                "accelerator: %s", IMPLEMENTATION)  # fmt: skip
        try:
            log.info("ring memory ordering: %s", ordering_of())
        except MemoryOrderingError as exc:
            log.error("%s; not starting", exc)
            return 1
        bootstrap = None
        activated = listen_fds()
        if activated:
            self._listen_fd = activated[0].fd
            log.info("socket activation: serving systemd's socket (fd %d)", self._listen_fd)
        try:
            if self._config.producer.embedded_broker:
                log_path = Path(self._config.socket.path).parent / "embedded-broker.log"
                self._broker = EmbeddedBroker(log_path)
                await self._broker.start()
                bootstrap = (self._broker.address,)
                log.info("kafka.bootstrap.servers: embedded -> 127.0.0.1:%d", self._broker.port)
            await self._start_metrics()
            if self._config.producer.transactional:
                await self._fence_previous_layout(bootstrap)
            self._children = self._children_specs(bootstrap)
            await self._boot_all()
            workers = len(self._children) - 1
            log.info("kpd ready: socket %s, %d workers", self._config.socket.path, workers)
            self._notifier.ready(status=f"serving {self._config.socket.path}, {workers} workers")
            self._spawn_task(run_watchdog(self._notifier, self._healthy))
            await self._main_loop()
        except BootFailure as exc:
            log.error("%s; stopping", exc)
            self.exit_code = 1
            await self._stop_all(drain=False)
        finally:
            await self._cleanup()
        return self.exit_code

    async def _start_metrics(self) -> None:
        """The /metrics and /status endpoint; children inherit PROMETHEUS_MULTIPROC_DIR."""
        if not self._config.metrics.enabled:
            return
        cfg = self._config
        state = Path(cfg.socket.path).parent / f"{cfg.rings.prefix}-state"
        metrics_dir = prepare_multiprocess_dir(state / "metrics")
        self._status_dir = prepare_status_dir(state / "status")
        self._http = MetricsServer(
            cfg.metrics.listen,
            metrics_dir,
            self._status_dir,
            lambda: self._children,
            self.config_state,
            lambda: self._ring_files.status() if self._ring_files else None,
        )
        try:
            await self._http.start()
        except OSError as exc:
            raise BootFailure(f"cannot serve metrics on {cfg.metrics.listen}: {exc}") from exc

    async def _fence_previous_layout(self, bootstrap) -> None:
        """Exactly-once mode: no worker writes before the ids of an older worker layout are
        fenced (``txn_layout``); bounded by max.block.ms, then the daemon does not start."""
        producer = self._config.producer
        if bootstrap:
            servers = tuple((host, int(port)) for host, port in bootstrap)
            producer = dataclasses.replace(producer, bootstrap_servers=servers)
        try:
            async with asyncio.timeout(producer.max_block_ms / 1000):
                await fence_previous_layout(self._config, producer)
        except Exception as exc:  # any failure means: do not start writing
            raise BootFailure(
                f"cannot fence the transactional ids of the previous worker layout: "
                f"{exc or type(exc).__name__}"
            ) from exc

    def _spawn_task(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _healthy(self) -> bool:
        """Every child runs and has booted: only then does the watchdog beat."""
        return all(
            c.process is not None and c.process.returncode is None and c.ready.is_set()
            for c in self._children
        )

    async def _boot_all(self) -> None:
        for child in self._children:
            await child.spawn()
        for child in self._children:
            await self._await_ready(child)

    async def _await_ready(self, child: Child) -> None:
        ready = asyncio.ensure_future(child.ready.wait())
        exited = asyncio.ensure_future(child.exited.wait())
        await asyncio.wait(
            {ready, exited}, timeout=_BOOT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        exited.cancel()
        if not child.ready.is_set():
            raise BootFailure(f"{child.name} failed to boot (exit {child.process.returncode})")

    async def _main_loop(self) -> None:
        loop = asyncio.get_running_loop()
        watchers = {loop.create_task(self._watch(child)) for child in self._children}
        try:
            while not self._stopping:
                signum = await self._signals.get()
                if signum == signal.SIGHUP:
                    self.handle_sighup()
                else:
                    await self.handle_sigterm()
        finally:
            for task in watchers:
                task.cancel()

    async def _watch(self, child: Child) -> None:
        """Restart a child that dies while the daemon runs; stop on one that cannot boot."""
        while not self._stopping:
            await child.exited.wait()
            if self._http is not None:
                mark_dead(child.process.pid)  # its live gauges go; its counters stay
            if self._stopping or child.stopping:
                return
            code = child.process.returncode
            child.failures_in_a_row += 1
            child.restarts += 1
            delay = child.backoff_s()
            log.warning("%s exited with %s; restarting in %.1fs", child.name, code, delay)
            self._notifier.status(f"restarting {child.name} (exit {code})")
            await asyncio.sleep(delay)
            if self._stopping:
                return
            await child.spawn()
            try:
                await self._await_ready(child)
            except BootFailure as exc:
                log.error("%s; stopping the daemon", exc)
                self.exit_code = 1
                self._signals.put_nowait(signal.SIGTERM)
                return

    # ---- signals -----------------------------------------------------------------------

    async def handle_sigterm(self) -> None:
        stop_started = time.monotonic()
        log.info(
            "stopping: draining within %.1fs; what is left stays in the ring files",
            self._config.shutdown.timeout_s,
        )
        self._notifier.stopping(status="draining accepted records to Kafka")
        await self._stop_all(drain=True)
        log.info("stopped after %.1fs: %s", time.monotonic() - stop_started, self._stop_account())

    def _stop_account(self) -> str:
        """What the workers said they delivered and left when they stopped."""
        workers = [c for c in self._children if c.role == "worker"]
        told = [c.stopped for c in workers if c.stopped is not None]
        delivered = sum(r["delivered"] for r in told)
        failed = sum(r["failed"] for r in told)
        left = sum(r["left_bytes"] for r in told)
        text = f"{delivered} records delivered and {failed} failed since the workers started; " + (
            f"{left} bytes of records left in the rings" if left else "nothing left behind"
        )
        silent = [c.name for c in workers if c.stopped is None]
        if silent:
            text += f" ({', '.join(silent)} stopped without an account: killed?)"
        return text

    def handle_sighup(self) -> None:
        self._notifier.reloading()
        try:
            self._reload()
        finally:
            self._notifier.ready()

    def _reload(self) -> None:
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            log.error(
                "reload: %s is invalid; still running the settings loaded before:\n%s",
                self._config_path,
                exc,
            )
            self._last_reload = {"time": time.time(), "ok": False, "error": str(exc)}
            return
        changed = changed_settings(self._config, new)
        live = [path for path in changed if path in LIVE_SETTINGS]
        if live:
            self._apply_live(new)
            log.info("reload: applied %s (log level %s)", ", ".join(live), new.log.level)
        self._restart_needed = changed_settings(self._config, new)
        if self._restart_needed:
            log.warning(
                "reload: %s changed in %s; these take effect after a restart "
                "(until then every process keeps the settings it started with)",
                ", ".join(self._restart_needed),
                self._config_path,
            )
        elif not live:
            log.info("reload: %s unchanged", self._config_path)
        self._last_reload = {"time": time.time(), "ok": True, "error": None}

    def _apply_live(self, new: DaemonConfig) -> None:
        """The live settings of ``new`` become the running ones, here and in every child
        (and in the spec a respawned child gets)."""
        self._config = dataclasses.replace(self._config, log=new.log)
        setup_logging(new.log.level, new.log.format, "supervisor")
        live = LiveSettings(log=new.log)
        for child in self._children:
            child.apply_live(live)

    def config_state(self) -> dict:
        """The ``config`` part of ``/status``: the file, what a restart would change, and how
        the last SIGHUP went."""
        return {
            "source": self._config_path,
            "live_settings": sorted(LIVE_SETTINGS),
            "restart_needed": list(self._restart_needed),
            "last_reload": self._last_reload,
        }

    async def _stop_all(self, drain: bool) -> None:
        self._stopping = True
        for child in self._children:
            child.stopping = True
        ingest = [c for c in self._children if c.role == "ingest"]
        workers = [c for c in self._children if c.role == "worker"]
        deadline = self._config.shutdown.timeout_s + 5.0
        if drain:
            for child in ingest:
                child.signal(signal.SIGTERM)
            await _wait_any(ingest, lambda c: c.quiesced, deadline)
        for child in workers:
            child.signal(signal.SIGTERM)
        await _wait_any(workers, lambda c: c.exited, deadline)
        for child in ingest:
            child.signal(signal.SIGUSR1)
        await _wait_any(ingest, lambda c: c.exited, 10.0)
        for child in self._children:
            if child.process is not None and child.process.returncode is None:
                log.warning("%s did not stop in time; killing it", child.name)
                child.signal(signal.SIGKILL)
                await child.exited.wait()

    async def _cleanup(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._notifier.close()
        if self._http is not None:
            await self._http.close()
        for wakeups in self._wakeups:  # the ring files stay: the next start adopts them
            wakeups.close()
        if self._broker is not None:
            await self._broker.stop()


async def _wait_any(children: list[Child], event_of, timeout_s: float) -> None:
    waits = [
        asyncio.ensure_future(_first(event_of(child).wait(), child.exited.wait()))
        for child in children
    ]
    if waits:
        await asyncio.wait(waits, timeout=timeout_s)
        for w in waits:
            w.cancel()


async def _first(*aws) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
