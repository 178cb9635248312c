"""Resending batches a dead predecessor wrote without reading the answer, under the producer
id, epoch and sequence numbers they first went under, so the broker's idempotence tells which
it had appended (KIP-98: a broker keeps the last 5 batches per producer id and partition).

Owns nothing but the requests it sends: the engine hands it its connection pool and metadata
before its own sender writes anything. Per partition the batches go one at a time, in sequence
order (a later one would be OUT_OF_ORDER while an earlier one is unanswered); partitions go
concurrently. Each batch's verdict:

* ``APPENDED``: appended now (the broker never had it), at the answered offset;
* ``DUPLICATE``: the broker had it. Kafka answers a batch in its cache with NONE and the
  original offset (then it is reported as ``APPENDED`` would be); an answer of
  DUPLICATE_SEQUENCE_NUMBER (older Kafka, tansu) also means "already written", without the
  offset: the records are reported delivered at offset -1 (unknown), as Java's Sender does;
* ``FORGOTTEN``: the broker no longer knows this producer's state (UNKNOWN_PRODUCER_ID,
  OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH: the producer id expired, the log was
  truncated, or the batch predates the 5 kept), or the resend could not get an answer before
  ``deadline_s``: the caller falls back to producing the records under its own new producer
  id, and they may be written twice. Every later batch of the partition is ``FORGOTTEN`` too
  (sent after a gap it could only be rejected).

Retriable errors (leader moved, timeouts, lost connections) send the same bytes again: same
sequence numbers, so a retry cannot duplicate. Must not import the sender or the engine.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from daemon.kafka import messages
from daemon.kafka.errors import Action, ErrorCode, classify, error_name
from daemon.kafka.records import BatchBuilder
from daemon.net.errors import BrokerConnectionError
from daemon.net.pool import BrokerPool
from daemon.producer.accumulator import AccumulatorSettings
from daemon.producer.metadata import MetadataManager, UnknownTopicError

__all__ = ["ResendBatch", "ResendResult", "Verdict", "resend_batches", "stamped_batch"]


class Verdict(enum.Enum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    FORGOTTEN = "forgotten"


@dataclass(frozen=True, slots=True)
class ResendBatch:
    """One rebuilt batch: ``payload`` is a RecordBatch v2 already stamped with its producer
    id, epoch and base sequence."""

    topic: str
    partition: int
    payload: bytes
    record_count: int


@dataclass(frozen=True, slots=True)
class ResendResult:
    verdict: Verdict
    base_offset: int = -1  # -1: unknown (DUPLICATE_SEQUENCE_NUMBER, or not written)
    timestamp: int = -1  # log-append time, -1: create time
    why: str = ""  # FORGOTTEN: the broker's error or the deadline


def stamped_batch(
    settings: AccumulatorSettings,
    records: Iterable[tuple[int, bytes | None, bytes | None, Any]],
    producer_id: int,
    epoch: int,
    base_sequence: int,
) -> bytes:
    """A RecordBatch of ``(timestamp, key, value, headers)`` records under that identity,
    compressed as the accumulator would (the broker deduplicates by producer id, epoch and
    the sequence range; the bytes need not be the first attempt's)."""
    builder = BatchBuilder(settings.compression, settings.compression_level, False)
    for timestamp, key, value, headers in records:
        builder.append(timestamp, key, value, headers)
    return bytes(builder.build(producer_id, epoch, base_sequence))


async def resend_batches(
    batches: list[ResendBatch],
    *,
    pool: BrokerPool,
    metadata: MetadataManager,
    acks: int,
    request_timeout_ms: int,
    retry_backoff_s: float,
    deadline_s: float,
) -> list[ResendResult]:
    """Each batch's verdict, in the order given (which must be sequence order per partition)."""
    chains: dict[tuple[str, int], list[int]] = {}
    for i, batch in enumerate(batches):
        chains.setdefault((batch.topic, batch.partition), []).append(i)
    results: list[ResendResult | None] = [None] * len(batches)
    deadline = time.monotonic() + deadline_s
    sender = _Resender(pool, metadata, acks, request_timeout_ms, retry_backoff_s, deadline)

    async def chain(indexes: list[int]) -> None:
        forgotten: ResendResult | None = None
        for i in indexes:
            result = forgotten or await sender.send(batches[i])
            if result.verdict is Verdict.FORGOTTEN:
                forgotten = result
            results[i] = result

    await asyncio.gather(*(chain(indexes) for indexes in chains.values()))
    return [result for result in results if result is not None]


class _Resender:
    """Sends one batch until it has a verdict; shared by the partitions' chains."""

    def __init__(
        self, pool: BrokerPool, metadata: MetadataManager, acks: int, request_timeout_ms: int,
        retry_backoff_s: float, deadline: float,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._metadata = metadata
        self._acks = acks
        self._timeout_ms = request_timeout_ms
        self._backoff_s = retry_backoff_s
        self._deadline = deadline  # time.monotonic()

    async def send(self, batch: ResendBatch) -> ResendResult:
        why = "no answer before delivery.timeout.ms"
        while (left := self._deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(left):
                    answer = await self._attempt(batch)
            except (TimeoutError, BrokerConnectionError, UnknownTopicError) as exc:
                why = str(exc) or type(exc).__name__
                answer = None
            if answer is not None:
                result = _verdict(answer)
                if result is not None:
                    return result
                why = error_name(answer["error_code"])
                self._metadata.request_update()
            await asyncio.sleep(self._backoff_s)  # a retry's backoff, bounded by the deadline
        return ResendResult(Verdict.FORGOTTEN, why=why)

    async def _attempt(self, batch: ResendBatch) -> dict | None:
        """The partition's answer, or None when no connection to its leader is ready yet."""
        await self._metadata.wait_for_topic(batch.topic, self._deadline - time.monotonic())
        leader = self._metadata.view.leader(batch.topic, batch.partition)
        conn = self._pool.get(leader) if leader >= 0 else None
        if conn is None:
            self._metadata.request_update()
            return None
        body = {
            "transactional_id": None,
            "acks": self._acks,
            "timeout_ms": self._timeout_ms,
            "topic_data": [{"name": batch.topic, "partition_data": [
                {"index": batch.partition, "records": batch.payload}]}],
        }  # fmt: skip
        response = await conn.request(messages.PRODUCE, body)
        assert response is not None  # idempotence needs acks=all: every request is answered
        return response["responses"][0]["partition_responses"][0]


def _verdict(answer: dict) -> ResendResult | None:
    """What one partition's answer says of the batch; None: retry it."""
    code = answer["error_code"]
    if code == ErrorCode.NONE:
        return ResendResult(
            Verdict.APPENDED, answer["base_offset"], answer.get("log_append_time_ms", -1)
        )
    if code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
        return ResendResult(Verdict.DUPLICATE)
    action = classify(code).action
    if action in (Action.RETRY, Action.REFRESH_AND_RETRY):
        return None
    # BUMP_EPOCH codes: the broker forgot (or never had) this producer's sequence state; any
    # other error: the batch cannot go under this identity. Either way the caller falls back.
    return ResendResult(Verdict.FORGOTTEN, why=error_name(code))
