"""Contender: kpd's producer engine (daemon.producer.engine), in-process, under uvloop.

This is the engine a kpd worker runs, driven the way a worker drives it: records are appended
synchronously in chunks, and the loop runs between chunks (a worker reads its ring a chunk at
a time). It measures the engine's per-record cost: encode, batch, CRC, send, delivery.

Option ``partition``: ``"given"`` (default) means each record arrives with its partition
already chosen, as it does in kpd, where the ingest process partitions and the worker only
produces; the choice is made before the clock starts, with the same functions. ``"inline"``
chooses the partition in the timed loop (murmur2 per keyed record, sticky Partitioner when
keyless), the work aiokafka and confluent-kafka do inside ``send``/``produce``. Option
``settings``: producer_settings overrides by attribute name (e.g. ``batch_size``).

Imports kpd's engine and uvloop; runs only inside a bench child process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import uvloop

from bench.child import Session
from daemon.config import producer_settings
from daemon.producer.engine import ProducerEngine
from daemon.producer.outcomes import BatchOutcome
from kpd.murmur2 import partition_for_key
from kpd.partitioner import Partitioner

# Records appended between two turns of the event loop. A kpd worker hands the engine what one
# ring read returned; 1000 records of ~130 B is ~130 KB, a typical ring chunk.
_CHUNK = 1000
_BUFFER_WAIT_S = 60.0


class _Tally:
    """Delivery reports, counted per batch; owned by the event loop."""

    def __init__(self, expected: int, loop: asyncio.AbstractEventLoop) -> None:
        self.expected = expected
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self.all_reported = loop.create_future()

    def on_outcome(self, outcome: BatchOutcome) -> None:
        if outcome.error is None:
            self.delivered += len(outcome.tokens)
        else:
            self.failed += len(outcome.tokens)
            if len(self.errors) < 5:
                self.errors.append(str(outcome.error))
        if self.delivered + self.failed >= self.expected and not self.all_reported.done():
            self.all_reported.set_result(None)


def main(session: Session) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_produce(session))


async def _produce(session: Session) -> None:
    workload = session.workload
    settings = producer_settings(
        bootstrap_servers=session.spec.bootstrap,
        acks=workload.acks,
        linger_ms=workload.linger_ms,
        compression=workload.compression,
        **session.spec.options.get("settings", {}),
    )
    tally = _Tally(len(session.records.values), asyncio.get_running_loop())
    engine = ProducerEngine(settings, tally.on_outcome)
    await engine.start()
    view = await engine.topic(session.spec.topic)
    queues = [engine.queue(view.name, p) for p in range(view.partition_count)]
    choose = _partition_chooser(workload.keyed, view.partition_count, view.available())
    inline = session.spec.options.get("partition", "given") == "inline"
    records = session.records
    given = None
    if not inline:
        given = [choose(k, v) for k, v in zip(records.keys, records.values, strict=True)]

    session.ready()
    await _append_all(engine, queues, session, choose if inline else None, given)
    await engine.flush()
    await tally.all_reported
    session.done(tally.delivered, tally.failed, tally.errors)
    await engine.close()


async def _append_all(
    engine: ProducerEngine,
    queues: list,
    session: Session,
    choose: Callable[[bytes | None, bytes], int] | None,
    given: list[int] | None,
) -> None:
    """The timed loop: append every record, yielding to the loop after each chunk."""
    keys, values = session.records.keys, session.records.values
    append = engine.append
    for start in range(0, len(values), _CHUNK):
        # One timestamp per chunk: records of a chunk arrive within well under a millisecond,
        # and in kpd the timestamp comes with the record from the client anyway.
        now_ms = int(time.time() * 1000)
        for i in range(start, min(start + _CHUNK, len(values))):
            key = keys[i]
            value = values[i]
            queue = queues[choose(key, value) if given is None else given[i]]
            while not append(queue, now_ms, key, value, (), None):
                if not await engine.wait_for_buffer(_BUFFER_WAIT_S):
                    raise TimeoutError("buffer.memory stayed full for 60 s")
        await asyncio.sleep(0)


def _partition_chooser(
    keyed: bool, partitions: int, available: list[int]
) -> Callable[[bytes | None, bytes], int]:
    if keyed:
        return lambda key, value: partition_for_key(key, partitions)
    sticky = Partitioner()
    return lambda key, value: sticky.partition("bench", None, len(value), partitions, available)
