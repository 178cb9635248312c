"""A worker's report entries stay small enough for any reports ring the config allows."""

from __future__ import annotations

from daemon.ring import max_payload
from daemon.worker.reports import chunks as _chunks
from kpd.protocol import ReportRun, encode_reports
from kpd.protocol.base import KpdErrorCode, Persistence, Status

SMALLEST_REPORTS_RING = 64 * 1024  # rings.reports_bytes' lower bound in the schema


def test_a_burst_of_failures_with_long_messages_is_cut_into_entries_a_small_ring_takes():
    runs = [
        ReportRun(i * 10, 10, Status.FAILED, 0, -1, -1, KpdErrorCode.KAFKA_ERROR, 10,
                  Persistence.NOT_PERSISTED, "é" * 1000)
        for i in range(500)
    ]  # fmt: skip
    chunks = list(_chunks(runs))
    assert [run for chunk in chunks for run in chunk] == runs  # all of them, in order
    limit = max_payload(SMALLEST_REPORTS_RING) - 12  # 12: connection id, record count
    assert all(len(encode_reports(chunk)) <= limit for chunk in chunks)


def test_delivered_runs_share_entries():
    runs = [ReportRun(i, 1, Status.DELIVERED, 0, i, -1) for i in range(300)]
    assert len(list(_chunks(runs))) == 1
