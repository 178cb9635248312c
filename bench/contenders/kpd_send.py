"""Contender: ``kpd send``, lines from stdin to the run's kpd daemon, as a shell pipeline runs it.

The command is ``kpd send --topic T --socket S --key-separator TAB --acks kafka``, run as
``python -m daemon.cli`` from this checkout, as the runner runs the daemon (the venv's ``kpd``
script would import whichever checkout the venv was installed from). The lines
(``key<TAB>value``, the same as rsyslog's, see bench.workloads.lines) are written to a file
before the clock. Option ``input``: ``"file"`` makes the file its stdin (``kpd send < FILE``);
``"pipe"`` gives it a pipe that this child fills from the file with sendfile, as ``tail -F
app.log | kpd send`` does, and as the rsyslog contender feeds its socket.

The clock runs from starting ``kpd send`` (its imports and connection included, as for anyone
who runs it) to its exit, which follows its last record's outcome. "delivered" is what it
prints (``sent N records to T, F failed``), or every record when it exits 0 without saying.
Its CPU comes from this child's RUSAGE_CHILDREN (it is the only program this child reaps),
its peak RSS from its VmHWM sampled while it runs (bench.contenders.programs); the daemon's
processes are measured by the runner. Peak RSS over two input lengths shows whether its
memory stays flat however long the input.

Imports no client library; runs only inside a bench child process.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from bench.child import Session
from bench.contenders.programs import children_cpu_s, start, wait_for_exit
from bench.workloads import LINE_SEPARATOR, lines

_TIMEOUT_S = 900.0
_CHECKOUT = Path(__file__).resolve().parents[2]  # where `python -m daemon.cli` finds daemon/
_SUMMARY = re.compile(rb"sent (\d+) records to .*?, (\d+) failed")


def main(session: Session) -> None:
    workload = session.workload
    if not workload.text:
        raise ValueError(f"kpd send reads lines; workload {workload.name} is not a text one")
    with tempfile.TemporaryDirectory(prefix="kpd-bench-send-") as tmp:
        work = Path(tmp)
        lines_file = work / "lines"
        with lines_file.open("wb") as out:
            out.writelines(lines(session.records))
        command = _command(session)
        from_pipe = session.spec.options.get("input", "file") == "pipe"
        # Files, not pipes, for its output: nobody reads a pipe while this child feeds it.
        with lines_file.open("rb") as source, (work / "stdout").open("wb") as stdout, \
                (work / "stderr").open("wb") as stderr:  # fmt: skip
            session.ready()
            cpu_before = children_cpu_s()
            if from_pipe:
                reader, writer = os.pipe()
                proc = start(command, stdin=reader, stdout=stdout, stderr=stderr, cwd=_CHECKOUT)
                os.close(reader)
                _fill(writer, source)
            else:
                proc = start(command, stdin=source, stdout=stdout, stderr=stderr, cwd=_CHECKOUT)
            peak_kib = wait_for_exit(proc, _TIMEOUT_S)
            session.stop_clock()
        cpu_s = children_cpu_s() - cpu_before
        output = (work / "stdout").read_bytes()
        errors = (work / "stderr").read_bytes()
    count = len(session.records.values)
    delivered, failed, errors = _outcome(proc.returncode, output, errors, count)
    session.done(delivered, failed, errors, reaped_cpu_s=cpu_s, reaped_rss_kib=peak_kib)


def _command(session: Session) -> list[str]:
    command = [sys.executable, "-m", "daemon.cli", "send", "--topic", session.spec.topic,
               "--socket", session.spec.options["socket"], "--acks", "kafka"]  # fmt: skip
    if session.workload.keyed:
        command += ["--key-separator", LINE_SEPARATOR.decode()]
    return command


def _fill(sink: int, source) -> None:
    """Copy the file into ``kpd send``'s stdin pipe (in the kernel), then close the pipe."""
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
