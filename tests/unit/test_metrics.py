"""Tests of kpd's metrics (daemon.metrics), status snapshots and the supervisor's endpoint.

prometheus_client picks multiprocess mode when it is first imported, so every flush runs in a
subprocess started with PROMETHEUS_MULTIPROC_DIR set, as a kpd child does; this process only
reads the files back through the same aggregation the supervisor serves, and parses the
exposition with prometheus_client's own parser. Expected values are worked out by hand here.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.metrics import (
    CATALOGUE,
    DELIVERY_BOUNDS,
    BuildInfo,
    DeliveryTally,
    SupervisorCollector,
    mark_dead,
    prepare_multiprocess_dir,
    render_metrics,
)
from daemon.process.http import MetricsServer
from daemon.process.status.document import ChildState, build_status, read_snapshots
from daemon.process.status.reporters import RateMeter, StatusWriter
from daemon.process.status.text import fetch_status, format_status
from daemon.process.usage import ProcessUsage
from daemon.producer.counters import ProducerCounters
from daemon.producer.outcomes import DeliveryFailure, Persistence

ROOT = Path(__file__).resolve().parents[2]
# LATENCY_BOUNDS of the engine, restated: the "le" labels a scrape must show.
LATENCY_LE = (
    "0.001",
    "0.0025",
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.1",
    "0.25",
    "0.5",
    "1.0",
    "2.5",
    "5.0",
    "10.0",
    "+Inf",
)


def run_child(script: str, metrics_dir: Path | None, status_dir: Path | None = None) -> dict:
    """Run ``script`` in a fresh interpreter as a kpd child would be; returns its JSON output."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    env["STATUS_DIR"] = str(status_dir or "")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def scrape(metrics_dir: Path, extra=()) -> dict[tuple[str, tuple], float]:
    """Sample name and sorted labels -> value, as the supervisor would serve them."""
    body, content_type = render_metrics(metrics_dir, extra)
    assert content_type.startswith("text/plain; version=")  # the Prometheus text format
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


# ---- a worker's flushes ------------------------------------------------------------------

WORKER_SCRIPT = """
    import json
    from daemon.metrics import DeliveryTally, WorkerMetrics
    from daemon.producer.counters import ProducerCounters
    from daemon.producer.engine import EngineStats
    from daemon.producer.outcomes import DeliveryFailure, Persistence

    counters = ProducerCounters()
    tally = DeliveryTally(clock=lambda: 1000.0)
    metrics = WorkerMetrics(3)
    state = EngineStats(buffer_used=100, buffer_total=1000, in_flight=2, pending=7,
                       brokers={-1: True, 1: True, 2: False, 3: False}, brokers_failing={2},
                       connects=3, metadata_refreshes=1)

    # first interval
    tally.count_received("orders", 0, 10)
    tally.count_received("orders", 1, 5)
    tally.count_done("orders", 8, received_ms=999_990)  # 0.01 s end to end
    counters.bytes_sent, counters.batches_sent, counters.requests_sent = 1000, 2, 1
    counters.retries = 1
    counters.errors_by_code["NOT_LEADER_OR_FOLLOWER"] = 2
    for value in (0.0005, 0.003, 0.003, 0.2, 20.0):
        counters.queue_time.observe(value)
    counters.request_latency[1] = counters.queue_time.__class__()
    counters.request_latency[1].observe(0.004, 2)
    metrics.flush(counters, tally, state)

    # second interval: counters grow, gauges change
    error = DeliveryFailure(7, "REQUEST_TIMED_OUT", "no answer", Persistence.POSSIBLY_PERSISTED)
    tally.count_done("orders", 2, received_ms=999_000, error=error)
    tally.count_received("payments", 2, 4)
    counters.bytes_sent, counters.retries = 1500, 3
    counters.queue_time.observe(0.04, 3)
    state.in_flight, state.pending = 0, 1
    metrics.flush(counters, tally, state)

    # exactly-once mode: a worker with a transactional id, then fenced
    from daemon.producer.completion import TransactionStats
    counters.transactions_committed, counters.transactions_aborted = 4, 1
    counters.transaction_recoveries["INVALID_PRODUCER_EPOCH"] = 1
    counters.commit_window_records["committed"] = 40
    counters.transaction_commit_time.observe(0.003, 4)
    counters.transaction_records.observe(500, 4)
    state.transaction = TransactionStats("t-2-0", "in_transaction", 5, 1, None)
    metrics.flush(counters, tally, state)
    state.transaction = TransactionStats("t-2-0", "fatal", 5, 1, "t-2-0: PRODUCER_FENCED")
    metrics.flush(counters, tally, state)
    print(json.dumps({"pid": __import__("os").getpid()}))
"""


