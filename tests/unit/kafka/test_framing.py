"""FrameSplitter: any chunking of a stream of size-prefixed frames yields the same frames, and a
size prefix that cannot be right stops the stream.
"""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.kafka.framing import FrameSplitter
from daemon.kafka.primitives import ProtocolError

PAYLOADS = [
    struct.pack(">i", 1) + b"first response",  # correlation id 1 + body
    b"",  # a zero-length frame is well formed
    struct.pack(">i", 2) + bytes(range(256)) * 3,  # longer than one small read
    struct.pack(">i", 3),
]
STREAM = b"".join(struct.pack(">i", len(payload)) + payload for payload in PAYLOADS)


def feed_in_chunks(splitter, stream, cuts):
    frames = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        frames += splitter.feed(stream[start:cut])
        start = cut
    return frames


def test_whole_stream_in_one_feed_yields_every_frame():
    splitter = FrameSplitter()
    assert splitter.feed(STREAM) == PAYLOADS
    assert splitter.pending_bytes == 0


def test_stream_split_at_every_byte_boundary_yields_the_same_frames():
    for cut in range(len(STREAM) + 1):
        splitter = FrameSplitter()
        assert feed_in_chunks(splitter, STREAM, [cut]) == PAYLOADS, f"split at {cut}"
        assert splitter.pending_bytes == 0


def test_stream_fed_one_byte_at_a_time_yields_the_same_frames():
    splitter = FrameSplitter()
    assert feed_in_chunks(splitter, STREAM, range(1, len(STREAM))) == PAYLOADS


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_stream_in_random_chunks_yields_the_same_frames(cuts):
    splitter = FrameSplitter()
    assert feed_in_chunks(splitter, STREAM, cuts) == PAYLOADS
    assert splitter.pending_bytes == 0


def test_incomplete_frame_is_held_until_its_last_byte_arrives():
    splitter = FrameSplitter()
    frame = struct.pack(">i", 5) + b"hello"
    assert splitter.feed(frame[:-1]) == []
    assert splitter.pending_bytes == len(frame) - 1
    assert splitter.feed(frame[-1:]) == [b"hello"]
    assert splitter.pending_bytes == 0


def test_feed_accepts_bytearray_and_memoryview():
    splitter = FrameSplitter()
    frames = splitter.feed(bytearray(STREAM[:10])) + splitter.feed(memoryview(STREAM)[10:])
    assert frames == PAYLOADS


def test_negative_frame_size_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="frame size -1"):
        FrameSplitter().feed(struct.pack(">i", -1) + b"xx")


def test_frame_larger_than_the_limit_is_rejected_from_its_size_prefix_alone():
    splitter = FrameSplitter(max_frame_bytes=16)
    assert splitter.feed(struct.pack(">i", 16) + b"x" * 16) == [b"x" * 16]  # the limit is allowed
    with pytest.raises(ProtocolError, match="frame size 17"):
        splitter.feed(struct.pack(">i", 17))  # refused before any of its body arrives


def test_default_limit_rejects_a_size_of_two_gigabytes():
    with pytest.raises(ProtocolError):
        FrameSplitter().feed(struct.pack(">i", 2**31 - 1))
