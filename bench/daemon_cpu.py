"""``python -m bench.daemon_cpu``: kpd's own CPU per record, per process, with a minimal app.

The app here is not a kpd client but a raw socket writer: it encodes every PRODUCE frame
before the clock, writes them as fast as the daemon reads, and counts the records in the
REPORT runs it gets back (or, with ``--ack none``, waits for GOODBYE after the last frame). So
what is measured is the daemon alone: CPU seconds of ingest and of each worker (from
/proc/PID/stat, before and after), divided by the records sent. One fresh tansu and one
fresh daemon (2 workers, as ``make bench``) per invocation.

    python -m bench.daemon_cpu --records 300000 --value-bytes 100           # normal path
    python -m bench.daemon_cpu --ingest-partitions --keys unique            # ingest hashes
    python -m bench.daemon_cpu --ack accepted --value-bytes 1024 --set kafka.batch.size=262144
    KPD_PURE_PYTHON=1 python -m bench.daemon_cpu                           # pure path

``--profile DIR`` attaches py-spy to ingest and to worker 0 for the run, keeps the collapsed
stacks in DIR and prints each one's top functions by own time (C code shows as the Python
function that called it; ``py-spy record --native`` splits out syscalls and C).
For figures, not tests: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.procstat import cpu_seconds
from bench.profile import find_py_spy, render_top
from kpd import protocol as wire
from kpd.murmur2 import partition_for_key
from kpd.protocol.base import AckLevel, FrameType, encode_string
from tests.brokers.tansu import TansuBroker
from tests.daemon_harness import KpdDaemon

_TOPIC = "cpu"
_PARTITIONS = 12
_ACKS = {"none": AckLevel.NONE, "accepted": AckLevel.ACCEPTED, "kafka": AckLevel.KAFKA}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.daemon_cpu", description=__doc__)
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--keys", choices=("cycling", "unique", "none"), default="cycling",
                   help="16 B keys over 10,000 (as bench workload a), a 36 B key per record, "
                        "or keyless")  # fmt: skip
    p.add_argument("--frame-records", type=int, default=512, help="records per PRODUCE frame")
    p.add_argument("--ack", choices=sorted(_ACKS), default="kafka")
    p.add_argument(
        "--ingest-partitions",
        action="store_true",
        help="send partition -1 so ingest partitions (keyed: murmur2 per record)",
    )
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a daemon config value, e.g. kafka.batch.size=262144")  # fmt: skip
    p.add_argument("--profile", type=Path, default=None, help="py-spy flame graphs here")
    return p


def _keys(kind: str, count: int) -> list:
    if kind == "none":
        return [None] * count
    if kind == "unique":
        return [str(uuid.UUID(int=i)).encode() for i in range(count)]
    return [b"key-%012d" % (i % 10_000) for i in range(count)]


def _frames(args) -> list[bytes]:
    keys = _keys(args.keys, args.records)
    value = b"v" * args.value_bytes
    topic = encode_string(_TOPIC)
    frames, seq, n = [], 0, args.frame_records
    ack = _ACKS[args.ack]
    if args.ingest_partitions or args.keys == "none":
        for start in range(0, args.records, n):
            chunk = keys[start : start + n]
            frames.append(wire.encode_produce_frame(topic, -1, seq, chunk, [value] * len(chunk),
                                                    ack=ack))  # fmt: skip
            seq += len(chunk)
        return frames
    # The normal path: the client partitions (as kpd does once it knows the count),
    # one frame per partition as its accumulator would cut them.
    by_partition: dict[int, list] = {}
    for key in keys:
        by_partition.setdefault(partition_for_key(key, _PARTITIONS), []).append(key)
    pending = {p: 0 for p in by_partition}
    while pending:
        for p in list(pending):
            start = pending[p]
            chunk = by_partition[p][start : start + n]
            frames.append(wire.encode_produce_frame(topic, p, seq, chunk, [value] * len(chunk),
                                                    ack=ack))  # fmt: skip
            seq += len(chunk)
            if start + n >= len(by_partition[p]):
                del pending[p]
            else:
                pending[p] = start + n
    return frames


def _config(args) -> dict:
    extra: dict = {"log": {"level": "info"},  # start-up lines only; nothing per record
                   "rings": {"records_bytes": "16MiB", "reports_bytes": "4MiB"}}  # fmt: skip
    for item in args.set:
        path, _, raw = item.partition("=")
        section, _, key = path.partition(".")
        value: object = int(raw) if raw.lstrip("-").isdigit() else raw
        extra.setdefault(section, {})[key] = value
    return extra


class _App:
    """The raw-socket app: HELLO, the frames, then GOODBYE; counts reported records."""

    def __init__(self, path: str, ack: AckLevel) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.sendall(wire.encode_hello(1, 1, ack, "daemon_cpu"))
        self.decoder = wire.FrameDecoder(wire.Role.CLIENT)
        self.reported = self.failed = 0
        self.goodbye = False
        while not self._read_some(wait=True):
            pass

    def _read_some(self, wait: bool) -> bool:
        try:
            data = self.sock.recv(1 << 20, 0 if wait else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        if not data:
            raise RuntimeError("kpd closed the connection")
        for frame in self.decoder.feed(data):
            if frame.type == FrameType.REPORT:
                for run in wire.decode_reports(frame.payload):
                    self.reported += run.count
                    if run.status == wire.Status.FAILED:
                        self.failed += run.count
            elif frame.type == FrameType.GOODBYE:
                self.goodbye = True
            elif frame.type == FrameType.ERROR:
                raise RuntimeError(f"kpd: {wire.decode_error(frame.payload)}")
        return True

    def run(self, frames: list[bytes], expected: int, next_seq: int) -> None:
        for frame in frames:
            self.sock.sendall(frame)
            self._read_some(wait=False)
        self.sock.sendall(wire.encode_goodbye(next_seq))
        while not self.goodbye:
            self._read_some(wait=True)
        if expected and self.reported < expected:
            raise RuntimeError(f"only {self.reported} of {expected} records reported")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    frames = _frames(args)
    with tempfile.TemporaryDirectory(prefix="kpd-cpu-") as tmp, TansuBroker(Path(tmp)) as broker:
        broker.create_topic(_TOPIC, _PARTITIONS)
        daemon = KpdDaemon(Path(tmp), broker.bootstrap, workers=2, extra=_config(args))
        with daemon:
            roles = {"ingest": daemon.child_pids("ingest"), "worker": daemon.child_pids("worker")}
            while len(roles["worker"]) < 2 or not roles["ingest"]:
                time.sleep(0.05)
                roles = {r: daemon.child_pids(r) for r in roles}
            pids = {"ingest": roles["ingest"][0]}
            pids.update({f"worker{i}": pid for i, pid in enumerate(roles["worker"])})
            pids["tansu"] = broker.pid
            # Warm-up: the workers' broker connections and producer ids, outside the clock.
            warm = _App(daemon.socket_path, AckLevel.KAFKA)
            warm_frames = [
                wire.encode_produce_frame(encode_string(_TOPIC), p, p, [b"k"], [b"v"])
                for p in range(_PARTITIONS)
            ]
            warm.run(warm_frames, _PARTITIONS, _PARTITIONS)
            app = _App(daemon.socket_path, _ACKS[args.ack])
            spies = _profile(args.profile, pids) if args.profile else []
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            expected = args.records if args.ack != "none" else 0
            app.run(frames, expected, args.records)
            wall = time.perf_counter() - started
            _settle(pids)  # ack none/accepted: GOODBYE comes before the workers are done
            after = {name: cpu_seconds(pid) for name, pid in pids.items()}
            accel = _accelerator_line(daemon.log_path)
        for spy in spies:
            spy.wait(timeout=60)
    _print(args, wall, before, after, app.failed, accel)
    if args.profile:
        for name in ("ingest", "worker0"):
            top = render_top((args.profile / f"{name}.txt").read_text(), 25)
            print(f"\n{name} (py-spy, {args.profile / name}.txt):\n{top.split('by total')[0]}")
    return 0


def _settle(pids: dict[str, int]) -> None:
    """Wait until the workers' CPU time stops moving (0.3 s without a tick)."""
    workers = [pid for name, pid in pids.items() if name.startswith("worker")]
    last = None
    while (now := sum(cpu_seconds(pid) for pid in workers)) != last:
        last = now
        time.sleep(0.3)


