"""How a bulk's records are checked and grouped per partition before they join frames.

Owns the per-record part of ``send_bulk``, written as whole-column passes: a type check of a
column (``bytes_column``), byte lengths (``lengths``), keyless records cut into KIP-794
sticky runs (``keyless_groups``), keyed records placed by the one partitioner and grouped per
partition in the app's order (``keyed_groups``; the grouping loop in C when the accelerator
is built, ``group_by_partition_python`` its twin). The session appends the groups to frames.
Pure: the partitioner's random source is its only state.

Must not import sockets, threads or asyncio, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

from kpd.accel import native
from kpd.common import check_bytes
from kpd.partitioner import Partitioner, TopicPlacement

__all__ = [
    "bytes_column",
    "group_by_partition_python",
    "keyed_groups",
    "keyless_groups",
    "lengths",
]

_PLAIN_TYPES = {bytes, type(None)}


def bytes_column(items, what: str) -> list:
    """``items`` as a list of bytes-or-None, checked with C-level passes when they already are;
    TypeError names ``what`` was wrong."""
    if type(items) is not list:
        items = list(items)
    if set(map(type, items)) <= _PLAIN_TYPES:
        return items
    return [check_bytes(item, what) for item in items]


def lengths(items: list):
    """The byte length of each item (None counts 0), C-level when there is no None."""
    if None in items:
        return [0 if item is None else len(item) for item in items]
    return map(len, items)


def keyless_groups(
    partitioner: Partitioner, placement: TopicPlacement | None, values: list, budget: int
) -> list[tuple]:
    """``(partition, None, values)`` groups: KIP-794 as for send(), each sticky run takes
    ~``budget`` bytes, then another partition; all to -1 while the count is unknown."""
    if placement is None:
        return [(-1, None, values)]  # kpd keeps a keyless frame on one partition
    ends = list(accumulate(lengths(values)))
    groups, start = [], 0
    while start < len(values):
        base = ends[start - 1] if start else 0
        end = min(bisect_left(ends, base + budget, start) + 1, len(values))
        part = partitioner.sticky(placement, ends[end - 1] - base)
        groups.append((part, None, values[start:end]))
        start = end
    return groups


def group_by_partition_python(keys: list, values: list, parts: list, count: int):
    """``(key_lists, value_lists)``: record i's key and value in the lists of partition
    ``parts[i]``, in the app's order. The C twin is ``kpd._accel.group_by_partition``."""
    # One loop step per record; bound appends into per-partition lists are the cheapest
    # grouping CPython offers (~50 ns), cheaper than sorting or one pass per partition.
    key_lists: list[list] = [[] for _ in range(count)]
    value_lists: list[list] = [[] for _ in range(count)]
    key_appends = [found.append for found in key_lists]
    value_appends = [found.append for found in value_lists]
    for key, value, part in zip(keys, values, parts, strict=True):
        key_appends[part](key)
        value_appends[part](value)
    return key_lists, value_lists


def keyed_groups(
    partitioner: Partitioner, placement: TopicPlacement, keys: list, values: list
) -> tuple[list[tuple], object]:
    """``(partition, keys, values)`` groups, each in the app's order; and the function giving
    each queued position's app index (needed only if results are read)."""
    try:
        parts = placement.for_keys(keys)
    except TypeError:  # some keys are null: those are placed sticky, like send() does
        parts = [
            placement.for_key(key)
            if key is not None
            else partitioner.sticky(placement, 0 if value is None else len(value))
            for key, value in zip(keys, values, strict=True)
        ]
    count = placement.count
    if native is not None:
        key_lists, value_lists = native.group_by_partition(keys, values, parts, count)
    else:
        key_lists, value_lists = group_by_partition_python(keys, values, parts, count)
    groups = [
        (part, key_lists[part], value_lists[part]) for part in range(count) if key_lists[part]
    ]

    def order() -> list[int]:
        positions: list[list[int]] = [[] for _ in range(count)]
        for index, part in enumerate(parts):
            positions[part].append(index)
        return [index for indices in positions for index in indices]

    return groups, order
