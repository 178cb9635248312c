"""Every Prometheus metric kpd exports, defined once, and the flushers that fill them.

Owns the metric catalogue (``CATALOGUE``: name, type, help, labels, multiprocess mode,
buckets; ``docs/operations.md`` documents each one, and a test holds the two together), the
multiprocess directory (``prepare_multiprocess_dir``, ``mark_dead``), the plain per-topic
counters a worker bumps (``DeliveryTally``), the flushers that turn plain counters into
Prometheus metrics by *deltas* on an interval (``WorkerMetrics``, ``IngestMetrics``), the
supervisor's scrape-time collector (``SupervisorCollector``) and ``render_metrics``.

Why deltas: engines count into plain attributes (``ProducerCounters``, ring and server
attributes), because a multiprocess ``inc()`` takes a lock and writes an mmap, too dear per
record. A flusher remembers what it last exported and adds the difference, once a second.

prometheus_client picks its value class (in-memory or mmap files) when it is first imported,
from ``PROMETHEUS_MULTIPROC_DIR``. So this module imports it only inside functions: importing
``daemon.metrics`` has no side effect, and the supervisor sets the variable (with
``prepare_multiprocess_dir``) before any child starts. Must not import asyncio, uvloop, the
engine or the ring modules; it reads what they offer publicly (the engine's ``stats()``
snapshot, ``ProducerCounters``, the ingest server's counters).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from daemon.net.errors import AUTH_FAILURE_REASONS
from daemon.producer.counters import (
    COUNT_BOUNDS,
    LATENCY_BOUNDS,
    SIZE_BOUNDS,
    STAGE_BOUNDS,
    LatencyHistogram,
)
from daemon.producer.resend import Verdict
from kpd.protocol import KpdErrorCode

__all__ = [
    "CATALOGUE",
    "DELIVERY_BOUNDS",
    "MULTIPROC_ENV",
    "DeliveryTally",
    "IngestMetrics",
    "MetricSpec",
    "SupervisorCollector",
    "WorkerMetrics",
    "mark_dead",
    "prepare_multiprocess_dir",
    "render_metrics",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# End-to-end delivery can take up to delivery.timeout.ms (120 s by default): the request
# latency bounds plus three wider ones, so slow deliveries do not all land in +Inf.
DELIVERY_BOUNDS = (*LATENCY_BOUNDS, 30.0, 60.0, 120.0)
RECORDS_PER_REQUEST_BOUNDS = COUNT_BOUNDS

# Label values exported at 0 from the start (or from a topic's first record), so that an
# alert's rate() sees the first failure: a series born at its first increment has no "before".
RESEND_OUTCOMES = tuple(verdict.value for verdict in Verdict)
# The engine's own failure names (daemon.producer.sender); Kafka's error names appear as they
# happen (they are too many to export per topic in advance).
FAILURE_REASONS_AT_ZERO = ("DELIVERY_TIMEOUT", "RETRIES_EXHAUSTED", "PRODUCER_CLOSED")
REJECTION_REASONS = tuple(code.name for code in KpdErrorCode if code is not KpdErrorCode.NONE)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric. ``mode`` is the multiprocess gauge mode; ``source`` the process that
    writes it (ingest, worker, supervisor, any child). docs/operations.md explains each one
    at length and says what to alert on."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    source: str = "worker"
    mode: str = ""
    buckets: tuple[float, ...] = ()


def _c(name: str, help: str, labels=("worker",), source="worker") -> MetricSpec:
    return MetricSpec(name, "counter", help, labels, source)


def _g(name: str, help: str, labels=("worker",), source="worker", mode="livesum") -> MetricSpec:
    # livesum: a dead process's gauges vanish at mark_dead, the live ones add up per label set
    # (a replacement worker has a new pid and the same ``worker`` label).
    return MetricSpec(name, "gauge", help, labels, source, mode)


def _h(
    name: str,
    help: str,
    buckets: Sequence[float],
    labels: tuple[str, ...] = (),
    source: str = "worker",
) -> MetricSpec:
    # No worker label: buckets add up across workers, and W times the series would not pay.
    return MetricSpec(name, "histogram", help, labels, source, buckets=tuple(buckets))


_RING = ("ring", "worker")
_TOPIC = ("worker", "topic")
CATALOGUE: tuple[MetricSpec, ...] = (
    # ---- ingest: clients -> rings (ingest holds an end of every ring) --------------------
    _c("kpd_ingest_records_accepted_total", "Records accepted into a worker ring.", (), "ingest"),
    _c(
        "kpd_ingest_records_rejected_total",
        "Records refused before reaching a ring, by reason (the kpd error code's name).",
        ("reason",),
        "ingest",
    ),
    _c(
        "kpd_ingest_buffer_full_total",
        "Entries answered BUFFER_FULL after max.block.ms.",
        (),
        "ingest",
    ),
    _g("kpd_ingest_connections", "Client connections open on the kpd socket.", (), "ingest"),
    _c(
        "kpd_ingest_lines_too_long_total",
        "Lines skipped on the socket.lines socket for being longer than max_line_bytes.",
        (),
        "ingest",
    ),
    _c(
        "kpd_ingest_lines_empty_total",
        "Empty lines skipped on the socket.lines socket (an empty line is no record).",
        (),
        "ingest",
    ),
    _g(
        "kpd_ingest_lines_connections",
        "Writers connected to the socket.lines socket.",
        (),
        "ingest",
    ),
    _g("kpd_kafka_connections", "Kafka clients connected to socket.kafka.", (), "ingest"),
    _c("kpd_kafka_requests_total", "Kafka requests read on socket.kafka.", (), "ingest"),
    _c(
        "kpd_kafka_records_total",
        "Records accepted into rings through socket.kafka.",
        (),
        "ingest",
    ),
    _h(
        "kpd_kafka_produce_seconds",
        "socket.kafka: a Produce request handled -> its answer written (acks 1 and all).",
        STAGE_BOUNDS,
        (),
        "ingest",
    ),
    _c(
        "kpd_kafka_errors_total",
        "Kafka error codes socket.kafka answered, by code (-1: connection closed).",
        ("code",),
        "ingest",
    ),
    _g("kpd_ring_used_bytes", "Bytes in a ring not yet released by its consumer.", _RING, "ingest"),
    _g("kpd_ring_capacity_bytes", "Size of a ring's data area.", _RING, "ingest"),
    _c("kpd_ring_bytes_total", "Payload bytes that went through a ring.", _RING, "ingest"),
    # ---- worker: records and their fate --------------------------------------------------
    _c("kpd_records_received_total", "Records a worker read from its ring.", _TOPIC),
    _c("kpd_records_sent_total", "Records acknowledged by Kafka.", _TOPIC),
    _c("kpd_records_failed_total", "Records that finally failed.", (*_TOPIC, "reason")),
    _h("kpd_record_delivery_seconds", "Ingest accepted -> Kafka acked.", DELIVERY_BOUNDS),
    _h("kpd_record_queue_seconds", "Time records waited in a batch.", LATENCY_BOUNDS),
    _g("kpd_records_pending", "Records in the engine without an outcome yet."),
    _h(
        "kpd_record_stage_seconds",
        "Where a record's time goes, stage by stage (docs/performance.md): ring (ingest "
        "accepted -> worker took it; to 1 ms), batch (-> its batch drained for a request; the "
        "batch's oldest record), write (-> request written), broker (-> answer read), report "
        "(-> report written to the reports ring), forward (-> ingest forwarded it to the "
        "client).",
        STAGE_BOUNDS,
        ("stage",),
        source="any",
    ),
    # ---- worker: batches and requests ----------------------------------------------------
    _c("kpd_sent_bytes_total", "Record batch bytes acknowledged by Kafka."),
    _c("kpd_batches_sent_total", "Record batches acknowledged by Kafka."),
    _h("kpd_batch_size_bytes", "Size of acknowledged record batches.", SIZE_BOUNDS),
    _c("kpd_requests_sent_total", "Produce requests sent."),
    _h("kpd_request_records", "Records per produce request.", RECORDS_PER_REQUEST_BOUNDS),
    _h("kpd_request_latency_seconds", "Produce request round trip.", LATENCY_BOUNDS, ("broker",)),
    _g("kpd_requests_in_flight", "Produce requests awaiting an answer."),
    _c("kpd_batch_retries_total", "Batches sent again after a retriable error."),
    _c("kpd_batch_splits_total", "Batches split after MESSAGE_TOO_LARGE."),
    _c(
        "kpd_producer_epoch_bumps_total",
        "Producer epoch bumps: idempotent (KIP-360), and exactly-once after each abort.",
    ),
    _c("kpd_broker_errors_total", "Error codes in produce responses.", ("worker", "error")),
    _c(
        "kpd_resent_records_total",
        "Records of batches a killed worker had in flight, resent under its producer id by "
        "the worker that adopted its ring: appended (now, or a duplicate Kafka answered with "
        "its offset), duplicate (DUPLICATE_SEQUENCE_NUMBER: written before, offset unknown), "
        "forgotten (the broker no longer knew the producer: produced again under a new id, "
        "possibly twice).",
        ("worker", "outcome"),
    ),
    _g("kpd_buffer_available_bytes", "Free buffer.memory of the worker's engine."),
    _g("kpd_buffer_total_bytes", "buffer.memory of the worker's engine."),
    # ---- worker: brokers and metadata ----------------------------------------------------
    _g(
        "kpd_broker_connected",
        "0 while connecting to the broker fails; 1 while connected, or idle (not needed yet).",
        ("worker", "broker"),
    ),
    _c("kpd_broker_connects_total", "Broker connections established."),
    _c("kpd_broker_connect_failures_total", "Broker connection attempts that failed."),
    _c("kpd_broker_disconnects_total", "Broker connections lost."),
    _c(
        "kpd_broker_auth_failures_total",
        "Broker connections refused by TLS or SASL, by reason (tls_certificate, tls_hostname, "
        "tls_handshake, sasl_mechanism, sasl_authentication, sasl_token).",
        ("worker", "reason"),
    ),
    _c("kpd_broker_reauthentications_total", "SASL re-authentications (KIP-368) that succeeded."),
    _c("kpd_metadata_refreshes_total", "Cluster metadata refreshes that succeeded."),
    _c("kpd_metadata_refresh_failures_total", "Cluster metadata refreshes that failed."),
    # ---- worker: exactly-once mode (kafka.transactional.id) ------------------------------
    _c("kpd_transactions_committed_total", "Transactions committed (EndTxn commit)."),
    _c("kpd_transactions_aborted_total", "Transactions aborted and replayed."),
    _c(
        "kpd_transaction_recoveries_total",
        "Transactions the coordinator aborted itself (open past transaction.timeout.ms, e.g. "
        "through an outage) that were replayed under a new epoch, by the error that revealed "
        "it.",
        ("worker", "reason"),
    ),
    _c(
        "kpd_commit_window_records_total",
        "Exactly-once mode: records of the last commit of a killed worker (or daemon) that "
        "never read its EndTxn answer, as the worker adopting its ring judged them from the "
        "commit's marker: committed (reported with their offsets, not produced again) or "
        "aborted (produced again in a new transaction).",
        ("worker", "outcome"),
    ),
    _h("kpd_transaction_commit_seconds", "EndTxn(commit) round trip.", LATENCY_BOUNDS),
    _h("kpd_transaction_records", "Records per committed transaction.", COUNT_BOUNDS),
    _g(
        "kpd_transactions_fenced",
        "1 once the worker's transactional id is fenced or not authorized: it writes nothing more.",
    ),
    # ---- every child, and the supervisor -------------------------------------------------
    _g(
        "kpd_report_timestamp_seconds",
        "Unix time of a child's last flush.",
        ("child",),
        source="any",
        mode="livemax",
    ),
    _c("kpd_child_restarts_total", "Child restarts by the supervisor.", ("child",), "supervisor"),
    _g("kpd_child_up", "1 while a child runs and said READY.", ("child",), "supervisor"),
    _c(
        "kpd_child_hung_total",
        "Children killed and replaced for not beating (supervisor.heartbeat_timeout).",
        ("child",),
        "supervisor",
    ),
    # ---- what each process costs (the supervisor reads /proc at scrape time) -------------
    _g("kpd_process_resident_bytes", "Resident memory (RSS).", ("child",), "supervisor"),
    _g(
        "kpd_process_proportional_bytes",
        "Proportional memory (PSS): shared ring pages split between their mappers; sums to "
        "what kpd holds.",
        ("child",),
        "supervisor",
    ),
    _c("kpd_process_cpu_seconds_total", "User and system CPU time.", ("child",), "supervisor"),
    _g("kpd_process_open_fds", "Open file descriptors.", ("child",), "supervisor"),
    _g(
        "kpd_build_info",
        "Always 1: kpd's version, the Python that runs it and the ring/codec accelerator.",
        ("version", "python", "accelerator"),
        "supervisor",
    ),
)


# ---- the multiprocess directory -----------------------------------------------------------


def prepare_multiprocess_dir(path: str | Path) -> Path:
    """Create (or empty) the directory of the metric files and point this process and its
    future children at it. Call in the supervisor before spawning any child.

    Old files belong to a previous run: counters restart at zero, which Prometheus reads as a
    counter reset, as it would for any restarted exporter.
    """
    directory = Path(path)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o750)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def mark_dead(pid: int, path: str | Path | None = None) -> None:
    """A child exited: drop its live gauges. Its counters and histograms stay, so the totals
    never go backwards when a worker is replaced."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, None if path is None else str(path))


