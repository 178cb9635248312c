"""Process titles, so ``ps``, ``top`` and ``/proc/PID/cmdline`` show each process's role:
``kpd: supervisor /etc/kpd/kpd.yaml``, ``kpd: ingest``, ``kpd: worker 0 [demo 0-2,5]``.

Pure but for ``set_title`` (setproctitle rewrites the process's argv area in place).
"""

from __future__ import annotations

from collections.abc import Iterable

import setproctitle

__all__ = ["partition_ranges", "set_title", "worker_title"]

_MAX_TOPICS_SHOWN = 4  # a title is for reading at a glance; /status has the whole list


def set_title(title: str) -> None:
    setproctitle.setproctitle(title)


def worker_title(index: int, partitions: Iterable[tuple[str, int]]) -> str:
    """``kpd: worker 0 [partitions demo 0-5, logs 1,3]`` from (topic, partition) pairs the
    worker has seen; ``[no partitions yet]`` before its first record."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    if not by_topic:
        return f"kpd: worker {index} [no partitions yet]"
    shown = [
        f"{topic} {partition_ranges(sorted(parts))}"
        for topic, parts in sorted(by_topic.items())[:_MAX_TOPICS_SHOWN]
    ]
    more = len(by_topic) - _MAX_TOPICS_SHOWN
    if more > 0:
        shown.append(f"+{more} topics")
    return f"kpd: worker {index} [partitions {', '.join(shown)}]"


def partition_ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (sorted input)."""
    spans: list[list[int]] = []
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
