"""Talking to systemd without libsystemd: sd_notify datagrams, the watchdog, socket activation.

Owns one AF_UNIX datagram socket to ``$NOTIFY_SOCKET`` (see sd_notify(3)) and the parsing of
the variables systemd hands a service: ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``/``WATCHDOG_PID``
(sd_watchdog_enabled(3)) and ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``
(sd_listen_fds(3)). Everything is a no-op outside systemd, and nothing here raises on a
failed send: a daemon must not die because its service manager is slow or absent.

Only the supervisor uses this module (the unit has ``NotifyAccess=main``: systemd ignores
datagrams from the children). It imports nothing of kpd, and no asyncio beyond
``run_watchdog``'s ``sleep``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

__all__ = ["SD_LISTEN_FDS_START", "ListenFd", "SystemdNotifier", "listen_fds", "run_watchdog"]

log = logging.getLogger(__name__)

# sd-daemon.h: the first passed file descriptor is always 3 (after stdin, stdout, stderr).
SD_LISTEN_FDS_START = 3

# A send blocks only while PID 1's receive queue is full, i.e. while systemd itself is wedged.
# Bound that stall of the supervisor's loop rather than drop READY=1 or STOPPING=1 at once.
_SEND_TIMEOUT_S = 0.5


class SystemdNotifier:
    """The ``$NOTIFY_SOCKET`` of this service; every method is a no-op when there is none.

    ``notify(READY=1, STATUS="...")`` sends any fields of sd_notify(3); the named methods are
    the ones kpd's supervisor sends. Each returns whether the datagram was sent.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        # Set after a failed send is logged and cleared by the next good one, so a gone
        # NOTIFY_SOCKET logs once per outage, not once per watchdog ping.
        self._failing = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> SystemdNotifier:
        """The notifier systemd set up for process ``pid`` (default: this process)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET"), _watchdog_usec(env, os.getpid() if pid is None else pid)
        )

    @property
    def enabled(self) -> bool:
        return self._address is not None

    # ---- what kpd says ----------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Startup is finished: the socket accepts clients (systemd ends `systemctl start`)."""
        return self._send_fields({"READY": 1, **_status(status)})

    def reloading(self) -> bool:
        """A reload began; send ``ready()`` when it is done. MONOTONIC_USEC dates it."""
        return self._send_fields(
            {"RELOADING": 1, "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}
        )

    def stopping(self, status: str | None = None) -> bool:
        """The drain began; systemd stops the watchdog and starts TimeoutStopSec= now."""
        return self._send_fields({"STOPPING": 1, **_status(status)})

    def status(self, text: str) -> bool:
        """One line shown by `systemctl status`."""
        return self._send_fields(_status(text))

    def watchdog(self) -> bool:
        """Keep-alive: systemd restarts the service when none arrives within WatchdogSec=."""
        return self._send_fields({"WATCHDOG": 1})

    def notify(self, **fields: object) -> bool:
        """Any sd_notify(3) fields, e.g. ``notify(MAINPID=pid)``, ``EXTEND_TIMEOUT_USEC=...``."""
        return self._send_fields(fields)

    def watchdog_interval_s(self) -> float | None:
        """How often to call ``watchdog()``: half of WatchdogSec=, or None when it is off.

        Half, as sd_watchdog_enabled(3) recommends, so a beat that runs late still lands in
        time.
        """
        if self._address is None or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    # ---- the socket -------------------------------------------------------------------

    def _send_fields(self, fields: Mapping[str, object]) -> bool:
        if self._address is None or not fields:
            return False
        return self._send(_encode(fields))

    def _send(self, message: bytes) -> bool:
        try:
            if self._sock is None:
                # Python sockets are close-on-exec: the children never inherit this one.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.settimeout(_SEND_TIMEOUT_S)
            self._sock.sendto(message, self._address)
        except OSError as exc:
            if not self._failing:
                log.warning(
                    "sd_notify to %r failed: %s (logged once until it works)", self._address, exc
                )
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _socket_address(value: str) -> str | None:
    # sd_notify(3): an absolute path, or "@name" for the abstract namespace, where the "@"
    # stands for the leading NUL byte. Other forms (vsock:..., relative paths) are not ours.
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract; not notifying systemd", value)
    return None


def _encode(fields: Mapping[str, object]) -> bytes:
    # One "KEY=VALUE" per line. A newline inside a value would start a new field (a STATUS
    # carrying "\nREADY=1" would declare readiness), so values are kept to one line.
    lines = (f"{key}={_one_line(value)}" for key, value in fields.items())
    return "\n".join(lines).encode()


def _one_line(value: object) -> str:
    return " ".join(str(value).splitlines())


def _status(text: str | None) -> dict[str, object]:
    return {} if text is None else {"STATUS": text}


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    # sd_watchdog_enabled(3): WATCHDOG_PID, when set, names the one process meant to ping;
    # the children inherit the supervisor's environment and must not think they are it.
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is not None and _positive_int(watchdog_pid) != pid:
        return None
    return _positive_int(environ.get("WATCHDOG_USEC", ""))


def _positive_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


# ---- the heartbeat ----------------------------------------------------------------------


async def run_watchdog(
    notifier: SystemdNotifier,
    healthy: Callable[[], bool],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Send WATCHDOG=1 every half period while ``healthy()``; return at once if it is off.

    Run it as a task of the supervisor's own event loop: a stalled loop then stops the beat
    and systemd restarts kpd. While ``healthy()`` is false (a child is down) no beat is sent,
    so a child that stays down longer than WatchdogSec= escalates to a restart of the unit.
    """
    interval = notifier.watchdog_interval_s()
    if interval is None:
        return
    while True:
        if healthy():
            notifier.watchdog()
        await sleep(interval)


# ---- socket activation ------------------------------------------------------------------


class ListenFd(NamedTuple):
    fd: int
    name: str  # FileDescriptorName= of the socket unit; "unknown" when systemd gave none


def parse_listen_fds(environ: Mapping[str, str], pid: int) -> list[ListenFd]:
    """The sockets systemd passed to process ``pid``, from the environment alone."""
    # sd_listen_fds(3): the variables are for LISTEN_PID only, so a child that inherited
    # them ignores them; the fds are numbered from 3 in the order of the socket unit.
    if _positive_int(environ.get("LISTEN_PID", "")) != pid:
        return []
    count = _positive_int(environ.get("LISTEN_FDS", "")) or 0
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    if len(names) != count:
        if "LISTEN_FDNAMES" in environ:
            log.warning(
                "LISTEN_FDNAMES names %d fds, LISTEN_FDS is %d; ignoring the names",
                len(names),
                count,
            )
        names = ["unknown"] * count
    return [ListenFd(SD_LISTEN_FDS_START + i, name) for i, name in enumerate(names)]


def listen_fds(unset_environment: bool = True) -> list[ListenFd]:
    """The sockets systemd passed to this process (socket activation), or [] if none.

    Like sd_listen_fds(3), marks them close-on-exec (whoever needs one in a child passes it
    explicitly) and by default removes the LISTEN_* variables, so no child sees them.
    """
    fds = parse_listen_fds(os.environ, os.getpid())
    for listen in fds:
        os.set_inheritable(listen.fd, False)
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    return fds
