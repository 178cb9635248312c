"""``worker_for``: the one ownership rule every process of kpd must agree on."""

from __future__ import annotations

import subprocess
import sys
import zlib

from daemon.ownership import worker_for


def test_worker_for_is_crc32_of_the_topic_plus_the_partition_modulo_the_workers():
    # The rule is a contract between processes and across restarts (adopted rings are
    # re-routed by it): pin it against zlib's crc32 written out here, not the code.
    start = zlib.crc32(b"orders")
    assert [worker_for("orders", p, 4) for p in range(8)] == [(start + p) % 4 for p in range(8)]


def test_a_topic_with_at_least_w_partitions_keeps_every_worker_busy():
    for topic in ("a", "orders", "logs.app-1"):
        assert {worker_for(topic, p, 5) for p in range(5)} == set(range(5))


def test_another_process_with_another_hash_seed_agrees():
    code = "from daemon.ownership import worker_for; print(worker_for('orders', 3, 7))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert int(out.stdout) == worker_for("orders", 3, 7)
