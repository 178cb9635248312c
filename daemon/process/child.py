"""Entry point of kpd's child processes: ``python -m daemon.process.child ROLE INDEX``.

The supervisor writes the child's ``ChildSpec`` (its validated settings, ring names, eventfd
numbers, status directory) into the child's stdin and passes the eventfds through
``pass_fds``; the child never reads the config file (``daemon.process.handoff``). Later
messages on stdin carry settings a SIGHUP applies live (the log level and format). A child
reports to the supervisor with lines on stdout: ``READY`` once serving, ``QUIESCED`` (ingest)
once it accepts no more records, ``STOPPED {json}`` (worker) with what it delivered and left,
and ``BEAT`` every interval from its event loop (``daemon.process.heartbeat``: silence gets it
replaced; SIGUSR2 dumps its stacks to the log).
Signals only set events; the loop does the work:

* worker: SIGTERM -> read the ring dry (ingest has quiesced) and flush within the drain
  deadline; what is not delivered by then stays in the ring for the next start (its clients
  hear so), exit 0;
* ingest: SIGTERM -> stop accepting and reading records, publish, say QUIESCED, keep
  forwarding reports; SIGUSR1 -> the workers are done: forward the last reports and exit.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

import uvloop

from daemon.config import DaemonConfig
from daemon.ingest.admission import Admission, TopicDirectory
from daemon.ingest.kafka.listener import KafkaListener, KafkaListenerSettings
from daemon.ingest.lines import LinesListener, LinesSettings
from daemon.ingest.server import IngestServer, IngestSettings
from daemon.net.from_config import connection_settings, reconnect_policy
from daemon.net.pool import BrokerPool
from daemon.process.handoff import (
    ChildSpec,
    LiveSettings,
    RingEnd,
    read_first_message,
    read_messages,
)
from daemon.process.heartbeat import arm_stack_dump, beat
from daemon.process.logs import setup_logging
from daemon.process.ring_files import kafka_producers_path, sessions_path
from daemon.process.status.reporters import IngestReporter, WorkerReporter
from daemon.process.status.titles import set_title, worker_title
from daemon.process.txn_layout import worker_transactional_id
from daemon.producer.counters import STAGE_BOUNDS, LatencyHistogram
from daemon.producer.metadata import ClusterView, MetadataManager
from daemon.ring import Ring, RingConsumer, RingProducer, RingWakeups
from daemon.version import VERSION
from daemon.worker import Worker
from daemon.worker.commit_journal import commit_journal_path, marker_path
from daemon.worker.done_journal import journal_path
from daemon.worker.flight_journal import flight_journal_path

log = logging.getLogger("kpd")

_TITLE_INTERVAL_S = 1.0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# After the drain deadline: how long a worker may take to tell clients what stays in its ring.
_KEEP_REPORT_S = 5.0


def _ring_end(end: RingEnd, cls):
    ring = Ring.attach(end.path)
    return cls(ring, RingWakeups.from_fds(*end.fds))


def _pin_to_cpu(index: int) -> None:
    """workers.cpu_affinity: worker i runs on the i-th usable CPU (wrapping around)."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[index % len(cpus)]})


async def _follow_live_settings(spec: ChildSpec) -> None:
    """Apply what the supervisor sends after the spec (SIGHUP's live settings)."""
    async for message in read_messages():
        if isinstance(message, LiveSettings):
            setup_logging(message.log.level, message.log.format, _log_role(spec))
            log.debug("%s: log settings now %s", spec.name, message.log)


async def _follow_partitions(index: int, worker: Worker) -> None:
    """Keep the process title's partition list current (partitions appear as records do)."""
    shown = -1
    while True:
        partitions = worker.tally.partitions
        if len(partitions) != shown:
            shown = len(partitions)
            set_title(worker_title(index, partitions))
        await asyncio.sleep(_TITLE_INTERVAL_S)


