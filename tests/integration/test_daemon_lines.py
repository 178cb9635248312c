"""The plain-text listener (`socket.lines`) of the real daemon, read back from tansu.

Lines are written through a UNIX stream socket as a shell script's `socat`/`nc -U` would, and
every claim is checked in Kafka with confluent-kafka's consumer: every line arrives once, keyed
lines land where librdkafka's Java-compatible partitioner puts them, a too-long or binary line
is handled as documented while ingest keeps running, a full worker ring pauses the writer
without losing a line, and a SIGKILLed ingest loses none of the lines it had accepted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

from tests.brokers import read_all, unique_topic_name
from tests.brokers.ports import free_port
from tests.brokers.reader import partition_for_key_librdkafka
from tests.daemon_harness import REPO, KpdDaemon, wait_for


def _daemon(tmp_path, tansu, topic: str, lines: dict | None = None, **extra) -> KpdDaemon:
    port = free_port()
    listener = {"path": str(tmp_path / "lines.sock"), "topic": topic, **(lines or {})}
    settings = {
        "socket": {"lines": listener},
        "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"},
    }
    for section, values in extra.items():
        settings.setdefault(section, {}).update(values)
    daemon = KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=settings)
    daemon.lines_path = str(tmp_path / "lines.sock")
    daemon.metrics_port = port
    return daemon


def _write(path: str, data: bytes) -> None:
    """What `printf ... | nc -U PATH` does: write everything, then close our end."""
    # Ingest opens the lines socket just after kpd.sock, which is what KpdDaemon waits for.
    wait_for(lambda: os.path.exists(path), 30, f"the lines socket {path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        # kpd never writes to this socket: recv returns b"" once kpd closed its end, which it
        # does after the last line is in a ring (or at once if it died).
        assert sock.recv(1) == b""


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.split("{", 1)[0].split(" ", 1)[0] == name
    )


def _kpd_status(daemon: KpdDaemon) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--config", str(daemon.config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def _ingest_snapshot(port: int) -> dict:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read()
    children = json.loads(body)["children"]
    return next(c["snapshot"] for c in children if c["role"] == "ingest") or {}


def test_every_line_is_a_record_keyed_at_the_separator_like_librdkafka(tansu, tmp_path):
    topic = unique_topic_name("lines-keyed")
    tansu.create_topic(topic, 6)
    count = 20_000
    keys = [b"user-%d" % (i % 97) for i in range(count)]
    body = b"".join(b"%s\tevent %d\twith a tab in the value\n" % (keys[i], i) for i in range(count))
    # Empty lines are no records (they are counted); a line without the separator is a keyless
    # value; the last line needs no newline before the writer closes.
    extra_lines = b"\n\nno separator here\nlast line"
    with _daemon(tmp_path, tansu, topic, {"key_separator": "\t"}) as daemon:
        half = body.index(b"\n", len(body) // 2) + 1  # two writers, each of whole lines
        _write(daemon.lines_path, body[:half])
        _write(daemon.lines_path, body[half:] + extra_lines)
        records = read_all(tansu.bootstrap, topic, count + 2, timeout_s=60)
        wait_for(
            lambda: _metric(daemon.metrics_port, "kpd_ingest_records_accepted_total") == count + 2,
            20,
            "ingest's metrics to count every line",
        )
        assert _metric(daemon.metrics_port, "kpd_ingest_records_rejected_total") == 0
        wait_for(
            lambda: (
                _ingest_snapshot(daemon.metrics_port).get("lines")
                == {"connections": 0, "too_long": 0, "empty": 2}
            ),
            20,
            "/status to show the lines listener",
        )
        assert daemon.stop() == 0, daemon.log_tail()

    keyed = [r for r in records if r.key is not None]
    keyless = sorted(r.value for r in records if r.key is None)
    assert keyless == [b"last line", b"no separator here"]
    assert sorted(r.value for r in keyed) == sorted(
        b"event %d\twith a tab in the value" % i for i in range(count)
    )
    distinct = sorted(set(keys))
    expected = dict(zip(distinct, partition_for_key_librdkafka(distinct, 6), strict=True))
    wrong = [(r.key, r.partition) for r in keyed if r.partition != expected[r.key]]
    assert not wrong, f"{len(wrong)} records on another partition than librdkafka's: {wrong[:3]}"
    # One writer's lines of one key keep their order in the partition.
    last: dict[bytes, int] = {}
    for r in keyed:  # read_all sorts by (partition, offset)
        index = int(r.value.split(b" ")[1].split(b"\t")[0])
        assert last.get(r.key, -1) < index, f"key {r.key!r} out of order"
        last[r.key] = index


def test_empty_too_long_and_binary_lines_are_handled_as_documented_and_ingest_keeps_running(
    tansu, tmp_path
):
    topic = unique_topic_name("lines-garbage")
    tansu.create_topic(topic, 2)
    binary = bytes(range(256)).replace(b"\n", b"")  # NUL, invalid UTF-8, \r: bytes as they are
    data = b"".join(
        [
            b"first\n",
            b"\n\n",  # two empty lines: no records, counted
            b"x" * 5000 + b"\n",  # too long, in one write
            b"second\n",
            binary + b"\n",
            os.urandom(3 * 1024 * 1024).replace(b"\n", b"?") + b"\n",  # too long, many reads
            b"third\n",
        ]
    )
    with _daemon(tmp_path, tansu, topic, {"max_line_bytes": "1KiB"}) as daemon:
        ingest = daemon.child_pids("ingest")
        _write(daemon.lines_path, data)
        _write(daemon.lines_path, b"x" * 10_000)  # too long and never terminated: nothing
        _write(daemon.lines_path, b"after\n")
        records = read_all(tansu.bootstrap, topic, 5, timeout_s=30)
        wait_for(
            lambda: _metric(daemon.metrics_port, "kpd_ingest_lines_too_long_total") == 3,
            20,
            "the too-long lines to be counted",
        )
        wait_for(
            lambda: _metric(daemon.metrics_port, "kpd_ingest_lines_empty_total") == 2,
            20,
            "the empty lines to be counted",
        )
        assert daemon.child_pids("ingest") == ingest, "ingest was restarted: it died of input"
        wait_for(
            lambda: "0 line writers (3 lines too long)" in _kpd_status(daemon),
            20,
            "kpd status to show the skipped lines",
        )
        assert daemon.stop() == 0
    assert sorted(r.value for r in records) == sorted(
        [b"first", b"second", binary, b"third", b"after"]
    )
    assert "a line longer than 1024 bytes (socket.lines.max_line_bytes) was skipped" in (
        daemon.log_tail(100_000)
    )


def test_a_full_worker_ring_pauses_the_writer_and_loses_no_line(tansu, tmp_path):
    topic = unique_topic_name("lines-backpressure")
    tansu.create_topic(topic, 4)
    count = 40_000  # ~2.6 MB of lines against 64 KiB rings
    data = b"".join(b"line %06d of a stream that must block, not drop\n" % i for i in range(count))
    daemon = _daemon(
        tmp_path,
        tansu,
        topic,
        {"max_line_bytes": "1KiB"},
        rings={"records_bytes": "64KiB", "reports_bytes": "64KiB"},
        kafka={"max.request.size": "32KiB"},
        log={"level": "debug"},
    )
    written = [0]  # bytes the kernel took from the writer so far

    def write_in_pieces() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(daemon.lines_path)
            view = memoryview(data)
            while written[0] < len(data):
                written[0] += sock.send(view[written[0] : written[0] + 16384])
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1) == b""

    previous = [-1]

    def stalled() -> bool:
        """The writer made no progress since the previous poll (polls are 0.25 s apart)."""
        now = written[0]
        same, previous[0] = now == previous[0], now
        return same

    with daemon:
        workers = daemon.child_pids("worker")
        for pid in workers:  # the slowest worker ring: nobody drains it for a while
            os.kill(pid, signal.SIGSTOP)
        writer = threading.Thread(target=write_in_pieces)
        try:
            writer.start()
            wait_for(
                lambda: (
                    "a worker's ring is full; reading nothing more" in daemon.log_tail(1_000_000)
                ),
                30,
                "ingest to stop reading the lines socket",
            )
            wait_for(stalled, 30, "the writer to block in send()", interval_s=0.25)
            # What kpd took is bounded by its rings, one read and the socket buffer, far below
            # the stream; a kpd that kept reading into memory would have taken all of it.
            assert writer.is_alive() and written[0] < len(data) // 2, written[0]
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        writer.join(timeout=120)
        assert not writer.is_alive()
        records = read_all(tansu.bootstrap, topic, count, timeout_s=120)
        assert _metric(daemon.metrics_port, "kpd_ingest_buffer_full_total") == 0
        assert daemon.stop() == 0
    assert sorted(r.value for r in records) == data.splitlines()


def test_lines_accepted_before_ingest_is_sigkilled_reach_kafka(tansu, tmp_path):
    topic = unique_topic_name("lines-sigkill")
    tansu.create_topic(topic, 4)
    cut = threading.Event()  # the writer's connection broke: ingest died under it
    stop = threading.Event()

    def write_until_cut(path: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            index = 0
            while not stop.is_set():
                chunk = b"".join(b"n %d\n" % i for i in range(index, index + 1000))
                try:
                    sock.sendall(chunk)
                except OSError:
                    cut.set()
                    return
                index += 1000
                stop.wait(0.02)  # a steady stream, not a flood the brokers need minutes for

    with _daemon(tmp_path, tansu, topic) as daemon:
        ingest = daemon.child_pids("ingest")
        writer = threading.Thread(target=write_until_cut, args=(daemon.lines_path,))
        writer.start()
        try:
            # What ingest's last report counts was in the rings then (its loop publishes
            # before it reports): a lower bound of what the kill must not lose.
            accepted = int(
                wait_for(
                    lambda: (
                        n
                        if (n := _metric(daemon.metrics_port, "kpd_ingest_records_accepted_total"))
                        >= 5_000
                        else 0
                    ),
                    60,
                    "lines flowing",
                )
            )
            os.kill(ingest[0], signal.SIGKILL)
            assert cut.wait(30), "the writer's connection outlived ingest"
        finally:
            stop.set()
            writer.join(timeout=30)
        wait_for(
            lambda: (
                daemon.child_pids("ingest") not in ([], ingest)
                and os.path.exists(daemon.lines_path)
            ),
            30,
            "a new ingest serving the lines socket",
        )
        wait_for(lambda: _try_write(daemon.lines_path, b"after the restart\n"), 30, "a write")
        records = read_all(tansu.bootstrap, topic, accepted + 1, timeout_s=60, exact=False)
        assert daemon.stop() == 0
    values = [r.value for r in records]
    assert len(values) == len(set(values)), "a line arrived twice"
    in_kafka = {int(v.split(b" ")[1]) for v in values if v.startswith(b"n ")}
    lost = set(range(accepted)) - in_kafka
    assert not lost, f"{len(lost)} accepted lines are not in Kafka, e.g. {sorted(lost)[:5]}"
    assert b"after the restart" in values


def _try_write(path: str, data: bytes) -> bool:
    try:
        _write(path, data)
    except OSError:
        return False  # the new ingest is not listening yet
    return True
