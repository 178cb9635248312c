"""The import graph of DESIGN.md §4, checked on the source's imports.

Lower layers never import higher ones; ingest imports nothing of the producer engine; only
``process`` wires engines together. kpd-client (``clients/python/kpd``) sits below the whole
daemon: it imports nothing of ``daemon``, and any daemon unit may import it (the kpd socket
protocol, the partitioner). Inside kpd the protocol, the partitioner and the accelerator sit
below the client. A package (or top-level module) missing from ``ALLOWED`` or
``CLIENT_ALLOWED`` fails the test, so a new one has to take its place in the graph.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAEMON = ROOT / "daemon"
CLIENT = ROOT / "clients" / "python" / "kpd"

# unit (package or top-level module) -> kpd units it may import (besides itself)
ALLOWED = {
    "accel": set(),  # the compiled accelerator: below everything, any unit may use it
    "kafka": {"accel"},
    "wire": {"kafka", "accel"},
    "ring": {"accel"},
    "settings": set(),
    "version": set(),  # kpd's version from the package metadata
    "config": {"settings"},
    "net": {"kafka", "settings"},  # from_config: connection settings from the schema's model
    "producer": {"kafka", "net", "config", "settings"},
    "ownership": set(),  # worker_for, the one rule of which worker owns a partition; pure
    "ingest": {"wire", "kafka", "ring", "accel", "ownership"},
    "metrics": {"producer", "net"},
    # one worker process's ring <-> engine adapter; never ingest or the supervisor
    "worker": {"wire", "ring", "config", "producer", "metrics"},
    "process": {
        "accel",
        "kafka",
        "wire",
        "ring",
        "settings",
        "config",
        "net",
        "producer",
        "ingest",
        "metrics",
        "ownership",
        "worker",
        "version",
    },
    "cli": {"config", "settings", "process", "wire", "kafka", "cli_input", "version"},
    "cli_input": set(),  # kpd send's input formats, pure
}
PURE = ("kafka", "wire", "ownership")  # bytes <-> values and pure rules, nothing else

# kpd-client's own graph: unit -> kpd units it may import. Its lower units are what the
# daemon imports of it; the rest (``None``: any unit of kpd) is the client an app uses.
CLIENT_LOWER = {
    "accel": set(),
    "murmur2": {"accel"},
    "partitioner": {"murmur2"},
    "protocol": {"accel"},
}
CLIENT_PURE = ("protocol", "murmur2", "partitioner")
IMPURE_MODULES = {
    "socket",
    "asyncio",
    "logging",
    "time",
    "os",
    "threading",
    "selectors",
    "mmap",
    "uvloop",
}
PROCESS_ONLY = {"uvloop", "signal", "multiprocessing", "prometheus_client"}
MAY_USE_PROCESS_ONLY = {"process", "metrics", "cli"}
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level and node.module is None:
            names.update(f".{alias.name}" for alias in node.names)
    return names


def _files(unit: str) -> list[Path]:
    package = DAEMON / unit
    return sorted(package.rglob("*.py")) if package.is_dir() else [DAEMON / f"{unit}.py"]


def _unit_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "daemon" and len(parts) > 1 else None


def test_every_unit_of_the_package_has_a_place_in_the_graph():
    units = {p.stem for p in DAEMON.glob("*.py") if p.stem != "__init__"}
    units |= {p.name for p in DAEMON.iterdir() if (p / "__init__.py").exists()}
    assert units == set(ALLOWED)


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_unit_imports_only_what_the_graph_allows(unit):
    for path in _files(unit):
        for name in _imports(path):
            imported = _unit_of(name)
            if imported is not None:
                assert imported in ALLOWED[unit] | {unit}, f"{path}: imports {name}"
            if unit not in MAY_USE_PROCESS_ONLY:
                top = name.split(".")[0]
                assert top not in PROCESS_ONLY, f"{path}: imports {name} (process layer only)"


@pytest.mark.parametrize("unit", PURE)
def test_pure_codecs_do_no_io_and_read_no_clock(unit):
    for path in _files(unit):
        imported = {name.split(".")[0] for name in _imports(path)}
        assert not imported & IMPURE_MODULES, f"{path}: imports {imported & IMPURE_MODULES}"


def _client_units() -> set[str]:
    units = {p.stem for p in CLIENT.glob("*.py") if p.stem != "__init__"}
    return units | {p.name for p in CLIENT.iterdir() if (p / "__init__.py").exists()}


def _client_files(unit: str) -> list[Path]:
    package = CLIENT / unit
    return sorted(package.rglob("*.py")) if package.is_dir() else [CLIENT / f"{unit}.py"]


def test_kpd_client_imports_nothing_of_the_daemon():
    # What an app installs: the daemon's package (and python-daemon's, also named ``daemon``)
    # must never be needed by it.
    for path in sorted(CLIENT.rglob("*.py")):
        for name in _imports(path):
            assert name.split(".")[0] != "daemon", f"{path}: imports {name}"


def test_kpd_client_uses_the_standard_library_only():
    allowed_top = {"kpd", "__future__", "."} | set(sys.stdlib_module_names)
    for path in sorted(CLIENT.rglob("*.py")):
        for name in _imports(path):
            assert name.split(".")[0] in allowed_top, f"{path}: imports {name}"


@pytest.mark.parametrize("unit", sorted(CLIENT_LOWER))
def test_kpd_clients_lower_units_import_nothing_of_the_client_above_them(unit):
    assert unit in _client_units()
    for path in _client_files(unit):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "kpd" and len(parts) > 1:
                assert parts[1] in CLIENT_LOWER[unit] | {unit}, f"{path}: imports {name}"


@pytest.mark.parametrize("unit", CLIENT_PURE)
def test_kpd_clients_codecs_do_no_io_and_read_no_clock(unit):
    for path in _client_files(unit):
        imported = {name.split(".")[0] for name in _imports(path)}
        assert not imported & IMPURE_MODULES, f"{path}: imports {imported & IMPURE_MODULES}"


def test_the_accelerator_does_no_io_in_python_or_in_c():
    # Its Python side only reads the KPD_PURE_PYTHON switch; its C side includes no I/O
    # headers and calls nothing that reaches the outside world.
    for path in _files("accel"):
        imported = {name.split(".")[0] for name in _imports(path)}
        allowed = {"__future__", "os", "types", ".", "daemon", "kpd"}
        assert imported <= allowed, f"{path}: {imported}"
    imported = {name.split(".")[0] for name in _imports(CLIENT / "accel.py")}
    assert imported <= {"__future__", "os", "types", "kpd"}, imported
    sources = [DAEMON / "accel" / "_accel.c", CLIENT / "_accel.c", CLIENT / "kpd_loops.h"]
    for path in sources:
        source = path.read_text()
        includes = set(re.findall(r"#include <([^>]+)>", source))
        allowed = {"Python.h", "stdatomic.h", "stdint.h", "string.h", "structmember.h"}
        assert includes <= allowed, includes
        # Local includes: only the shared loops of kpd-client (the C exists once).
        assert set(re.findall(r'#include "([^"]+)"', source)) <= {"kpd_loops.h"}
        io = r"\b(fopen|open|read|write|\w*printf|socket|time|clock\w*|getenv)\s*\("
        calls = re.findall(io, source)
        assert not calls, f"{path.name} calls {calls}"


def _private_names_defined(tree: ast.AST) -> set[str]:
    """Underscored names a module defines: its functions and methods, and attributes it
    assigns (``self._x = ...``). Those are the module's own to use on any of its objects."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {name for name in names if name.startswith("_")}


