"""Contender: kpd end to end, an app process sending through ``daemon.client.Producer``.

Each child is one app. It connects to the run's daemon (``options["socket"]``, started by the
runner, see bench.kpd_service) with ``acks="kafka"``, learns the topic's partition count
before the clock (the client partitions records itself, murmur2 for keys as Java does), sends
its shard with one ``send()`` per record and waits until every record's future has its
outcome (``flush()``). The clock stops there; outcomes are tallied after it, since flush()
returning means every future already holds one.

Options ``rate`` and ``burst``: a paced run for ack latency (bench.pacing). Each record gets a
done-callback that notes when its future completed (it runs on the client's I/O thread as the
delivery report arrives); latency is that minus the time just before its send().

Imports daemon.client; runs only inside a bench child process.
"""

from __future__ import annotations

import time
from array import array
from functools import partial

from bench.child import Session
from bench.pacing import Pace, latency_summary, run_paced
from daemon.client import Producer

_METADATA_TIMEOUT_S = 30.0
_FLUSH_TIMEOUT_S = 600.0


def main(session: Session) -> None:
    options = session.spec.options
    with Producer(options["socket"], acks="kafka") as producer:
        producer.partitions_for(session.spec.topic, timeout=_METADATA_TIMEOUT_S)
        if "rate" in options:
            _paced(session, producer, Pace(options["rate"], options["burst"]))
        else:
            _flat_out(session, producer)


def _flat_out(session: Session, producer: Producer) -> None:
    topic, send = session.spec.topic, producer.send
    keys, values = session.records.keys, session.records.values
    session.ready()
    futures = [send(topic, value, key=key) for key, value in zip(keys, values, strict=True)]
    producer.flush(timeout=_FLUSH_TIMEOUT_S)
    session.stop_clock()
    _report(session, futures)


def _paced(session: Session, producer: Producer, pace: Pace) -> None:
    topic, send = session.spec.topic, producer.send
    keys, values = session.records.keys, session.records.values
    count = len(values)
    sent_at = array("d", bytes(8 * count))
    done_at = array("d", bytes(8 * count))  # 0.0 until the record's future completes
    futures: list = [None] * count
    clock = time.perf_counter

    def completed(index: int, future: object) -> None:
        done_at[index] = clock()  # on the client's I/O thread

    def send_burst(first: int, end: int) -> None:
        for i in range(first, end):
            sent_at[i] = clock()
            future = send(topic, values[i], key=keys[i])
            future.add_done_callback(partial(completed, i))
            futures[i] = future

    session.ready()
    latest = run_paced(pace, count, send_burst, time.sleep, clock)
    producer.flush(timeout=_FLUSH_TIMEOUT_S)
    session.stop_clock()
    _report(session, futures, latency_summary(pace, sent_at, done_at, latest))


def _report(session: Session, futures: list, latency: dict | None = None) -> None:
    failures = [error for error in (f.exception(0) for f in futures) if error is not None]
    session.done(len(futures) - len(failures), len(failures), [str(e) for e in failures[:5]],
                 latency=latency)  # fmt: skip
