"""Run the real kpd daemon as a subprocess for lifecycle tests.

``KpdDaemon`` writes a config into a temporary directory (socket, rings with a unique prefix,
bootstrap servers of a test broker), starts ``python -m daemon.cli run``, waits for the socket
to accept connections, and stops it by PID with SIGTERM (or kills it) at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent


class KpdDaemon:
    def __init__(
        self, workdir: Path, bootstrap: str, *, workers: int = 2, extra: dict | None = None
    ):
        self.workdir = workdir
        self.socket_path = str(workdir / "kpd.sock")
        self.config_path = workdir / "kpd.yaml"
        self.log_path = workdir / "kpd.log"
        self.prefix = f"kpdtest-{uuid.uuid4().hex[:8]}"
        self.rings_dir = workdir / "rings"
        config = {
            "kafka": {"bootstrap.servers": bootstrap, "linger.ms": 5},
            "socket": {"path": self.socket_path},
            "workers": {"count": workers},
            "rings": {
                "records_bytes": "8MiB",
                "reports_bytes": "2MiB",
                "prefix": self.prefix,
                "directory": str(self.rings_dir),
            },
            "metrics": {"enabled": False},
            "shutdown": {"timeout": "20s"},
            "log": {"level": "info"},
        }
        for section, values in (extra or {}).items():
            config.setdefault(section, {}).update(values)
        self.config = config
        self.write_config()
        self.process: subprocess.Popen | None = None

    def write_config(self) -> None:
        """(Re)write the config file from ``self.config``, e.g. before a restart with changes."""
        self.config_path.write_text(yaml.safe_dump(self.config))

    def start(self, timeout_s: float = 30.0, env: dict[str, str] | None = None) -> KpdDaemon:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.config_path)],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group, so kill_all() can kill the whole daemon and nothing else.
            start_new_session=True,
        )
        wait_for(self._accepting, timeout_s, f"kpd socket {self.socket_path}\n{self.log_tail()}")
        return self

    def _accepting(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"kpd exited with {self.process.returncode}:\n{self.log_tail()}")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(self.socket_path)
            except OSError:
                return False
        return True

    def child_pids(self, role: str) -> list[int]:
        """PIDs of this daemon's children of one role (``worker`` or ``ingest``)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            # A child's title is "kpd: worker 0 [...]"; until it sets it, its argv is
            # "python -m daemon.process.child worker 0".
            title = b" ".join(cmdline)
            if ppid == self.process.pid and (
                title.startswith(f"kpd: {role}".encode())
                or (b"daemon.process.child" in cmdline and role.encode() in cmdline)
            ):
                pids.append(int(entry.name))
        return sorted(pids)

    def kill_a_worker(self, timeout_s: float = 30.0) -> int:
        """kill -9 of worker 0 (by pid order); returns once the supervisor replaced it."""
        victim = self.child_pids("worker")[0]
        workers = len(self.child_pids("worker"))
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: (
                len(self.child_pids("worker")) == workers
                and victim not in self.child_pids("worker")
            ),
            timeout_s,
            "the worker to be replaced",
        )
        return victim

    def kill_all(self) -> None:
        """kill -9 of the whole daemon, every process of its group at once, as an OOM kill of
        its cgroup or a crash of the host's service manager does."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()
        # The children die a moment after the supervisor: until the ingest is gone its socket
        # still accepts, and a start() now would take the dying daemon for the new one.
        wait_for(lambda: not self._group_alive(), 10, f"kpd process group {self.process.pid}")

    def _group_alive(self) -> bool:
        """Whether a process of the daemon's group still runs (zombies do not count)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.process.pid and fields[0] != "Z":
                return True
        return False

    def log_tail(self, size: int = 6000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"kpd did not stop within {timeout_s}s:\n{self.log_tail()}"
            ) from None
        finally:
            self._log.close()

    def __enter__(self) -> KpdDaemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