def render_metrics(path: str | Path, extra: Iterable[object] = ()) -> tuple[bytes, str]:
    """The aggregated exposition of every process's files plus ``extra`` collectors, with its
    content type. A registry per scrape, as prometheus_client's multiprocess docs ask."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


# ---- plain counters a worker bumps --------------------------------------------------------


class DeliveryTally:
    """Per-topic counts and end-to-end latency, bumped by the worker once per ring entry
    (``count_received``) and once per run of an entry's records in an outcome
    (``count_done``), never per record. Owned by the worker's event loop."""

    __slots__ = (
        "_clock",
        "delivery",
        "failed",
        "last_error",
        "partitions",
        "received",
        "sent",
        "stage_report",
        "stage_ring",
    )

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock  # wall clock: received_ms comes from ingest's time.time_ns()
        self.received: Counter[str] = Counter()  # by topic
        self.sent: Counter[str] = Counter()  # by topic
        self.failed: Counter[tuple[str, str]] = Counter()  # by (topic, error name)
        self.partitions: set[tuple[str, int]] = set()  # (topic, partition) seen in the ring
        self.delivery = LatencyHistogram(DELIVERY_BOUNDS)  # accepted -> acked, seconds
        self.last_error: tuple[float, str] | None = None  # (unix time, description)
        # The stage trace's worker stages, per record: ingest accepted -> the worker took the
        # entry from its ring (from the entry's received_ms: wall-clock milliseconds, so a
        # figure to 1 ms), and Kafka's answer read -> its report written to the reports ring.
        self.stage_ring = LatencyHistogram(STAGE_BOUNDS)
        self.stage_report = LatencyHistogram(STAGE_BOUNDS)

    def count_received(
        self, topic: str, partition: int, count: int, received_ms: int | None = None
    ) -> None:
        self.received[topic] += count
        self.partitions.add((topic, partition))
        if received_ms is not None:
            # received_ms was truncated to the ms: half a ms is its expected loss.
            waited = self._clock() - received_ms / 1000 - 0.0005
            self.stage_ring.observe(max(0.0, waited), count)

    def count_done(self, topic: str, count: int, received_ms: int, error: Any = None) -> None:
        """``error`` is the outcome's ``DeliveryError`` (None when delivered)."""
        now = self._clock()
        if error is None:
            self.sent[topic] += count
            self.delivery.observe(max(0.0, now - received_ms / 1000), count)
        else:
            self.failed[(topic, error.name)] += count
            self.last_error = (now, str(error))


