"""One kpd per config: an exclusive lock beside the socket, taken before anything starts.

The lock is ``<socket.path>.lock`` (``/run/kpd/kpd.sock.lock`` under systemd's
``RuntimeDirectory=``), held with ``flock`` for the life of the supervisor: the kernel drops it
when the process dies, however it dies, so a stale file never blocks a restart. A second
``kpd run`` of the same config fails to take it and exits before it has started a broker,
bound a port, touched a ring or a file of the first. The file holds the holder's PID for the
message; it is never unlinked (unlinking a flock file lets two starters lock two inodes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["AlreadyRunning", "InstanceLock"]


class AlreadyRunning(RuntimeError):
    """Another kpd holds the lock of this config."""


class InstanceLock:
    def __init__(self, socket_path: str | Path) -> None:
        socket_path = Path(socket_path)
        self.path = socket_path.with_name(socket_path.name + ".lock")
        self._socket_path = socket_path
        self._fd: int | None = None

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
                f"kpd is already running for socket {self._socket_path} "
                f"(pid {holder}, lock {self.path}); stop it first, or give this instance "
                "its own socket.path"
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
