"""What each of kpd's processes costs the host, read from ``/proc`` by the supervisor.

Resident memory (RSS) counts every page a process maps, so the ring files that ingest and a
worker both map are counted twice; proportional memory (PSS) splits a shared page between its
mappers, so the PSS of all processes adds up to what kpd really holds. Both come from
``/proc/PID/smaps_rollup`` (Linux 4.14+). CPU time from ``/proc/PID/stat``, open descriptors
from ``/proc/PID/fd``. Read at scrape and ``/status`` time only: no cost while nobody looks.
Linux only; elsewhere (or for a process already gone) ``usage_of`` returns None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ProcessUsage", "usage_of"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    resident_bytes: int
    proportional_bytes: int
    cpu_seconds: float  # user + system since the process started
    open_fds: int


def usage_of(pid: int | None) -> ProcessUsage | None:
    if pid is None:
        return None
    try:
        rollup = _smaps_rollup(pid)
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # Fields after the ")" that ends the command: utime and stime are fields 14 and 15
            # of proc(5), i.e. the 12th and 13th after it.
            fields = stat.read().rsplit(b")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError, IndexError):
        return None
    return ProcessUsage(rollup.get(b"Rss:", 0), rollup.get(b"Pss:", 0), cpu, fds)


def _smaps_rollup(pid: int) -> dict[bytes, int]:
    """``Rss:``, ``Pss:``, ... of /proc/PID/smaps_rollup in bytes (the file says kB)."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == b"kB":
                values[parts[0]] = int(parts[1]) * 1024
    return values
