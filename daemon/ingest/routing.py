"""Where a client's records go: the partition and the ring entries.

``EntryPlanner`` cuts one PRODUCE frame into entries — (partition, records section, first
sequence number, record count, sequence offsets) — choosing partitions the client left to kpd
with Kafka's partitioner rules, and re-cutting a frame too large for one ring entry. Which
worker's ring an entry goes into is ``daemon.ownership.worker_for``.

When ingest must partition a keyed frame itself (the client sent partition -1), it groups the
frame's records by partition in one pass: one entry per partition the frame touches, whose
records carry their sequence offsets (``wire.ring_entry``), never one entry per change of
partition. With the C accelerator the hashing and the grouping are two C loops per frame.

Pure apart from the partitioner's random source; no I/O.
"""

from __future__ import annotations

import struct
from array import array
from types import ModuleType

from daemon.accel import native
from daemon.wire.ring_entry import ENTRY_HEAD_BYTES
from kpd.murmur2 import partition_for_key
from kpd.partitioner import Partitioner
from kpd.protocol.records import RecordIn, encode_records, iter_records

# One entry: (partition, records section, first seq, record count, seq offsets or None).
Entry = tuple[int, "memoryview | bytes", int, int, "bytes | None"]

__all__ = ["Entry", "EntryPlanner"]

# Bytes a record may add to a re-encoded records section beyond its own one-record section:
# a timestamp (8) and a header length (4) once any other record of the section has them.
_COLUMN_SLACK = 12


class EntryPlanner:
    """Cuts PRODUCE frames into ring entries. Owned by ingest's event loop."""

    def __init__(
        self,
        partitioner: str,
        batch_size: int,
        ignore_keys: bool,
        max_entry_bytes: int,
        accel: ModuleType | None = native,
    ) -> None:
        # Chooses partitions for records the client left to kpd (partition -1): the same rules
        # as Kafka's producer with the configured partitioner.
        self._partitioner = Partitioner(partitioner, batch_size, ignore_keys)
        self._per_record = partitioner != "default"  # round robin: every record
        self._ignore_keys = ignore_keys
        self.max_entry_bytes = max_entry_bytes
        self._accel = accel  # the C accelerator, or None for the pure-Python twin

    def split(self, header, count: int) -> list[Entry]:
        """The frame as entries; ``count`` is the topic's partition count."""
        whole = [(header.partition, header.records, header.base_seq, header.count, None)]
        if header.partition >= 0:
            return whole
        if (header.keyless or self._ignore_keys) and not self._per_record:
            # Sticky partitioning (KIP-794) moves on per batch.size bytes, never inside a
            # record run, so a whole keyless frame goes to one partition untouched.
            size = len(header.records)
            partition = self._partitioner.partition(header.topic, None, size, count)
            return [(partition, header.records, header.base_seq, header.count, None)]
        if self._accel is not None and not self._per_record and header.records[0] == 0:
            return self._group_compiled(header, count)
        return self._group_python(header, count)

    def _sticky(self, topic: str, count: int) -> int:
        # The partition a keyed frame's null-key records join: the topic's current sticky
        # partition (0 bytes: asking moves nothing), one per frame as for a keyless frame.
        return self._partitioner.partition(topic, None, 0, count)

    def _group_compiled(self, header, count: int) -> list[Entry]:
        # Plain layout (no timestamps, no headers): murmur2 per key, then one gather per
        # partition touched, all in C.
        records, n, accel = header.records, header.count, self._accel
        column = accel.partition_keys(records, n, count, self._sticky(header.topic, count))
        partitions = sorted(set(array("I", column)))
        if len(partitions) == 1:
            return [(partitions[0], records, header.base_seq, n, None)]
        entries = []
        for partition in partitions:
            section, offsets, k = accel.gather_records(records, n, column, partition)
            entries.append((partition, section, header.base_seq, k, offsets))
        return entries

    def _group_python(self, header, count: int) -> list[Entry]:
        # The pure twin of _group_compiled, and the path for any layout and for round robin.
        topic, per_record = header.topic, self._per_record
        sticky = None
        groups: dict[int, tuple[list[int], list[RecordIn]]] = {}
        for index, record in enumerate(iter_records(header.records, header.count)):
            key = record.key
            if per_record:
                size = len(key or b"") + (len(record.value) if record.value is not None else 0)
                partition = self._partitioner.partition(topic, None, size, count)
            elif key is None:
                if sticky is None:
                    sticky = self._sticky(topic, count)
                partition = sticky
            else:
                partition = partition_for_key(key, count)
            group = groups.get(partition)
            if group is None:
                group = groups[partition] = ([], [])
            group[0].append(index)
            group[1].append(RecordIn(key, record.value, record.timestamp, record.headers))
        if len(groups) == 1:
            (partition,) = groups
            return [(partition, header.records, header.base_seq, header.count, None)]
        return [
            (partition, encode_records(run), header.base_seq, len(run), _offsets(indices))
            for partition, (indices, run) in sorted(groups.items())
        ]

    def fit(self, header, entries):
        """The entries, cut so that each fits in one ring entry; None if a record cannot.

        A frame may be larger than half a records ring (socket.max_frame_bytes is configured
        apart from rings.records_bytes), and a ring entry that large could never be written.
        Such a frame is re-encoded in runs of whole records; only a record that does not fit
        even alone fails, and then the whole frame does (it is accepted or failed as a unit).
        """
        limit = self.max_entry_bytes - ENTRY_HEAD_BYTES - len(header.topic.encode())
        if all(_size(entry) <= limit for entry in entries):
            return entries  # the common case: one comparison per entry
        fitted = []
        for entry in entries:
            partition, records, first_seq, n, offsets = entry
            if _size(entry) <= limit:
                fitted.append(entry)
                continue
            if offsets is None:
                runs = _runs_within(records, n, limit)
                if runs is None:
                    return None
                fitted.extend(
                    (partition, section, first_seq + start, k, None) for section, start, k in runs
                )
                continue
            # Scattered records: each run keeps the frame's base_seq and its slice of offsets.
            runs = _runs_within(records, n, limit, extra_per_record=4)
            if runs is None:
                return None
            fitted.extend(
                (partition, section, first_seq, k, offsets[4 * start : 4 * (start + k)])
                for section, start, k in runs
            )
        return fitted


