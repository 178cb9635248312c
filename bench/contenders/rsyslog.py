"""Contender: rsyslog, lines in over a UNIX stream socket (imptcp), out to Kafka (omkafka).

The shell path's incumbent: an app writes ``key<TAB>value`` lines to a socket and rsyslog
produces them. The child runs its own ``rsyslogd -n -f CONF -i PIDFILE`` in the foreground,
with a config and work directory in a temporary directory and imptcp listening on a socket path
there; it never touches the system's logger, /dev/log or /etc/rsyslog.conf.

The config (``_CONFIG``) takes the raw line (``%rawmsg%``: no syslog header is expected) and
splits it at the tab into omkafka's key (``dynaKey``) and value; tabs pass unescaped
(``parser.escapeControlCharacterTab="off"``). librdkafka settings are the other librdkafka
contenders' (acks, linger.ms, compression, idempotence, murmur2_random). Tuned so that no
record is dropped: librdkafka's queue holds 10,000,000 messages (a full queue would suspend the
action and lose messages), omkafka resubmits failed messages and retries for ever, and shutdown
waits for the main queue and for librdkafka to deliver (60 s each).

rsyslog runs on the confluent-kafka wheel's librdkafka (LD_LIBRARY_PATH, see
bench.contenders.programs): Debian's fails the ApiVersions exchange with tansu.

Before the clock: rsyslogd starts, and one warm-up record (key bench.verify.WARM_UP_KEY) goes
through it, because omkafka opens its Kafka connection (metadata, producer id) on its first
message; the child waits until the record is in the topic (a consumer; librdkafka's statistics
would not do: omkafka serves librdkafka's callbacks only when it handles a message). The lines
are written to a file first. The clock runs from sending the file over the socket
(``sendfile``) to rsyslogd's exit: after the lines, a last line ``kpd-bench-end`` makes rsyslog
write a marker file (so every line was read and queued), then SIGTERM makes it drain its queue
into omkafka and librdkafka deliver everything before it exits. rsyslog gives no per-record
outcome: "delivered" means it exited 0 and its log names no failed delivery; the read-back
counts the records.

CPU is rsyslogd's from "go" (read from /proc then) to its exit (its rusage, reaped by this
child); peak RSS is rsyslogd's VmHWM over its life, sampled from /proc while it runs. Imports
no client library; runs only inside a bench child process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.child import Session
from bench.contenders.programs import (
    children_cpu_s,
    librdkafka_dir,
    peak_rss_kib,
    start,
    wait_for_exit,
)
from bench.procstat import cpu_seconds
from bench.verify import WARM_UP_KEY, wait_for_warm_up
from bench.workloads import LINE_SEPARATOR, lines

_END_LINE = b"kpd-bench-end"
_MODULE_DIRS = ("/usr/lib/*/rsyslog", "/usr/lib/rsyslog", "/usr/lib64/rsyslog")
_START_TIMEOUT_S = 30.0
_WARM_UP_TIMEOUT_S = 60.0
_RUN_TIMEOUT_S = 600.0
_POLL_S = 0.001  # how often the marker file is looked for

_CONFIG = """\
main_queue(queue.timeoutShutdown="60000")
global(workDirectory="{work}" parser.escapeControlCharacterTab="off")
module(load="imptcp")
module(load="omkafka")
template(name="kpd_bench_key" type="string" string="%rawmsg:F,9:1%")
template(name="kpd_bench_value" type="string" string="%rawmsg:F,9:2%")
ruleset(name="kpd_bench") {{
  if $rawmsg == "{end}" then {{
    action(type="omfile" file="{marker}")
    stop
  }}
  action(type="omkafka" broker=["{bootstrap}"] topic="{topic}" template="kpd_bench_value"
         dynaKey="on" key="kpd_bench_key" partitions.auto="on"
         resubmitOnFailure="on" action.resumeRetryCount="-1" closeTimeout="60000"
         confParam=["acks={acks}", "linger.ms={linger_ms}", "compression.type={compression}",
                    "enable.idempotence=true", "partitioner=murmur2_random",
                    "queue.buffering.max.messages=10000000",
                    "queue.buffering.max.kbytes=2097151"])
}}
input(type="imptcp" path="{socket}" unlink="on" ruleset="kpd_bench")
"""


def main(session: Session) -> None:
    workload = session.workload
    if not workload.text or not workload.keyed:
        raise ValueError(f"rsyslog sends keyed text lines; workload {workload.name} is not")
    if not _omkafka_installed():
        session.skip("omkafka not installed (apt-get install -y rsyslog-kafka)")
        return
    with tempfile.TemporaryDirectory(prefix="kpd-bench-rsyslog-") as tmp:
        work = Path(tmp)
        lines_file = work / "lines"
        with lines_file.open("wb") as out:
            out.writelines(lines(session.records))
        paths = {name: work / name for name in ("rsyslog.conf", "marker", "socket")}
        paths["rsyslog.conf"].write_text(_CONFIG.format(
            work=work, end=_END_LINE.decode(), marker=paths["marker"], socket=paths["socket"],
            bootstrap=session.spec.bootstrap, topic=session.spec.topic, acks=workload.acks,
            linger_ms=workload.linger_ms, compression=workload.compression))  # fmt: skip
        log_path = work / "rsyslogd.log"
        env = dict(os.environ, LD_LIBRARY_PATH=str(librdkafka_dir(work)))
        cpu_before = children_cpu_s()
        with log_path.open("wb") as log:
            proc = start(["rsyslogd", "-n", "-f", str(paths["rsyslog.conf"]),
                          "-i", str(work / "rsyslogd.pid")],
                         env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            _wait_for(lambda: _accepts(paths["socket"]), proc, log_path, _START_TIMEOUT_S,
                      "its socket")  # fmt: skip
            _send(paths["socket"], [WARM_UP_KEY + LINE_SEPARATOR + b"warm-up\n"])
            wait_for_warm_up(session.spec.bootstrap, session.spec.topic, workload.partitions,
                             _WARM_UP_TIMEOUT_S)  # fmt: skip
            cpu_at_go = cpu_seconds(proc.pid)
            session.ready()
            with lines_file.open("rb") as source:
                _send(paths["socket"], [source, _END_LINE + b"\n"])
            _wait_for(paths["marker"].exists, proc, log_path, _RUN_TIMEOUT_S, "the last line")
            peak_kib = peak_rss_kib(proc.pid)
            proc.send_signal(signal.SIGTERM)
            peak_kib = wait_for_exit(proc, _RUN_TIMEOUT_S, peak_kib)
            session.stop_clock()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cpu_s = children_cpu_s() - cpu_before - cpu_at_go
        errors = _failures(log_path.read_text(errors="replace"), proc.returncode)
    count = len(session.records.values)
    session.done(0 if errors else count, count if errors else 0, errors, reaped_cpu_s=cpu_s,
                 reaped_rss_kib=peak_kib, warm_ups=1)  # fmt: skip


def _omkafka_installed() -> bool:
    return any(Path("/").glob(f"{d.lstrip('/')}/omkafka.so") for d in _MODULE_DIRS)


def _accepts(path: Path) -> bool:
    """rsyslogd's socket is listening: the file appears at bind, a moment before listen (a
    connect in between is refused; seen under load)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except ConnectionRefusedError:
            return False
    return True


def _send(path: Path, parts: list) -> None:
    """Write bytes and whole files (by sendfile) to the socket at ``path``, then close it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        for part in parts:
            if isinstance(part, bytes):
                sock.sendall(part)
            else:
                sock.sendfile(part)


def _wait_for(condition, proc: subprocess.Popen, log_path: Path, timeout_s: float,
              what: str) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise RuntimeError(f"rsyslogd exited with {proc.returncode} before {what}: "
                               f"{_tail(log_path)}")  # fmt: skip
        if time.monotonic() > deadline:
            raise TimeoutError(f"rsyslogd: no {what} after {timeout_s} s: {_tail(log_path)}")
        time.sleep(_POLL_S)


def _failures(log: str, status: int) -> list[str]:
    errors = [f"rsyslogd exited with {status}"] if status else []
    # omkafka's words for a record it gave up on: a failed delivery report, or records still
    # queued when closeTimeout ran out.
    lost = ("delivery FAIL", "Failed to send remaining")
    errors += [line for line in log.splitlines() if any(word in line for word in lost)][:5]
    return errors


def _tail(log_path: Path) -> str:
    return log_path.read_bytes()[-1500:].decode(errors="replace")