async def run_worker(spec: ChildSpec) -> int:
    config = spec.config
    producer = config.producer
    index = spec.index
    if config.workers.cpu_affinity:
        _pin_to_cpu(index)
    records = _ring_end(spec.records[0], RingConsumer)
    reports = _ring_end(spec.reports[0], RingProducer)
    mine = dataclasses.replace(producer, client_id=f"{producer.client_id}-w{index}")
    if producer.transactional:
        txn_id = worker_transactional_id(producer.transactional_id, config.workers.count, index)
        mine = dataclasses.replace(mine, transactional_id=txn_id)
    ring_path = spec.records[0].path
    worker = Worker(
        mine, records, reports, journal_path(ring_path), flight_journal_path(ring_path),
        (commit_journal_path(ring_path), marker_path(ring_path)),
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    background = [
        loop.create_task(_follow_live_settings(spec)),
        loop.create_task(_follow_partitions(index, worker)),
        loop.create_task(beat(_say, config.supervisor.heartbeat_timeout_s)),
    ]
    reporter = None
    if spec.status_dir:
        reporter = WorkerReporter(
            index, worker.engine, worker.tally, records, reports, spec.status_dir
        )
        background.append(loop.create_task(reporter.run()))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the supervisor decides
    task = loop.create_task(worker.run())
    _say("READY")
    log.debug("worker %d: running %s", index, producer)
    stopper = loop.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # a crash: let it raise, the supervisor restarts us
        return 1
    worker.stop()
    done, _ = await asyncio.wait({task}, timeout=config.shutdown.timeout_s)
    if not done:
        log.warning(
            "worker %s: drain deadline passed; %d records undelivered stay in the ring for "
            "the next start",
            index,
            worker.engine.pending_records,
        )
    await worker.close()
    if not done:
        # run() now reports what it had not taken as kept, then returns.
        await asyncio.wait({task}, timeout=_KEEP_REPORT_S)
    for running in background:
        running.cancel()
    if reporter is not None:
        reporter.report()  # the last counts land before exit
    _say("STOPPED " + json.dumps(_what_was_done(worker, records)))
    return 0


def _what_was_done(worker: Worker, records: RingConsumer) -> dict:
    """A stopping worker's account: delivered and failed since it started, and the bytes of
    ring entries it leaves unreleased (not delivered: the next start produces them)."""
    tally = worker.tally
    return {
        "delivered": sum(tally.sent.values()),
        "failed": sum(tally.failed.values()),
        "left_bytes": records.used_bytes(),
    }


def server_name() -> str:
    """kpd's name in WELCOME (docs/protocol.md section 5): ``kpd/<version> <host>``."""
    return f"kpd/{VERSION} {socket.gethostname()}"[:200]


def ingest_settings(config: DaemonConfig) -> IngestSettings:
    """The ingest server's settings, every value from the validated configuration."""
    producer = config.producer
    return IngestSettings(
        socket_path=str(config.socket.path),
        socket_mode=config.socket.mode,
        max_frame_bytes=config.socket.max_frame_bytes,
        max_block_s=producer.max_block_ms / 1000,
        batch_size=producer.batch_size,
        max_connections=config.socket.max_connections,
        partitioner=producer.partitioner,
        ignore_keys=producer.partitioner_ignore_keys,
        socket_group=config.socket.group,
        fsync=config.rings.fsync,
        server_name=server_name(),
        sessions_path=sessions_path(config.rings.directory, config.rings.prefix),
        session_expiry_s=config.socket.session_expiry_s,
        session_window_records=config.socket.session_window_records,
    )


def ingest_metadata(
    config: DaemonConfig, on_metadata: Callable[[ClusterView], None]
) -> tuple[BrokerPool, MetadataManager]:
    """Ingest's view of the cluster (partition counts for routing): its own pool, with the
    same connection settings as the workers' (request.timeout.ms, TLS, SASL, ...)."""
    producer = config.producer
    pool = BrokerPool(
        connection_settings(
            producer, client_id=f"{producer.client_id}-ingest", carries_produce=False
        ),
        reconnect_policy(producer),
        lambda node, up: metadata.connection_changed(up),
    )
    metadata = MetadataManager(
        list(producer.bootstrap_servers),
        pool,
        producer.metadata_max_age_ms / 1000,
        producer.retry_backoff_ms / 1000,
        on_metadata,
        allow_auto_create=config.topics.auto_create,
    )
    return pool, metadata


async def run_ingest(spec: ChildSpec) -> int:
    config = spec.config
    set_title("kpd: ingest")
    directory: TopicDirectory

    def on_metadata(view: ClusterView) -> None:
        directory.update({topic: t.partition_count for topic, t in view.topics.items()})

    pool, metadata = ingest_metadata(config, on_metadata)

    async def resolve(topic: str, timeout_s: float) -> int:
        view = await metadata.wait_for_topic(topic, timeout_s)
        return view.partition_count

    directory = TopicDirectory(config.topics.allows, resolve)
    records = [_ring_end(r, RingProducer) for r in spec.records]
    reports = [_ring_end(r, RingConsumer) for r in spec.reports]
    server = IngestServer(
        ingest_settings(config),
        records,
        reports,
        directory,
        stage_forward=LatencyHistogram(STAGE_BOUNDS),
    )
    lines = _lines_listener(config.socket.lines, server.admission)
    kafka = _kafka_listener(config, server.admission)
    if kafka is not None:  # before server.start: reports of an earlier ingest's entries too
        server.hear_reports(kafka.conn_id, kafka)
    metadata.start()
    if spec.listen_fd is not None:  # socket activation: serve systemd's socket, never unlink it
        await server.start(sock=socket.socket(fileno=spec.listen_fd))
    else:
        await server.start()
    if lines is not None:
        await lines.start()
    if kafka is not None:
        await kafka.start()
    loop = asyncio.get_running_loop()
    background = [
        loop.create_task(_follow_live_settings(spec)),
        loop.create_task(beat(_say, config.supervisor.heartbeat_timeout_s)),
    ]
    reporter = None
    if spec.status_dir:
        reporter = IngestReporter(server, records, reports, spec.status_dir, lines, kafka)
        background.append(loop.create_task(reporter.run()))
    quiesce, finish = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, quiesce.set)
    loop.add_signal_handler(signal.SIGUSR1, finish.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    _say("READY")
    await quiesce.wait()
    if lines is not None:
        await lines.quiesce()  # before the server's, whose last publish_all covers both
    if kafka is not None:
        await kafka.quiesce()
    await server.quiesce()
    _say("QUIESCED")
    await finish.wait()
    await server.finish()
    if lines is not None:
        lines.close()
    if kafka is not None:
        kafka.close()
    for running in background:
        running.cancel()
    if reporter is not None:
        reporter.report()
    await metadata.close()
    await pool.close()
    return 0


def _lines_listener(settings, admission: Admission) -> LinesListener | None:
    """The plain-lines listener of ``socket.lines``, or None when it is not configured."""
    if settings is None:
        return None
    separator = settings.key_separator
    return LinesListener(
        LinesSettings(
            path=str(settings.path),
            topic=settings.topic,
            key_separator=separator.encode() if separator is not None else None,
            max_line_bytes=settings.max_line_bytes,
            mode=settings.mode,
            group=settings.group,
        ),
        admission,
    )


def _kafka_listener(config, admission: Admission) -> KafkaListener | None:
    """The Kafka-protocol listener of ``socket.kafka``, or None when it is not configured."""
    settings = kafka_listener_settings(config)
    if settings is None:
        return None
    if not _is_loopback(settings.host):
        log.warning("socket.kafka listens on %s: anyone who can reach it can produce",
                    settings.host)  # fmt: skip
    return KafkaListener(settings, admission, produce_time=LatencyHistogram(STAGE_BOUNDS))


def kafka_listener_settings(config: DaemonConfig) -> KafkaListenerSettings | None:
    """The listener's settings (None: ``socket.kafka`` not set). Its dedupe journal lives
    beside the ring files and is synced with them, so it survives what they survive."""
    address = config.socket.kafka
    if address is None:
        return None
    host, port = address
    state = kafka_producers_path(config.rings.directory, config.rings.prefix)
    return KafkaListenerSettings(
        host=host,
        port=port,
        max_connections=config.socket.max_connections,
        max_request_bytes=config.socket.max_frame_bytes,
        state_path=state,
        producer_expiry_s=config.socket.kafka_producer_expiry_s,
        durable=config.rings.fsync != "never",
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tune_gc() -> None:
    """Fewer, cheaper cyclic collections: the hot paths allocate many short-lived containers
    but build no cycles, and a full collection over the imported modules' objects stalls the
    loop for milliseconds (the ack-latency tail). Objects alive now are frozen out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _log_role(spec: ChildSpec) -> str:
    return spec.role if spec.role == "ingest" else f"{spec.role}{spec.index}"


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_the_supervisor() -> None:
    """Ask the kernel to SIGKILL this child when its supervisor dies (kill -9, OOM).

    An orphaned ingest or worker would keep accepting and writing ring files that the next
    kpd adopts or re-routes — two writers on one ring. Killing it is safe by design: what it
    accepted is in the ring files. Linux only; elsewhere the child runs on as before."""
    supervisor = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # the supervisor died before the request took effect
        raise SystemExit("kpd child: the supervisor died before this child started")


def main(argv: list[str] | None = None) -> int:
    _die_with_the_supervisor()
    # argv (ROLE INDEX) is for ps only; the spec on stdin is what counts.
    spec = read_first_message()
    if spec.role == "worker":
        set_title(worker_title(spec.index, ()))
    setup_logging(spec.config.log.level, spec.config.log.format, _log_role(spec))
    arm_stack_dump()
    entry = run_worker if spec.role == "worker" else run_ingest
    _tune_gc()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(entry(spec))


if __name__ == "__main__":
    sys.exit(main())
