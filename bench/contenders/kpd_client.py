"""Contender: kpd end to end, an app process sending through ``daemon.client.Producer``.

Each child is one app. It connects to the run's daemon (``options["socket"]``, started by the
runner, see bench.kpd_service) with ``acks="kafka"`` (or ``options["acks"]``), learns the
topic's partition count before the clock (the client partitions records itself, murmur2 for
keys as Java does), sends its shard with one ``send()`` per record and waits until every
record's future has its outcome (``flush()``). The clock stops there; outcomes are tallied
after it, since flush() returning means every future already holds one.

Options ``rate`` and ``burst``: a paced run for ack latency (bench.pacing). Each record gets a
done-callback that notes when its future completed (it runs on the client's I/O thread as the
delivery report arrives); latency is that minus the time just before its send(). The paced app
keeps no future after it is done, as an app reacting in callbacks would. Option
``gc_threshold``: the app raises its own gc thresholds first.

Imports daemon.client; runs only inside a bench child process.
"""

from __future__ import annotations

import gc
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
    if "gc_threshold" in options:  # app-side tuning, stated in the contender's description
        gc.set_threshold(*options["gc_threshold"])
    with Producer(options["socket"], acks=options.get("acks", "kafka")) as producer:
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
    errors: list = []
    clock = time.perf_counter

    def completed(index: int, future) -> None:  # on the client's I/O thread
        done_at[index] = clock()
        error = future.exception(0)
        if error is not None:
            errors.append(error)

    def send_burst(first: int, end: int) -> None:
        # Like an app that reacts in callbacks, this keeps no future once it is done (as the
        # confluent-kafka contender keeps no message): live objects stay at what is in flight.
        for i in range(first, end):
            sent_at[i] = clock()
            send(topic, values[i], key=keys[i]).add_done_callback(partial(completed, i))

    session.ready()
    latest = run_paced(pace, count, send_burst, time.sleep, clock)
    producer.flush(timeout=_FLUSH_TIMEOUT_S)
    session.stop_clock()
    session.done(count - len(errors), len(errors), [str(e) for e in errors[:5]],
                 latency=latency_summary(pace, sent_at, done_at, latest))  # fmt: skip


def _report(session: Session, futures: list, latency: dict | None = None) -> None:
    failures = [error for error in (f.exception(0) for f in futures) if error is not None]
    session.done(len(futures) - len(failures), len(failures), [str(e) for e in failures[:5]],
                 latency=latency)  # fmt: skip
