"""sd_notify without libsystemd: a real AF_UNIX datagram socket stands in for systemd.

The expected datagrams are written out from sd_notify(3) ("READY=1", newline-separated
fields), never produced by the module under test. Datagrams on a local socket are queued by
the kernel before sendto() returns, so "nothing more was sent" is a non-blocking recv that
finds the queue empty, not a sleep.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.process.sdnotify import (
    ListenFd,
    SystemdNotifier,
    parse_listen_fds,
    run_watchdog,
)

ROOT = Path(__file__).resolve().parents[3]
RECV_DEADLINE_S = 5.0


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET, as PID 1 has it."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def receive(self) -> bytes:
        self.sock.settimeout(RECV_DEADLINE_S)
        return self.sock.recv(4096)

    def queued(self) -> list[bytes]:
        self.sock.setblocking(False)
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(4096))
            except BlockingIOError:
                return messages


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="kpd-sd-") as path:
        yield Path(path)


@pytest.fixture
def path_systemd(short_dir: Path) -> Iterator[tuple[FakeSystemd, str]]:
    address = str(short_dir / "notify")
    fake = FakeSystemd(address)
    yield fake, address
    fake.sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[tuple[FakeSystemd, str]]:
    name = f"kpd-test-notify-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name)
    yield fake, "@" + name  # how systemd writes an abstract address into NOTIFY_SOCKET
    fake.sock.close()


# ---- the notify socket -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["path_systemd", "abstract_systemd"])
def test_ready_watchdog_stopping_arrive_in_order(which: str, request: pytest.FixtureRequest):
    fake, address = request.getfixturevalue(which)
    with SystemdNotifier.from_environ({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert notifier.watchdog()
        assert notifier.stopping()
    assert [fake.receive() for _ in range(3)] == [b"READY=1", b"WATCHDOG=1", b"STOPPING=1"]
    assert fake.queued() == []


def test_ready_and_stopping_carry_a_status_line(path_systemd):
    fake, address = path_systemd
    with SystemdNotifier(address) as notifier:
        notifier.ready(status="serving /run/kpd/kpd.sock, 2 workers")
        notifier.status("worker-1 restarting")
        notifier.stopping(status="draining")
    assert fake.receive() == b"READY=1\nSTATUS=serving /run/kpd/kpd.sock, 2 workers"
    assert fake.receive() == b"STATUS=worker-1 restarting"
    assert fake.receive() == b"STOPPING=1\nSTATUS=draining"


def test_a_newline_in_a_status_cannot_smuggle_in_another_field(path_systemd):
    fake, address = path_systemd
    with SystemdNotifier(address) as notifier:
        notifier.status("broker down\nREADY=1")
    assert fake.receive() == b"STATUS=broker down READY=1"


def test_notify_sends_any_fields_in_the_order_given(path_systemd):
    fake, address = path_systemd
    with SystemdNotifier(address) as notifier:
        notifier.notify(MAINPID=4242, EXTEND_TIMEOUT_USEC=5_000_000)
    assert fake.receive() == b"MAINPID=4242\nEXTEND_TIMEOUT_USEC=5000000"


def test_reloading_is_dated_with_the_monotonic_clock(path_systemd):
    fake, address = path_systemd
    with SystemdNotifier(address) as notifier:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = fake.receive().split(b"\n")
    assert first == b"RELOADING=1"
    key, value = second.split(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_without_notify_socket_everything_is_a_quiet_no_op(caplog):
    notifier = SystemdNotifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert notifier.watchdog_interval_s() is None
    assert caplog.records == []


def test_an_address_that_is_neither_a_path_nor_abstract_disables_notifying(caplog):
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert "NOTIFY_SOCKET" in caplog.text


def test_a_failing_socket_never_raises_and_logs_once_per_outage(short_dir: Path, caplog):
    address = str(short_dir / "notify")  # nobody listens yet: sendto fails with ENOENT
    caplog.set_level(logging.WARNING, logger="daemon.process.sdnotify")
    with SystemdNotifier(address) as notifier:
        assert not notifier.watchdog()
        assert not notifier.watchdog()
        assert len(caplog.records) == 1
        fake = FakeSystemd(address)  # systemd is back
        assert notifier.watchdog()
        assert fake.receive() == b"WATCHDOG=1"
        fake.sock.close()
        os.unlink(address)  # and gone again: the new outage is logged again
        assert not notifier.watchdog()
        assert len(caplog.records) == 2


# ---- the watchdog ------------------------------------------------------------------------


def test_watchdog_interval_is_half_of_watchdog_usec():
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "60000000"})
    assert notifier.watchdog_interval_s() == 30.0


def test_watchdog_pid_must_name_this_process():
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "100"}
    assert SystemdNotifier.from_environ(env, pid=100).watchdog_interval_s() == 30.0
    # A child inherits the supervisor's WATCHDOG_PID: the watchdog is not its business.
    assert SystemdNotifier.from_environ(env, pid=101).watchdog_interval_s() is None


def test_no_watchdog_without_a_socket_to_send_it_to():
    assert SystemdNotifier.from_environ({"WATCHDOG_USEC": "60000000"}).watchdog_interval_s() is None


@pytest.mark.parametrize("usec", ["", "0", "-5", "sixty", "1.5"])
def test_a_missing_or_malformed_watchdog_usec_means_no_watchdog(usec: str):
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": usec}
    assert SystemdNotifier.from_environ(env).watchdog_interval_s() is None


class StopBeating(Exception):
    pass


def test_run_watchdog_beats_every_half_period_only_while_healthy(path_systemd):
    fake, address = path_systemd
    health = iter([True, False, True])
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise StopBeating

    with SystemdNotifier(address, watchdog_usec=2_000_000) as notifier, pytest.raises(StopBeating):
        asyncio.run(run_watchdog(notifier, lambda: next(health), sleep))
    assert slept == [1.0, 1.0, 1.0]
    assert fake.queued() == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_run_watchdog_returns_at_once_when_the_watchdog_is_off(path_systemd):
    _, address = path_systemd

    async def sleep(seconds: float) -> None:
        raise AssertionError("no watchdog: nothing to wait for")

    with SystemdNotifier(address, watchdog_usec=None) as notifier:
        asyncio.run(run_watchdog(notifier, lambda: True, sleep))


# ---- socket activation -------------------------------------------------------------------


def test_listen_fds_are_numbered_from_3_with_their_names():
    env = {"LISTEN_PID": "77", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "kpd:admin"}
    assert parse_listen_fds(env, pid=77) == [ListenFd(3, "kpd"), ListenFd(4, "admin")]


def test_listen_fds_of_another_process_are_ignored():
    env = {"LISTEN_PID": "77", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "kpd"}
    assert parse_listen_fds(env, pid=78) == []
    assert parse_listen_fds({"LISTEN_FDS": "1"}, pid=78) == []


@pytest.mark.parametrize("names", [None, "kpd", "a:b:c"])
def test_listen_fds_without_matching_names_are_unknown(names: str | None):
    env = {"LISTEN_PID": "9", "LISTEN_FDS": "2"}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    assert parse_listen_fds(env, pid=9) == [ListenFd(3, "unknown"), ListenFd(4, "unknown")]


CHILD = """
import json, os, socket
from daemon.process.sdnotify import listen_fds
fds = listen_fds()
sock = socket.socket(fileno=fds[0].fd)
conn, _ = sock.accept()
conn.sendall(b"served by fd 3")
print(json.dumps({
    "fds": [list(f) for f in fds],
    "bound": sock.getsockname(),
    "inheritable": os.get_inheritable(fds[0].fd),
    "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}))
"""

# What systemd does between fork and exec: the socket at fd 3, LISTEN_PID naming the process
# that is about to exec (exec keeps the pid), LISTEN_FDS and LISTEN_FDNAMES beside it.
LAUNCHER = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="kpd")
os.execve(sys.executable, [sys.executable, "-c", sys.argv[2]], env)
"""


def test_listen_fds_takes_over_a_socket_passed_as_systemd_passes_it(short_dir: Path):
    path = str(short_dir / "kpd.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)  # waits in the backlog until the child accepts it
    child = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(listener.fileno()), CHILD],
        pass_fds=(listener.fileno(),),
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    listener.close()
    assert child.returncode == 0, child.stderr.decode()
    client.settimeout(RECV_DEADLINE_S)
    assert client.recv(100) == b"served by fd 3"
    client.close()
    assert json.loads(child.stdout) == {
        "fds": [[3, "kpd"]],
        "bound": path,
        "inheritable": False,
        "env_left": [],
    }
