"""The entries ingest and workers exchange through their rings (pure: bytes <-> values).

Records ring (ingest -> worker), one entry per *entry*: the records of one PRODUCE frame
for one partition, with where they came from and what the client wants to hear of them::

    conn_id u64 | base_seq u64 | count u32 | partition i32 | received_ms i64 | ack u8
    | flags u8 | topic_len u16 | topic utf-8
    | [seq_offsets: count x u32, if flags & SCATTERED] | records section (see records)

The records section is copied verbatim from the client's frame when the client chose the
partition, so ingest routes a frame with no per-record work and the worker decodes it once.
Its records then have the consecutive sequence numbers ``base_seq``.. ``base_seq + count - 1``.
When ingest partitioned a frame itself (partition -1 with keys) it groups the frame's records
by partition in one pass: an entry then holds one partition's records, no longer consecutive
in the frame, and ``seq_offsets`` gives each one's sequence number as ``base_seq + offset``.

``flags``: ``SCATTERED`` (the seq_offsets column follows the topic) and ``BATCHED`` (the source
batched the records already, as a Kafka client does with linger.ms before its Produce
request: a worker sends them without lingering a second time). A flag is no layout change:
a reader that does not know ``BATCHED`` only lingers as before.

``ack`` is the frame's ack level (``AckLevel``; never CONNECTION_DEFAULT): a worker reports
outcomes only of ack-KAFKA entries — nobody reads the others' (ACCEPTED was reported by ingest
at accept time, NONE is never reported after acceptance).

Reports ring (worker -> ingest), one entry per group of report runs for one connection::

    conn_id u64 | records u32 | written_ns u64 | REPORT frame (length prefix included)

so ingest forwards it to the client as it is, without decoding it (``records``, the sum of
the runs' counts, is all ingest needs to know of it: what it still owes the connection).
``written_ns`` is the worker's CLOCK_MONOTONIC (``time.monotonic_ns``, one clock for every
process of a host) when it wrote the entry: ingest's stage trace ("report written ->
forwarded to the client").

Records entries outlive the daemon (ring files are adopted by the next start), so their format
is versioned: ``RECORDS_ENTRY_VERSION`` is written into every records ring's header and a ring
of another version is never decoded (the daemon moves it aside). Change the layout above, bump
it (a unit test pins the layout to the version). Reports entries never outlive the daemon (the
reports rings are made fresh at every start), so they carry no version.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "BATCHED",
    "ENTRY_HEAD_BYTES",
    "RECORDS_ENTRY_VERSION",
    "SCATTERED",
    "RecordsEntry",
    "decode_records_entry",
    "decode_report_entry",
    "encode_report_entry",
    "entry_head",
    "seq_runs",
]

# The one version of the records-entry layout; see the module docstring. 1: the first
# file-backed rings (no ack level); 2: ack level, flags and the scattered seq_offsets column.
RECORDS_ENTRY_VERSION = 2
_HEAD = struct.Struct(">QQIiqBBH")
_REPORT_HEAD = struct.Struct(">QIQ")
ENTRY_HEAD_BYTES = _HEAD.size
SCATTERED = 0x01  # flags: a seq_offsets column follows the topic
BATCHED = 0x02  # flags: batched by its source already: the worker sends it without linger


class RecordsEntry(NamedTuple):
    conn_id: int
    base_seq: int
    count: int
    partition: int
    received_ms: int
    ack: int
    topic: str
    records: memoryview
    # Big-endian u32 sequence offsets from base_seq, one per record; None: consecutive.
    seq_offsets: memoryview | None
    batched: bool = False  # flags & BATCHED


def entry_head(
    conn_id: int,
    base_seq: int,
    count: int,
    partition: int,
    received_ms: int,
    ack: int,
    topic: bytes,
    seq_offsets: bytes | None = None,
    batched: bool = False,
) -> bytes:
    """Everything of a records entry before its records section."""
    flags = (0 if seq_offsets is None else SCATTERED) | (BATCHED if batched else 0)
    head = _HEAD.pack(conn_id, base_seq, count, partition, received_ms, ack, flags, len(topic))
    return head + topic if seq_offsets is None else head + topic + seq_offsets


def decode_records_entry(entry: memoryview) -> RecordsEntry:
    conn_id, base_seq, count, partition, received_ms, ack, flags, topic_len = _HEAD.unpack_from(
        entry, 0
    )
    start = _HEAD.size + topic_len
    topic = str(entry[_HEAD.size : start], "utf-8")
    offsets = None
    if flags & SCATTERED:
        offsets = entry[start : start + 4 * count]
        start += 4 * count
    return RecordsEntry(conn_id, base_seq, count, partition, received_ms, ack, topic,
                        entry[start:], offsets, bool(flags & BATCHED))  # fmt: skip


def seq_runs(seq_offsets, start: int, count: int) -> list[tuple[int, int, int]]:
    """The records ``start``.. ``start + count - 1`` of a scattered entry as runs of
    consecutive sequence numbers: ``(first seq offset, index in the entry, length)``.

    The rare path (ingest partitioned the frame), so a plain loop per record.
    """
    offsets = struct.unpack_from(f">{count}I", seq_offsets, 4 * start)
    runs = []
    run_start = 0
    for i in range(1, count + 1):
        if i == count or offsets[i] != offsets[i - 1] + 1:
            runs.append((offsets[run_start], start + run_start, i - run_start))
            run_start = i
    return runs


def encode_report_entry(
    conn_id: int, records: int, report_frame: bytes, written_ns: int = 0
) -> bytes:
    """A reports-ring entry: ``report_frame`` reports ``records`` records of ``conn_id``."""
    return _REPORT_HEAD.pack(conn_id, records, written_ns) + report_frame


def decode_report_entry(entry: memoryview) -> tuple[int, int, int, memoryview]:
    """``(conn_id, records reported, written_ns, REPORT frame)``."""
    conn_id, records, written_ns = _REPORT_HEAD.unpack_from(entry, 0)
    return conn_id, records, written_ns, entry[_REPORT_HEAD.size :]
