"""Contender: confluent-kafka's Producer (librdkafka), one ``produce`` per record.

Every record has a Python delivery callback, served by ``poll`` from the producing thread, as
an application that wants per-record outcomes runs it. Option ``poll_every``: 0 (default)
polls only when ``produce`` raises BufferError (librdkafka's queue is full), as most apps
written from the examples do; N > 0 also calls ``poll(0)`` every N records (the tuned loop,
which serves callbacks in small doses and keeps the queue short). ``partitioner=murmur2_random`` is
librdkafka's Java-compatible partitioner, so keyed records land on the same partitions as
kpd's and aiokafka's (librdkafka's own default, consistent_random, hashes with CRC32).
Idempotence on, as kpd's default; batch sizes are librdkafka's defaults (``batch.size`` 1 MB,
``batch.num.messages`` 10000), which is what its users get.

Option ``producer_config``: more librdkafka settings (a test's small local queue).

Options ``rate`` and ``burst``: a paced run for ack latency (bench.pacing). The sender serves
delivery callbacks with ``poll(timeout)`` while it waits for the next burst, so a callback
runs (and notes its time) as soon as librdkafka has the delivery report (or, for a wait under
poll()'s millisecond resolution, serves what is ready and sleeps the rest). When librdkafka's
local queue is full (``produce`` raises BufferError: ``queue.buffering.max.messages`` records
unacknowledged), it polls and retries, as a real app does, and counts each wait
(``queue_full_waits`` in the latency figures): the row then reports the rate it achieved,
and a record's latency still counts from its first ``produce`` attempt.

Imports confluent_kafka; runs only inside a bench child process.
"""

from __future__ import annotations

import time
from array import array

from confluent_kafka import KafkaError, Message, Producer

from bench.child import Session
from bench.pacing import Pace, latency_summary, run_paced

_FULL_QUEUE_POLL_S = 0.005  # queue.buffering.max.* reached: serve callbacks, then retry
_FLUSH_TIMEOUT_S = 300.0
_MIN_POLL_S = 0.001  # poll()'s timeout resolution: a millisecond


class _Tally:
    """Delivery reports, counted per record; owned by the producing thread (poll runs them)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(str(error))


def main(session: Session) -> None:
    workload = session.workload
    topic = session.spec.topic
    producer = Producer(
        {
            "bootstrap.servers": session.spec.bootstrap,
            "acks": workload.acks,
            "linger.ms": workload.linger_ms,
            "compression.type": workload.compression,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            **session.spec.options.get("producer_config", {}),
        }
    )
    producer.list_topics(topic, timeout=30)  # metadata before the clock starts
    tally = _Tally()
    options = session.spec.options
    if "rate" in options:
        latency = _paced(session, producer, tally, Pace(options["rate"], options["burst"]))
    else:
        _flat_out(session, producer, tally)
        latency = None
    undelivered = producer.flush(_FLUSH_TIMEOUT_S)
    if undelivered:
        tally.errors.append(f"{undelivered} records undelivered after flush")
    session.done(tally.delivered, tally.failed + undelivered, tally.errors, latency=latency)


def _flat_out(session: Session, producer: Producer, tally: _Tally) -> None:
    topic = session.spec.topic
    keys, values = session.records.keys, session.records.values
    poll_every = session.spec.options.get("poll_every", 0)
    session.ready()
    produce, poll, on_delivery = producer.produce, producer.poll, tally.on_delivery
    # Two loops rather than one with a test per record, which would be timed as the loop's.
    if poll_every:
        for i in range(len(values)):
            while True:
                try:
                    produce(topic, values[i], keys[i], on_delivery=on_delivery)
                    break
                except BufferError:
                    poll(_FULL_QUEUE_POLL_S)
            if i % poll_every == 0:
                poll(0)
        return
    for i in range(len(values)):
        while True:
            try:
                produce(topic, values[i], keys[i], on_delivery=on_delivery)
                break
            except BufferError:
                poll(_FULL_QUEUE_POLL_S)


def _paced(session: Session, producer: Producer, tally: _Tally, pace: Pace) -> dict:
    """Send at the pace, then wait for every report; returns the latency summary."""
    topic, workload = session.spec.topic, session.workload
    keys, values = session.records.keys, session.records.values
    count = len(values)
    first_id, step = session.records.ids.start, session.records.ids.step
    sent_at = array("d", bytes(8 * count))
    done_at = array("d", bytes(8 * count))  # 0.0 until the record's delivery callback
    clock, produce = time.perf_counter, producer.produce

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        done_at[(workload.record_id(message.value()) - first_id) // step] = clock()
        tally.on_delivery(error, message)

    queue_full_waits = 0

    def send_burst(first: int, end: int) -> None:
        nonlocal queue_full_waits
        for i in range(first, end):
            sent_at[i] = clock()
            while True:
                try:
                    produce(topic, values[i], keys[i], on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: serve reports, then retry
                    queue_full_waits += 1
                    producer.poll(_FULL_QUEUE_POLL_S)

    def wait(seconds: float) -> None:
        # librdkafka's poll() takes whole milliseconds: poll(0.0004) is poll(0) and returns at
        # once, so passing every sub-millisecond wait would spin a core between bursts (at
        # 1k/s that measured ~1,000 µs of app CPU per record and starved the broker). Serve
        # what is ready, then sleep out the rest.
        if seconds >= _MIN_POLL_S:
            producer.poll(seconds)
        else:
            producer.poll(0)
            time.sleep(seconds)

    session.ready()
    latest = run_paced(pace, count, send_burst, wait, clock)
    producer.flush(_FLUSH_TIMEOUT_S)
    session.stop_clock()
    return {**latency_summary(pace, sent_at, done_at, latest), "queue_full_waits": queue_full_waits}
