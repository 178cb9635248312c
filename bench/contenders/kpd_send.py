"""Contender: ``kpd send``, lines from stdin to the run's kpd daemon, as a shell pipeline runs it.

The command is ``kpd send --topic T --socket S --key-separator TAB --acks kafka``, the
``kpd`` script beside this interpreter (the venv's). The lines (``key<TAB>value``, the same as
rsyslog's, see bench.workloads.lines) are written to a file before the clock. Option
``input``: ``"file"`` makes the file its stdin (``kpd send < FILE``); ``"pipe"`` gives it a
pipe that this child fills from the file with sendfile, as ``tail -F app.log | kpd send``
does, and as the rsyslog contender feeds its socket.

The clock runs from starting ``kpd send`` (its imports and connection included, as for anyone
who runs it) to its exit, which follows its last record's outcome. "delivered" is what it
prints (``sent N records to T, F failed``), or every record when it exits 0 without saying.
Its CPU and peak RSS come from this child's RUSAGE_CHILDREN (it is the only program this
child reaps); the daemon's processes are measured by the runner. Peak RSS over two input
lengths shows whether its memory stays flat however long the input.

Imports no client library; runs only inside a bench child process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.child import Session
from bench.contenders.programs import children_usage, start
from bench.workloads import LINE_SEPARATOR, lines

_TIMEOUT_S = 900.0
_SUMMARY = re.compile(rb"sent (\d+) records to .*?, (\d+) failed")


def main(session: Session) -> None:
    workload = session.workload
    if not workload.text:
        raise ValueError(f"kpd send reads lines; workload {workload.name} is not a text one")
    with tempfile.TemporaryDirectory(prefix="kpd-bench-send-") as tmp:
        lines_file = Path(tmp) / "lines"
        with lines_file.open("wb") as out:
            out.writelines(lines(session.records))
        command = _command(session)
        from_pipe = session.spec.options.get("input", "file") == "pipe"
        with lines_file.open("rb") as source:
            session.ready()
            before = children_usage()
            if from_pipe:
                reader, writer = os.pipe()
                proc = start(command, stdin=reader, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
                os.close(reader)
                _fill(writer, source)
            else:
                proc = start(command, stdin=source, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
            stdout, stderr = proc.communicate(timeout=_TIMEOUT_S)
            session.stop_clock()
        after = children_usage()
    count = len(session.records.values)
    delivered, failed, errors = _outcome(proc.returncode, stdout, stderr, count)
    session.done(delivered, failed, errors, reaped_cpu_s=after.cpu_s - before.cpu_s,
                 reaped_rss_kib=after.max_rss_kib)  # fmt: skip


def _command(session: Session) -> list[str]:
    script = Path(sys.executable).with_name("kpd")
    kpd = [str(script)] if script.exists() else [sys.executable, "-m", "daemon.cli"]
    command = [*kpd, "send", "--topic", session.spec.topic,
               "--socket", session.spec.options["socket"], "--acks", "kafka"]  # fmt: skip
    if session.workload.keyed:
        command += ["--key-separator", LINE_SEPARATOR.decode()]
    return command


def _fill(sink: int, source) -> None:
    """Copy the file into ``kpd send``'s stdin pipe (in the kernel), then close the pipe.
    kpd send prints only at its end, so its stdout and stderr cannot fill meanwhile."""
    size = os.fstat(source.fileno()).st_size
    offset = 0
    try:
        while offset < size:
            offset += os.sendfile(sink, source.fileno(), offset, size - offset)
    finally:
        os.close(sink)


def _outcome(status: int, stdout: bytes, stderr: bytes, count: int) -> tuple[int, int, list]:
    summary = _SUMMARY.search(stdout)
    if summary:
        delivered, failed = int(summary[1]), int(summary[2])
    else:
        delivered, failed = (count, 0) if status == 0 else (0, count)
    errors = [] if status == 0 else [f"kpd send exited {status}: "
                                     + stderr[-1500:].decode(errors="replace")]  # fmt: skip
    return delivered, failed, errors
