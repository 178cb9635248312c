"""Where a running daemon's HTTP endpoint is: the file the supervisor writes beside its socket,
and how ``kpd status`` finds it even when the config file no longer loads.

The supervisor writes ``<socket.path>.url`` (``http://127.0.0.1:9464/``) once its listener is
bound, so ``metrics.listen`` with port 0 ("pick a free port") is found at the port it got, and
removes it when it stops. ``kpd status`` reads that file; when the config it was given is
broken (a SIGHUP of a bad file leaves the daemon running the settings it loaded before), it
finds the socket of the supervisor that runs that config from the supervisor's process title
(``kpd: supervisor <config>``) and the socket lock it holds open (Linux ``/proc``; the same
user or root). Must not import the supervisor.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = [
    "LOCK_SUFFIX",
    "forget_url",
    "http_url",
    "remember_url",
    "socket_of_supervisor",
    "url_file",
    "url_of",
]

LOCK_SUFFIX = ".lock"  # daemon.process.instance: <socket.path>.lock
_URL_SUFFIX = ".url"


def url_file(socket_path: str | Path) -> Path:
    socket_path = Path(socket_path)
    return socket_path.with_name(socket_path.name + _URL_SUFFIX)


def http_url(host: str, port: int) -> str:
    """The URL a local client reaches a listener on: a wildcard bind is reached on loopback."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"http://{netloc}/"


def remember_url(socket_path: str | Path, host: str, port: int) -> None:
    path = url_file(socket_path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(http_url(host, port) + "\n")
    os.replace(tmp, path)


def forget_url(socket_path: str | Path) -> None:
    with contextlib.suppress(OSError):
        url_file(socket_path).unlink()


def url_of(socket_path: str | Path) -> str | None:
    """The URL the daemon of ``socket_path`` wrote, or None (not running, or no metrics)."""
    try:
        return url_file(socket_path).read_text().strip() or None
    except OSError:
        return None


def socket_of_supervisor(config_path: str | Path) -> str | None:
    """The socket of the running supervisor whose title names ``config_path``, from the
    ``<socket>.lock`` it holds open; None when there is none (or /proc says nothing)."""
    wanted = os.path.realpath(config_path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        prefix = "kpd: supervisor "
        if not title.startswith(prefix):
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = "/"
        if os.path.realpath(os.path.join(cwd, title[len(prefix) :])) != wanted:
            continue
        socket_path = _locked_socket(entry)
        if socket_path is not None:
            return socket_path
    return None


def _locked_socket(proc: Path) -> str | None:
    """The socket whose ``<socket>.lock`` the process holds open and whose URL file exists
    (its other lock, the ring files', has no URL file beside it)."""
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.endswith(LOCK_SUFFIX):
                socket_path = target[: -len(LOCK_SUFFIX)]
                if url_file(socket_path).exists():
                    return socket_path
    return None
