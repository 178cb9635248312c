"""Delivery verification: read the topic back and count distinct records.

Owns one short-lived confluent-kafka Consumer per check. librdkafka checks every batch CRC
(``check.crcs``) and decodes every record, so a contender that wrote a bad batch fails here.
Each value starts with its record id (bench.workloads), so the check counts *distinct* ids
in range and also catches duplicates, strangers and keys that do not belong to their id.

Why not tests.brokers.reader.read_all: it keeps a dataclass per record (with 1 KiB values,
over a GB at 1,000,000 records) and checks only the total, so a lost record plus a duplicate
would pass. This keeps one byte per record id. Speed is no reason: measured here on 1,000,000
records of workload (a), read_all took 8.6 s and this 7.4 s; tansu's fetch path dominates.

A contender may send warm-up records before the clock (rsyslog opens its Kafka connection on
its first message): they carry ``WARM_UP_KEY`` and are counted apart, and the run is verified
only if exactly as many arrived as the contender says it sent.
Imports confluent_kafka and bench.workloads only.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from bench.workloads import Workload, key_for

__all__ = ["WARM_UP_KEY", "Delivery", "RecordCounter", "count_delivered", "wait_for_warm_up"]

WARM_UP_KEY = b"kpd-bench-warm-up"

_BATCH = 10_000
_POLL_S = 0.2


@dataclass(frozen=True)
class Delivery:
    expected: int
    read: int  # records consumed, duplicates included
    distinct: int  # distinct ids in 0..expected-1
    duplicates: int
    foreign: int  # ids out of range, short values or wrong keys
    seconds: float
    error: str = ""
    warm_ups: int = 0  # records keyed WARM_UP_KEY (not counted in ``read``)
    expected_warm_ups: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and self.distinct == self.expected
            and self.read == self.expected
            and self.foreign == 0
            and self.warm_ups == self.expected_warm_ups
        )

    def describe(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        warm = (f", {self.warm_ups}/{self.expected_warm_ups} warm-up"
                if self.warm_ups or self.expected_warm_ups else "")  # fmt: skip
        return (
            f"{verdict}: {self.distinct}/{self.expected} distinct, read {self.read}, "
            f"{self.duplicates} duplicates, {self.foreign} foreign{warm}"
            + (f", error: {self.error}" if self.error else "")
        )


class RecordCounter:
    """Marks each id once; owned by one count_delivered call."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.seen = bytearray(workload.records)
        self.read = 0
        self.distinct = 0
        self.duplicates = 0
        self.foreign = 0
        self.warm_ups = 0

    def take(self, key: bytes | None, value: bytes | None) -> None:
        if key == WARM_UP_KEY:
            self.warm_ups += 1
            return
        self.read += 1
        if value is None or len(value) != self.workload.value_bytes:
            self.foreign += 1
            return
        try:
            rid = self.workload.record_id(value)
        except ValueError:
            self.foreign += 1
            return
        if rid >= len(self.seen) or key != key_for(self.workload, rid):
            self.foreign += 1
        elif self.seen[rid]:
            self.duplicates += 1
        else:
            self.seen[rid] = 1
            self.distinct += 1


def count_delivered(
    bootstrap: str, topic: str, workload: Workload, timeout_s: float = 180.0, warm_ups: int = 0
) -> Delivery:
    """Read every partition of ``topic`` to its end and count the workload's records (and
    the ``warm_ups`` warm-up records the contender sent before them)."""
    started = time.monotonic()
    deadline = started + timeout_s
    counter = RecordCounter(workload)
    consumer = Consumer(_consumer_config(bootstrap))
    error = ""
    try:
        partitions = range(workload.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        while len(at_end) < workload.partitions:
            if time.monotonic() >= deadline:
                error = f"timed out after {timeout_s} s; partitions at end: {sorted(at_end)}"
                break
            error = _drain(consumer.consume(_BATCH, _POLL_S), counter, at_end)
            if error:
                break
    finally:
        consumer.close()
    return Delivery(
        expected=workload.records,
        read=counter.read,
        distinct=counter.distinct,
        duplicates=counter.duplicates,
        foreign=counter.foreign,
        seconds=time.monotonic() - started,
        error=error,
        warm_ups=counter.warm_ups,
        expected_warm_ups=warm_ups,
    )


def wait_for_warm_up(bootstrap: str, topic: str, partitions: int, timeout_s: float) -> None:
    """Return once a record keyed WARM_UP_KEY is in ``topic``; TimeoutError after
    ``timeout_s``. For a contender that must warm up through Kafka before the clock."""
    deadline = time.monotonic() + timeout_s
    consumer = Consumer(_consumer_config(bootstrap))
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while time.monotonic() < deadline:
            for message in consumer.consume(100, _POLL_S):
                if message.error() is None and message.key() == WARM_UP_KEY:
                    return
    finally:
        consumer.close()
    raise TimeoutError(f"no warm-up record in {topic} after {timeout_s} s")


def _drain(messages: list, counter: RecordCounter, at_end: set[int]) -> str:
    """Count one batch of consumer events; the error text of a fatal one, else ""."""
    take = counter.take
    for message in messages:
        err = message.error()
        if err is None:
            take(message.key(), message.value())
            # EOF is reported again after new records, so a record cancels an earlier EOF.
            at_end.discard(message.partition())
        elif err.code() == KafkaError._PARTITION_EOF:
            at_end.add(message.partition())
        elif not err.retriable() and err.code() != KafkaError._TRANSPORT:
            return f"consumer error on partition {message.partition()}: {err}"
    return ""


def _consumer_config(bootstrap: str) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        # assign() never joins the group and nothing is committed; the id is only required.
        "group.id": f"kpd-bench-verify-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "check.crcs": True,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
    }
