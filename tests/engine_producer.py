"""A test-side asyncio producer with Kafka's ``send() -> future`` shape, over kpd's engine.

The engine tests drive ``ProducerEngine`` through it as an app would drive Java's producer; the
kpd worker does not use it (it appends with ring positions as tokens, which is cheaper).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.config import ProducerSettings
from daemon.producer.engine import ProducerEngine
from daemon.producer.outcomes import (
    BUFFER_EXHAUSTED,
    BatchOutcome,
    DeliveryFailure,
    Persistence,
)
from kpd.partitioner import Partitioner

__all__ = ["DeliveryFailed", "KafkaProducer", "SentRecord"]


@dataclass(frozen=True, slots=True)
class SentRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int


class DeliveryFailed(Exception):
    """A record's final failure; ``error`` says why and whether it may have been written."""

    def __init__(self, error: DeliveryFailure) -> None:
        super().__init__(str(error))
        self.error = error


class KafkaProducer:
    def __init__(self, settings: ProducerSettings) -> None:
        self._engine = ProducerEngine(settings, self._on_outcome)
        self._partitioner = Partitioner(
            settings.partitioner, settings.batch_size, settings.partitioner_ignore_keys
        )
        self._max_block_s = settings.max_block_ms / 1000

    @property
    def engine(self) -> ProducerEngine:
        return self._engine

    async def start(self) -> KafkaProducer:
        await self._engine.start()
        return self

    async def __aenter__(self) -> KafkaProducer:
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> asyncio.Future:
        """Append one record; the returned future resolves to its SentRecord or raises
        DeliveryFailed. Waits up to max.block.ms for metadata and for buffer space."""
        view = await self._engine.topic(topic)
        if partition is None:
            size = (len(key) if key else 0) + (len(value) if value else 0)
            partition = self._partitioner.partition(
                topic, key, size, view.partition_count, view.available()
            )
        elif not 0 <= partition < view.partition_count:
            raise ValueError(f"{topic} has no partition {partition}")
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        future = asyncio.get_running_loop().create_future()
        queue = self._engine.queue(topic, partition)
        engine = self._engine
        token = (future, timestamp_ms)
        while not engine.append(queue, timestamp_ms, key, value, headers, token):
            if not await engine.wait_for_buffer(self._max_block_s):
                future.set_exception(
                    DeliveryFailed(
                        DeliveryFailure(
                            BUFFER_EXHAUSTED,
                            "BUFFER_EXHAUSTED",
                            f"buffer.memory full for {self._max_block_s * 1000:.0f} ms"
                            " (max.block.ms)",
                            Persistence.NOT_PERSISTED,
                        )
                    )
                )
                break
        return future

    async def flush(self, timeout_s: float | None = None) -> None:
        await self._engine.flush(timeout_s)

    async def close(self, timeout_s: float | None = None) -> None:
        await self._engine.close(timeout_s)

    @staticmethod
    def _on_outcome(outcome: BatchOutcome) -> None:
        if outcome.error is not None:
            failure = DeliveryFailed(outcome.error)
            for future, _ in outcome.tokens:
                if not future.done():
                    future.set_exception(failure)
            return
        base = outcome.base_offset
        log_append_time = outcome.timestamp
        for index, (future, create_time) in enumerate(outcome.tokens):
            if future.done():
                continue
            offset = base + index if base >= 0 else -1
            # Like Java's RecordMetadata: the broker's LogAppendTime if it set one, else the
            # record's own CreateTime.
            timestamp = log_append_time if log_append_time >= 0 else create_time
            future.set_result(SentRecord(outcome.topic, outcome.partition, offset, timestamp))
