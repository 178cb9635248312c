"""Where a client's records go: the partition, the worker that owns it, the ring entries.

* ``worker_for(topic, partition, workers)`` spreads the partitions of a topic over the workers
  round-robin from a topic-dependent start, so a topic with at least W partitions keeps every
  worker busy and two topics do not pile their partition 0 on the same worker. New partitions
  (a topic grown while kpd runs) simply map to a worker by the same rule. A pure, stable
  function: no table is shared between processes.
* ``EntryPlanner`` cuts one PRODUCE frame into entries — (partition, records section, first
  sequence number, record count) — choosing partitions the client left to kpd with Kafka's
  partitioner rules, and re-cutting a frame too large for one ring entry.

Pure apart from the partitioner's random source; no I/O.
"""

from __future__ import annotations

import zlib

from daemon.kafka.partitioner import Partitioner
from daemon.wire.records import RecordIn, encode_records, iter_records
from daemon.wire.ring_entry import ENTRY_HEAD_BYTES

__all__ = ["EntryPlanner", "worker_for"]

# Bytes a record may add to a re-encoded records section beyond its own one-record section:
# a timestamp (8) and a header length (4) once any other record of the section has them.
_COLUMN_SLACK = 12


def worker_for(topic: str, partition: int, workers: int) -> int:
    # crc32 rather than hash(): str hashes are salted per process, and every process of kpd
    # must agree (and keep agreeing after a restart, so replayed rings go the same way).
    return (zlib.crc32(topic.encode()) + partition) % workers


class EntryPlanner:
    """Cuts PRODUCE frames into ring entries. Owned by ingest's event loop."""

    def __init__(
        self, partitioner: str, batch_size: int, ignore_keys: bool, max_entry_bytes: int
    ) -> None:
        # Chooses partitions for records the client left to kpd (partition -1): the same rules
        # as Kafka's producer with the configured partitioner.
        self._partitioner = Partitioner(partitioner, batch_size, ignore_keys)
        self._per_record = partitioner != "default"  # round robin: every record
        self._ignore_keys = ignore_keys
        self.max_entry_bytes = max_entry_bytes

    def split(self, header, count: int) -> list[tuple[int, memoryview | bytes, int, int]]:
        """The frame as (partition, records section, first seq, record count) entries."""
        if header.partition >= 0:
            return [(header.partition, header.records, header.base_seq, header.count)]
        if (header.keyless or self._ignore_keys) and not self._per_record:
            # Sticky partitioning (KIP-794) moves on per batch.size bytes, never inside a
            # record run, so a whole keyless frame goes to one partition untouched.
            size = len(header.records)
            partition = self._partitioner.partition(header.topic, None, size, count)
            return [(partition, header.records, header.base_seq, header.count)]
        return self._split_per_record(header, count)

    def _split_per_record(self, header, count: int):
        # The slow path: the client left keyed (or round-robin) records to kpd. Choose each
        # record's partition (Java's murmur2 for keys), then re-encode each partition's
        # records. Records of one partition must stay a contiguous run of sequence numbers,
        # so a run breaks whenever the partition changes.
        entries = []
        run: list[RecordIn] = []
        run_partition = -1
        run_start = header.base_seq
        for index, record in enumerate(iter_records(header.records, header.count)):
            key = None if record.key is None else bytes(record.key)
            size = len(key or b"") + (len(record.value) if record.value is not None else 0)
            partition = self._partitioner.partition(header.topic, key, size, count)
            if partition != run_partition and run:
                entries.append((run_partition, encode_records(run), run_start, len(run)))
                run = []
                run_start = header.base_seq + index
            run_partition = partition
            run.append(RecordIn(record.key, record.value, record.timestamp, record.headers))
        entries.append((run_partition, encode_records(run), run_start, len(run)))
        return entries

    def fit(self, header, entries):
        """The entries, cut so that each fits in one ring entry; None if a record cannot.

        A frame may be larger than half a records ring (socket.max_frame_bytes is configured
        apart from rings.records_bytes), and a ring entry that large could never be written.
        Such a frame is re-encoded in runs of whole records; only a record that does not fit
        even alone fails, and then the whole frame does (it is accepted or failed as a unit).
        """
        limit = self.max_entry_bytes - ENTRY_HEAD_BYTES - len(header.topic.encode())
        if all(len(entry[1]) <= limit for entry in entries):
            return entries  # the common case: one comparison per entry
        fitted = []
        for partition, records, first_seq, n in entries:
            if len(records) <= limit:
                fitted.append((partition, records, first_seq, n))
                continue
            runs = _runs_within(records, n, limit)
            if runs is None:
                return None
            fitted.extend((partition, section, first_seq + start, k) for section, start, k in runs)
        return fitted


def _runs_within(records, count: int, limit: int) -> list[tuple[bytes, int, int]] | None:
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
        alone = len(encode_records([one]))
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
