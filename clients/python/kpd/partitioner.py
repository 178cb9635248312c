"""Choosing a partition for a record, compatible with Kafka's Java producer.

* keyed records: murmur2 of the key bytes, masked with 0x7fffffff, modulo the partition count
  (Java ``BuiltInPartitioner.partitionForKey``), so kpd and Java producers agree on placement;
* keyless records: sticky in the style of KIP-794 — stay on one partition until ``batch.size``
  bytes went there, then move to another chosen at random among partitions with a leader;
* an explicit partition is honoured by the caller and never reaches this module;
* ``round_robin``: every record to the next partition (Java ``RoundRobinPartitioner``).

The one partitioner of kpd: the Python client places its records with it before they leave
the app, and ingest with it for the records a client left to kpd (partition -1), so both put
a key on the same partition. Owns per-topic placement state — a bounded key -> partition
memo and the sticky run — in one ``TopicPlacement`` per topic. Pure apart from its random
source, which is injected so tests are deterministic. Not thread-safe: one owner (ingest's
event loop; a client session under its adapter's lock).

Must not import anything of kpd but ``kpd.murmur2`` (kpd's ingest imports this module too).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from kpd.murmur2 import murmur2

__all__ = ["KEY_MEMO_SIZE", "PARTITIONERS", "Partitioner", "TopicPlacement"]

PARTITIONERS = ("default", "round_robin")

# Keys whose partition a TopicPlacement remembers: apps reuse keys (user ids, hosts), and a
# dict hit (~40 ns) is far cheaper than murmur2 of the key. Bounded: cleared when full, so
# unique keys (request ids) cost one insert each and never grow memory.
KEY_MEMO_SIZE = 16384


class TopicPlacement:
    """Where one topic's records go at one partition count.

    ``keys`` maps a key to its partition of ``count``; callers on a hot path may read it
    directly (``keys.get(key)``) and call ``for_key`` on a miss. It is cleared in place when
    the count changes (``Partitioner.topic``), so such a reference stays valid.
    ``sticky``/``sticky_bytes`` are the current keyless run (-1: none yet), moved only by
    ``Partitioner.sticky``.
    """

    __slots__ = ("count", "keys", "sticky", "sticky_bytes")

    def __init__(self, count: int) -> None:
        if count <= 0:
            raise ValueError(f"a topic needs a positive partition count, got {count}")
        self.count = count
        self.keys: dict[bytes, int] = {}
        self.sticky = -1
        self.sticky_bytes = 0

    def for_key(self, key: bytes) -> int:
        """The partition of a keyed record (Java ``BuiltInPartitioner.partitionForKey``)."""
        partition = self.keys.get(key)
        if partition is None:
            # toPositive(murmur2(key)) % count, where Kafka's Utils.toPositive masks the sign
            # bit off; it is not abs() (abs(-1) would be 1, the mask gives 2**31 - 1).
            partition = (murmur2(key) & 0x7FFFFFFF) % self.count
            keys = self.keys
            if len(keys) >= KEY_MEMO_SIZE:
                keys.clear()
            keys[key] = partition
        return partition

    def for_keys(self, keys: list[bytes]) -> list[int]:
        """``for_key`` of each key (none may be None): one C-level pass over the memo when it
        knows every key, else murmur2 mapped over all of them (no Python call per key)."""
        memo = self.keys
        partitions = list(map(memo.get, keys))
        if None not in partitions:
            return partitions
        count = self.count
        partitions = [(hashed & 0x7FFFFFFF) % count for hashed in map(murmur2, keys)]
        memo.update(zip(keys, partitions, strict=True))
        if len(memo) >= KEY_MEMO_SIZE:
            memo.clear()
        return partitions


class Partitioner:
    """Per-owner partition chooser. ``available`` lists partitions that have a leader."""

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
        self._topics: dict[str, TopicPlacement] = {}
        self._counters: dict[str, int] = {}

    def topic(self, topic: str, num_partitions: int) -> TopicPlacement:
        """``topic``'s placement at ``num_partitions``; a changed count forgets the keys'
        partitions (they were computed modulo the old count) but keeps the object."""
        placement = self._topics.get(topic)
        if placement is None:
            placement = self._topics[topic] = TopicPlacement(num_partitions)
        elif placement.count != num_partitions:
            if num_partitions <= 0:
                raise ValueError(f"a topic needs a positive partition count, got {num_partitions}")
            placement.count = num_partitions
            placement.keys.clear()
        return placement

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
        placement = self._topics.get(topic)
        if placement is None or placement.count != num_partitions:
            placement = self.topic(topic, num_partitions)
        if key is not None and not self._ignore_keys:
            return placement.for_key(key)
        return self.sticky(placement, record_bytes, available)

    def sticky(
        self, placement: TopicPlacement, record_bytes: int, available: Sequence[int] = ()
    ) -> int:
        """The partition of a keyless record of ``record_bytes`` bytes (KIP-794): the current
        run's, until ``sticky_batch_bytes`` went there; then another one."""
        partition = placement.sticky
        if (
            partition < 0
            or partition >= placement.count
            or placement.sticky_bytes >= self._sticky_batch_bytes
        ):
            partition = placement.sticky = self._pick_other(partition, placement.count, available)
            placement.sticky_bytes = 0
        placement.sticky_bytes += record_bytes
        return partition

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