@pytest.fixture(scope="module")
def worker_scrape(tmp_path_factory: pytest.TempPathFactory) -> dict:
    metrics_dir = tmp_path_factory.mktemp("worker-metrics")
    run_child(WORKER_SCRIPT, metrics_dir)
    return scrape(metrics_dir)


def test_counters_show_the_latest_totals_after_two_flushes_not_their_sum(worker_scrape):
    w = ("worker", "3")
    assert worker_scrape[("kpd_sent_bytes_total", (w,))] == 1500
    assert worker_scrape[("kpd_batch_retries_total", (w,))] == 3
    assert worker_scrape[("kpd_batches_sent_total", (w,))] == 2
    assert worker_scrape[("kpd_broker_connects_total", (w,))] == 3
    errors = ("kpd_broker_errors_total", (("error", "NOT_LEADER_OR_FOLLOWER"), w))
    assert worker_scrape[errors] == 2


def test_records_are_counted_by_topic_and_failures_by_reason(worker_scrape):
    w = ("worker", "3")
    assert worker_scrape[("kpd_records_received_total", (("topic", "orders"), w))] == 15
    assert worker_scrape[("kpd_records_received_total", (("topic", "payments"), w))] == 4
    assert worker_scrape[("kpd_records_sent_total", (("topic", "orders"), w))] == 8
    failed = ("kpd_records_failed_total", (("reason", "REQUEST_TIMED_OUT"), ("topic", "orders"), w))
    assert worker_scrape[failed] == 2


def test_transaction_metrics_count_commits_aborts_and_say_fenced(worker_scrape):
    w = ("worker", "3")
    assert worker_scrape[("kpd_transactions_committed_total", (w,))] == 4
    assert worker_scrape[("kpd_transactions_aborted_total", (w,))] == 1
    recovered = ("kpd_transaction_recoveries_total", (("reason", "INVALID_PRODUCER_EPOCH"), w))
    assert worker_scrape[recovered] == 1
    window = ("kpd_commit_window_records_total", (("outcome", "committed"), w))
    assert worker_scrape[window] == 40
    assert worker_scrape[("kpd_transaction_commit_seconds_count", ())] == 4
    assert worker_scrape[("kpd_transaction_commit_seconds_bucket", (("le", "0.005"),))] == 4
    assert worker_scrape[("kpd_transaction_records_bucket", (("le", "100.0"),))] == 0
    assert worker_scrape[("kpd_transaction_records_bucket", (("le", "1000.0"),))] == 4
    assert worker_scrape[("kpd_transactions_fenced", (w,))] == 1


def test_status_text_shows_each_workers_transactional_id_and_a_fenced_one_loudly():
    def worker(index: int, state: str, error: str | None) -> dict:
        snapshot = {
            "role": "worker", "time": 100.0, "partitions": {"t": [index]},
            "rings": {"records": {"used": 0, "capacity": 64}},
            "rates": {"in": 0.0, "sent": 0.0, "failed": 0.0}, "records": {"pending": 0},
            "brokers": {}, "last_error": None,
            "transaction": {"id": f"orders-2-{index}", "state": state, "producer_id": 7 + index,
                            "epoch": 3, "error": error},
        }  # fmt: skip
        return {"name": f"worker-{index}", "pid": 10 + index, "up": True, "restarts": 0,
                "snapshot": snapshot, "age_s": 0.5}  # fmt: skip

    status = {"time": 100.0, "pid": 1, "children": [
        worker(0, "in_transaction", None),
        worker(1, "fatal", "orders-2-1: Produce: PRODUCER_FENCED"),
    ]}  # fmt: skip
    lines = format_status(status).splitlines()
    assert "worker-0 transactional id orders-2-0: in_transaction (producer id 7, epoch 3)" in lines
    assert "worker-1 transactional id orders-2-1: fatal (producer id 8, epoch 3)" in lines
    assert "worker-1 WRITES STOPPED: orders-2-1: Produce: PRODUCER_FENCED" in lines
    assert not any("worker-0 WRITES STOPPED" in line for line in lines)