# ---- flushers -----------------------------------------------------------------------------


class _Exporter:
    """The metrics of one process and what it last exported of each, for deltas.

    Builds prometheus_client objects lazily with ``registry=None``: in multiprocess mode the
    files are the registry, and no global default registry gets filled as a side effect.
    """

    def __init__(self, sources: tuple[str, ...]) -> None:
        _require_multiprocess()
        self._specs = {s.name: s for s in CATALOGUE if s.source in sources}
        self._metrics: dict[str, Any] = {}
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._last: dict[tuple[str, tuple[str, ...]], Any] = {}

    def _child(self, name: str, labels: tuple[str, ...]) -> Any:
        key = (name, labels)
        child = self._children.get(key)
        if child is None:
            metric = self._metrics.get(name)
            if metric is None:
                metric = self._metrics[name] = _build(self._specs[name])
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child

    def add(self, name: str, labels: tuple[str, ...], total: float) -> None:
        """Export a monotonic plain counter's current ``total`` as a delta."""
        key = (name, labels)
        last = self._last.get(key)
        if last is None:  # exported from its first flush, at 0 if need be: rate() sees it
            last = self._last[key] = 0
            self._child(name, labels)
        # A plain counter below its last value was replaced by a fresh one: all of it is new.
        delta = total - last if total >= last else total
        if delta:
            self._child(name, labels).inc(delta)
        self._last[key] = total

    def add_hot(self, name: str, labels: tuple[str, ...], total: float) -> None:
        """``add`` for a counter exported on a hot path (ingest's accepted records, at every
        publish into the rings): the new value goes into prometheus_client's mmap file
        directly, without the lock and the fork check (a ``getpid`` system call) its ``inc``
        makes per call — a child of kpd never forks and exports from its event loop only.
        These are private attributes of the multiprocess value: test_metrics pins the
        scraped result."""
        key = (name, labels)
        last = self._last.get(key)
        if last is None or total < last:  # first export or a replaced counter: the full path
            self.add(name, labels, total)
            return
        if total > last:
            value = self._child(name, labels)._value
            value._value += total - last
            value._file.write_value(value._key, value._value, 0.0)
            self._last[key] = total

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._child(name, labels).set(value)

    def transfer(self, name: str, labels: tuple[str, ...], hist: LatencyHistogram) -> None:
        """Add a LatencyHistogram's new observations to a Prometheus histogram.

        prometheus_client has no bulk observe. Its Histogram keeps one value per bucket,
        non-cumulative, +Inf last (``_buckets``), and ``_sum``; the collector accumulates them
        at scrape. LatencyHistogram keeps the same layout, so deltas go bucket by bucket.
        These are private attributes: test_metrics pins the scraped result.
        """
        key = (name, labels)
        last = self._last.get(key)
        if last is None:
            child = self._child(name, labels)
            if [float(b) for b in hist.bounds] != child._upper_bounds[:-1]:
                raise ValueError(f"{name}: bounds {hist.bounds} differ from the catalogue's")
            last = self._last[key] = ([0] * len(hist.buckets), [0.0])
        child = self._child(name, labels)
        before, total = last
        if hist.count < sum(before):  # a fresh histogram replaced the one we saw
            before[:] = [0] * len(before)
            total[0] = 0.0
        for index, count in enumerate(hist.buckets):
            if count != before[index]:
                child._buckets[index].inc(count - before[index])
                before[index] = count
        if hist.total != total[0]:
            child._sum.inc(hist.total - total[0])
            total[0] = hist.total


