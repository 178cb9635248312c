"""CPU time and memory of a process, read from /proc (Linux only).

Owns nothing: a few readers of ``/proc/PID/stat`` and ``/proc/PID/status``, and a scan of
/proc for the children of a process (the daemon a kpd contender talks to). The parent process
reads them for every contender child and for the broker, so each figure belongs to exactly one
process and no contender measures itself differently from another. Imports only the stdlib.
"""

from __future__ import annotations

import os

__all__ = ["child_pids", "cpu_seconds", "memory_kib", "process_role"]

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# proc(5): after "pid (comm) state", utime and stime are fields 14 and 15 (1-based). comm may
# contain spaces and parentheses, so count fields from the last ')'; there "state" is field 3.
_UTIME_AFTER_COMM = 14 - 3
_STIME_AFTER_COMM = 15 - 3


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far (not of its children).

    Resolution is one clock tick (10 ms at the usual 100 Hz): fine for runs of seconds.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    ticks = int(fields[_UTIME_AFTER_COMM]) + int(fields[_STIME_AFTER_COMM])
    return ticks / _TICKS_PER_SECOND


def memory_kib(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` (resident now) of ``pid``, in KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            name, _, rest = line.partition(b":")
            if name in (b"VmHWM", b"VmRSS"):
                found[name.decode()] = int(rest.split()[0])  # "  123456 kB"
    return found


def child_pids(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` now (a scan of /proc; children that exit meanwhile
    are skipped)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # proc(5): "ppid" is field 4, the second after comm.
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def process_role(pid: int) -> str:
    """A kpd child's role from its title (``kpd: worker 0 [...]`` -> ``worker 0``), or from
    its argv before it set one (``python -m daemon.process.child worker 0``); else the
    command name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return f"pid {pid}"
    title = " ".join(argv)
    if title.startswith("kpd: "):
        words = title.removeprefix("kpd: ").split()
        return " ".join(words[:2]) if words[:1] == ["worker"] else words[0] if words else title
    if "daemon.process.child" in argv:
        rest = argv[argv.index("daemon.process.child") + 1 :]
        return " ".join(rest[:2]) if rest[:1] == ["worker"] else (rest[0] if rest else title)
    return argv[0] if argv else f"pid {pid}"
