"""The plain-lines listener's pure parts: cutting a byte stream into lines, keys from lines."""

from __future__ import annotations

from daemon.ingest.lines import LineSplitter, split_key


def _feed_all(splitter: LineSplitter, chunks: list[bytes]) -> tuple[list[bytes], int, int]:
    lines, too_long, empty = [], 0, 0
    for chunk in chunks:
        got = splitter.feed(chunk)
        lines += got.lines
        too_long += got.too_long
        empty += got.empty
    return lines, too_long, empty


def test_lines_are_cut_at_newlines_whatever_the_chunks():
    data = b"one\ntwo\r\n\n\nthree has spaces\n\x00\xff binary\nlast"
    for size in (1, 2, 3, 7, len(data)):
        splitter = LineSplitter(100)
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        lines, too_long, empty = _feed_all(splitter, chunks)
        assert lines == [b"one", b"two\r", b"three has spaces", b"\x00\xff binary"], size
        assert too_long == 0
        assert empty == 2
        assert splitter.finish() == b"last"  # the writer closed: the unterminated line counts
        assert splitter.finish() is None


def test_a_line_of_exactly_the_limit_passes_and_one_byte_more_is_skipped_whole():
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd\nabcde\nok\n") == ([b"abcd", b"ok"], 1, 0)


def test_a_too_long_line_over_many_chunks_is_counted_once_and_never_buffered():
    splitter = LineSplitter(10)
    lines, too_long, empty = _feed_all(
        splitter, [b"before\n", b"x" * 8, b"x" * 8, b"x" * 1000, b"y\nafter\n"]
    )
    assert (lines, too_long, empty) == ([b"before", b"after"], 1, 0)
    splitter = LineSplitter(10)
    splitter.feed(b"z" * 10)
    assert splitter.buffered == 10
    splitter.feed(b"z")
    assert splitter.buffered == 0  # skipping: nothing of the line is kept
    assert splitter.finish() is None  # a too-long unterminated line is no record either


def test_an_empty_line_is_no_record_but_is_counted_and_a_carriage_return_is_not_empty():
    splitter = LineSplitter(100)
    assert splitter.feed(b"\n\na\n\r\n") == ([b"a", b"\r"], 0, 2)
    assert splitter.feed(b"b") == ([], 0, 0)
    assert splitter.feed(b"\n\n") == ([b"b"], 0, 1)  # the newline ending b is not an empty line
    assert splitter.finish() is None  # nothing after the last newline: no line at all


def test_the_tail_of_a_too_long_line_is_not_counted_as_an_empty_line():
    splitter = LineSplitter(3)
    assert splitter.feed(b"toolong") == ([], 1, 0)
    assert splitter.feed(b"\nok\n") == ([b"ok"], 0, 0)


def test_a_key_is_cut_at_the_first_separator_and_a_line_without_one_is_keyless():
    assert split_key(b"k\tv\tw", b"\t") == (b"k", b"v\tw")
    assert split_key(b"\tv", b"\t") == (b"", b"v")
    assert split_key(b"no tab", b"\t") == (None, b"no tab")
    assert split_key(b"k\tv", None) == (None, b"k\tv")
    assert split_key(b"a::b", b"::") == (b"a", b"b")
