"""The systemd units as systemd itself reads them, and socket activation by systemd's own tool.

Needs systemd's tools (Debian: `apt-get install -y systemd`), not a running systemd: the
tests skip when `systemd-analyze` is not installed. The units name /opt/kpd/bin/kpd, the
documented install path; `systemd-analyze verify` checks that ExecStart= is executable, so
the tests verify a copy pointing at this environment's `kpd` instead.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli import EX_CONFIG
from daemon.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
INSTALLED_KPD = "/opt/kpd/bin/kpd"
DEADLINE_S = 10.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install -y systemd)",
)


def read_unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value given, in order (systemd keys may repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, f"not a plain systemd time span: {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return read_unit(UNITS / "kpd.service")


@pytest.fixture(scope="module")
def defaults():
    return parse_config({"kafka": {"bootstrap.servers": "broker:9092"}})


@pytest.fixture
def units_here(tmp_path: Path) -> Path:
    kpd = Path(sys.executable).with_name("kpd")
    assert kpd.exists(), f"the kpd console script is not installed beside {sys.executable}"
    for unit in ("kpd.service", "kpd.socket"):
        text = (UNITS / unit).read_text().replace(INSTALLED_KPD, str(kpd))
        (tmp_path / unit).write_text(text)
    return tmp_path


# ---- systemd's own checks ----------------------------------------------------------------


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_both_units_without_a_warning(units_here: Path):
    # verify exits 0 on unknown keys and unparsable values, only warning: so no output at all.
    result = subprocess.run(
        ["systemd-analyze", "verify", "./kpd.service", "./kpd.socket"],
        cwd=units_here,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_the_service_sandbox_rates_ok_in_systemd_analyze_security(units_here: Path):
    # --threshold is the overall exposure x 10; 20 = 2.0, well inside systemd's "OK" band.
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", "./kpd.service"],
        cwd=units_here,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-600:]


# ---- what the issue asks of the units, against kpd's own defaults -------------------------


def test_the_service_is_type_notify_and_only_the_supervisor_may_notify(service):
    assert service["Service.Type"] == ["notify"]
    assert service["Service.NotifyAccess"] == ["main"]
    assert seconds(service["Service.WatchdogSec"][0]) > 0


def test_a_config_error_is_not_restarted_but_a_crash_is(service):
    assert service["Service.Restart"] == ["on-failure"]
    assert str(EX_CONFIG) in service["Service.RestartPreventExitStatus"][0].split()


def test_systemd_waits_longer_than_the_supervisor_drains(service, defaults):
    # Supervisor._stop_all: timeout + 5 s for ingest to quiesce, timeout + 5 s for the
    # workers, 10 s for ingest to exit. SIGKILL before that loses the drain.
    drain_s = 2 * (defaults.shutdown.timeout_s + 5) + 10
    assert seconds(service["Service.TimeoutStopSec"][0]) > drain_s
    assert service["Service.KillMode"] == ["mixed"]


def test_the_runtime_directory_holds_the_default_socket(service, defaults):
    socket_dir = Path(defaults.socket.path).parent
    assert Path("/run", service["Service.RuntimeDirectory"][0]) == socket_dir
    activation = read_unit(UNITS / "kpd.socket")
    assert activation["Socket.ListenStream"] == [str(defaults.socket.path)]


def test_the_state_directory_holds_the_default_ring_files(service, defaults):
    # The ring files outlive the service (issue 10): /var/lib/<StateDirectory=>.
    assert Path("/var/lib", service["Service.StateDirectory"][0]) == Path(defaults.rings.directory)


def test_the_service_runs_sandboxed_as_its_own_user(service):
    assert service["Service.User"] == ["kpd"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[f"Service.{key}"] == [value], key


def test_the_unit_runs_the_documented_command(service):
    assert service["Service.ExecStart"] == [f"{INSTALLED_KPD} run --config /etc/kpd/kpd.yaml"]


# ---- socket activation by systemd's own launcher ------------------------------------------

CHILD = """
import json, socket
from daemon.process.sdnotify import listen_fds
fds = listen_fds()
conn, _ = socket.socket(fileno=fds[0].fd).accept()
conn.sendall(json.dumps([list(f) for f in fds]).encode())
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kpd-sa-") as path:  # AF_UNIX paths are short
        yield Path(path)


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate is not installed (apt-get install -y systemd)",
)
def test_listen_fds_reads_what_systemd_socket_activate_passes(short_dir: Path):
    path = short_dir / "kpd.sock"
    launcher = subprocess.Popen(
        [
            "systemd-socket-activate",
            "--listen",
            str(path),
            "--fdname=kpd",
            sys.executable,
            "-c",
            CHILD,
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        client = _connect_when_listening(path, launcher)
        client.settimeout(DEADLINE_S)
        reply = b"".join(iter(lambda: client.recv(4096), b""))
        assert json.loads(reply) == [[3, "kpd"]]
        assert launcher.wait(timeout=DEADLINE_S) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        launcher.stderr.close()


def _connect_when_listening(path: Path, launcher: subprocess.Popen) -> socket.socket:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.stderr.read().decode()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(str(path))  # systemd-socket-activate execs the child on this
            return client
        except (FileNotFoundError, ConnectionRefusedError):  # not bound, or not listening yet
            client.close()
        time.sleep(0.01)  # polling for the socket file, bounded by the deadline
    raise AssertionError(f"systemd-socket-activate did not listen on {path}")
