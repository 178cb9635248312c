"""The ring between real processes: a producer and consumers in separate interpreters.

The children are this module run as a script (``python -m tests.integration.
test_ring_processes ROLE ...``); they get the ring's eventfds exactly as kpd's children do,
through ``Popen(pass_fds=...)`` and their numbers on the command line.

Each entry carries its sequence number and a CRC-32 of its body, so a consumer checks order,
loss and corruption itself; the parent checks the hand-over between the killed consumer and
its replacement.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import pytest

from daemon.ring import Ring, RingConsumer, RingProducer, RingWakeups

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = 1_000_000
CAPACITY = 16 * 1024  # ~400 entries: thousands of wraps, both sides sleep often
PARK_AFTER = 400_000  # the first consumer stops releasing and waits to be killed here
BATCH = 64
PATTERN = bytes(range(256)) * 2
HEAD = struct.Struct("<QI")  # sequence number, CRC-32 of the body


def make_payload(seq: int) -> bytes:
    start = seq % 251
    body = PATTERN[start : start + (seq * 7) % 41]
    return HEAD.pack(seq, zlib.crc32(body)) + body


# -- child roles ------------------------------------------------------------------------------


def run_producer(producer: RingProducer) -> dict:
    for first in range(0, ENTRIES, BATCH):
        pending = [make_payload(s) for s in range(first, min(first + BATCH, ENTRIES))]
        while pending:
            pending = pending[producer.write_many(pending) :]
            if pending:
                assert producer.wait_writable_blocking(len(pending[0]), timeout=30)
    return {
        "wakeups_sent": producer.wakeups_sent,
        "sleeps": producer.sleeps,
        "missed_wakeups": producer.missed_wakeups,
        "wraps": producer.wraps,
        "entries": producer.entries_written,
    }


def check_entry(view: memoryview, expected_seq: int) -> None:
    seq, crc = HEAD.unpack_from(view)
    if seq != expected_seq or zlib.crc32(view[HEAD.size :]) != crc:
        raise SystemExit(f"entry {seq} (expected {expected_seq}) crc {crc}: out of order or bad")


def run_consumer(consumer: RingConsumer, park_after: int | None) -> dict:
    """Read and check entries, releasing each batch one batch late (as acks would)."""
    first_seq = next_seq = None
    previous_end = None
    while next_seq != ENTRIES:
        if not consumer.wait_readable_blocking(timeout=30):
            raise SystemExit("no data for 30 s")
        batch = consumer.read_entries(max_entries=256)
        if first_seq is None:
            first_seq = next_seq = HEAD.unpack_from(batch[0][1])[0]
        for _, view in batch:
            check_entry(view, next_seq)
            next_seq += 1
        if previous_end is not None:
            consumer.release(previous_end)
        if park_after is not None and next_seq - first_seq >= park_after:
            released = next_seq - len(batch) - 1  # the last entry of the previous batch
            parked = {"released_through": released, "read_through": next_seq - 1}
            print(json.dumps({**parked, "wakeups_sent": consumer.wakeups_sent}))
            sys.stdout.flush()
            sys.stdin.read()  # hold the last batch unreleased until SIGKILL
        previous_end = batch[-1][0]
        del batch
    consumer.release(previous_end)
    return {
        "first_seq": first_seq,
        "entries": consumer.entries_read,
        "wakeups_sent": consumer.wakeups_sent,
        "sleeps": consumer.sleeps,
        "missed_wakeups": consumer.missed_wakeups,
    }


def main(argv: list[str]) -> None:
    role, name, data_fd, space_fd = argv[0], argv[1], int(argv[2]), int(argv[3])
    ring = Ring.attach(name, capacity=CAPACITY)
    wakeups = RingWakeups.from_fds(data_fd, space_fd)
    if role == "producer":
        stats = run_producer(RingProducer(ring, wakeups))
    else:
        park_after = PARK_AFTER if role == "consumer-parks" else None
        stats = run_consumer(RingConsumer(ring, wakeups), park_after)
    print(json.dumps(stats))


# -- the test ---------------------------------------------------------------------------------


def spawn(role: str, name: str, wakeups: RingWakeups) -> subprocess.Popen:
    data_fd, space_fd = wakeups.fds()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.test_ring_processes",
            role,
            name,
            str(data_fd),
            str(space_fd),
        ],
        cwd=ROOT,
        pass_fds=wakeups.fds(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no line from pid {proc.pid} within {timeout} s")
    line = proc.stdout.readline()
    assert line, f"pid {proc.pid} exited: {proc.stderr.read()}"
    return line


def finish(proc: subprocess.Popen, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"pid {proc.pid} failed ({proc.returncode}): {err}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(120)
def test_million_entries_survive_a_killed_consumer_in_order_with_few_wakeups():
    name = f"/dev/shm/kpd-test-{os.getpid()}-procs-{uuid.uuid4().hex[:8]}"
    ring = Ring.create(name, CAPACITY)
    wakeups = RingWakeups.create()
    children: list[subprocess.Popen] = []
    try:
        children.append(spawn("consumer-parks", name, wakeups))
        children.append(spawn("producer", name, wakeups))
        first, producer = children
        parked = json.loads(read_line(first, timeout=60))
        assert parked["read_through"] > parked["released_through"] >= PARK_AFTER - 512

        started = time.monotonic()
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        children.append(spawn("consumer", name, wakeups))
        replacement = finish(children[-1], timeout=90)
        produced = finish(producer, timeout=30)
        elapsed = time.monotonic() - started

        # The replacement starts right after the last release: the read-but-unreleased batch
        # of the killed consumer is replayed, nothing before it is read twice, none is lost.
        assert replacement["first_seq"] == parked["released_through"] + 1
        assert replacement["entries"] == ENTRIES - replacement["first_seq"]
        assert produced["entries"] == ENTRIES
        # Small ring: thousands of wraps, and both sides had to sleep.
        assert produced["wraps"] > 1000
        assert produced["sleeps"] > 0 and replacement["sleeps"] > 0
        # Doorbells are rung per sleep, not per entry or per batch.
        rings = sum(side["wakeups_sent"] for side in (parked, produced, replacement))
        assert rings < ENTRIES / 10, (rings, produced, replacement, elapsed)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        ring.close()
        wakeups.close()
        Ring.unlink(name)


if __name__ == "__main__":
    main(sys.argv[1:])
