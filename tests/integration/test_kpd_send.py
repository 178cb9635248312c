"""``kpd send`` against a real daemon and tansu: every line arrives, and its memory does not
grow with the length of the input (``tail -F app.log | kpd send`` must run for days).

Lines reach ``kpd send`` through a pipe written by the test; confluent-kafka reads back what
Kafka holds. The sender's peak RSS comes from the kernel (``ru_maxrss`` of a wrapper's only
child), so no number here comes from the code under test. Memory, not speed, is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from tests.brokers import read_all, unique_topic_name
from tests.brokers.reader import partition_for_key_librdkafka
from tests.daemon_harness import REPO, KpdDaemon

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 3
DISTINCT_KEYS = 50

# Runs `kpd send` with stdin passed through; prints its exit status and peak RSS (KiB) as
# JSON on stderr's last line, and its stdout unchanged.
_WRAPPER = """
import json, resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "daemon.cli", "send", *sys.argv[1:]])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stderr.write(json.dumps({"status": done.returncode, "peak_kib": peak}) + "\\n")
"""


@pytest.fixture(scope="module")
def kpd(tansu, tmp_path_factory):
    extra = {"log": {"level": "warning"}}
    with KpdDaemon(tmp_path_factory.mktemp("kpd-send"), tansu.bootstrap, extra=extra) as daemon:
        yield daemon


def _line(i: int) -> bytes:
    # Every 10th line has no key; the others key-NN<TAB>value. Values carry the line number.
    value = b"line %09d %s" % (i, b"x" * 60)
    return value if i % 10 == 0 else b"key-%02d\t%s" % (i % DISTINCT_KEYS, value)


def _feed(pipe, count: int) -> None:
    with pipe:
        for start in range(0, count, 1000):
            pipe.write(b"".join(_line(i) + b"\n" for i in range(start, min(start + 1000, count))))


def _send(kpd: KpdDaemon, topic: str, count: int) -> tuple[str, int]:
    """Pipe ``count`` lines into ``kpd send``; its stdout and peak RSS in KiB."""
    args = ["--socket", kpd.socket_path, "--topic", topic, "--key-separator", "\t"]
    process = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, *args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    feeder = threading.Thread(target=_feed, args=(process.stdin, count), daemon=True)
    feeder.start()
    # Not communicate(): it would close stdin under the feeder. kpd send prints little, so
    # reading stdout to EOF, then stderr, cannot block on a full pipe.
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    process.wait(60)
    feeder.join(10)
    outcome = json.loads(stderr.decode().strip().splitlines()[-1])
    assert outcome["status"] == 0, stderr.decode()
    return stdout.decode(), outcome["peak_kib"]


def test_kpd_send_delivers_every_line_in_memory_that_does_not_grow_with_the_input(kpd, tansu):
    short_topic = tansu.create_topic(unique_topic_name("send-short"), PARTITIONS)
    long_topic = tansu.create_topic(unique_topic_name("send-long"), PARTITIONS)
    short, long = 50_000, 400_000
    out_short, peak_short = _send(kpd, short_topic, short)
    out_long, peak_long = _send(kpd, long_topic, long)
    assert out_short.strip() == f"sent {short} records to {short_topic}, 0 failed"
    assert out_long.strip() == f"sent {long} records to {long_topic}, 0 failed"
    # 8x the lines, (nearly) the same peak: a future kept per line (what kpd send used to do)
    # grows it by ~30 MiB over these 350,000 more lines.
    assert peak_long - peak_short < 12 * 1024, (peak_short, peak_long)

    records = read_all(tansu.bootstrap, long_topic, long, timeout_s=120)
    expected = {_line(i) for i in range(long)}
    got = {r.value if r.key is None else r.key + b"\t" + r.value for r in records}
    assert got == expected and len(records) == long
    # Keyed lines went where Java (librdkafka's murmur2_random) puts their key.
    keys = sorted({r.key for r in records if r.key is not None})
    reference = dict(zip(keys, partition_for_key_librdkafka(keys, PARTITIONS), strict=True))
    assert all(r.partition == reference[r.key] for r in records if r.key is not None)


def test_kpd_send_sends_lines_as_they_come_and_skips_and_counts_empty_ones(kpd, tansu):
    topic = tansu.create_topic(unique_topic_name("send-stream"), PARTITIONS)
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "send", "--socket", kpd.socket_path, "--topic", topic],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        process.stdin.write(b"first\n\nsecond\n\n")  # an empty line is no record
        process.stdin.flush()
        # Like `tail -F`: no EOF yet, and the lines are in Kafka anyway.
        assert sorted(r.value for r in read_all(tansu.bootstrap, topic, 2)) == [b"first", b"second"]
        process.stdin.write(b"third, without a newline at the end")
        process.stdin.close()
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    summary = process.stdout.read().decode().strip()
    assert summary == f"sent 3 records to {topic}, 0 failed, 2 empty lines skipped"
    assert len(read_all(tansu.bootstrap, topic, 3)) == 3
