"""The supervisor's side of ``/status``: its child table merged with the children's snapshots.

The children write snapshots (``reporters``); the supervisor prepares their directory and
builds the ``/status`` document from its own ``Child`` table and the snapshots that belong to
the running processes (``build_status``). ``text`` turns the document into words for
``kpd status``. Must not import uvloop, signal or the supervisor.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ChildState", "build_status", "child_states", "prepare_status_dir", "read_snapshots"]


def prepare_status_dir(path: str | Path) -> Path:
    """Create (or empty) the directory children write their snapshots to."""
    directory = Path(path)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o750)
    return directory


def read_snapshots(directory: str | Path) -> dict[str, dict]:
    """Every snapshot in ``directory`` by child name; unreadable files are skipped."""
    snapshots = {}
    for path in Path(directory).glob("*.json"):
        try:
            snapshots[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed or replaced between glob and read
    return snapshots


@dataclass(frozen=True, slots=True)
class ChildState:
    """What the supervisor knows of one child (also what ``SupervisorCollector`` reads)."""

    name: str
    role: str
    index: int
    pid: int | None
    restarts: int
    up: bool  # running and said READY


def child_states(children: Iterable[Any]) -> list[ChildState]:
    """``ChildState``\\ s of the supervisor's ``Child`` objects."""
    states = []
    for child in children:
        process = child.process
        running = process is not None and process.returncode is None
        states.append(
            ChildState(
                child.name,
                child.role,
                child.index,
                child.pid,
                child.restarts,
                running and child.ready.is_set(),
            )
        )
    return states


def build_status(
    children: Iterable[ChildState],
    status_dir: str | Path,
    now: float | None = None,
    rings: dict | None = None,
) -> dict:
    """The ``/status`` document: each child's state and, when it belongs to the running
    process (a dead predecessor's file is ignored), its latest snapshot and that one's age;
    and ``rings``, what the supervisor did with the ring files at start."""
    now = time.time() if now is None else now
    snapshots = read_snapshots(status_dir)
    rows = []
    for state in children:
        row: dict[str, Any] = asdict(state)
        snap = snapshots.get(state.name)
        if snap is not None and snap.get("pid") == state.pid:
            row["snapshot"] = snap
            row["age_s"] = round(max(0.0, now - snap["time"]), 3)
        else:
            row["snapshot"] = None
        rows.append(row)
    document = {"time": now, "pid": os.getpid(), "children": rows}
    if rings is not None:
        document["rings"] = rings
    return document