def _require_multiprocess() -> None:
    if MULTIPROC_ENV not in os.environ:
        raise RuntimeError(f"{MULTIPROC_ENV} is not set: metrics would stay in this process")
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(
            f"prometheus_client was imported before {MULTIPROC_ENV} was set: "
            "its metrics would stay in this process"
        )


def _build(spec: MetricSpec) -> Any:
    import prometheus_client as pc

    if spec.kind == "counter":
        return pc.Counter(spec.name, spec.help, spec.labels, registry=None)
    if spec.kind == "gauge":
        return pc.Gauge(
            spec.name, spec.help, spec.labels, registry=None, multiprocess_mode=spec.mode
        )
    return pc.Histogram(spec.name, spec.help, spec.labels, registry=None, buckets=spec.buckets)


class WorkerMetrics:
    """A worker's metrics. Call ``flush`` from the worker's loop about once a second."""

    def __init__(self, worker_index: int) -> None:
        self._w = (str(worker_index),)
        self._child = (f"worker-{worker_index}",)
        self._out = _Exporter(("worker", "any"))

    def flush(self, counters: Any, tally: DeliveryTally, state: Any) -> None:
        """``counters`` is the engine's ``ProducerCounters``, ``state`` its ``stats()``."""
        self._flush_records(tally)
        self._flush_engine(counters)
        self._flush_state(state)
        self._out.set("kpd_report_timestamp_seconds", self._child, time.time())

    def _flush_records(self, tally: DeliveryTally) -> None:
        out, w = self._out, self._w
        for topic, n in tally.received.items():
            out.add("kpd_records_received_total", (*w, topic), n)
            out.add("kpd_records_sent_total", (*w, topic), tally.sent[topic])
            for reason in FAILURE_REASONS_AT_ZERO:
                out.add("kpd_records_failed_total", (*w, topic, reason), 0)
        for (topic, reason), n in tally.failed.items():
            out.add("kpd_records_failed_total", (*w, topic, reason), n)
        out.transfer("kpd_record_delivery_seconds", (), tally.delivery)
        out.transfer("kpd_record_stage_seconds", ("ring",), tally.stage_ring)
        out.transfer("kpd_record_stage_seconds", ("report",), tally.stage_report)

    def _flush_engine(self, c: Any) -> None:
        out, w = self._out, self._w
        out.add("kpd_sent_bytes_total", w, c.bytes_sent)
        out.add("kpd_batches_sent_total", w, c.batches_sent)
        out.add("kpd_requests_sent_total", w, c.requests_sent)
        out.add("kpd_batch_retries_total", w, c.retries)
        out.add("kpd_batch_splits_total", w, c.batch_splits)
        out.add("kpd_producer_epoch_bumps_total", w, c.epoch_bumps)
        if c.transactions_committed or c.transactions_aborted:
            out.add("kpd_transactions_committed_total", w, c.transactions_committed)
            out.add("kpd_transactions_aborted_total", w, c.transactions_aborted)
            out.transfer("kpd_transaction_commit_seconds", (), c.transaction_commit_time)
            out.transfer("kpd_transaction_records", (), c.transaction_records)
        for reason, n in c.transaction_recoveries.items():
            out.add("kpd_transaction_recoveries_total", (*w, reason), n)
        for outcome, n in c.commit_window_records.items():
            out.add("kpd_commit_window_records_total", (*w, outcome), n)
        for error, n in c.errors_by_code.items():
            out.add("kpd_broker_errors_total", (*w, error), n)
        for outcome in RESEND_OUTCOMES:  # at zero from the start, so a rate() sees the first
            out.add("kpd_resent_records_total", (*w, outcome), c.resent_records[outcome])
        out.transfer("kpd_batch_size_bytes", (), c.batch_bytes)
        out.transfer("kpd_request_records", (), c.records_per_request)
        out.transfer("kpd_record_queue_seconds", (), c.queue_time)
        out.transfer("kpd_record_stage_seconds", ("batch",), c.stage_batch)
        out.transfer("kpd_record_stage_seconds", ("write",), c.stage_write)
        out.transfer("kpd_record_stage_seconds", ("broker",), c.stage_broker)
        for broker, hist in c.request_latency.items():
            out.transfer("kpd_request_latency_seconds", (str(broker),), hist)

    def _flush_state(self, s: Any) -> None:
        out, w = self._out, self._w
        out.set("kpd_records_pending", w, s.pending)
        out.set("kpd_requests_in_flight", w, s.in_flight)
        out.set("kpd_buffer_available_bytes", w, s.buffer_total - s.buffer_used)
        out.set("kpd_buffer_total_bytes", w, s.buffer_total)
        for node_id in s.brokers:
            if node_id >= 0:  # negative ids are bootstrap addresses, not brokers
                # 0 only while connecting fails: a broker this worker has not needed yet, or
                # whose connection closed idle, is not down (an idle daemon must not page).
                reachable = node_id not in s.brokers_failing
                out.set("kpd_broker_connected", (*w, str(node_id)), 1 if reachable else 0)
        out.add("kpd_broker_connects_total", w, s.connects)
        out.add("kpd_broker_connect_failures_total", w, s.connect_failures)
        out.add("kpd_broker_disconnects_total", w, s.disconnects)
        for reason in AUTH_FAILURE_REASONS:
            out.add("kpd_broker_auth_failures_total", (*w, reason), s.auth_failures.get(reason, 0))
        out.add("kpd_broker_reauthentications_total", w, s.reauthentications)
        out.add("kpd_metadata_refreshes_total", w, s.metadata_refreshes)
        out.add("kpd_metadata_refresh_failures_total", w, s.metadata_refresh_failures)
        if s.transaction is not None:
            out.set("kpd_transactions_fenced", w, 1 if s.transaction.error else 0)


