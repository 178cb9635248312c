"""Contender: kpd end to end, an app process sending through ``kpd.Producer``.

Each child is one app talking to the run's daemon (``options["socket"]``, started by the
runner, see bench.kpd_service) with ``acks="kafka"`` (or ``options["acks"]``); it sends its
shard and waits until every record has its outcome (``flush()``). The clock stops there;
outcomes are tallied after it, since flush() returning means every future already holds one.

How the app behaves is the contender's choice, since the issue's targets hold "whatever the
apps do first and whether they keep their futures":

* ``start``: ``"at-once"`` (default) connects after the clock starts and sends at once, as an
  app that starts up and logs does: the client learns partition counts on its own. The
  connection (a UNIX socket handshake, ~1 ms) is inside the clock. ``"warm"`` connects and
  calls ``partitions_for(topic)`` before the clock.
* ``keep``: ``"every"`` (default) keeps every record's future in a list, as most apps do by
  accident; ``"none"`` drops each future at once (an app that only flushes). Such an app does
  not know per-record outcomes: "delivered" is then the shard once flush() returned, and the
  read-back (bench.verify) is what counts.
* ``api``: ``"send"`` (default), one ``send()`` per record; ``"batch"`` hands the client
  ``BATCH_RECORDS`` records per call through its batch API (one future per call): the first
  of ``BATCH_METHODS`` the Producer has (``send_bulk(topic, values, keys)`` is the one being
  built; see ``_batch_sender``), and the run is skipped as "not available" when it has none.
  A failed batch future's exception lists its failed records (``failures``) or counts as the
  whole batch.

Options ``rate`` and ``burst``: a paced run for ack latency (bench.pacing). Each record gets a
done-callback that notes when its future completed (it runs on the client's I/O thread as the
delivery report arrives); latency is that minus the time just before its send(). The paced app
keeps no future after it is done, as an app reacting in callbacks would. Option
``gc_threshold``: the app raises its own gc thresholds first.

Imports kpd; runs only inside a bench child process.
"""

from __future__ import annotations

import gc
import inspect
import time
from array import array
from collections.abc import Callable
from functools import partial

from bench.child import Session
from bench.pacing import Pace, latency_summary, run_paced
from kpd import Producer

_METADATA_TIMEOUT_S = 30.0
_FLUSH_TIMEOUT_S = 600.0
# Candidate names of the client's batch API ("many records, one future or callback per
# batch", like confluent-kafka's produce_batch), in the order they are tried.
BATCH_METHODS = ("send_bulk", "send_batch", "send_many", "produce_batch")
BATCH_RECORDS = 1000  # records per batch call: an app flushing what it gathered


def main(session: Session) -> None:
    options = session.spec.options
    if "gc_threshold" in options:  # app-side tuning, stated in the contender's description
        gc.set_threshold(*options["gc_threshold"])
    if options.get("api") == "batch":
        missing = _missing_batch_api()
        if missing:
            session.skip(missing)
            return
    if options.get("start", "at-once") == "warm":
        with _connect(session) as producer:
            producer.partitions_for(session.spec.topic, timeout=_METADATA_TIMEOUT_S)
            session.ready()
            _produce(session, producer)
    else:
        session.ready()
        with _connect(session) as producer:
            _produce(session, producer)


def _connect(session: Session) -> Producer:
    options = session.spec.options
    return Producer(options["socket"], acks=options.get("acks", "kafka"))


def _produce(session: Session, producer: Producer) -> None:
    options = session.spec.options
    if "rate" in options:
        _paced(session, producer, Pace(options["rate"], options["burst"]))
    elif options.get("api") == "batch":
        _in_batches(session, producer)
    elif options.get("keep", "every") == "none":
        _keeping_none(session, producer)
    else:
        _keeping_every(session, producer)


def _keeping_every(session: Session, producer: Producer) -> None:
    topic, send = session.spec.topic, producer.send
    keys, values = session.records.keys, session.records.values
    futures = [send(topic, value, key=key) for key, value in zip(keys, values, strict=True)]
    producer.flush(timeout=_FLUSH_TIMEOUT_S)
    session.stop_clock()
    _report(session, futures)


def _keeping_none(session: Session, producer: Producer) -> None:
    topic, send = session.spec.topic, producer.send
    for key, value in zip(session.records.keys, session.records.values, strict=True):
        send(topic, value, key=key)
    producer.flush(timeout=_FLUSH_TIMEOUT_S)
    session.done(len(session.records.values), 0, [])


def _missing_batch_api() -> str:
    names = [name for name in BATCH_METHODS if hasattr(Producer, name)]
    if names:
        return ""
    return f"not available: kpd.Producer has none of {', '.join(BATCH_METHODS)}"


def _in_batches(session: Session, producer: Producer) -> None:
    send_batch = _batch_sender(producer, session.spec.topic)
    keys, values = session.records.keys, session.records.values
    results = [send_batch(keys[i : i + BATCH_RECORDS], values[i : i + BATCH_RECORDS])
               for i in range(0, len(values), BATCH_RECORDS)]  # fmt: skip
    producer.flush(timeout=_FLUSH_TIMEOUT_S)
    session.stop_clock()
    _report(session, [r for r in results if hasattr(r, "exception")],
            per_future=BATCH_RECORDS)  # fmt: skip


def _batch_sender(producer: Producer, topic: str) -> Callable[[list, list], object]:
    """``send(keys, values)`` over the Producer's batch API, whichever shape it has: separate
    ``values``/``keys`` sequences, or one sequence of ``(key, value)`` records."""
    name = next(n for n in BATCH_METHODS if hasattr(producer, n))
    method = getattr(producer, name)
    parameters = inspect.signature(method).parameters
    if "values" in parameters:
        return lambda keys, values: method(topic, values=values, keys=keys)
    return lambda keys, values: method(topic, list(zip(keys, values, strict=True)))


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

    latest = run_paced(pace, count, send_burst, time.sleep, clock)
    producer.flush(timeout=_FLUSH_TIMEOUT_S)
    session.stop_clock()
    session.done(count - len(errors), len(errors), [str(e) for e in errors[:5]],
                 latency=latency_summary(pace, sent_at, done_at, latest))  # fmt: skip


def _report(session: Session, futures: list, per_future: int = 1) -> None:
    """Tally outcomes; a batch future (``per_future`` records) counts for the records its
    exception lists as failed, or for all of them."""
    count = len(session.records.values)
    failures = [error for error in (f.exception(0) for f in futures) if error is not None]
    failed = min(count, sum(len(getattr(e, "failures", ())) or per_future for e in failures))
    session.done(count - failed, failed, [str(e) for e in failures[:5]])