def test_gauges_hold_the_last_flushed_value(worker_scrape):
    w = ("worker", "3")
    assert worker_scrape[("kpd_requests_in_flight", (w,))] == 0
    assert worker_scrape[("kpd_records_pending", (w,))] == 1
    assert worker_scrape[("kpd_buffer_available_bytes", (w,))] == 900
    assert worker_scrape[("kpd_broker_connected", (("broker", "1"), w))] == 1
    assert worker_scrape[("kpd_broker_connected", (("broker", "2"), w))] == 0  # failing
    # Not connected but not failing either (not needed yet, or closed idle): not down.
    assert worker_scrape[("kpd_broker_connected", (("broker", "3"), w))] == 1
    # Bootstrap pseudo-brokers (negative ids) are not brokers.
    assert ("kpd_broker_connected", (("broker", "-1"), w)) not in worker_scrape


def test_histogram_buckets_match_the_engine_histogram_after_two_flushes(worker_scrape):
    # Observed: 0.0005, 0.003, 0.003, 0.2, 20.0, then 0.04 three times.
    # Cumulative counts per bound, by hand:
    expected = (1, 1, 3, 3, 3, 6, 6, 7, 7, 7, 7, 7, 7, 8)
    for le, count in zip(LATENCY_LE, expected, strict=True):
        assert worker_scrape[("kpd_record_queue_seconds_bucket", (("le", le),))] == count, le
    assert worker_scrape[("kpd_record_queue_seconds_count", ())] == 8
    total = 0.0005 + 0.003 + 0.003 + 0.2 + 20.0 + 3 * 0.04
    assert math.isclose(worker_scrape[("kpd_record_queue_seconds_sum", ())], total)


def test_request_latency_is_labelled_by_broker(worker_scrape):
    bucket = "kpd_request_latency_seconds_bucket"
    assert worker_scrape[(bucket, (("broker", "1"), ("le", "0.0025")))] == 0
    assert worker_scrape[(bucket, (("broker", "1"), ("le", "0.005")))] == 2
    assert worker_scrape[("kpd_request_latency_seconds_count", (("broker", "1"),))] == 2


def test_delivery_latency_counts_only_acked_records(worker_scrape):
    # 8 records acked 0.01 s after ingest took them; the 2 failed ones are not observed.
    assert worker_scrape[("kpd_record_delivery_seconds_bucket", (("le", "0.005"),))] == 0
    assert worker_scrape[("kpd_record_delivery_seconds_bucket", (("le", "0.01"),))] == 8
    assert worker_scrape[("kpd_record_delivery_seconds_count", ())] == 8


def test_every_child_reports_a_flush_timestamp(worker_scrape):
    stamp = worker_scrape[("kpd_report_timestamp_seconds", (("child", "worker-3"),))]
    assert abs(stamp - time.time()) < 300


# ---- ingest, ring fill, dead processes ---------------------------------------------------

INGEST_SCRIPT = """
    import dataclasses, json, os, uuid
    from daemon.ingest.kafka.listener import KafkaStats
    from daemon.ingest.server import IngestStats
    from daemon.metrics import IngestMetrics
    from daemon.producer.counters import STAGE_BOUNDS, LatencyHistogram
    from daemon.ring import Ring, RingConsumer, RingProducer, RingWakeups

    name = f"/dev/shm/kpd-test-metrics-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        records = RingProducer(Ring.create(name + "-rec", 65536), RingWakeups.create())
        reports = RingConsumer(Ring.create(name + "-rep", 65536), RingWakeups.create())
        records.write(b"x" * 96)
        records.publish()
        stats = IngestStats(records_accepted=12, records_rejected=1, buffer_full_events=0,
                            connections=2, ring_syncs=0,
                            rejected_by_reason={"TOPIC_NOT_ALLOWED": 1})
        metrics = IngestMetrics()
        metrics.flush(stats, [records], [reports])
        metrics.count_accepted(15)  # at publishes between flushes: the hot path's export
        metrics.count_accepted(20)
        produce_time = LatencyHistogram(STAGE_BOUNDS)
        produce_time.observe(0.0015)
        kafka = KafkaStats(connections=1, requests=3, records=7, errors={}, producers=1,
                           produce_time=produce_time)
        metrics.flush(dataclasses.replace(stats, records_accepted=25), [records], [reports],
                      kafka=kafka)
    finally:
        Ring.unlink(name + "-rec")
        Ring.unlink(name + "-rep")
    print(json.dumps({"pid": os.getpid()}))
"""


