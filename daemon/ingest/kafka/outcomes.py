"""What a Kafka client hears for each way kpd can refuse or fail a batch (pure data), and
what the listener's offer of a batch can be besides an answer: ``Blocked`` (admission has to
finish it later) and ``PendingOutcome`` (its answer comes later).

The table of docs/operations.md "Any Kafka client"; one row per kpd error code that can reach
a batch of the Kafka listener. The Kafka codes are ones every client already handles: the
retriable ones make the client retry the same batch (same sequence numbers, so an idempotent
producer's retry is recognised), the others fail the batch with a clear name.

Imports only ``daemon.kafka`` and ``kpd.protocol`` (kpd's own error codes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from daemon.kafka.errors import ErrorCode
from kpd.protocol.base import AckLevel, KpdErrorCode

__all__ = ["KAFKA_CODE_OF", "Blocked", "PendingOutcome", "kafka_code"]

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


class PendingOutcome:
    """A partition's answer not known yet: callbacks run as soon as it is (at once if it is
    already) — no future and no loop turn between a worker's report and the answer."""

    __slots__ = ("_waiters", "answer")

    def __init__(self) -> None:
        self.answer: tuple[int, int, int] | None = None  # (error code, base offset, time)
        self._waiters: list[Callable[[tuple[int, int, int]], object]] = []

    def then(self, callback: Callable[[tuple[int, int, int]], object]) -> None:
        if self.answer is not None:
            callback(self.answer)
        else:
            self._waiters.append(callback)

    def resolve(self, answer: tuple[int, int, int]) -> None:
        if self.answer is not None:
            return  # answered once
        self.answer = answer
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            callback(answer)

    def future(self) -> asyncio.Future:
        """The answer as a future (a resend's wait, tests)."""
        future = asyncio.get_running_loop().create_future()
        self.then(lambda answer: future.done() or future.set_result(answer))
        return future
