"""Choosing a partition for a record, compatible with Kafka's Java producer.

* keyed records: murmur2 of the key bytes, masked with 0x7fffffff, modulo the partition count
  (Java ``BuiltInPartitioner.partitionForKey``), so kpd and Java producers agree on placement;
* keyless records: sticky in the style of KIP-794 — stay on one partition until ``batch.size``
  bytes went there, then move to another chosen at random among partitions with a leader;
* an explicit partition is honoured by the caller and never reaches this module;
* ``round_robin``: every record to the next partition (Java ``RoundRobinPartitioner``).

Owns per-topic sticky/round-robin state for one producer engine. Pure apart from its random
source, which is injected so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.kafka.murmur2 import partition_for_key

__all__ = ["PARTITIONERS", "Partitioner"]

PARTITIONERS = ("default", "round_robin")


@dataclass(slots=True)
class _StickyState:
    partition: int = -1
    bytes_since_switch: int = 0


class Partitioner:
    """Per-engine partition chooser. ``available`` lists partitions that have a leader."""

    def __init__(
        self,
        strategy: str = "default",
        sticky_batch_bytes: int = 16384,
        ignore_keys: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        if strategy not in PARTITIONERS:
            raise ValueError(f"unknown partitioner {strategy!r}; choose one of {PARTITIONERS}")
        self._round_robin = strategy == "round_robin"
        self._sticky_batch_bytes = sticky_batch_bytes
        self._ignore_keys = ignore_keys
        self._rng = rng or random.Random()
        self._sticky: dict[str, _StickyState] = {}
        self._counters: dict[str, int] = {}

    def partition(
        self,
        topic: str,
        key: bytes | None,
        record_bytes: int,
        num_partitions: int,
        available: Sequence[int] = (),
    ) -> int:
        """The partition for one record of ``record_bytes`` bytes (key + value, for stickiness)."""
        if self._round_robin:
            return self._next_round_robin(topic, num_partitions, available)
        if key is not None and not self._ignore_keys:
            return partition_for_key(key, num_partitions)
        return self._sticky_partition(topic, record_bytes, num_partitions, available)

    def _sticky_partition(
        self, topic: str, record_bytes: int, num_partitions: int, available: Sequence[int]
    ) -> int:
        state = self._sticky.get(topic)
        if state is None:
            state = self._sticky[topic] = _StickyState()
        if (
            state.partition < 0
            or state.partition >= num_partitions
            or state.bytes_since_switch >= self._sticky_batch_bytes
        ):
            state.partition = self._pick_other(state.partition, num_partitions, available)
            state.bytes_since_switch = 0
        state.bytes_since_switch += record_bytes
        return state.partition

    def _pick_other(self, current: int, num_partitions: int, available: Sequence[int]) -> int:
        # KIP-794: choose among partitions with a leader; when there are none, any partition.
        # Avoid picking the partition we are leaving so keyless load really moves on.
        choices = [p for p in available if p < num_partitions] or range(num_partitions)
        if len(choices) > 1:
            choices = [p for p in choices if p != current]
        return self._rng.choice(choices)

    def _next_round_robin(self, topic: str, num_partitions: int, available: Sequence[int]) -> int:
        counter = self._counters.get(topic, 0)
        self._counters[topic] = counter + 1
        choices = [p for p in available if p < num_partitions]
        if choices:
            return choices[counter % len(choices)]
        return counter % num_partitions
