"""One kpd per config: exclusive locks taken before anything starts.

Two locks, each held with ``flock`` for the life of the supervisor:

* ``<socket.path>.lock`` (``/run/kpd/kpd.sock.lock`` under systemd's ``RuntimeDirectory=``):
  one daemon per socket;
* ``<rings.directory>/<rings.prefix>.lock``: one daemon per set of ring files. Two daemons
  with their own sockets but the same rings would both consume every ring (each record
  produced twice, the ring accounts of both wrong), so the second refuses to start.

The kernel drops a lock when the process dies, however it dies, so a stale file never blocks
a restart. A second ``kpd run`` fails to take one and exits before it has started a broker,
bound a port, touched a ring or a file of the first. Each file holds its holder's PID for the
message; it is never unlinked (unlinking a flock file lets two starters lock two inodes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["AlreadyRunning", "InstanceLock", "instance_locks"]


class AlreadyRunning(RuntimeError):
    """Another kpd holds a lock this config needs."""


class InstanceLock:
    def __init__(self, path: str | Path, held_for: str, hint: str) -> None:
        self.path = Path(path)
        self._held_for = held_for  # "socket /run/kpd/kpd.sock": what the lock stands for
        self._hint = hint  # what the operator can change to run a second instance
        self._fd: int | None = None

    @classmethod
    def for_socket(cls, socket_path: str | Path) -> InstanceLock:
        socket_path = Path(socket_path)
        return cls(
            socket_path.with_name(socket_path.name + ".lock"),
            f"socket {socket_path}",
            "give this instance its own socket.path and its own rings.prefix (or rings.directory)",
        )

    @classmethod
    def for_rings(cls, directory: str | Path, prefix: str) -> InstanceLock:
        return cls(
            Path(directory) / f"{prefix}.lock",
            f"ring files {Path(directory) / prefix}-*",
            "give this instance its own rings.prefix (or rings.directory)",
        )

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning (OSError when the file cannot be made)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"kpd is already running for {self._held_for} "
                f"(pid {holder}, lock {self.path}); stop it first, or {self._hint}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def instance_locks(config) -> list[InstanceLock]:
    """The locks ``kpd run`` of ``config`` holds: its socket's, then its ring files'."""
    return [
        InstanceLock.for_socket(config.socket.path),
        InstanceLock.for_rings(config.rings.directory, config.rings.prefix),
    ]
