"""The benchmark's workloads and the records they are made of.

Owns the workload table ((a)-(d), (u) with a unique 36-byte key per record, (l) the same
records as text lines for the shell-path contenders, and the quick variants the test suite
runs) and the deterministic record generator every contender uses, so all contenders produce
byte-identical records. Each record carries its own id at the start of its value (8 bytes
big-endian; 10 ASCII digits in a text workload, whose values must fit on a line); that is how
the verifier counts *distinct* delivered records without any state shared with the producer.

Keys: ``distinct_keys`` keys of 16 bytes cycling (``key-000000001234``), or with
``unique_keys`` one UUID-shaped 36-byte key per record whose last group is the record id, as
request ids are. A text workload's record is the line ``key<TAB>value``: keys and filler hold
no tab or newline.

Pure: imports no client library and no kpd code, so the parent process and every contender
child can use it.
"""

from __future__ import annotations

import random
import struct
from dataclasses import asdict, dataclass, replace

__all__ = [
    "ID_BYTES",
    "LINE_SEPARATOR",
    "QUICK_RECORDS",
    "TEXT_ID_BYTES",
    "WORKLOADS",
    "Records",
    "Workload",
    "base_name",
    "key_for",
    "lines",
    "make_records",
    "quick",
    "record_id",
]

ID_BYTES = 8
_ID = struct.Struct(">Q")  # record id, big-endian, at the start of every binary value
_TEXT_ID = b"%010d"  # record id at the start of every text value: 10 digits
TEXT_ID_BYTES = 10
_KEY_FORMAT = b"key-%012d"  # 16 bytes for ids below 10**12
# 8-4-4-4-12 hex digits like a UUID (version 4, variant 1); the last 12 are the record id, so
# keys are distinct by construction, the others a multiplicative hash of it.
_UNIQUE_KEY_FORMAT = b"%08x-%04x-4%03x-%04x-%012x"
_UNIQUE_KEY_BYTES = 36
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, odd: i -> i * _GOLDEN is a bijection
LINE_SEPARATOR = b"\t"  # between key and value on a text workload's line
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
    """What to produce. ``distinct_keys`` = 0 and no ``unique_keys`` means keyless records;
    ``text``: values are printable (the record id in digits), for line-based contenders."""

    name: str
    description: str
    records: int = 1_000_000
    key_bytes: int = 16
    distinct_keys: int = 10_000
    unique_keys: bool = False
    value_bytes: int = 100
    text: bool = False
    partitions: int = 12
    compression: str = "none"  # Kafka's compression.type names
    acks: str = "all"
    linger_ms: int = 5

    def __post_init__(self) -> None:
        if self.value_bytes < self.id_bytes:
            raise ValueError(f"value_bytes must be >= {self.id_bytes} to carry the record id")
        expected = _UNIQUE_KEY_BYTES if self.unique_keys else len(_KEY_FORMAT % 0)
        if self.keyed and self.key_bytes != expected:
            raise ValueError(f"key_bytes must be {expected} (the key format)")

    @property
    def keyed(self) -> bool:
        return self.unique_keys or self.distinct_keys > 0

    @property
    def id_bytes(self) -> int:
        return TEXT_ID_BYTES if self.text else ID_BYTES

    def record_id(self, value: bytes) -> int:
        """The id a value of this workload carries; ValueError if it carries none."""
        if self.text:
            head = value[:TEXT_ID_BYTES]
            if len(head) != TEXT_ID_BYTES or not head.isdigit():
                raise ValueError(f"no record id in {value[:20]!r}")
            return int(head)
        return record_id(value)

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
        Workload("u", "as (a) with a unique 36-byte key per record (request ids, UUIDs)",
                 unique_keys=True, key_bytes=_UNIQUE_KEY_BYTES),
        Workload("l", "as (a) as text lines `key<TAB>value` (100 B printable values), for the "
                 "shell-path contenders", text=True),
    )
}  # fmt: skip


def quick(workload: Workload, records: int = QUICK_RECORDS) -> Workload:
    """The same workload, small enough for the test suite (a few seconds for all contenders)."""
    return replace(workload, name=f"{workload.name}-quick", records=records)


def base_name(workload_name: str) -> str:
    """The name a workload has in a full run: "a-quick" -> "a", "l-quick-long" -> "l-long"."""
    return workload_name.replace("-quick", "")


def key_for(workload: Workload, record: int) -> bytes | None:
    """The key of record ``record``: keys cycle over ``distinct_keys``, or one unique key per
    record; None when keyless."""
    if workload.unique_keys:
        return _unique_key(record)
    if not workload.keyed:
        return None
    return _KEY_FORMAT % (record % workload.distinct_keys)


def _unique_key(record: int) -> bytes:
    mixed = (record * _GOLDEN) & 0xFFFF_FFFF_FFFF_FFFF
    return _UNIQUE_KEY_FORMAT % (mixed >> 32, (mixed >> 16) & 0xFFFF, mixed & 0xFFF,
                                 0x8000 | ((mixed >> 12) & 0x3FFF), record)  # fmt: skip


def record_id(value: bytes) -> int:
    """The id a binary value carries (the inverse of the generator's encoding)."""
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
    width = workload.value_bytes - workload.id_bytes
    span = len(filler) - width
    pack = (lambda i: _TEXT_ID % i) if workload.text else _ID.pack
    # A varying window of the pool per record, so consecutive values are not identical
    # (which would flatter compression); 7919 is prime, so windows do not repeat quickly.
    values = [pack(i) + filler[o : o + width] for i in ids for o in ((i * 7919) % span,)]
    keys: list[bytes | None]
    if workload.unique_keys:
        keys = [_unique_key(i) for i in ids]
    elif workload.keyed:
        distinct = [_KEY_FORMAT % k for k in range(workload.distinct_keys)]
        keys = [distinct[i % workload.distinct_keys] for i in ids]
    else:
        keys = [None] * len(ids)
    return Records(ids=ids, keys=keys, values=values)


def lines(records: Records, chunk: int = 10_000):
    """The records as ``key<TAB>value\n`` lines (``value\n`` when keyless), ``chunk`` lines
    per bytes object yielded; only for text workloads, whose keys and values hold no tab or
    newline."""
    keys, values = records.keys, records.values
    for first in range(0, len(values), chunk):
        end = min(first + chunk, len(values))
        some_keys, some_values = keys[first:end], values[first:end]
        if some_keys[0] is None:
            yield b"".join(v + b"\n" for v in some_values)
        else:
            yield b"".join(k + LINE_SEPARATOR + v + b"\n"  # type: ignore[operator]
                           for k, v in zip(some_keys, some_values, strict=True))  # fmt: skip


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
