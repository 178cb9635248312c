"""The benchmark's workloads and the records they are made of.

Owns the workload table (the issue's (a)-(d) and the quick variant the test suite runs) and the
deterministic record generator every contender uses, so all contenders produce byte-identical
records. Each record carries its own id in the first 8 bytes of its value; that is how the
verifier counts *distinct* delivered records without any state shared with the producer.

Pure: imports no client library and no kpd code, so the parent process and every contender
child can use it.
"""

from __future__ import annotations

import random
import struct
from dataclasses import asdict, dataclass, replace

__all__ = [
    "ID_BYTES",
    "QUICK_RECORDS",
    "WORKLOADS",
    "Records",
    "Workload",
    "key_for",
    "make_records",
    "quick",
    "record_id",
]

ID_BYTES = 8
_ID = struct.Struct(">Q")  # record id, big-endian, at the start of every value
_KEY_FORMAT = b"key-%012d"  # 16 bytes for ids below 10**12
_FILLER_SEED = 0x6B7064  # fixed: every run and every contender sees the same payload bytes
# Filler is text drawn from a small vocabulary: it compresses like typical event payloads
# (lz4 roughly halves it) instead of being incompressible noise or a trivial run of one byte.
_VOCABULARY = (
    b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel",
    b"india", b"juliet", b"kilo", b"lima", b"mike", b"november", b"oscar", b"papa",
)  # fmt: skip
QUICK_RECORDS = 20_000


@dataclass(frozen=True)
class Workload:
    """What to produce. ``distinct_keys`` = 0 means keyless records."""

    name: str
    description: str
    records: int = 1_000_000
    key_bytes: int = 16
    distinct_keys: int = 10_000
    value_bytes: int = 100
    partitions: int = 12
    compression: str = "none"  # Kafka's compression.type names
    acks: str = "all"
    linger_ms: int = 5

    def __post_init__(self) -> None:
        if self.value_bytes < ID_BYTES:
            raise ValueError(f"value_bytes must be >= {ID_BYTES} to carry the record id")
        if self.distinct_keys and self.key_bytes != len(_KEY_FORMAT % 0):
            raise ValueError(f"key_bytes must be {len(_KEY_FORMAT % 0)} (the key format)")

    @property
    def keyed(self) -> bool:
        return self.distinct_keys > 0

    @property
    def payload_bytes(self) -> int:
        """Key plus value bytes of one record: the unit of the MB/s figure."""
        return (self.key_bytes if self.keyed else 0) + self.value_bytes

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Workload:
        return cls(**data)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("a", "16 B keys over 10,000 keys, 100 B values, no compression"),
        Workload("b", "as (a), compression lz4", compression="lz4"),
        Workload("c", "as (a), 1 KiB values", value_bytes=1024),
        Workload("d", "keyless, 100 B values, no compression", distinct_keys=0, key_bytes=0),
    )
}


def quick(workload: Workload, records: int = QUICK_RECORDS) -> Workload:
    """The same workload, small enough for the test suite (a few seconds for all contenders)."""
    return replace(workload, name=f"{workload.name}-quick", records=records)


def key_for(workload: Workload, record: int) -> bytes | None:
    """The key of record ``record``: keys cycle over ``distinct_keys``; None when keyless."""
    if not workload.keyed:
        return None
    return _KEY_FORMAT % (record % workload.distinct_keys)


def record_id(value: bytes) -> int:
    """The id a value carries (the inverse of the generator's encoding)."""
    return _ID.unpack_from(value)[0]


@dataclass(frozen=True)
class Records:
    """One shard of a workload's records, built before the clock starts.

    ``keys[i]`` and ``values[i]`` are record ``ids[i]``; keys are shared objects (there are
    only ``distinct_keys`` of them), values are distinct objects because each carries its id.
    """

    ids: range
    keys: list[bytes | None]
    values: list[bytes]


def make_records(workload: Workload, shard: int = 0, shards: int = 1) -> Records:
    """Records ``shard, shard + shards, ...`` of the workload (shard 0 of 1 = all of them)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    ids = range(shard, workload.records, shards)
    filler = _filler_pool(workload.value_bytes)
    width = workload.value_bytes - ID_BYTES
    span = len(filler) - width
    pack = _ID.pack
    # A varying window of the pool per record, so consecutive values are not identical
    # (which would flatter compression); 7919 is prime, so windows do not repeat quickly.
    values = [pack(i) + filler[o : o + width] for i in ids for o in ((i * 7919) % span,)]
    if workload.keyed:
        distinct = [_KEY_FORMAT % k for k in range(workload.distinct_keys)]
        keys: list[bytes | None] = [distinct[i % workload.distinct_keys] for i in ids]
    else:
        keys = [None] * len(ids)
    return Records(ids=ids, keys=keys, values=values)


def _filler_pool(value_bytes: int) -> bytes:
    rng = random.Random(_FILLER_SEED)
    size = max(65536, 4 * value_bytes)
    words: list[bytes] = []
    total = 0
    while total < size:
        word = rng.choice(_VOCABULARY)
        words.append(word)
        total += len(word) + 1
    return b" ".join(words)[:size]
