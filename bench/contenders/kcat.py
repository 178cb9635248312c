"""Contender: ``kcat -P -l FILE``, librdkafka driven from C, as the ceiling of a client.

Debian's kcat links Debian's librdkafka 2.0.2, whose ApiVersions exchange fails against tansu;
the librdkafka 2.16 inside the confluent-kafka wheel works, so kcat runs with LD_LIBRARY_PATH
at a directory holding a ``librdkafka.so.1`` link to the wheel's library
(bench.contenders.programs). librdkafka settings
are the confluent-kafka contender's (acks, linger.ms, compression, idempotence,
murmur2_random), so the two differ only in who calls ``rd_kafka_produce``.

Records are written to the file before the clock, one after another as ``key K value D``.
Values are binary (they start with the record id), so the delimiters are multi-byte strings
that occur in no record; the child checks that while writing. The clock runs from starting
kcat to its exit: kcat's start (process, metadata) is in it, as it is for anyone who runs it.
kcat exits non-zero when a delivery fails and prints no per-record outcomes, so "delivered"
here means its exit status was 0; the read-back by bench.verify counts the records.

kcat is reaped by the child, so its CPU comes from the child's RUSAGE_CHILDREN; its peak RSS
is its VmHWM sampled while it runs (bench.contenders.programs).

Runs only inside a bench child process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.child import Session
from bench.contenders.programs import children_cpu_s, librdkafka_dir, start, wait_for_exit

# Bytes that a record (ASCII keys, an 8-byte big-endian id, ASCII filler) cannot contain in
# this order; make_file checks every record anyway.
_RECORD_DELIMITER = b"\xff\xfe\xfd\xfc"
_KEY_DELIMITER = b"\xfc\xfd\xfe\xff"
_TIMEOUT_S = 600.0


def main(session: Session) -> None:
    with tempfile.TemporaryDirectory(prefix="kpd-bench-kcat-") as tmp:
        workdir = Path(tmp)
        env = dict(os.environ, LD_LIBRARY_PATH=str(librdkafka_dir(workdir)))
        records_file = workdir / "records"
        _write_records(session, records_file)
        command = _command(session, records_file)
        session.ready()
        cpu_before = children_cpu_s()
        # stderr to a file: nobody reads a pipe while kcat runs.
        with (workdir / "stderr").open("wb") as stderr_file:
            proc = start(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr_file)
        try:
            peak_kib = wait_for_exit(proc, _TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        session.stop_clock()
        # kcat is the only child this process reaps, so the children's totals are kcat's.
        cpu_s = children_cpu_s() - cpu_before
        stderr = (workdir / "stderr").read_bytes()
    count = len(session.records.values)
    ok = proc.returncode == 0
    tail = stderr[-1500:].decode(errors="replace")
    errors = [] if ok else [f"kcat exited {proc.returncode}: {tail}"]
    session.done(count if ok else 0, 0 if ok else count, errors, reaped_cpu_s=cpu_s,
                 reaped_rss_kib=peak_kib)  # fmt: skip


def _write_records(session: Session, path: Path) -> None:
    keys, values = session.records.keys, session.records.values
    with path.open("wb") as out:
        for key, value in zip(keys, values, strict=True):
            if _RECORD_DELIMITER in value or _KEY_DELIMITER in value:
                raise ValueError("a record contains kcat's delimiter")
            if key is not None:
                out.write(key + _KEY_DELIMITER)
            out.write(value + _RECORD_DELIMITER)


def _escaped(delimiter: bytes) -> str:
    """kcat's -D/-K syntax for arbitrary bytes: \\xNN each."""
    return "".join(f"\\x{b:02x}" for b in delimiter)


def _command(session: Session, records_file: Path) -> list[str]:
    workload = session.workload
    kcat = shutil.which("kcat")
    if kcat is None:  # the runner skips the run before this; a clear error if not
        raise FileNotFoundError("kcat not installed (apt-get install -y kcat)")
    command = [kcat, "-P", "-b", session.spec.bootstrap, "-t", session.spec.topic,
               "-D", _escaped(_RECORD_DELIMITER)]  # fmt: skip
    if workload.keyed:
        command += ["-K", _escaped(_KEY_DELIMITER)]
    settings = {
        "acks": workload.acks,
        "linger.ms": workload.linger_ms,
        "compression.type": workload.compression,
        "enable.idempotence": "true",
        "partitioner": "murmur2_random",
    }
    for name, value in settings.items():
        command += ["-X", f"{name}={value}"]
    return [*command, "-l", str(records_file)]