def test_ingest_exports_ring_fill_and_a_dead_process_loses_only_its_gauges(tmp_path):
    out = run_child(INGEST_SCRIPT, tmp_path)
    before = scrape(tmp_path)
    ring = (("ring", "records"), ("worker", "0"))
    assert before[("kpd_ring_used_bytes", ring)] == 104  # u32 length, u32 seal + 96 bytes
    assert before[("kpd_ring_capacity_bytes", ring)] == 65536
    assert before[("kpd_ring_bytes_total", ring)] == 96
    assert before[("kpd_ring_used_bytes", (("ring", "reports"), ("worker", "0")))] == 0
    assert before[("kpd_ingest_connections", ())] == 2
    assert before[("kpd_ingest_records_accepted_total", ())] == 25
    assert before[("kpd_ingest_records_rejected_total", (("reason", "TOPIC_NOT_ALLOWED"),))] == 1
    # Every other reason is there from the first flush, at 0: rate() sees its first increase.
    assert before[("kpd_ingest_records_rejected_total", (("reason", "BUFFER_FULL"),))] == 0
    assert before[("kpd_ingest_buffer_full_total", ())] == 0
    assert before[("kpd_kafka_produce_seconds_count", ())] == 1
    assert before[("kpd_kafka_produce_seconds_bucket", (("le", "0.0025"),))] == 1
    assert before[("kpd_kafka_produce_seconds_bucket", (("le", "0.001"),))] == 0

    mark_dead(out["pid"], tmp_path)

    after = scrape(tmp_path)
    assert "kpd_ring_used_bytes" not in names(after)
    assert "kpd_ingest_connections" not in names(after)
    assert "kpd_report_timestamp_seconds" not in names(after)
    # Counters of the dead process stay, so totals never go backwards across restarts.
    assert after[("kpd_ingest_records_accepted_total", ())] == 25


def test_flushing_refuses_to_run_without_multiprocess_mode():
    script = """
        import json, os
        from daemon.metrics import WorkerMetrics
        results = []
        try:
            WorkerMetrics(0)
        except RuntimeError as exc:
            results.append(str(exc))
        import prometheus_client  # imported too early: its values stay in memory
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.getcwd()
        try:
            WorkerMetrics(0)
        except RuntimeError as exc:
            results.append(str(exc))
        print(json.dumps(results))
    """
    errors = run_child(script, None)
    assert len(errors) == 2
    assert "is not set" in errors[0]
    assert "imported before" in errors[1]


def test_prepare_multiprocess_dir_removes_a_previous_runs_files(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_12345.db").write_bytes(b"old")
    assert prepare_multiprocess_dir(directory) == directory
    assert list(directory.iterdir()) == []
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)


# ---- plain counters and the engine -------------------------------------------------------


def test_delivery_tally_observes_end_to_end_latency_per_record():
    tally = DeliveryTally(clock=lambda: 100.0)
    tally.count_done("a", 3, received_ms=99_950)  # 50 ms
    assert tally.sent["a"] == 3
    assert tally.delivery.count == 3
    assert tally.delivery.buckets[DELIVERY_BOUNDS.index(0.05)] == 3
    error = DeliveryFailure(-1, "DELIVERY_TIMEOUT", "expired", Persistence.NOT_PERSISTED)
    tally.count_done("a", 2, received_ms=0, error=error)
    assert tally.failed[("a", "DELIVERY_TIMEOUT")] == 2
    assert tally.delivery.count == 3
    assert tally.last_error == (100.0, "DELIVERY_TIMEOUT: expired (NOT_PERSISTED)")


def test_engine_stats_snapshot_of_a_real_engine():
    from daemon.config import producer_settings
    from daemon.producer.engine import ProducerEngine

    settings = producer_settings(bootstrap_servers="127.0.0.1:9", buffer_memory=4096)
    state = ProducerEngine(settings, lambda outcome: None).stats()
    assert state.buffer_total == 4096
    assert (state.buffer_used, state.in_flight, state.pending) == (0, 0, 0)
    assert state.brokers == {-1: False}  # only the bootstrap address, not connected yet