class IngestMetrics:
    """The ingest process's metrics, ring fill included: ingest holds an end of every ring,
    so fill stays visible while a worker is down, which is when it matters."""

    def __init__(self) -> None:
        self._out = _Exporter(("ingest", "any"))

    def flush(
        self,
        stats: Any,
        records: Sequence[Any],
        reports: Sequence[Any],
        lines: Any = None,
        kafka: Any = None,
    ) -> None:
        """``stats`` is the ``IngestServer``'s ``stats()``; ``records``/``reports`` its ring
        ends by worker index (``RingProducer``\\ s and ``RingConsumer``\\ s); ``lines`` the
        ``LinesListener``'s ``stats()`` when ``socket.lines`` is configured."""
        out = self._out
        out.add("kpd_ingest_records_accepted_total", (), stats.records_accepted)
        for reason in REJECTION_REASONS:
            count = stats.rejected_by_reason.get(reason, 0)
            out.add("kpd_ingest_records_rejected_total", (reason,), count)
        out.add("kpd_ingest_buffer_full_total", (), stats.buffer_full_events)
        out.set("kpd_ingest_connections", (), stats.connections)
        if lines is not None:
            out.add("kpd_ingest_lines_too_long_total", (), lines.lines_too_long)
            out.add("kpd_ingest_lines_empty_total", (), lines.lines_empty)
            out.set("kpd_ingest_lines_connections", (), lines.connections)
        if kafka is not None:  # the KafkaListener's stats() when socket.kafka is configured
            out.set("kpd_kafka_connections", (), kafka.connections)
            out.add("kpd_kafka_requests_total", (), kafka.requests)
            out.add("kpd_kafka_records_total", (), kafka.records)
            for code, n in kafka.errors.items():
                out.add("kpd_kafka_errors_total", (str(code),), n)
            if kafka.produce_time is not None:
                out.transfer("kpd_kafka_produce_seconds", (), kafka.produce_time)
        for index, ring in enumerate(records):
            self._ring("records", index, ring, ring.bytes_written)
        for index, ring in enumerate(reports):
            self._ring("reports", index, ring, ring.bytes_read)
        if stats.stage_forward is not None:
            out.transfer("kpd_record_stage_seconds", ("forward",), stats.stage_forward)
        out.set("kpd_report_timestamp_seconds", ("ingest",), time.time())

    def count_accepted(self, total: int) -> None:
        """Export ``records_accepted`` now (at each publish: one mmap write per batch of
        entries, not per record), so the count never trails what the workers receive."""
        self._out.add_hot("kpd_ingest_records_accepted_total", (), total)

    def _ring(self, kind: str, index: int, ring: Any, moved: int) -> None:
        labels = (kind, str(index))
        self._out.set("kpd_ring_used_bytes", labels, ring.used_bytes())
        self._out.set("kpd_ring_capacity_bytes", labels, ring.capacity)
        self._out.add("kpd_ring_bytes_total", labels, moved)


