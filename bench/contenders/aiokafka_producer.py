"""Contender: aiokafka's AIOKafkaProducer, one record per ``send``, under uvloop.

Every record gets a delivery callback on the future ``send`` returns (the per-record API an
application uses; aiokafka partitions inside ``send`` with Java's murmur2 for keyed records).
Settings mirror kpd's: acks, linger.ms and compression from the workload, aiokafka's default
16 KiB batches (kpd's ``batch.size`` default is 256 KiB). Idempotence is off, unlike kpd and
confluent-kafka: aiokafka sends InitProducerId v0 only, which tansu 0.6.0 answers with
UNKNOWN_SERVER_ERROR (its log says "producer=None epoch=None"), so start() fails with it on.

Imports aiokafka and uvloop; runs only inside a bench child process.
"""

from __future__ import annotations

import asyncio

import uvloop
from aiokafka import AIOKafkaProducer

from bench.child import Session


class _Tally:
    """Delivery reports, counted per record; owned by the event loop."""

    def __init__(self, expected: int, loop: asyncio.AbstractEventLoop) -> None:
        self.expected = expected
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self.all_reported = loop.create_future()

    def on_done(self, future: asyncio.Future) -> None:
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(repr(error) if error else "cancelled")
        else:
            self.delivered += 1
        if self.delivered + self.failed >= self.expected and not self.all_reported.done():
            self.all_reported.set_result(None)


def main(session: Session) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_produce(session))


async def _produce(session: Session) -> None:
    workload = session.workload
    topic = session.spec.topic
    producer = AIOKafkaProducer(
        bootstrap_servers=session.spec.bootstrap,
        acks="all" if workload.acks in ("all", "-1") else int(workload.acks),
        linger_ms=workload.linger_ms,
        compression_type=None if workload.compression == "none" else workload.compression,
        enable_idempotence=False,  # see the module docstring: tansu rejects aiokafka's v0
    )
    await producer.start()
    await producer.partitions_for(topic)  # metadata before the clock starts
    keys, values = session.records.keys, session.records.values
    tally = _Tally(len(values), asyncio.get_running_loop())

    session.ready()
    send, on_done = producer.send, tally.on_done
    for i in range(len(values)):
        # send() returns once the record is in a batch; it waits only while the buffer is full.
        future = await send(topic, values[i], key=keys[i])
        future.add_done_callback(on_done)
    await producer.flush()
    await tally.all_reported
    session.done(tally.delivered, tally.failed, tally.errors)
    await producer.stop()
