"""Which worker owns a partition: a pure, stable function, so no table is shared.

``worker_for(topic, partition, workers)`` spreads the partitions of a topic over the workers
round-robin from a topic-dependent start, so a topic with at least W partitions keeps every
worker busy and two topics do not pile their partition 0 on the same worker. New partitions
(a topic grown while kpd runs) simply map to a worker by the same rule.
"""

from __future__ import annotations

import zlib

__all__ = ["worker_for"]


def worker_for(topic: str, partition: int, workers: int) -> int:
    # crc32 rather than hash(): str hashes are salted per process, and every process of kpd
    # must agree (and keep agreeing after a restart, so replayed rings go the same way).
    return (zlib.crc32(topic.encode()) + partition) % workers