# prometheus_client has no bulk observe: metrics.py moves a histogram's buckets by deltas
# through its internals; and it writes ingest's accepted count, exported at every publish,
# into its multiprocess value without the per-call lock and getpid (``_Exporter.add_hot``).
# tests/unit/test_metrics.py pins the scraped result of both.
FOREIGN_PRIVATE_ALLOWED = {
    ("metrics.py", "_buckets"),
    ("metrics.py", "_sum"),
    ("metrics.py", "_upper_bounds"),
    ("metrics.py", "_file"),
    ("metrics.py", "_key"),
    ("metrics.py", "_value"),
}


def test_no_module_reads_another_modules_private_attributes():
    """``x._name`` only where this module defines ``_name``: what metrics and status need,
    engines and servers offer as public ``stats()`` snapshots. Library constants that are
    spelled with a leading underscore (``KafkaError._PARTITION_EOF``) are public."""
    for path in [*sorted(DAEMON.rglob("*.py")), *sorted(CLIENT.rglob("*.py"))]:
        tree = ast.parse(path.read_text())
        own = _private_names_defined(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")):
                continue
            name = node.attr
            if name.startswith("__") or name in NAMEDTUPLE_API or name[1:].isupper():
                continue
            if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
                continue
            if name in own or (path.name, name) in FOREIGN_PRIVATE_ALLOWED:
                continue
            raise AssertionError(f"{path}:{node.lineno}: reads .{name} of another module")


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for top in (DAEMON, CLIENT):
        for path in top.rglob("*.py"):
            module = ".".join(path.relative_to(top.parent).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            graph[module] = {n for n in _imports(path) if n.startswith(("daemon.", "kpd."))}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            dep = dep if dep in graph else dep.rsplit(".", 1)[0]
            if dep not in graph or dep == module:
                continue
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*trail, module, dep])
            if dep not in state:
                visit(dep, [*trail, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
