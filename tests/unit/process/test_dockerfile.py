"""The container image's recipe, read as text (Docker cannot run here; `make lint` runs hadolint).

What is checked: the build stage has a C compiler and refuses an image without the
accelerators; the health check asks the endpoint the supervisor serves for liveness; the
dockerignore lets the accelerators' sources in.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _stages() -> dict[str, str]:
    """Dockerfile text by stage name (the unnamed last stage is "runtime")."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    parts = re.split(r"^FROM\s+", text, flags=re.MULTILINE)[1:]
    stages = {}
    for part in parts:
        head = part.split("\n", 1)[0].split()
        stages[head[2] if len(head) >= 3 and head[1].upper() == "AS" else "runtime"] = part
    return stages


def test_the_build_stage_compiles_both_accelerators_and_fails_without_them():
    build = _stages()["build"]
    assert re.search(r"apt-get install .*\bgcc\b.*\blibc6-dev\b", build)
    assert "assert d.native and k.native" in build
    runtime = _stages()["runtime"]
    assert "COPY --from=build /opt/kpd /opt/kpd" in runtime
    assert "gcc" not in runtime


def test_the_health_check_asks_healthz_without_curl():
    runtime = _stages()["runtime"]
    (check,) = re.findall(r"^HEALTHCHECK .*$", runtime, flags=re.MULTILINE)
    assert "http://127.0.0.1:9464/healthz" in check
    assert '"python", "-c"' in check and "curl" not in check


def test_the_build_context_has_the_accelerators_sources():
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!setup.py", "!clients/python/", "!daemon/"):
        assert needed in allowed
