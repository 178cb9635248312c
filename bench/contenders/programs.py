"""What the contenders that drive a program (kcat, ``kpd send``, rsyslogd) share.

Owns four small things: starting a program so that it dies with the child that started it (a
failed run kills the child, and an orphaned rsyslogd would keep producing), the CPU of the
programs a child reaped (``RUSAGE_CHILDREN``: the parent cannot read /proc of a process that is
gone), their peak RSS (sampled from /proc while they run: see ``wait_for_exit``), and the
directory whose ``librdkafka.so.1`` is the confluent-kafka wheel's library. Debian's librdkafka
2.0.2 (behind kcat and rsyslog's omkafka) fails the ApiVersions exchange with tansu (DESIGN.md,
"Facts measured"); the wheel's 2.16 works, and with it every librdkafka contender runs the same
librdkafka.

Imports confluent_kafka only to find its library; runs only inside a bench child process.
"""

from __future__ import annotations

import ctypes
import resource
import signal
import subprocess
import time
from pathlib import Path

import confluent_kafka

from bench.procstat import memory_kib

__all__ = ["children_cpu_s", "librdkafka_dir", "peak_rss_kib", "start", "wait_for_exit"]

_PR_SET_PDEATHSIG = 1  # prctl(2)
_SAMPLE_S = 0.02  # how often a running program's VmHWM is read


def children_cpu_s() -> float:
    """User + system CPU of every child this process reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a running process (0 once it is a zombie: it has no memory left)."""
    try:
        return memory_kib(pid).get("VmHWM", 0)
    except OSError:
        return 0


def wait_for_exit(proc: subprocess.Popen, timeout_s: float, peak_kib: int = 0) -> int:
    """Wait for ``proc`` to exit, reading its VmHWM every 20 ms; returns the largest seen (or
    ``peak_kib``, if larger). Not RUSAGE_CHILDREN's ru_maxrss: Linux counts in it the RSS the
    forked child had before exec, which is this child's, records and all. The last reading is
    at most 20 ms before the exit. TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        peak_kib = max(peak_kib, peak_rss_kib(proc.pid))
        try:
            proc.wait(timeout=_SAMPLE_S)
            return peak_kib
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.args[0]} still running after {timeout_s} s") from None


def _die_with_parent() -> None:  # runs in the forked child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start(command: list[str], **popen: object) -> subprocess.Popen:
    """``subprocess.Popen(command, **popen)``, SIGKILLed by the kernel if this process dies.
    Only for single-threaded callers (prctl's parent is the thread that forked)."""
    return subprocess.Popen(command, preexec_fn=_die_with_parent, **popen)  # type: ignore[call-overload]


def librdkafka_dir(workdir: Path) -> Path:
    """A directory (made in ``workdir``) whose ``librdkafka.so.1`` is the confluent-kafka
    wheel's library: put it in LD_LIBRARY_PATH of a program linked to librdkafka.so.1."""
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka-*.so.1"))
    if not found:
        raise FileNotFoundError(f"no librdkafka-*.so.1 in {libs}")
    libdir = workdir / "lib"
    libdir.mkdir(exist_ok=True)
    link = libdir / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(found[0])
    return libdir
