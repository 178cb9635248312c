"""The children's side of ``/status``: each child's reporter, its snapshot file, its rates.

Each child owns one reporter (``WorkerReporter`` or ``IngestReporter``) that, once a second
from the child's own event loop, flushes its Prometheus metrics and writes a small JSON
snapshot of itself into the status directory the supervisor gave it (write to a temporary
file, then rename: a reader never sees half a file). It reads the engines through their public
``stats()`` snapshots and counters.

The beat comes from the child's loop on purpose: a stalled loop stops its snapshot, and the
growing ``age_s`` in ``/status`` shows it. Must not import uvloop, signal or the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.metrics import DeliveryTally, IngestMetrics, WorkerMetrics

__all__ = ["REPORT_INTERVAL_S", "IngestReporter", "RateMeter", "StatusWriter", "WorkerReporter"]

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0


class StatusWriter:
    """Owns one child's snapshot file, ``<dir>/<name>.json``."""

    def __init__(self, directory: str | Path, name: str) -> None:
        self._path = Path(directory) / f"{name}.json"
        self._tmp = self._path.with_suffix(f".{os.getpid()}.tmp")

    def write(self, snapshot: dict) -> None:
        self._tmp.write_text(json.dumps(snapshot, separators=(",", ":")))
        os.replace(self._tmp, self._path)  # atomic: readers see the old or the new file


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
        state = self._engine.stats()
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
            "broker_auth_error": state.auth_error,
            "transaction": _transaction(state.transaction),
        }


class IngestReporter(_Reporter):
    """The ingest process's metrics and snapshot."""

    def __init__(
        self,
        server: Any,
        records: list,
        reports: list,
        status_dir: str | Path,
        lines: Any = None,  # the LinesListener of socket.lines, if configured
        kafka: Any = None,  # the KafkaListener of socket.kafka, if configured
    ) -> None:
        super().__init__()
        self._server = server
        self._lines = lines
        self._kafka = kafka
        self._records = records
        self._reports = reports
        self._metrics = IngestMetrics()
        self._writer = StatusWriter(status_dir, "ingest")
        self._rates = RateMeter()

    def report(self) -> None:
        stats = self._server.stats()
        lines = self._lines.stats() if self._lines is not None else None
        kafka = self._kafka.stats() if self._kafka is not None else None
        self._metrics.flush(stats, self._records, self._reports, lines, kafka)
        self._writer.write(self.snapshot(stats, lines, kafka))

    def snapshot(self, stats: Any, lines: Any = None, kafka: Any = None) -> dict:
        counts = {"accepted": stats.records_accepted, "rejected": stats.records_rejected}
        snapshot = {
            "role": "ingest",
            "pid": os.getpid(),
            "time": time.time(),
            "connections": stats.connections,
            "records": {**counts, "buffer_full": stats.buffer_full_events},
            "ring_syncs": stats.ring_syncs,
            "rates": self._rates.rates(counts),
            "rings": [
                {"worker": i, "records": _fill(rec), "reports": _fill(rep)}
                for i, (rec, rep) in enumerate(zip(self._records, self._reports, strict=True))
            ],
        }
        if lines is not None:
            snapshot["lines"] = {
                "connections": lines.connections,
                "too_long": lines.lines_too_long,
                "empty": lines.lines_empty,
            }
        if kafka is not None:
            snapshot["kafka"] = {
                "connections": kafka.connections,
                "requests": kafka.requests,
                "records": kafka.records,
                "errors": {str(code): n for code, n in sorted(kafka.errors.items())},
                "producers": kafka.producers,
            }
        return snapshot


def _transaction(stats: Any) -> dict | None:
    """Exactly-once mode: the worker's transactional id and state (None otherwise)."""
    if stats is None:
        return None
    return {
        "id": stats.transactional_id,
        "state": stats.state,
        "producer_id": stats.producer_id,
        "epoch": stats.epoch,
        "error": stats.error,
    }


def _fill(ring: Any) -> dict[str, int]:
    return {"used": ring.used_bytes(), "capacity": ring.capacity}
