"""The entries ingest and workers exchange through their rings (pure: bytes <-> values).

Records ring (ingest -> worker), one entry per *entry*: the records of one PRODUCE frame
for one partition, with where they came from::

    conn_id u64 | base_seq u64 | count u32 | partition i32 | received_ms i64 | topic_len u16
    | topic utf-8 | records section (the client's PRODUCE layout, see records)

The records section is copied verbatim from the client's frame, so ingest routes a frame with
no per-record work and the worker decodes it once with ``iter_records``.

Reports ring (worker -> ingest), one entry per group of report runs for one connection::

    conn_id u64 | REPORT frame (codec.encode_reports: length prefix included)

so ingest forwards it to the client as it is, without decoding it.

Records entries outlive the daemon (ring files are adopted by the next start), so their format
is versioned: ``RECORDS_ENTRY_VERSION`` is written into every records ring's header and a ring
of another version is never decoded (the daemon moves it aside). Change the layout above, bump
it (a unit test pins the layout to the version).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "ENTRY_HEAD_BYTES",
    "RECORDS_ENTRY_VERSION",
    "RecordsEntry",
    "decode_records_entry",
    "decode_report_entry",
    "encode_report_entry",
    "entry_head",
]

# The one version of the records-entry layout; see the module docstring.
RECORDS_ENTRY_VERSION = 1
_HEAD = struct.Struct(">QQIiqH")
_CONN = struct.Struct(">Q")
ENTRY_HEAD_BYTES = _HEAD.size


class RecordsEntry(NamedTuple):
    conn_id: int
    base_seq: int
    count: int
    partition: int
    received_ms: int
    topic: str
    records: memoryview


def entry_head(
    conn_id: int, base_seq: int, count: int, partition: int, received_ms: int, topic: bytes
) -> bytes:
    """Everything of an entry entry before its records section."""
    return _HEAD.pack(conn_id, base_seq, count, partition, received_ms, len(topic)) + topic


def decode_records_entry(entry: memoryview) -> RecordsEntry:
    conn_id, base_seq, count, partition, received_ms, topic_len = _HEAD.unpack_from(entry, 0)
    start = _HEAD.size
    topic = bytes(entry[start : start + topic_len]).decode()
    records = entry[start + topic_len :]
    return RecordsEntry(conn_id, base_seq, count, partition, received_ms, topic, records)


def encode_report_entry(conn_id: int, reports_payload: bytes) -> bytes:
    return _CONN.pack(conn_id) + reports_payload


def decode_report_entry(entry: memoryview) -> tuple[int, memoryview]:
    (conn_id,) = _CONN.unpack_from(entry, 0)
    return conn_id, entry[_CONN.size :]
