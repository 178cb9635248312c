"""Lower layers never import higher ones (DESIGN.md §4), checked on the source's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parents[2] / "daemon"

# package -> kpd packages it may import (besides itself)
ALLOWED = {
    "protocol": set(),
    "ring": set(),
    "net": {"protocol"},
    "producer": {"protocol", "net", "config", "settings"},
    "ingest": {"protocol", "ring", "producer"},
    "client": {"protocol", "ingest"},
}
PROCESS_ONLY = {"uvloop", "signal", "multiprocessing", "prometheus_client"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_lower_layers(package):
    for path in sorted((DAEMON / package).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "daemon" and len(parts) > 1:
                assert parts[1] in ALLOWED[package] | {package}, f"{path}: imports {name}"
            assert parts[0] not in PROCESS_ONLY, f"{path}: imports {name} (process layer only)"


def test_pure_codecs_do_no_io():
    for package in ("protocol",):
        for path in sorted((DAEMON / package).rglob("*.py")):
            imported = {name.split(".")[0] for name in _imports(path)}
            assert not imported & {"socket", "asyncio", "logging", "time", "os"}, path
