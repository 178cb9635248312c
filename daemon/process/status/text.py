"""``kpd status``'s side: fetch a running daemon's ``/status`` and print it for a person.

Pure formatting apart from ``fetch_status`` (one HTTP GET). Must not import the supervisor.
"""

from __future__ import annotations

import json
import time
import urllib.request

from daemon.process.status.reporters import REPORT_INTERVAL_S
from daemon.process.status.titles import partition_ranges

__all__ = ["fetch_status", "format_status"]


def fetch_status(host: str, port: int, timeout_s: float = 5.0) -> dict:
    """GET ``/status`` from a running daemon. Raises OSError when it cannot be reached."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with urllib.request.urlopen(f"http://{netloc}/status", timeout=timeout_s) as answer:
        return json.loads(answer.read())


_COLUMNS = (
    "CHILD",
    "PID",
    "UP",
    "RESTARTS",
    "RING FILL",
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
    notes.extend(_ring_notes(status.get("rings")))
    head = (
        f"kpd supervisor pid {status['pid']}: {len(status['children'])} children, "
        f"{totals['in']:.0f} in/s, {totals['sent']:.0f} sent/s, {totals['failed']:.0f} failed/s"
    )
    notes = _config_notes(status.get("config"), now) + notes
    return "\n".join([head, "", *_table(rows), *(["", *notes] if notes else [])]) + "\n"


def _config_notes(config: dict | None, now: float) -> list[str]:
    """What a SIGHUP left waiting for a restart, and a reload that failed."""
    if not config:
        return []
    notes = []
    if config["restart_needed"]:
        changed = ", ".join(config["restart_needed"])
        notes.append(f"config {config['source']}: {changed} changed, applied after a restart")
    last = config.get("last_reload")
    if last is not None and not last["ok"]:
        first_line = last["error"].splitlines()[0]
        notes.append(
            f"config reload {now - last['time']:.0f}s ago failed, still running the "
            f"previous settings: {first_line}"
        )
    return notes


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
        known = {node: up for node, up in snap["brokers"].items() if int(node) >= 0}
        brokers = f"{sum(known.values())} of {len(known)} connected" if known else ""
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
            _ingest_clients(snap),
        )
    return (*base, "-", "-", "-", "-", "-", "-")


def _ring_notes(rings: dict | None) -> list[str]:
    """What an operator must know about the ring files: records replayed or re-routed at
    start, and files set aside (they may hold accepted records never produced)."""
    if not rings:
        return []
    notes = []
    replayed = sum(r["bytes"] for r in rings["adopted"])
    if replayed:
        notes.append(f"rings: adopted {_bytes(replayed)} of records left by the previous run")
    for moved in rings["rerouted"]:
        notes.append(
            f"rings: re-routed {moved['entries']} entries of {moved['ring']} "
            f"(written for {moved['workers']} workers)"
        )
    for path in rings["leftovers"]:
        notes.append(f"rings: NOT PRODUCED, set aside: {path} (see its README.txt)")
    return notes


def _ingest_clients(snap: dict) -> str:
    text = f"{snap['connections']} clients"
    lines = snap.get("lines")  # present when socket.lines is configured
    if lines is not None:
        text += f", {lines['connections']} line writers"
        if lines["too_long"]:
            text += f" ({lines['too_long']} lines too long)"
    kafka = snap.get("kafka")  # present when socket.kafka is configured
    if kafka is not None:
        text += f", {kafka['connections']} Kafka clients ({kafka['requests']} requests"
        errors = sum(kafka["errors"].values())
        text += f", {errors} errors)" if errors else ")"
    return text


def _worker_notes(name: str, snap: dict, now: float) -> list[str]:
    parts = ", ".join(
        f"{topic}[{partition_ranges(partitions)}]"
        for topic, partitions in snap["partitions"].items()
    )
    notes = [f"{name} partitions: {parts or '-'}"]
    if snap.get("broker_auth_error"):
        notes.append(f"{name} CANNOT CONNECT: {snap['broker_auth_error']}")
    brokers = {node: up for node, up in snap["brokers"].items() if int(node) >= 0}
    if not all(brokers.values()):
        notes.append(
            f"{name} brokers: "
            + ", ".join(f"{n} {'connected' if up else 'unreachable'}" for n, up in brokers.items())
        )
    txn = snap.get("transaction")
    if txn is not None:
        notes.append(
            f"{name} transactional id {txn['id']}: {txn['state']} "
            f"(producer id {txn['producer_id']}, epoch {txn['epoch']})"
        )
        if txn["error"]:
            notes.append(f"{name} WRITES STOPPED: {txn['error']}")
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


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
