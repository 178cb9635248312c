"""One supervised child process: spawn, readiness, exit, restart backoff.

Owns the asyncio subprocess of one role/index, the pipe to its stdin (its ``ChildSpec`` at
every spawn, then live settings; see ``daemon.process.handoff``) and the task reading its
stdout status lines (``READY``, ``QUIESCED``, ``STOPPED <json>``, and ``BEAT`` from its
event loop every interval: ``daemon.process.heartbeat``). A child that exits before saying
READY failed to boot.

The spec is a value the supervisor replaces only for settings that apply live, so a child
respawned after a crash runs exactly the settings its siblings run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace

from daemon.process.handoff import ChildSpec, LiveSettings, encode_message
from daemon.process.heartbeat import BEAT, silence_shown_after_s

log = logging.getLogger(__name__)

__all__ = ["Child"]


@dataclass(slots=True)
class Child:
    spec: ChildSpec
    pass_fds: tuple[int, ...]
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    quiesced: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    failures_in_a_row: int = 0
    stopping: bool = False
    # What the child said it delivered and left when it stopped (its STOPPED line), if it did.
    stopped: dict | None = None
    # Held so the status reader is not garbage-collected mid-flight (asyncio keeps weak refs).
    status_task: asyncio.Task | None = None
    # time.monotonic() of the last sign of life (READY or BEAT); owned by the status reader.
    last_beat: float = 0.0
    hung_kills: int = 0  # times the supervisor killed it for not beating

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def index(self) -> int:
        return self.spec.index

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def spawn(self) -> None:
        self.ready.clear()
        self.quiesced.clear()
        self.exited.clear()
        self.stopped = None
        # Role and index in argv only so `ps` reads well until the child sets its title.
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.process.child",
            self.role,
            str(self.index),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=self.pass_fds,
        )
        self._write(encode_message(self.spec))
        self.status_task = asyncio.get_running_loop().create_task(self._read_status(self.process))

    def apply_live(self, live: LiveSettings) -> None:
        """Settings that apply without a restart: the running child gets them now, and a
        replacement spawned later starts with them."""
        self.spec = replace(self.spec, config=replace(self.spec.config, log=live.log))
        self._write(encode_message(live))

    def _write(self, message: bytes) -> None:
        process = self.process
        if process is None or process.returncode is not None or process.stdin is None:
            return  # not running: the next spawn sends the whole spec
        if process.stdin.is_closing():
            return
        process.stdin.write(message)  # a few KiB into a 64 KiB pipe; asyncio buffers the rest

    async def _read_status(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            if line == BEAT:
                self.last_beat = time.monotonic()
            elif line == "READY":
                self.last_beat = time.monotonic()
                self.ready.set()
                self.failures_in_a_row = 0
            elif line == "QUIESCED":
                self.quiesced.set()
            elif line.startswith("STOPPED "):
                try:
                    self.stopped = json.loads(line[len("STOPPED ") :])
                except ValueError:
                    log.warning("%s: unreadable STOPPED line %r", self.name, line)
        await process.wait()
        if process.stdin is not None:
            process.stdin.close()
        self.exited.set()

    @property
    def heartbeat_timeout_s(self) -> float:
        return self.spec.config.supervisor.heartbeat_timeout_s

    def running(self) -> bool:
        """Its process runs and said READY."""
        process = self.process
        return process is not None and process.returncode is None and self.ready.is_set()

    def silent_s(self, now: float | None = None) -> float:
        """Seconds since its last beat (0 while it is not running: nothing to hear then)."""
        if not self.running():
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.last_beat)

    def not_responding_s(self, now: float | None = None) -> float | None:
        """The silence once it is long enough to say so (beats missed), else None."""
        silent = self.silent_s(now)
        return silent if silent > silence_shown_after_s(self.heartbeat_timeout_s) else None

    def hung(self, now: float | None = None) -> bool:
        """Silent for longer than supervisor.heartbeat_timeout."""
        return self.silent_s(now) > self.heartbeat_timeout_s

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    def backoff_s(self) -> float:
        return min(10.0, 0.1 * (2 ** min(self.failures_in_a_row, 7)))
