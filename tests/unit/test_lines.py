"""The plain-lines listener's pure parts: cutting a byte stream into lines, keys from lines."""

from __future__ import annotations

from daemon.ingest.lines import LineSplitter, split_key


def _feed_all(splitter: LineSplitter, chunks: list[bytes]) -> tuple[list[bytes], int]:
    lines, too_long = [], 0
    for chunk in chunks:
        got, skipped = splitter.feed(chunk)
        lines += got
        too_long += skipped
    return lines, too_long


def test_lines_are_cut_at_newlines_whatever_the_chunks():
    data = b"one\ntwo\r\n\n\nthree has spaces\n\x00\xff binary\nlast"
    for size in (1, 2, 3, 7, len(data)):
        splitter = LineSplitter(100)
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        lines, too_long = _feed_all(splitter, chunks)
        assert lines == [b"one", b"two\r", b"three has spaces", b"\x00\xff binary"], size
        assert too_long == 0
        assert splitter.finish() == b"last"  # the writer closed: the unterminated line counts
        assert splitter.finish() is None


def test_a_line_of_exactly_the_limit_passes_and_one_byte_more_is_skipped_whole():
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd\nabcde\nok\n") == ([b"abcd", b"ok"], 1)


def test_a_too_long_line_over_many_chunks_is_counted_once_and_never_buffered():
    splitter = LineSplitter(10)
    lines, too_long = _feed_all(
        splitter, [b"before\n", b"x" * 8, b"x" * 8, b"x" * 1000, b"y\nafter\n"]
    )
    assert (lines, too_long) == ([b"before", b"after"], 1)
    splitter = LineSplitter(10)
    splitter.feed(b"z" * 10)
    assert splitter.buffered == 10
    splitter.feed(b"z")
    assert splitter.buffered == 0  # skipping: nothing of the line is kept
    assert splitter.finish() is None  # a too-long unterminated line is no record either


def test_a_key_is_cut_at_the_first_separator_and_a_line_without_one_is_keyless():
    assert split_key(b"k\tv\tw", b"\t") == (b"k", b"v\tw")
    assert split_key(b"\tv", b"\t") == (b"", b"v")
    assert split_key(b"no tab", b"\t") == (None, b"no tab")
    assert split_key(b"k\tv", None) == (None, b"k\tv")
    assert split_key(b"a::b", b"::") == (b"a", b"b")