# ---- the supervisor -----------------------------------------------------------------------


class ChildLike(Protocol):
    name: str
    restarts: int
    up: bool
    hung_kills: int
    usage: Any  # daemon.process.usage.ProcessUsage or None


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    python: str
    accelerator: str


class SupervisorCollector:
    """The supervisor's own metrics, read from its child table at scrape time: they need no
    files, since the supervisor is the process that serves them. ``own_usage`` is the
    supervisor's own ``ProcessUsage`` (or None), exported as ``child="supervisor"``."""

    def __init__(
        self,
        children: Callable[[], Iterable[ChildLike]],
        build: BuildInfo,
        own_usage: Callable[[], Any] = lambda: None,
    ) -> None:
        self._children = children
        self._build = build
        self._own_usage = own_usage
        self._specs = {s.name: s for s in CATALOGUE if s.source == "supervisor"}

    def _family(self, name: str) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        spec = self._specs[name]
        kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
        return kind(spec.name, spec.help, labels=spec.labels)

    def collect(self) -> Iterable[Any]:
        families = {name: self._family(name) for name in self._specs}
        build = self._build
        families["kpd_build_info"].add_metric((build.version, build.python, build.accelerator), 1)
        usages = [("supervisor", self._own_usage())]
        for child in self._children():
            families["kpd_child_restarts_total"].add_metric((child.name,), child.restarts)
            families["kpd_child_up"].add_metric((child.name,), 1 if child.up else 0)
            families["kpd_child_hung_total"].add_metric((child.name,), child.hung_kills)
            usages.append((child.name, child.usage))
        for name, usage in usages:
            if usage is None:
                continue
            labels = (name,)
            families["kpd_process_resident_bytes"].add_metric(labels, usage.resident_bytes)
            families["kpd_process_proportional_bytes"].add_metric(labels, usage.proportional_bytes)
            families["kpd_process_cpu_seconds_total"].add_metric(labels, usage.cpu_seconds)
            families["kpd_process_open_fds"].add_metric(labels, usage.open_fds)
        return list(families.values())
