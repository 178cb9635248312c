"""Independent verification of what reached a broker, through confluent-kafka (librdkafka).

Owns only short-lived confluent-kafka clients. read_all() reads a whole topic back with a
Consumer: librdkafka checks every batch CRC (`check.crcs`) and decodes every field, so a
record kpd wrote wrongly fails here rather than being trusted. partition_for_key_librdkafka()
is the reference for Java-compatible key partitioning: librdkafka's `murmur2_random`
partitioner is documented as the Java producer's (murmur2 of the key, positive, modulo the
partition count). Imports no kpd code: the checker must not share code with what it checks.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from tests.brokers.mock_cluster import MockCluster

# librdkafka's numbering of timestamp types, as ConsumedRecord.timestamp_type reports them.
CREATE_TIME = TIMESTAMP_CREATE_TIME
LOG_APPEND_TIME = TIMESTAMP_LOG_APPEND_TIME

# Consumer events that only report a connection problem; librdkafka reconnects by itself.
_TRANSIENT_ERRORS = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
    }
)


@dataclass(frozen=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int  # milliseconds since the epoch
    timestamp_type: int  # CREATE_TIME or LOG_APPEND_TIME


def read_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    *,
    exact: bool = True,
    isolation_level: str = "read_committed",
    config: dict[str, object] | None = None,
) -> list[ConsumedRecord]:
    """Read every record of `topic`, from the beginning of each partition.

    Returns once at least `expected` records are read and every partition has reported its
    end, sorted by (partition, offset). With `exact`, finding more than `expected` records
    fails too, so duplicates from a retry are caught. Fails with an AssertionError that says
    what was read when the deadline passes first, or on any non-transient consumer error.
    ``config`` adds librdkafka settings (TLS, SASL) to the consumer's.
    """
    deadline = time.monotonic() + timeout_s
    consumer = Consumer({**_consumer_config(bootstrap, isolation_level), **(config or {})})
    try:
        partitions = _partitions_of(consumer, bootstrap, topic, deadline)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        progress = _Progress(topic, partitions, expected)
        while not progress.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(progress.describe(f"timed out after {timeout_s} s"))
            for message in consumer.consume(num_messages=1000, timeout=min(remaining, 0.2)):
                progress.take(message)
    finally:
        consumer.close()
    if exact and len(progress.records) != expected:
        raise AssertionError(progress.describe("more records than expected"))
    return sorted(progress.records, key=lambda r: (r.partition, r.offset))


def partition_for_key_librdkafka(keys: Sequence[bytes], partitions: int) -> list[int]:
    """The partition librdkafka's Java-compatible partitioner picks for each key, in order.

    Each key is really produced, with `partitioner=murmur2_random`, to a topic of
    `partitions` partitions on a private one-broker mock cluster, and the partition is read
    from its delivery report: the answer is what librdkafka does, not what we think it does.
    """
    if any(key is None for key in keys):
        raise ValueError("murmur2_random spreads null keys at random: pass bytes keys only")
    landed: list[int | None] = [None] * len(keys)
    errors: list[str] = []
    with MockCluster(brokers=1) as cluster:
        topic = cluster.create_topic("partitioner-reference", partitions, replication=1)
        producer = Producer(
            {"bootstrap.servers": cluster.bootstrap, "partitioner": "murmur2_random"}
        )
        for index, key in enumerate(keys):
            report = functools.partial(_note_partition, landed, errors, index)
            producer.produce(topic, key=key, value=b"", on_delivery=report)
            producer.poll(0)
        undelivered = producer.flush(30)
        producer.close()
    if errors or undelivered:
        raise RuntimeError(f"reference produce failed: {undelivered} undelivered, {errors[:5]}")
    return [p for p in landed if p is not None]


# -- internals -------------------------------------------------------------------------------


def _consumer_config(bootstrap: str, isolation_level: str) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        # The Python binding insists on a group id; assign() never joins the group, and
        # nothing is committed, so a fresh id keeps readers from seeing each other.
        "group.id": f"kpd-test-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "check.crcs": True,
        "enable.partition.eof": True,
        "isolation.level": isolation_level,
        "fetch.wait.max.ms": 100,
        "reconnect.backoff.max.ms": 500,
    }


def _partitions_of(consumer: Consumer, bootstrap: str, topic: str, deadline: float) -> list[int]:
    """The topic's partition ids from Metadata, waiting (to the deadline) for it to appear."""
    while True:
        found = consumer.list_topics(topic, timeout=max(0.1, deadline - time.monotonic()))
        metadata = found.topics.get(topic)
        if metadata is not None and metadata.error is None and metadata.partitions:
            return sorted(metadata.partitions)
        if time.monotonic() >= deadline:
            why = "absent" if metadata is None else metadata.error
            raise AssertionError(f"topic {topic} not readable at {bootstrap}: {why}")
        time.sleep(0.05)  # poll interval of a wait-for-condition loop


def _note_partition(
    landed: list[int | None], errors: list[str], index: int, err: KafkaError | None, msg: Message
) -> None:
    if err is not None:
        errors.append(str(err))
    else:
        landed[index] = msg.partition()


@dataclass
class _Progress:
    """What one read_all call has seen so far; owned by that call alone."""

    topic: str
    partitions: list[int]
    expected: int
    records: list[ConsumedRecord] = field(default_factory=list)
    at_end: set[int] = field(default_factory=set)  # partitions whose last event was EOF
    transient: list[str] = field(default_factory=list)

    def done(self) -> bool:
        return len(self.records) >= self.expected and self.at_end.issuperset(self.partitions)

    def take(self, message: Message) -> None:
        err = message.error()
        if err is None:
            self.records.append(_to_record(message))
            # EOF is reported again after new records, so a record cancels an earlier EOF.
            self.at_end.discard(message.partition())
        elif err.code() == KafkaError._PARTITION_EOF:
            self.at_end.add(message.partition())
        elif err.code() in _TRANSIENT_ERRORS or err.retriable():
            self.transient.append(str(err))
        else:
            # _BAD_MSG (a CRC or decoding failure) and friends: the data itself is wrong.
            raise AssertionError(
                f"consumer error on {self.topic}[{message.partition()}]: {err}\n"
                + self.describe("stopped on error")
            )

    def describe(self, outcome: str) -> str:
        per_partition = dict(sorted(Counter(r.partition for r in self.records).items()))
        return (
            f"read_all({self.topic!r}): {outcome}: read {len(self.records)} of "
            f"{self.expected} expected records; per partition {per_partition}; "
            f"at end of partition: {sorted(self.at_end)} of {self.partitions}; "
            f"transient errors: {self.transient[-5:]}"
        )


def _to_record(message: Message) -> ConsumedRecord:
    timestamp_type, timestamp = message.timestamp()
    return ConsumedRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=message.value(),
        headers=tuple((name, value) for name, value in message.headers() or ()),
        timestamp=timestamp,
        timestamp_type=timestamp_type,
    )
