"""kpd-client: the Python client of kpd, ``Producer`` (threads) and ``AsyncProducer`` (asyncio).

Both speak the kpd socket protocol (docs/protocol.md) through its codec (``kpd.protocol``)
and one sans-IO ``ProducerSession``: they ask kpd for partition counts and partition records
themselves like Kafka's Java producer (murmur2 for keys, sticky for keyless records), fill
PRODUCE frames per (topic, partition), and settle each record's ``RecordFuture`` from kpd's
delivery reports, a whole report run at a time.

    with Producer("/run/kpd/kpd.sock", value_serializer=StringSerializer()) as producer:
        future = producer.send("events", "hello", key=b"user-1")
        metadata = future.result()  # RecordMetadata(topic, partition, offset, timestamp)

``send_bulk(topic, values, keys)`` queues many records with ONE ``BulkFuture``, like
confluent-kafka's produce_batch. The first keyed record of a topic waits (at most max.block.ms)
for kpd's partition count, as Java's send() waits for metadata.

Layout: ``errors`` (results and DeliveryError), ``serializers``, ``session`` (the sans-IO
core) and its parts ``framer`` (records into frames), ``topics`` (partition counts and
METADATA), ``resend`` (frames that survive a reconnect), ``inflight`` and ``produce_frame``
(a frame's records, then its outcomes per run); ``policy`` (the waiting decisions both shells
share), ``future`` (RecordFuture), ``bulk`` (BulkFuture, BulkResult, BulkError), ``grouping``
(a bulk's records per partition), ``reconnect`` (backoff and max.block.ms while kpd is away),
``sync`` (Producer), ``aio`` (AsyncProducer), ``lines`` (``kpd send``'s line sender). Below
them, shared with the daemon (which depends on this distribution): ``protocol`` (the kpd
socket protocol), ``partitioner`` and ``murmur2``, and ``accel`` (the optional C twins).

Both producers reconnect by themselves when kpd restarts or its ingest process dies: records
written on the broken connection fail POSSIBLY_PERSISTED, the rest are sent on the next one
(docs/client.md).

Per-record work is what bounds a Python producer, so send() creates no Future, takes no
Condition and wakes nobody per record, and frames are encoded a column at a time; with the C
accelerator send()'s hot path is one C call (``kpd.appender``) and its future a C object the
cycle collector does not track (``kpd.future``): ~1.5-2 us of app CPU per record on a loaded
2-core VM, I/O thread included, about half of confluent-kafka's produce() in the same run
(docs/performance.md).

Standard library only; must not import anything of the daemon (``daemon``): apps install
this alone, possibly beside python-daemon, whose package has that name too.
"""

from kpd.aio import AsyncProducer
from kpd.bulk import BulkError, BulkFuture, BulkResult
from kpd.errors import (
    CONNECTION_LOST,
    DeliveryError,
    KpdConnectionError,
    RecordMetadata,
    TopicError,
)
from kpd.future import RecordFuture
from kpd.protocol import KpdErrorCode, Persistence
from kpd.serializers import (
    BytesSerializer,
    IntegerSerializer,
    JsonSerializer,
    StringSerializer,
)
from kpd.sync import Producer

__all__ = [
    "CONNECTION_LOST",
    "AsyncProducer",
    "BulkError",
    "BulkFuture",
    "BulkResult",
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
