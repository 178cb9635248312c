"""A ring entry's records section as packed columns: the layout byte picks the scan, the C
scan and the pure one agree, and a malformed section raises the protocol's exact error."""

from __future__ import annotations

import pytest

from daemon.wire import columns
from kpd.protocol.base import BadFrameError
from kpd.protocol.records import encode_records


def test_a_plain_section_has_no_timestamps_column():
    section = encode_records([(b"k", b"v", None, ()), (None, b"w", None, ())])
    stamps, keys, values, start = columns.packed_columns(section, 2)
    assert stamps is None
    assert (list(keys), list(values), start) == ([1, -1], [1, 1], 1 + 2 * 8)


def test_a_stamped_section_gives_the_same_columns_with_and_without_the_accelerator(monkeypatch):
    section = encode_records([(b"k", b"v", 7, ()), (None, b"w", None, ()), (b"", None, 5, ())])
    got = [list(column) for column in columns.packed_columns(section, 3)[:3]]
    monkeypatch.setattr(columns, "native", None)
    pure = [list(column) for column in columns.packed_columns(section, 3)[:3]]
    assert got == pure == [[7, -1, 5], [1, -1, 0], [1, 1, -1]]


def test_a_section_with_headers_has_no_packed_columns():
    assert columns.packed_columns(encode_records([(b"k", b"v", 7, [("h", b"x")])]), 1) is None


def test_a_malformed_stamped_section_raises_the_protocols_error():
    section = bytearray(encode_records([(b"k", b"v", 7, ())]))
    section[1:9] = (-2).to_bytes(8, "big", signed=True)  # a timestamp below -1
    with pytest.raises(BadFrameError, match="timestamp -2"):
        columns.packed_columns(bytes(section), 1)