def test_catalogue_follows_prometheus_naming():
    seen = set()
    for spec in CATALOGUE:
        assert spec.name not in seen, spec.name
        seen.add(spec.name)
        assert re.fullmatch(r"kpd_[a-z_]+", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        if spec.kind == "gauge" and spec.source != "supervisor":
            assert spec.mode in ("livesum", "livemax"), spec.name  # vanish at mark_dead


def test_catalogue_buckets_are_the_engine_histograms_bounds():
    counters = ProducerCounters()
    buckets = {s.name: tuple(s.buckets) for s in CATALOGUE if s.kind == "histogram"}
    assert buckets["kpd_record_queue_seconds"] == counters.queue_time.bounds
    assert buckets["kpd_batch_size_bytes"] == counters.batch_bytes.bounds
    assert buckets["kpd_request_records"] == counters.records_per_request.bounds
    assert buckets["kpd_record_delivery_seconds"] == DeliveryTally().delivery.bounds


def test_operations_doc_and_dashboard_use_only_catalogued_metrics():
    doc = (ROOT / "docs" / "operations.md").read_text()
    catalogued = {spec.name for spec in CATALOGUE}
    for name in catalogued:
        assert f"`{name}`" in doc, name
    dashboard = json.loads((ROOT / "docs" / "grafana" / "kpd.json").read_text())
    used = set(re.findall(r"kpd_[a-z_]+", json.dumps(dashboard)))
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert base in catalogued or name in catalogued, name


# ---- status ------------------------------------------------------------------------------


def test_rate_meter_divides_count_deltas_by_elapsed_time():
    now = [10.0]
    meter = RateMeter(clock=lambda: now[0])
    assert meter.rates({"sent": 0}) == {"sent": 0.0}
    now[0] = 12.0
    assert meter.rates({"sent": 50}) == {"sent": 25.0}


def test_status_writer_replaces_the_snapshot_whole(tmp_path):
    writer = StatusWriter(tmp_path, "worker-0")
    writer.write({"pid": 1, "n": 1})
    writer.write({"pid": 1, "n": 2})
    assert read_snapshots(tmp_path) == {"worker-0": {"pid": 1, "n": 2}}
    assert [p.name for p in tmp_path.iterdir()] == ["worker-0.json"]


REPORTERS_SCRIPT = """
    import json, os, uuid
    from types import SimpleNamespace
    from daemon.config import producer_settings
    from daemon.ingest.server import IngestStats
    from daemon.metrics import DeliveryTally
    from daemon.process.status.reporters import IngestReporter, WorkerReporter
    from daemon.producer.engine import ProducerEngine
    from daemon.producer.outcomes import DeliveryFailure, Persistence
    from daemon.ring import Ring, RingConsumer, RingProducer, RingWakeups

    status_dir = os.environ["STATUS_DIR"]
    name = f"/dev/shm/kpd-test-status-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    rec_ring, rep_ring = Ring.create(name + "-rec", 65536), Ring.create(name + "-rep", 65536)
    try:
        rec_w, rep_w = RingWakeups.create(), RingWakeups.create()
        ingest_end = RingProducer(rec_ring, rec_w)
        ingest_end.write(b"y" * 16376)  # 16384 with length and seal: a quarter of the ring
        ingest_end.publish()
        worker_end = RingConsumer(Ring.attach(name + "-rec"), rec_w)
        engine = ProducerEngine(producer_settings(bootstrap_servers="127.0.0.1:9"),
                                lambda outcome: None)
        tally = DeliveryTally()
        for partition in (0, 1, 2, 5):
            tally.count_received("orders", partition, 10)
        error = DeliveryFailure(10, "MESSAGE_TOO_LARGE", "big", Persistence.NOT_PERSISTED)
        tally.count_done("orders", 1, 0, error)
        WorkerReporter(0, engine, tally, worker_end, RingProducer(rep_ring, rep_w),
                       status_dir).report()
        stats = IngestStats(records_accepted=40, records_rejected=0, buffer_full_events=0,
                            connections=1, ring_syncs=3, rejected_by_reason={})
        admission = SimpleNamespace(records_accepted=40, on_published=None)
        server = SimpleNamespace(stats=lambda: stats, admission=admission)
        IngestReporter(server, [ingest_end], [RingConsumer(rep_ring, rep_w)], status_dir).report()
    finally:
        Ring.unlink(name + "-rec")
        Ring.unlink(name + "-rep")
    print(json.dumps({"pid": os.getpid()}))
"""


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Real reporters over a real (unstarted) engine and real rings, in a child process."""
    metrics_dir = tmp_path_factory.mktemp("rep-metrics")
    status_dir = tmp_path_factory.mktemp("rep-status")
    out = run_child(REPORTERS_SCRIPT, metrics_dir, status_dir)
    pid = out["pid"]
    children = [
        ChildState("worker-0", "worker", 0, pid, 2, True),
        ChildState("worker-1", "worker", 1, None, 0, False),
        ChildState("ingest", "ingest", 0, pid, 0, True),
    ]
    return SimpleNamespace(
        pid=pid, metrics_dir=metrics_dir, status_dir=status_dir, children=children
    )


def test_worker_snapshot_says_partitions_ring_fill_and_last_error(reported):
    snap = read_snapshots(reported.status_dir)["worker-0"]
    assert snap["pid"] == reported.pid
    assert snap["partitions"] == {"orders": [0, 1, 2, 5]}
    assert snap["rings"]["records"] == {"used": 16384, "capacity": 65536}
    assert snap["records"] == {"in": 40, "sent": 0, "failed": 1, "pending": 0}
    assert snap["brokers"] == {"-1": False}
    assert snap["last_error"]["error"] == "MESSAGE_TOO_LARGE: big (NOT_PERSISTED)"


def test_build_status_keeps_only_snapshots_of_the_running_process(reported):
    status = build_status(reported.children, reported.status_dir)
    by_name = {row["name"]: row for row in status["children"]}
    assert by_name["worker-0"]["snapshot"]["role"] == "worker"
    assert by_name["worker-0"]["restarts"] == 2
    assert by_name["worker-1"]["snapshot"] is None
    assert by_name["ingest"]["snapshot"]["connections"] == 1


def test_format_status_prints_a_row_per_child_with_ring_fill(reported):
    text = format_status(build_status(reported.children, reported.status_dir))
    lines = text.splitlines()
    assert lines[2].split() == [
        "CHILD",
        "PID",
        "UP",
        "RESTARTS",
        "RING",
        "FILL",
        "IN/s",
        "SENT/s",
        "FAILED/s",
        "PENDING",
        "BROKERS",
        "MEMORY",
        "(RSS/PSS)",
    ]
    worker = next(line for line in lines if line.startswith("worker-0 "))
    assert worker.split()[:6] == ["worker-0", str(reported.pid), "yes", "2", "25.0%", "of"]
    assert not worker.endswith("connected")  # only the bootstrap connection: no node yet
    assert next(line for line in lines if line.startswith("worker-1 ")).split()[2] == "NO"
    assert "worker-0 partitions: orders[0-2,5]" in lines
    assert "worker-1: no current snapshot" in lines
    assert any("last error" in line and "MESSAGE_TOO_LARGE" in line for line in lines)


def test_format_status_says_brokers_and_pending_config_in_words(reported):
    status = build_status(reported.children, reported.status_dir)
    worker = next(row for row in status["children"] if row["name"] == "worker-0")
    worker["snapshot"]["brokers"] = {"-1": False, "1": True, "2": False, "3": False}
    worker["snapshot"]["brokers_failing"] = [2]
    status["config"] = {
        "source": "/etc/kpd/kpd.yaml",
        "restart_needed": ["kafka.acks"],
        "last_reload": {"time": status["time"] - 3, "ok": False, "error": "x.yaml: bad\nmore"},
    }
    lines = format_status(status).splitlines()
    row = next(line for line in lines if line.startswith("worker-0 "))
    assert row.endswith("1 of 3 connected, 1 unreachable  -")  # no /proc usage in this test
    assert "worker-0 brokers: 1 connected, 2 unreachable, 3 idle" in lines
    assert "config /etc/kpd/kpd.yaml: kafka.acks changed, applied after a restart" in lines
    assert "config reload 3s ago failed, still running the previous settings: x.yaml: bad" in lines


def test_format_status_says_what_became_of_the_previous_runs_ring_files(reported):
    rings = {
        "directory": "/var/lib/kpd",
        "adopted": [{"ring": "kpd-records-0", "bytes": 3 * 1024 * 1024}],
        "rerouted": [{"ring": "kpd-records-2", "entries": 17, "workers": 3}],
        "moved_aside": [],
        "leftovers": ["/var/lib/kpd/kpd-aside-20261202T160000Z"],
    }
    status = build_status(reported.children, reported.status_dir, rings=rings)
    assert status["rings"] == rings
    lines = format_status(status).splitlines()
    assert "rings: adopted 3 MiB of records left by the previous run" in lines
    assert "rings: re-routed 17 entries of kpd-records-2 (written for 3 workers)" in lines
    assert (
        "rings: NOT PRODUCED, set aside: /var/lib/kpd/kpd-aside-20261202T160000Z "
        "(see its README.txt)"
    ) in lines


def test_supervisor_collector_reports_restarts_and_up_from_its_children(reported):
    build = BuildInfo("1.2.3", "3.12.1", "native")
    own = ProcessUsage(resident_bytes=10, proportional_bytes=7, cpu_seconds=1.5, open_fds=9)
    collector = SupervisorCollector(lambda: reported.children, build, lambda: own)
    samples = scrape(reported.metrics_dir, (collector,))
    build_labels = (("accelerator", "native"), ("python", "3.12.1"), ("version", "1.2.3"))
    assert samples[("kpd_build_info", build_labels)] == 1
    assert samples[("kpd_process_proportional_bytes", (("child", "supervisor"),))] == 7
    assert samples[("kpd_process_cpu_seconds_total", (("child", "supervisor"),))] == 1.5
    assert samples[("kpd_child_hung_total", (("child", "worker-0"),))] == 0
    assert samples[("kpd_child_restarts_total", (("child", "worker-0"),))] == 2
    assert samples[("kpd_child_up", (("child", "worker-1"),))] == 0
    assert samples[("kpd_child_up", (("child", "ingest"),))] == 1
    assert samples[("kpd_records_received_total", (("topic", "orders"), ("worker", "0")))] == 40


# ---- the HTTP endpoint -------------------------------------------------------------------


class _FakeChild:
    """The attributes of daemon.process.children.Child the endpoint reads."""

    def __init__(self, state: ChildState) -> None:
        self.name, self.role, self.index, self.pid = state.name, state.role, state.index, state.pid
        self.restarts = state.restarts
        self.hung_kills = state.hung_kills
        self.process = SimpleNamespace(returncode=None if state.up else 1)
        self.ready = asyncio.Event()
        if state.up:
            self.ready.set()
        self._not_responding_s = state.not_responding_s

    def not_responding_s(self) -> float | None:
        return self._not_responding_s


async def _get(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await reader.read()  # the server closes after one answer
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *fields = head.decode().split("\r\n")
    headers = {k.lower(): v for k, v in (f.split(": ", 1) for f in fields)}
    assert int(headers["content-length"]) == len(body) or request.startswith(b"HEAD")
    return status, headers, body


def test_http_endpoint_serves_metrics_status_and_404(reported):
    async def scenario() -> None:
        children = [_FakeChild(state) for state in reported.children]
        server = MetricsServer(
            ("127.0.0.1", 0), reported.metrics_dir, reported.status_dir, lambda: children
        )
        await server.start()
        try:
            port = server.port
            status, headers, body = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == "HTTP/1.1 200 OK"
            assert headers["content-type"].startswith("text/plain; version=")
            assert b'kpd_child_restarts_total{child="worker-0"} 2.0' in body
            assert b'kpd_ring_capacity_bytes{ring="records",worker="0"} 65536.0' in body

            document = await asyncio.to_thread(fetch_status, f"http://127.0.0.1:{port}/")
            assert [c["name"] for c in document["children"]] == ["worker-0", "worker-1", "ingest"]
            assert document["children"][0]["snapshot"]["partitions"] == {"orders": [0, 1, 2, 5]}

            status, _, body = await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")
            assert (status, body) == ("HTTP/1.1 200 OK", b"ok\n")
            status, _, body = await _get(port, b"GET /readyz HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 503 Service Unavailable"
            assert body.decode().splitlines() == ["worker-1: not running"]

            status, _, _ = await _get(port, b"GET /nowhere HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 404 Not Found"
            status, _, _ = await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 405 Method Not Allowed"
        finally:
            await server.close()

    asyncio.run(scenario())
