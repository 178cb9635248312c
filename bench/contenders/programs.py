"""What the contenders that drive a program (kcat, ``kpd send``, rsyslogd) share.

Owns three small things: starting a program so that it dies with the child that started it
(a failed run kills the child, and an orphaned rsyslogd would keep producing), the CPU and
peak RSS of the programs a child reaped (``RUSAGE_CHILDREN``: the parent cannot read /proc of
a process that is gone), and the directory whose ``librdkafka.so.1`` is the confluent-kafka
wheel's library. Debian's librdkafka 2.0.2 (behind kcat and rsyslog's omkafka) fails the
ApiVersions exchange with tansu (DESIGN.md, "Facts measured"); the wheel's 2.16 works, and
with it every librdkafka contender runs the same librdkafka.

Imports confluent_kafka only to find its library; runs only inside a bench child process.
"""

from __future__ import annotations

import ctypes
import resource
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka

__all__ = ["Usage", "children_usage", "librdkafka_dir", "start"]

_PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system CPU of every reaped child so far
    max_rss_kib: int  # the largest peak RSS among them


def children_usage() -> Usage:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Usage(usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


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
