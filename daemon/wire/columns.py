"""A ring entry's records section as the columns the engine's packed append reads.

``packed_columns`` gives them for a section without headers: plain (kpd's socket clients)
through ``kpd.protocol.records.plain_columns``, or with a timestamp per record (the Kafka
listener's) through ``stamped_columns``: ``kpd.protocol.records.stamped_columns`` with the
accelerator's ``stamped_lengths`` doing the scan and checks in one C pass when it is built,
the columns then native i64/i32 buffers that ``append_stamped`` reads without an int object
per record. A section the C scan refuses goes through the pure one, which raises the exact
error.

Pure. Imports only kpd's protocol and ``daemon.accel``.
"""

from __future__ import annotations

from collections.abc import Sequence

from daemon.accel import native
from kpd.protocol.records import LAYOUT_HAS_TIMESTAMPS, plain_columns
from kpd.protocol.records import stamped_columns as stamped_columns_python

__all__ = ["packed_columns", "stamped_columns"]


def packed_columns(
    records, count: int
) -> tuple[Sequence[int] | None, Sequence[int], Sequence[int], int] | None:
    """``(timestamps, key_lens, value_lens, data_start)`` of a section without headers
    (``timestamps`` None: the section has none), else None. Validates like ``iter_records``;
    the layout byte picks the one scan that applies."""
    if records and records[0] == LAYOUT_HAS_TIMESTAMPS:
        return stamped_columns(records, count)
    columns = plain_columns(records, count)
    return None if columns is None else (None, *columns)


def stamped_columns(
    records, count: int
) -> tuple[Sequence[int], Sequence[int], Sequence[int], int] | None:
    """``(timestamps, key_lens, value_lens, data_start)``, or None when the section is not
    one with timestamps and no headers (see ``kpd.protocol.records.stamped_columns``)."""
    if native is not None and count > 0 and records and records[0] == LAYOUT_HAS_TIMESTAMPS:
        try:
            stamps, keys, values, start = native.stamped_lengths(records, count)
        except ValueError:
            pass  # malformed: the pure scan raises the exact BadFrameError
        else:
            return (memoryview(stamps).cast("q"), memoryview(keys).cast("i"),
                    memoryview(values).cast("i"), start)  # fmt: skip
    return stamped_columns_python(records, count)
