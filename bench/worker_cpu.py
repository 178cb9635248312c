"""``python -m bench.worker_cpu``: one worker's CPU per ring entry, with nothing else around it.

One ``Worker`` in a forked process (uvloop, its done and flight journals, as the daemon runs
it) against a fresh tansu; this process plays ingest: it writes ring entries shaped like the
Kafka listener's (one client partition batch each: ``BATCHED``, a timestamp per record, ack
KAFKA) or like the kpd socket's (``--source socket``: no timestamps, not batched), paced or
flat out, and reads the reports back, sleeping on the reports ring's doorbell as ingest does
(so the worker rings it). What is measured is the worker process alone: its CPU seconds
(/proc) from the first paced entry to the last report, per entry and per record, with the
Produce requests it sent and its voluntary context switches (its sleeps). Takes the noise of
ingest, the app and the second worker out of an A/B of the worker's code:

    python -m bench.worker_cpu --rate 5000 --entry-records 9      # a worker at 10k/s
    python -m bench.worker_cpu --rate 0 --entry-records 100       # flat out
    python -m bench.worker_cpu --profile /tmp/w                   # py-spy the worker

For figures, not tests: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procstat import cpu_seconds
from bench.profile import find_py_spy, render_top
from daemon.config import producer_settings
from daemon.ring import Ring, RingConsumer, RingProducer, RingWakeups
from daemon.wire.ring_entry import decode_report_entry, entry_head
from daemon.worker.done_journal import journal_path
from daemon.worker.flight_journal import flight_journal_path
from kpd.protocol.base import AckLevel
from kpd.protocol.records import encode_records
from tests.brokers.tansu import TansuBroker

_TOPIC = "wcpu"
_LISTENER_CONN = 0xFFFF_FFFF_FFFF_FFFE  # what the Kafka listener's entries carry
_SOCKET_CONN = 0xC0FFEE
_RING_BYTES = 16 << 20
_REPORTS_BYTES = 4 << 20


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.worker_cpu", description=__doc__)
    p.add_argument("--rate", type=int, default=5000, help="records/s into this worker; 0: flat out")
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--entry-records", type=int, default=9, help="records per ring entry")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--source", choices=("listener", "socket"), default="listener")
    p.add_argument(
        "--records-per-ms",
        type=int,
        default=1,
        help="a listener entry's records stamped this many per millisecond",
    )
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--profile", type=Path, default=None, help="py-spy the worker, stacks here")
    p.add_argument("--native", action="store_true", help="py-spy --native: C frames too")
    p.add_argument("--strace", type=Path, default=None,
                   help="strace -c the worker into FILE (FILE.perf: perf record it)")  # fmt: skip
    p.add_argument("--calls", action="store_true",
                   help="count the worker's Python calls (slow: not for CPU figures)")  # fmt: skip
    return p


def _entries(args) -> list[tuple[int, int, list]]:
    """The run's ring entries as (partition, base seq, records), partitions in turn."""
    key, value = b"key-%012d", b"v" * 100
    out, seq = [], 0
    for start in range(0, args.records, args.entry_records):
        n = min(args.entry_records, args.records - start)
        partition = (start // args.entry_records) % args.partitions
        out.append((partition, seq, [(key % (seq + i), value) for i in range(n)]))
        seq += n
    return out


def _encode(args, entry: tuple[int, int, list], now_ms: int) -> bytes:
    """A ring entry received now; a listener entry's records stamped as a client would have
    (``--records-per-ms`` of them in each millisecond, the last one now)."""
    partition, seq, records = entry
    n = len(records)
    listener = args.source == "listener"
    if listener:
        per_ms = args.records_per_ms
        section = encode_records(
            [(k, v, now_ms - (n - 1 - j) // per_ms, ()) for j, (k, v) in enumerate(records)]
        )
    else:
        section = encode_records([(k, v, None, ()) for k, v in records])
    conn = _LISTENER_CONN if listener else _SOCKET_CONN
    topic = _TOPIC.encode()
    head = entry_head(conn, seq, n, partition, now_ms, AckLevel.KAFKA, topic, None, listener)
    return head + section


def _run_worker(args, bootstrap: str, ring_paths, fds, result_fd: int) -> None:
    """The forked worker process: run until SIGTERM, then write its counters to result_fd."""
    import uvloop

    from daemon.worker import Worker

    async def main() -> None:
        records = RingConsumer(Ring.attach(ring_paths[0]), RingWakeups.from_fds(*fds[0]))
        reports = RingProducer(Ring.attach(ring_paths[1]), RingWakeups.from_fds(*fds[1]))
        settings = producer_settings(bootstrap_servers=bootstrap, linger_ms=args.linger_ms)
        worker = Worker(settings, records, reports, journal_path(ring_paths[0]),
                        flight_journal_path(ring_paths[0]))  # fmt: skip
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)  # as daemon.process.child does
        calls: collections.Counter = collections.Counter()
        if args.calls:
            sys.setprofile(
                lambda frame, event, _: (
                    event == "call"
                    and calls.update(
                        (f"{frame.f_code.co_qualname} ({frame.f_code.co_filename.split('/')[-1]})",)
                    )
                )
            )
        await worker.run()
        sys.setprofile(None)
        counters = worker.engine.counters
        await worker.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        done = {"requests": counters.requests_sent, "batches": counters.batches_sent,
                "sleeps": usage.ru_nvcsw, "calls": calls.most_common()}  # fmt: skip
        os.write(result_fd, json.dumps(done).encode())

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


class _Ingest:
    """This process's side: writes entries, reads and releases reports, counts records."""

    def __init__(self, records: RingProducer, reports: RingConsumer) -> None:
        self.records = records
        self.reports = reports
        self.reported = 0

    def read_reports(self, timeout: float) -> None:
        if timeout > 0 and not self.reports.wait_readable_blocking(timeout):
            return
        entries = self.reports.read_entries()
        for _, entry in entries:
            self.reported += decode_report_entry(entry)[1]
        if entries:
            self.reports.release(entries[-1][0])

    def put(self, data: bytes) -> None:
        while not self.records.write(data):
            self.read_reports(0.001)
        self.records.publish()

    def wait_for(self, records: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.reported < records:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.reported} of {records} records reported")
            self.read_reports(0.05)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    entries = _entries(args)
    with tempfile.TemporaryDirectory(prefix="kpd-wcpu-") as tmp, TansuBroker(Path(tmp)) as broker:
        broker.create_topic(_TOPIC, args.partitions)
        ring_paths = (f"{tmp}/records", f"{tmp}/reports")
        rec_wakeups, rep_wakeups = RingWakeups.create(), RingWakeups.create()
        records = RingProducer(Ring.create(ring_paths[0], _RING_BYTES), rec_wakeups)
        reports = RingConsumer(Ring.create(ring_paths[1], _REPORTS_BYTES), rep_wakeups)
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _run_worker(args, broker.bootstrap, ring_paths,
                            (rec_wakeups.fds(), rep_wakeups.fds()), result_w)  # fmt: skip
            finally:
                os._exit(0)
        os.close(result_w)
        ingest = _Ingest(records, reports)
        warm = entries[: args.partitions]  # connections, producer id, metadata: off the clock
        for entry in warm:
            ingest.put(_encode(args, entry, int(time.time() * 1000)))
        ingest.wait_for(sum(len(e[2]) for e in warm), 60)
        spy = _profile(args.profile, pid, args.native) if args.profile else None
        tracer = None
        if args.strace:
            command = ["strace", "-c", "-f", "-o", str(args.strace), "-p", str(pid)]
            if args.strace.suffix == ".perf":  # perf record instead: where the CPU goes, kernel too
                command = ["perf", "record", "-g", "-o", str(args.strace), "-p", str(pid)]
            tracer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # attached
        before = cpu_seconds(pid)
        started = time.perf_counter()
        gap = 0.0 if args.rate == 0 else args.entry_records / args.rate
        for i, entry in enumerate(entries):
            due = started + i * gap
            while gap and (left := due - time.perf_counter()) > 0:
                ingest.read_reports(left)
            ingest.put(_encode(args, entry, int(time.time() * 1000)))
            if not gap:
                ingest.read_reports(0)
        ingest.wait_for(args.records + sum(len(e[2]) for e in warm), 120)
        wall = time.perf_counter() - started
        cpu = cpu_seconds(pid) - before
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
        os.kill(pid, signal.SIGTERM)
        with os.fdopen(result_r, "rb") as result:
            done = json.loads(result.read() or b"{}")
        os.waitpid(pid, 0)
        if spy is not None:
            spy.wait(timeout=60)
    n = len(entries)
    print(f"worker alone, {args.source} entries of {args.entry_records} records, rate "
          f"{args.rate or 'flat out'}: {args.records} records in {wall:.2f} s; worker CPU "
          f"{cpu:.2f} s = {cpu / n * 1e6:.1f} µs/entry, {cpu / args.records * 1e6:.2f} µs/rec; "
          f"requests {done.get('requests')} ({done.get('requests', 0) / n:.2f}/entry), "
          f"batches {done.get('batches')}, sleeps {done.get('sleeps')} "
          f"({done.get('sleeps', 0) / n:.2f}/entry)")  # fmt: skip
    if done.get("calls"):
        total = sum(n for _, n in done["calls"])
        print(f"Python calls per entry ({total / n:.0f} in all):")
        for name, count in done["calls"][:60]:
            print(f"  {count / n:7.2f}  {name}")
    if args.profile:
        print(render_top((args.profile / "worker.txt").read_text(), 30))
    return 0


def _profile(out: Path, pid: int, native: bool) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    how = ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(
        [find_py_spy(), "record", *how, "-r", "250", "-f", "raw",
         "-o", str(out / "worker.txt"), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
