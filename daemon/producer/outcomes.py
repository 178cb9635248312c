"""What the engine reports for each batch of records: delivered with offsets, or failed.

Outcomes are per batch, not per record: the records of one batch share a partition, a base
offset and a fate, so reporting them together keeps per-record work off the hot path. Each
record carries an opaque ``token`` chosen by whoever appended it (a future, a ring position…).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.kafka.errors import Persistence

__all__ = ["BatchOutcome", "DeliveryFailure", "Persistence"]


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """Why records finally failed. ``code`` is a Kafka error code, or one of the engine's own
    negative codes below for failures that never reached a broker."""

    code: int
    name: str
    message: str
    persistence: Persistence

    def __str__(self) -> str:
        return f"{self.name}: {self.message} ({self.persistence.name})"


# Engine-side failure codes (negative: outside Kafka's error space, like librdkafka's
# RD_KAFKA_RESP_ERR__* "local" errors).
DELIVERY_TIMEOUT = -1
BUFFER_EXHAUSTED = -2
PRODUCER_CLOSED = -3
UNKNOWN_TOPIC = -4
RETRIES_EXHAUSTED = -5


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """The fate of every record of one batch, in append order.

    On success ``base_offset`` is the offset of the first record (-1 when unknown: acks=0 or a
    duplicate older than the broker's cache) and record i has offset ``base_offset + i``.
    ``timestamp`` is the broker's log-append time, or -1 when the records keep their create time.
    """

    topic: str
    partition: int
    tokens: list[Any]
    base_offset: int
    timestamp: int
    error: DeliveryFailure | None
