"""Exactly-once mode's worker layout: each worker's transactional id, and fencing the ids of
the previous layout when it changed.

Worker ``i`` of ``W`` owns the partitions ``worker_for`` maps to it, a set fixed by
``(i, W)``; so its transactional id is ``<kafka.transactional.id>-<W>-<i>``, stable across
restarts of the worker and of kpd. When ``W`` (or the base id) changes, the old ids are
owned by nobody, and a transaction one of them left open (kpd was killed) would stay open
until the coordinator's ``transaction.timeout.ms`` aborts it — holding back every
read_committed consumer of its partitions (the LSO) until then. So before any worker of the
new layout writes, the supervisor bumps the epoch of every old id (InitProducerId), which
aborts their open transactions at once, and only then records the new layout.

The layout is remembered in a small JSON file in the state directory (``layout_path``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from daemon.config import DaemonConfig, ProducerSettings
from daemon.net.from_config import connection_settings
from daemon.producer.transactions import (
    Channel,
    TransactionManager,
    TransactionRetriable,
    TransactionSettings,
)
from daemon.producer.txn_channel import DirectChannel

__all__ = [
    "fence_previous_layout",
    "fence_transactional_ids",
    "layout_path",
    "worker_transactional_id",
]

log = logging.getLogger(__name__)


def worker_transactional_id(base: str, workers: int, index: int) -> str:
    return f"{base}-{workers}-{index}"


def layout_path(config: DaemonConfig) -> Path:
    """Where the last layout is remembered: the state directory, beside the ring files, so
    it survives exactly as long as the records it concerns."""
    return Path(config.rings.directory) / f"{config.rings.prefix}-transactions.json"


def _read_layout(path: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(path.read_text())
        return str(data["transactional_id"]), int(data["workers"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read the previous worker layout %s (%s); fencing nothing", path, exc)
        return None


def _write_layout(path: Path, base: str, workers: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # may run before the rings are made
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"transactional_id": base, "workers": workers}))
    os.replace(tmp, path)


async def fence_previous_layout(config: DaemonConfig, producer: ProducerSettings) -> list[str]:
    """Fence the transactional ids of the previous layout if it differs from this one, then
    remember this one. Returns the ids fenced. Raises what the fencing raises."""
    base, workers = producer.transactional_id, config.workers.count
    path = layout_path(config)
    previous = _read_layout(path)
    fenced: list[str] = []
    if previous is not None and previous != (base, workers):
        old_base, old_workers = previous
        fenced = [worker_transactional_id(old_base, old_workers, i) for i in range(old_workers)]
        log.info(
            "worker layout changed from %d to %d workers: fencing %s", old_workers, workers, fenced
        )
        channel = DirectChannel(
            producer.bootstrap_servers,
            connection_settings(
                producer, client_id=f"{producer.client_id}-supervisor", carries_produce=False
            ),
        )
        try:
            await fence_transactional_ids(
                fenced,
                channel,
                TransactionSettings("", producer.transaction_timeout_ms,
                                    producer.retry_backoff_ms / 1000),
            )  # fmt: skip
        finally:
            await channel.close()
    _write_layout(path, base, workers)
    return fenced


async def fence_transactional_ids(
    ids: Iterable[str], channel: Channel, settings: TransactionSettings
) -> None:
    """Bump the epoch of each transactional id, so its coordinator aborts any transaction
    it left open and its old producers can write nothing more (InitProducerId per id)."""
    for transactional_id in ids:
        manager = TransactionManager(
            TransactionSettings(transactional_id, settings.timeout_ms, settings.retry_backoff_s),
            channel,
        )
        while True:  # the caller bounds the time
            try:
                await manager.initialize()
                break
            except TransactionRetriable:
                continue
