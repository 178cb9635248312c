"""The live picture of a running daemon: per-child snapshots, ``/status``, ``kpd status``.

Each child owns one reporter (``WorkerReporter`` or ``IngestReporter``) that, once a second
from the child's own event loop, flushes its Prometheus metrics and writes a small JSON
snapshot of itself into the status directory the supervisor gave it (write to a temporary
file, then rename: a reader never sees half a file). The supervisor merges the snapshots with
its own child table into the ``/status`` document (``build_status``); ``kpd status`` fetches it
(``fetch_status``) and prints it as a table (``format_status``).

The beat comes from the child's loop on purpose: a stalled loop stops its snapshot, and the
growing ``age_s`` in ``/status`` shows it. Must not import uvloop, signal or the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon.metrics import DeliveryTally, IngestMetrics, WorkerMetrics, engine_state

__all__ = [
    "ChildState",
    "IngestReporter",
    "RateMeter",
    "StatusWriter",
    "WorkerReporter",
    "build_status",
    "child_states",
    "fetch_status",
    "format_status",
    "prepare_status_dir",
    "read_snapshots",
]

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0


def prepare_status_dir(path: str | Path) -> Path:
    """Create (or empty) the directory children write their snapshots to."""
    directory = Path(path)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o750)
    return directory


class StatusWriter:
    """Owns one child's snapshot file, ``<dir>/<name>.json``."""

    def __init__(self, directory: str | Path, name: str) -> None:
        self._path = Path(directory) / f"{name}.json"
        self._tmp = self._path.with_suffix(f".{os.getpid()}.tmp")

    def write(self, snapshot: dict) -> None:
        self._tmp.write_text(json.dumps(snapshot, separators=(",", ":")))
        os.replace(self._tmp, self._path)  # atomic: readers see the old or the new file


def read_snapshots(directory: str | Path) -> dict[str, dict]:
    """Every snapshot in ``directory`` by child name; unreadable files are skipped."""
    snapshots = {}
    for path in Path(directory).glob("*.json"):
        try:
            snapshots[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed or replaced between glob and read
    return snapshots


class RateMeter:
    """Per-second rates of monotonic counts, from the difference between two calls."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[float, dict[str, float]] | None = None

    def rates(self, counts: dict[str, float]) -> dict[str, float]:
        now = self._clock()
        last, self._last = self._last, (now, dict(counts))
        if last is None or now <= last[0]:
            return dict.fromkeys(counts, 0.0)
        elapsed = now - last[0]
        return {k: round((v - last[1].get(k, 0)) / elapsed, 3) for k, v in counts.items()}


# ---- the children's reporters -------------------------------------------------------------


class _Reporter:
    """The periodic loop shared by the children's reporters."""

    def __init__(self) -> None:
        self._failing = False  # the last report raised: log again only once it recovers

    async def run(self, interval_s: float = REPORT_INTERVAL_S) -> None:
        """Report every ``interval_s`` until cancelled; call ``report()`` once more at exit."""
        while True:
            try:
                self.report()
            except Exception:  # a reporting bug must not take the data path down with it
                if not self._failing:  # once, not every second
                    log.exception("status/metrics report failed")
                self._failing = True
            else:
                if self._failing:
                    log.info("status/metrics reports work again")
                self._failing = False
            await asyncio.sleep(interval_s)

    def report(self) -> None:
        raise NotImplementedError


class WorkerReporter(_Reporter):
    """A worker's metrics and snapshot. ``engine`` is its ``ProducerEngine``, ``tally`` the
    worker's ``DeliveryTally``, ``records``/``reports`` its ring ends."""

    def __init__(
        self,
        index: int,
        engine: Any,
        tally: DeliveryTally,
        records: Any,
        reports: Any,
        status_dir: str | Path,
    ) -> None:
        super().__init__()
        self._index = index
        self._engine = engine
        self._tally = tally
        self._records = records
        self._reports = reports
        self._metrics = WorkerMetrics(index)
        self._writer = StatusWriter(status_dir, f"worker-{index}")
        self._rates = RateMeter()

    def report(self) -> None:
        state = engine_state(self._engine)
        counters = self._engine.counters
        self._metrics.flush(counters, self._tally, state)
        self._writer.write(self.snapshot(state))

    def snapshot(self, state: Any) -> dict:
        tally = self._tally
        counts = {
            "in": sum(tally.received.values()),
            "sent": sum(tally.sent.values()),
            "failed": sum(tally.failed.values()),
        }
        partitions: dict[str, list[int]] = {}
        for topic, partition in tally.partitions:
            partitions.setdefault(topic, []).append(partition)
        last = tally.last_error
        return {
            "role": "worker",
            "index": self._index,
            "pid": os.getpid(),
            "time": time.time(),
            "partitions": {t: sorted(p) for t, p in sorted(partitions.items())},
            "rings": {"records": _fill(self._records), "reports": _fill(self._reports)},
            "records": {**counts, "pending": state.pending},
            "rates": self._rates.rates({**counts, "bytes": self._engine.counters.bytes_sent}),
            "requests_in_flight": state.in_flight,
            "buffer": {"used": state.buffer_used, "total": state.buffer_total},
            "brokers": {str(node): up for node, up in sorted(state.brokers.items())},
            "last_error": None if last is None else {"time": last[0], "error": last[1]},
        }


class IngestReporter(_Reporter):
    """The ingest process's metrics and snapshot."""

    def __init__(self, server: Any, records: list, reports: list, status_dir: str | Path) -> None:
        super().__init__()
        self._server = server
        self._records = records
        self._reports = reports
        self._metrics = IngestMetrics()
        self._writer = StatusWriter(status_dir, "ingest")
        self._rates = RateMeter()

    def report(self) -> None:
        self._metrics.flush(self._server, self._records, self._reports)
        self._writer.write(self.snapshot())

    def snapshot(self) -> dict:
        server = self._server
        counts = {"accepted": server.records_accepted, "rejected": server.records_rejected}
        return {
            "role": "ingest",
            "pid": os.getpid(),
            "time": time.time(),
            "connections": len(server.connections),
            "records": {**counts, "buffer_full": server.buffer_full_events},
            "rates": self._rates.rates(counts),
            "rings": [
                {"worker": i, "records": _fill(rec), "reports": _fill(rep)}
                for i, (rec, rep) in enumerate(zip(self._records, self._reports, strict=True))
            ],
        }


def _fill(ring: Any) -> dict[str, int]:
    return {"used": ring.used_bytes(), "capacity": ring.capacity}


# ---- the supervisor's side ----------------------------------------------------------------


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
    children: Iterable[ChildState], status_dir: str | Path, now: float | None = None
) -> dict:
    """The ``/status`` document: each child's state and, when it belongs to the running
    process (a dead predecessor's file is ignored), its latest snapshot and that one's age."""
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
    return {"time": now, "pid": os.getpid(), "children": rows}