def _profile(directory: Path, pids: dict[str, int]) -> list[subprocess.Popen]:
    directory.mkdir(parents=True, exist_ok=True)
    spies = []
    for name in ("ingest", "worker0"):
        command = [find_py_spy(), "record", "--pid", str(pids[name]), "--rate", "250",
                   "--format", "raw", "--output", str(directory / f"{name}.txt")]  # fmt: skip
        spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
    return spies


def _accelerator_line(log_path: Path) -> str:
    for line in log_path.read_text(errors="replace").splitlines():
        if "accelerator:" in line:
            return line.split("accelerator:", 1)[1].strip()
    return "?"


def _print(args, wall: float, before: dict, after: dict, failed: int, accel: str) -> None:
    n = args.records
    print(f"records {n:,}  value {args.value_bytes} B  keys {args.keys}  ack {args.ack}  "
          f"ingest-partitions {args.ingest_partitions}  set {args.set or '-'}  "
          f"accelerator {accel}  env pure={os.environ.get('KPD_PURE_PYTHON', '')}")  # fmt: skip
    print(f"wall {wall:.2f} s, {n / wall:,.0f} records/s, failed {failed}")
    kpd = 0.0
    for name in before:
        us = (after[name] - before[name]) / n * 1e6
        if name != "tansu":
            kpd += us
        print(f"  {name:8s} {us:6.2f} µs CPU/record")
    print(f"  kpd      {kpd:6.2f} µs CPU/record (ingest + workers)")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
