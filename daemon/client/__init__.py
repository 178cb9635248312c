"""The Python client of kpd: ``Producer`` (threads) and ``AsyncProducer`` (asyncio).

Both speak the kpd socket protocol (docs/protocol.md) through the shared codec
(``daemon.wire``) and one sans-IO ``ProducerSession``: they ask kpd for partition
counts and partition records themselves like Kafka's Java producer (murmur2 for keys, sticky
for keyless records), batch records per (topic, partition) into PRODUCE frames, and settle
each record's ``RecordFuture`` from kpd's delivery reports, a whole report run at a time.

    with Producer("/run/kpd/kpd.sock", value_serializer=StringSerializer()) as producer:
        future = producer.send("events", "hello", key=b"user-1")
        metadata = future.result()  # RecordMetadata(topic, partition, offset, timestamp)

Layout: ``errors`` (results and DeliveryError), ``serializers``, ``session`` (the sans-IO
core), ``batch`` (a frame's records, then its outcomes per run), ``encoding`` (the columnar
PRODUCE encoder), ``inflight``, ``future`` (RecordFuture: result/exception/done/
add_done_callback, awaitable from AsyncProducer), ``reconnect`` (backoff and max.block.ms
while kpd is away), ``sync`` (Producer), ``aio`` (AsyncProducer). Import from
``daemon.client``.

Both reconnect by themselves when kpd restarts or its ingest process dies: records written on
the broken connection fail POSSIBLY_PERSISTED, the rest are sent on the next one (docs/client.md).

Per-record work is what bounds a Python producer, so send() creates no Future, takes no
Condition and wakes nobody per record, and frames are encoded a column at a time: ~1 us of
CPU per record, I/O thread included (measured against a running kpd).

Must not import kpd's engines (producer, net, ring, process): apps import this alone.
"""

from daemon.client.aio import AsyncProducer
from daemon.client.errors import (
    CONNECTION_LOST,
    DeliveryError,
    KpdConnectionError,
    RecordMetadata,
    TopicError,
)
from daemon.client.future import RecordFuture
from daemon.client.serializers import (
    BytesSerializer,
    IntegerSerializer,
    JsonSerializer,
    StringSerializer,
)
from daemon.client.sync import Producer
from daemon.wire import KpdErrorCode, Persistence

__all__ = [
    "CONNECTION_LOST",
    "AsyncProducer",
    "BytesSerializer",
    "DeliveryError",
    "IntegerSerializer",
    "JsonSerializer",
    "KpdConnectionError",
    "KpdErrorCode",
    "Persistence",
    "Producer",
    "RecordFuture",
    "RecordMetadata",
    "StringSerializer",
    "TopicError",
]
