"""One supervised child process: spawn, readiness, exit, restart backoff.

Owns the asyncio subprocess of one role/index and the task reading its stdout status lines
(``READY``, ``QUIESCED``). A child that exits before saying READY failed to boot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

__all__ = ["Child"]


@dataclass(slots=True)
class Child:
    role: str
    index: int
    spec: dict
    pass_fds: tuple[int, ...]
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    quiesced: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    failures_in_a_row: int = 0
    stopping: bool = False
    # Held so the status reader is not garbage-collected mid-flight (asyncio keeps weak refs).
    status_task: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return self.role if self.role == "ingest" else f"{self.role}-{self.index}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def spawn(self) -> None:
        self.ready.clear()
        self.quiesced.clear()
        self.exited.clear()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.process.child",
            self.role,
            json.dumps(self.spec),
            stdout=asyncio.subprocess.PIPE,
            pass_fds=self.pass_fds,
        )
        self.status_task = asyncio.get_running_loop().create_task(self._read_status(self.process))

    async def _read_status(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            if line == "READY":
                self.ready.set()
                self.failures_in_a_row = 0
            elif line == "QUIESCED":
                self.quiesced.set()
        await process.wait()
        self.exited.set()

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    def backoff_s(self) -> float:
        return min(10.0, 0.1 * (2 ** min(self.failures_in_a_row, 7)))