def fetch_status(host: str, port: int, timeout_s: float = 5.0) -> dict:
    """GET ``/status`` from a running daemon. Raises OSError when it cannot be reached."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with urllib.request.urlopen(f"http://{netloc}/status", timeout=timeout_s) as answer:
        return json.loads(answer.read())


# ---- kpd status ---------------------------------------------------------------------------

_COLUMNS = (
    "CHILD",
    "PID",
    "UP",
    "RESTARTS",
    "RING",
    "IN/s",
    "SENT/s",
    "FAILED/s",
    "PENDING",
    "BROKERS",
)


def format_status(status: dict) -> str:
    """A human table of a ``/status`` document, then partitions and recent errors."""
    rows = [_COLUMNS]
    notes: list[str] = []
    now = status.get("time", time.time())
    totals = {"in": 0.0, "sent": 0.0, "failed": 0.0}
    for child in status["children"]:
        rows.append(_row(child))
        snap = child.get("snapshot")
        if snap is None:
            notes.append(f"{child['name']}: no current snapshot")
            continue
        if child.get("age_s", 0) > 5 * REPORT_INTERVAL_S:
            notes.append(f"{child['name']}: snapshot is {child['age_s']:.0f}s old (stalled?)")
        if snap["role"] == "worker":
            for key in totals:
                totals[key] += snap["rates"].get(key, 0.0)
            notes.extend(_worker_notes(child["name"], snap, now))
    head = (
        f"kpd supervisor pid {status['pid']}: {len(status['children'])} children, "
        f"{totals['in']:.0f} in/s, {totals['sent']:.0f} sent/s, {totals['failed']:.0f} failed/s"
    )
    return "\n".join([head, "", *_table(rows), *(["", *notes] if notes else [])]) + "\n"


def _row(child: dict) -> tuple[str, ...]:
    snap = child.get("snapshot") or {}
    base = (
        child["name"],
        str(child["pid"] or "-"),
        "yes" if child["up"] else "NO",
        str(child["restarts"]),
    )
    if snap.get("role") == "worker":
        rates = snap["rates"]
        brokers = " ".join(
            node + ("" if up else "!") for node, up in snap["brokers"].items() if int(node) >= 0
        )
        return (
            *base,
            _ring_text(snap["rings"]["records"]),
            f"{rates['in']:.0f}",
            f"{rates['sent']:.0f}",
            f"{rates['failed']:.0f}",
            str(snap["records"]["pending"]),
            brokers or "-",
        )
    if snap.get("role") == "ingest":
        used = sum(r["records"]["used"] for r in snap["rings"])
        capacity = sum(r["records"]["capacity"] for r in snap["rings"])
        rates = snap["rates"]
        accepted = f"{rates['accepted']:.0f}"
        return (
            *base,
            _ring_text({"used": used, "capacity": capacity}),
            accepted,
            "",
            "",
            "",
            f"{snap['connections']} clients",
        )
    return (*base, "-", "-", "-", "-", "-", "-")


def _worker_notes(name: str, snap: dict, now: float) -> list[str]:
    parts = ", ".join(
        f"{topic}[{_ranges(partitions)}]" for topic, partitions in snap["partitions"].items()
    )
    notes = [f"{name} partitions: {parts or '-'}"]
    error = snap.get("last_error")
    if error is not None:
        notes.append(f"{name} last error {now - error['time']:.0f}s ago: {error['error']}")
    return notes


def _ring_text(fill: dict) -> str:
    percent = 100.0 * fill["used"] / fill["capacity"] if fill["capacity"] else 0.0
    return f"{percent:.1f}% of {_bytes(fill['capacity'])}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.0f} GiB"


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    spans: list[list[int]] = []
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
