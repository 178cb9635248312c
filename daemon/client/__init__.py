"""The Python client of kpd: ``Producer`` (threads) and ``AsyncProducer`` (asyncio).

Both speak the kpd socket protocol (docs/protocol.md) through the shared codec
(``daemon.ingest.codec``) and one sans-IO ``ProducerSession``: they ask kpd for partition
counts and partition records themselves like Kafka's Java producer (murmur2 for keys, sticky
for keyless records), batch records per (topic, partition) into PRODUCE frames, and resolve
one future per record from kpd's delivery reports.

    with Producer("/run/kpd/kpd.sock", value_serializer=StringSerializer()) as producer:
        future = producer.send("events", "hello", key=b"user-1")
        metadata = future.result()  # RecordMetadata(topic, partition, offset, timestamp)

Layout: ``errors`` (results and DeliveryError), ``serializers``, ``session`` (the sans-IO
core), ``sync`` (Producer), ``aio`` (AsyncProducer). Import from ``daemon.client``.
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
from daemon.client.serializers import (
    BytesSerializer,
    IntegerSerializer,
    JsonSerializer,
    StringSerializer,
)
from daemon.client.sync import Producer
from daemon.ingest.codec import KpdErrorCode, Persistence

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
    "RecordMetadata",
    "StringSerializer",
    "TopicError",
]
