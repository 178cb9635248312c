"""What a Kafka client hears for each way kpd can refuse or fail a batch (pure data), and
``Blocked``, the offer of a batch that admission has to finish later.

The table of docs/operations.md "Any Kafka client"; one row per kpd error code that can reach
a batch of the Kafka listener. The Kafka codes are ones every client already handles: the
retriable ones make the client retry the same batch (same sequence numbers, so an idempotent
producer's retry is recognised), the others fail the batch with a clear name.

Imports only ``daemon.kafka`` and ``kpd.protocol`` (kpd's own error codes).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from daemon.kafka.errors import ErrorCode
from kpd.protocol.base import AckLevel, KpdErrorCode

__all__ = ["KAFKA_CODE_OF", "Blocked", "kafka_code"]

KAFKA_CODE_OF = MappingProxyType(
    {
        # Ring full for max.block.ms: retriable; the response also carries throttle time.
        KpdErrorCode.BUFFER_FULL: ErrorCode.REQUEST_TIMED_OUT,
        KpdErrorCode.RECORD_TOO_LARGE: ErrorCode.MESSAGE_TOO_LARGE,
        KpdErrorCode.TOPIC_NOT_ALLOWED: ErrorCode.TOPIC_AUTHORIZATION_FAILED,
        KpdErrorCode.UNKNOWN_TOPIC: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        KpdErrorCode.INVALID_TOPIC: ErrorCode.INVALID_TOPIC_EXCEPTION,  # kpd's own check
        KpdErrorCode.INVALID_PARTITION: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        # kpd is draining: retriable and makes the client refresh metadata and reconnect.
        KpdErrorCode.SHUTTING_DOWN: ErrorCode.NOT_LEADER_OR_FOLLOWER,
        KpdErrorCode.DELIVERY_TIMEOUT: ErrorCode.REQUEST_TIMED_OUT,
    }
)


def kafka_code(error: int, kafka_error: int) -> int:
    """The Kafka error code for a kpd outcome (``kafka_error`` when Kafka itself refused)."""
    if error == KpdErrorCode.KAFKA_ERROR and kafka_error:
        return kafka_error
    return KAFKA_CODE_OF.get(error, ErrorCode.UNKNOWN_SERVER_ERROR)


@dataclass(slots=True)
class Blocked:
    """A batch whose admission waits (``waiting``: a topic lookup, ring space): the
    listener's ``finish_admit`` ends it; meanwhile nothing else of the connection is admitted."""

    waiting: Awaitable
    pending: Any  # the listener's record of the batch
    check: Any  # its sequence check (an idempotent producer's batch), or None
    count: int
    ack: AckLevel