def _size(entry: Entry) -> int:
    """Bytes of an entry after its head and topic: offsets column and records section."""
    offsets = entry[4]
    return len(entry[1]) + (len(offsets) if offsets is not None else 0)


def _offsets(indices: list[int]) -> bytes:
    """The big-endian u32 sequence-offset column of a scattered entry (``wire.ring_entry``)."""
    return struct.pack(f">{len(indices)}I", *indices)


def _runs_within(
    records, count: int, limit: int, extra_per_record: int = 0
) -> list[tuple[bytes, int, int]] | None:
    """Re-encode a records section as ``(section, first index, count)`` runs of at most
    ``limit`` bytes each, records kept whole and in order; None if one record alone is larger.

    The slow path of an oversized frame only: it encodes every record once on its own to
    learn its size, and bounds a run by those sizes plus the columns its neighbours may add.
    """
    runs: list[tuple[bytes, int, int]] = []
    run: list[RecordIn] = []
    run_bytes = 1  # the layout byte
    run_start = 0
    for index, record in enumerate(iter_records(records, count)):
        one = RecordIn(record.key, record.value, record.timestamp, record.headers)
        alone = len(encode_records([one])) + extra_per_record
        if alone > limit:
            return None
        size = alone - 1 + _COLUMN_SLACK
        if run and run_bytes + size > limit:
            runs.append((encode_records(run), run_start, len(run)))
            run, run_bytes, run_start = [], 1, index
        run.append(one)
        run_bytes += size
    runs.append((encode_records(run), run_start, len(run)))
    return runs
