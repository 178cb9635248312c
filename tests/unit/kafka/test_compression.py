"""Compression codecs: the containers Kafka's readers accept, levels, and bad input."""

from __future__ import annotations

import gzip
import random
import struct

import cramjam
import lz4.frame
import pytest
import zstandard

from daemon.kafka.compression import (
    GZIP,
    LZ4,
    NONE,
    SNAPPY,
    ZSTD,
    CompressionError,
    check_level,
    codec_id,
    codec_name,
    compress,
    decompress,
    default_level,
)

ALL_CODECS = [NONE, GZIP, SNAPPY, LZ4, ZSTD]
TEXT = b"kafka producer daemon " * 5000  # compressible, > one 32 KiB snappy block
NOISE = random.Random(7).randbytes(100_000)  # incompressible


@pytest.mark.parametrize("codec", ALL_CODECS)
@pytest.mark.parametrize("data", [b"", b"x", TEXT, NOISE], ids=["empty", "one", "text", "noise"])
def test_every_codec_round_trips(codec: int, data: bytes) -> None:
    assert decompress(codec, compress(codec, data)) == data


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_every_codec_takes_bytearray_and_memoryview(codec: int) -> None:
    assert decompress(codec, compress(codec, memoryview(bytearray(TEXT)))) == TEXT
    assert decompress(codec, memoryview(compress(codec, TEXT))) == TEXT


def test_codec_ids_and_names_are_kafkas() -> None:
    # RecordBatch attributes bits 0-2: none=0 gzip=1 snappy=2 lz4=3 zstd=4.
    assert [codec_id(n) for n in ("none", "gzip", "snappy", "lz4", "zstd")] == [0, 1, 2, 3, 4]
    assert [codec_name(i) for i in range(5)] == ["none", "gzip", "snappy", "lz4", "zstd"]
    assert codec_id("ZSTD") == 4
    with pytest.raises(CompressionError):
        codec_id("brotli")
    with pytest.raises(CompressionError):
        codec_name(5)


def test_gzip_writes_an_rfc1952_member_that_stdlib_gzip_reads() -> None:
    packed = compress(GZIP, TEXT)
    assert packed[:3] == b"\x1f\x8b\x08"  # gzip magic, deflate method
    assert gzip.decompress(packed) == TEXT


def test_gzip_reads_concatenated_members_like_javas_gzipinputstream() -> None:
    assert decompress(GZIP, gzip.compress(b"first ") + gzip.compress(b"second")) == b"first second"


def test_snappy_writes_xerial_framing_with_32k_raw_blocks() -> None:
    packed = compress(SNAPPY, TEXT)
    # snappy-java SnappyCodec header: magic, version 1, min compatible version 1.
    assert packed[:16] == b"\x82SNAPPY\x00" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x01"
    pos, out, blocks = 16, b"", 0
    while pos < len(packed):
        (size,) = struct.unpack_from(">i", packed, pos)
        out += bytes(cramjam.snappy.decompress_raw(packed[pos + 4 : pos + 4 + size]))
        pos += 4 + size
        blocks += 1
    assert out == TEXT
    assert blocks == -(-len(TEXT) // 32768)


def test_snappy_reads_raw_snappy_as_librdkafka_writes_it() -> None:
    raw = bytes(cramjam.snappy.compress_raw(TEXT))
    assert decompress(SNAPPY, raw) == TEXT


def test_lz4_frame_has_independent_blocks_and_no_content_size() -> None:
    packed = compress(LZ4, TEXT)
    assert packed[:4] == b"\x04\x22\x4d\x18"  # LZ4 frame magic 0x184D2204, little-endian
    flg = packed[4]
    assert flg >> 6 == 0b01  # frame format version 1
    assert flg & 0x20  # block independence: Kafka's Java reader requires it
    assert not flg & 0x08  # no content size, as Java's KafkaLZ4BlockOutputStream writes
    assert lz4.frame.decompress(packed) == TEXT


@pytest.mark.parametrize("level", [1, 9, 12, 17])
def test_lz4_accepts_kafkas_level_range(level: int) -> None:
    packed = compress(LZ4, TEXT, level)
    assert packed[4] & 0x20
    assert decompress(LZ4, packed) == TEXT


def test_zstd_reads_frames_without_content_size_as_java_streams_them() -> None:
    streamed = zstandard.ZstdCompressor(write_content_size=False)
    packed = streamed.compress(b"part one ") + streamed.compress(b"part two")
    assert decompress(ZSTD, packed) == b"part one part two"


@pytest.mark.parametrize(
    ("codec", "level"),
    [(GZIP, 1), (GZIP, 9), (GZIP, -1), (LZ4, 1), (LZ4, 17), (ZSTD, -131072), (ZSTD, 22)],
)
def test_levels_inside_kafkas_ranges_are_accepted(codec: int, level: int) -> None:
    assert check_level(codec, level) == level
    assert decompress(codec, compress(codec, TEXT, level)) == TEXT


@pytest.mark.parametrize(
    ("codec", "level"),
    [(GZIP, 0), (GZIP, 10), (LZ4, 0), (LZ4, 18), (ZSTD, 23), (ZSTD, -131073), (SNAPPY, 1)],
)
def test_levels_outside_kafkas_ranges_are_rejected(codec: int, level: int) -> None:
    with pytest.raises(CompressionError):
        check_level(codec, level)
    with pytest.raises(CompressionError):
        compress(codec, TEXT, level)


def test_default_levels_are_kafkas() -> None:
    # compression.gzip.level=-1 (zlib default), compression.lz4.level=9, compression.zstd.level=3
    assert (default_level(GZIP), default_level(LZ4), default_level(ZSTD)) == (-1, 9, 3)
    assert default_level(SNAPPY) is None
    assert check_level(ZSTD, None) == 3


def test_unknown_codec_is_rejected() -> None:
    with pytest.raises(CompressionError):
        compress(7, b"x")
    with pytest.raises(CompressionError):
        decompress(7, b"x")


@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4, ZSTD])
def test_truncated_input_raises_compression_error(codec: int) -> None:
    packed = compress(codec, TEXT)
    with pytest.raises(CompressionError):
        decompress(codec, packed[: len(packed) // 2])


@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4, ZSTD])
def test_garbage_input_raises_compression_error(codec: int) -> None:
    with pytest.raises(CompressionError):
        decompress(codec, b"\xff" * 64)
