"""Entry point of kpd's child processes: ``python -m daemon.process.child ROLE SPEC``.

The supervisor passes a JSON spec (config path, ring names, eventfd numbers, index, bootstrap
override) on the command line and the eventfds through ``pass_fds``. A child reports to the
supervisor with lines on stdout: ``READY`` once serving, ``QUIESCED`` (ingest) once it accepts
no more records. Signals only set events; the loop does the work:

* worker: SIGTERM -> read the ring dry (ingest has quiesced), flush within the drain deadline,
  report what could not be delivered, exit 0;
* ingest: SIGTERM -> stop accepting and reading records, publish, say QUIESCED, keep
  forwarding reports; SIGUSR1 -> the workers are done: forward the last reports and exit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import os
import signal
import socket
import sys

import uvloop

from daemon.config import ProducerSettings, load_config
from daemon.ingest.server import IngestServer, IngestSettings, TopicDirectory
from daemon.net.connection import ConnectionSettings
from daemon.net.pool import BrokerPool
from daemon.process.logs import setup_logging
from daemon.process.reporters import IngestReporter, WorkerReporter
from daemon.process.worker import Worker
from daemon.producer.engine import reconnect_policy
from daemon.producer.metadata import MetadataManager
from daemon.ring import Ring, RingConsumer, RingProducer, RingWakeups

log = logging.getLogger("kpd")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _producer_settings(spec: dict) -> tuple[object, ProducerSettings]:
    config = load_config(spec["config"])
    producer = config.producer
    if spec.get("bootstrap"):
        servers = tuple((h, int(p)) for h, p in spec["bootstrap"])
        producer = dataclasses.replace(producer, bootstrap_servers=servers)
    return config, producer


def _ring_end(spec: dict, cls):
    ring = Ring.attach(spec["name"])
    return cls(ring, RingWakeups.from_fds(*spec["fds"]))


def _pin_to_cpu(index: int) -> None:
    """workers.cpu_affinity: worker i runs on the i-th usable CPU (wrapping around)."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[index % len(cpus)]})


async def run_worker(spec: dict) -> int:
    config, producer = _producer_settings(spec)
    if config.workers.cpu_affinity:
        _pin_to_cpu(spec["index"])
    records = _ring_end(spec["records"], RingConsumer)
    reports = _ring_end(spec["reports"], RingProducer)
    worker = Worker(
        dataclasses.replace(producer, client_id=f"{producer.client_id}-w{spec['index']}"),
        records,
        reports,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reporter = None
    if spec.get("status_dir"):
        reporter = WorkerReporter(
            spec["index"], worker.engine, worker.tally, records, reports, spec["status_dir"]
        )
        reporting = loop.create_task(reporter.run())
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the supervisor decides
    task = loop.create_task(worker.run())
    _say("READY")
    stopper = loop.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # a crash: let it raise, the supervisor restarts us
        return 1
    worker.stop()
    try:
        async with asyncio.timeout(config.shutdown.timeout_s):
            await task
    except TimeoutError:
        log.warning("worker %s: drain deadline passed", spec["index"])
    await worker.close(timeout_s=0.0)
    if reporter is not None:
        reporting.cancel()
        reporter.report()  # the last counts land before exit
    return 0


async def run_ingest(spec: dict) -> int:
    config, producer = _producer_settings(spec)
    pool = BrokerPool(
        ConnectionSettings(client_id=f"{producer.client_id}-ingest"),
        reconnect_policy(producer),
        lambda node, up: metadata.connection_changed(up),
    )
    directory: TopicDirectory

    def on_metadata(view) -> None:
        for topic, count in list(directory.counts.items()):
            known = view.topics.get(topic)
            if known is not None and known.partition_count > count:
                directory.counts[topic] = known.partition_count  # partitions were added

    metadata = MetadataManager(
        list(producer.bootstrap_servers),
        pool,
        producer.metadata_max_age_ms / 1000,
        producer.retry_backoff_ms / 1000,
        on_metadata,
    )

    async def resolve(topic: str, timeout_s: float) -> int:
        view = await metadata.wait_for_topic(topic, timeout_s)
        return view.partition_count

    directory = TopicDirectory(config.topics.allows, resolve)
    records = [_ring_end(r, RingProducer) for r in spec["records"]]
    reports = [_ring_end(r, RingConsumer) for r in spec["reports"]]
    server = IngestServer(
        IngestSettings(
            socket_path=str(config.socket.path),
            socket_mode=config.socket.mode,
            max_frame_bytes=config.socket.max_frame_bytes,
            max_block_s=producer.max_block_ms / 1000,
            batch_size=producer.batch_size,
            max_connections=config.socket.max_connections,
            partitioner=producer.partitioner,
            ignore_keys=producer.partitioner_ignore_keys,
            socket_group=config.socket.group,
        ),
        records,
        reports,
        directory,
    )
    metadata.start()
    listen_fd = spec.get("listen_fd")
    if listen_fd is not None:  # socket activation: serve systemd's socket, never unlink it
        await server.start(sock=socket.socket(fileno=listen_fd))
    else:
        await server.start()
    loop = asyncio.get_running_loop()
    reporter = None
    if spec.get("status_dir"):
        reporter = IngestReporter(server, records, reports, spec["status_dir"])
        reporting = loop.create_task(reporter.run())
    quiesce, finish = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, quiesce.set)
    loop.add_signal_handler(signal.SIGUSR1, finish.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    _say("READY")
    await quiesce.wait()
    await server.quiesce()
    _say("QUIESCED")
    await finish.wait()
    await server.finish()
    if reporter is not None:
        reporting.cancel()
        reporter.report()
    await metadata.close()
    await pool.close()
    return 0


def _tune_gc() -> None:
    """Fewer, cheaper cyclic collections: the hot paths allocate many short-lived containers
    but build no cycles, and a full collection over the imported modules' objects stalls the
    loop for milliseconds (the ack-latency tail). Objects alive now are frozen out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    role, spec = argv[0], json.loads(argv[1])
    role_name = role if role == "ingest" else f"{role}{spec.get('index', '')}"
    setup_logging(spec.get("log_level", "info"), spec.get("log_format", "text"), role_name)
    entry = run_worker if role == "worker" else run_ingest
    _tune_gc()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(entry(spec))


if __name__ == "__main__":
    sys.exit(main())
