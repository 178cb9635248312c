"""Which worker owns a partition: ``worker_for(topic, partition, workers)``.

The one ownership rule of kpd, used by ingest (which ring a records entry goes into), by the
supervisor (re-routing an adopted ring's entries when the worker count changed) and, through
that, by exactly-once mode (worker ``i`` of ``W`` writes under a transactional id that stands
for the partitions this rule gives it).

It spreads the partitions of a topic over the workers round-robin from a topic-dependent
start, so a topic with at least W partitions keeps every worker busy and two topics do not
pile their partition 0 on the same worker. New partitions (a topic grown while kpd runs)
simply map to a worker by the same rule. A pure, stable function: no table is shared between
processes.

Pure and at the bottom of the import graph: it imports nothing of kpd. It is not part of
``ring`` (rings know bytes, not topics and partitions), nor of ``ingest`` (the supervisor
would have to import the socket server for it).
"""

from __future__ import annotations

import zlib

__all__ = ["worker_for"]


def worker_for(topic: str, partition: int, workers: int) -> int:
    # crc32 rather than hash(): str hashes are salted per process, and every process of kpd
    # must agree (and keep agreeing after a restart, so replayed rings go the same way).
    return (zlib.crc32(topic.encode()) + partition) % workers
