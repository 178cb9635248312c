"""kpd-client as its own distribution (issue 21 §1): a fresh venv installs clients/python
and imports ``kpd`` beside python-daemon (PyPI's ``python-daemon``, whose top-level package
is also named ``daemon``) with none of the daemon's dependencies.

PACKAGING TEST: it builds kpd-client into a new venv (``--without-pip``; the suite's own pip
installs into it with ``--python``), so it needs the package index the Makefile uses for
``python-daemon`` and the build backend — nothing else. ~10-20 s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"

PROBE = r"""
import importlib.util, json, sys
import daemon, kpd
from kpd import AsyncProducer, DeliveryError, JsonSerializer, Producer
from kpd.accel import IMPLEMENTATION
print(json.dumps({
    "daemon": daemon.__file__,
    "kpd": kpd.__file__,
    "daemon_context": hasattr(daemon, "DaemonContext"),  # PEP 3143, python-daemon's
    "missing": [m for m in ("uvloop", "prometheus_client", "yaml", "crc32c")
                if importlib.util.find_spec(m) is not None],
    "accel": IMPLEMENTATION,
}))
"""


def test_kpd_client_installs_and_imports_beside_python_daemon_without_daemon_deps(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KPD_PURE_PYTHON")}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         str(CLIENT), "python-daemon"],
        check=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    out = subprocess.run([str(python), "-c", PROBE], check=True, capture_output=True,
                         text=True, env=env, cwd=tmp_path)  # fmt: skip
    found = json.loads(out.stdout)
    site = str(venv)
    assert found["daemon"].startswith(site) and found["daemon_context"]  # python-daemon's
    assert found["kpd"].startswith(site)
    assert found["missing"] == []  # none of the daemon's dependencies came along
    assert found["accel"] == "C" or found["accel"].startswith("pure Python (C extension")


def test_the_daemon_depends_on_exactly_its_own_version_of_kpd_client():
    daemon = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert client["name"] == "kpd-client" and client["dependencies"] == []
    assert client["version"] == daemon["version"]
    pins = [d for d in daemon["dependencies"] if re.match(r"kpd-client\b", d)]
    assert pins == [f"kpd-client=={client['version']}"]
