"""The compression codecs of Kafka record batches (pure: no I/O, no clock, no logging).

Owns the codec ids of the RecordBatch ``attributes`` field (bits 0-2), their names as Kafka's
``compression.type`` spells them, the level ranges and defaults of Kafka's
``compression.<codec>.level`` configs (KIP-390), and the exact container each codec must use so
that Kafka's Java reader and librdkafka accept what kpd writes:

* gzip   — an RFC 1952 gzip member (Java ``GZIPOutputStream``), not a bare zlib stream.
* snappy — the xerial snappy-java framing that Java's ``SnappyOutputStream`` writes: a 16-byte
  header then ``[int32 BE length][raw snappy block]`` chunks. Java's ``SnappyInputStream`` also
  reads a bare raw-snappy buffer when the header is missing, and librdkafka writes exactly that,
  so the reader here accepts both. (cramjam's ``snappy.compress`` is Google's *framing* format,
  which Kafka does not read: only the ``*_raw`` functions are used.)
* lz4    — an LZ4 frame with independent blocks: Java's ``KafkaLZ4BlockInputStream`` throws
  "Dependent block stream is unsupported" on python-lz4's default linked blocks.
* zstd   — a zstd frame; Java streams it without the content size, so the reader never relies
  on the frame header's content size.

Must not import anything from kpd outside ``daemon.kafka``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping
from types import MappingProxyType

import cramjam
import lz4.frame
import zstandard

__all__ = [
    "CODEC_IDS",
    "CODEC_NAMES",
    "GZIP",
    "LEVEL_RANGES",
    "LZ4",
    "NONE",
    "SNAPPY",
    "ZSTD",
    "CompressionError",
    "check_level",
    "codec_id",
    "codec_name",
    "compress",
    "decompress",
    "default_level",
]

NONE = 0
GZIP = 1
SNAPPY = 2
LZ4 = 3
ZSTD = 4

CODEC_NAMES: Mapping[int, str] = MappingProxyType(
    {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}
)
CODEC_IDS: Mapping[str, int] = MappingProxyType({name: cid for cid, name in CODEC_NAMES.items()})

# (min, max, default) of Kafka's compression.gzip.level / compression.lz4.level /
# compression.zstd.level (KIP-390; Java GzipCompression, Lz4Compression, ZstdCompression).
# gzip also takes -1, Deflater.DEFAULT_COMPRESSION, which is its default (zlib's level 6).
LEVEL_RANGES: Mapping[int, tuple[int, int, int]] = MappingProxyType(
    {
        GZIP: (1, 9, -1),
        LZ4: (1, 17, 9),
        ZSTD: (-131072, 22, 3),
    }
)

# Java's Lz4BlockOutputStream uses lz4-java's *fast* compressor at the default level 9 and the
# HC compressor only for an explicit other level; python-lz4 level 0 is that fast compressor.
_LZ4_JAVA_DEFAULT_LEVEL = 9
_LZ4_PY_FAST_LEVEL = 0
_LZ4_PY_MAX_LEVEL = 16  # python-lz4 treats anything above as 16; Kafka allows 17.

# xerial snappy-java stream header: magic "\x82SNAPPY\x00", int32 version 1, int32 min
# compatible version 1 (SnappyCodec.java). Java's SnappyOutputStream default block is 32 KiB.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024
_INT32 = struct.Struct(">i")

# What each library raises on malformed input (lz4 raises RuntimeError).
_LIBRARY_ERRORS = (zlib.error, cramjam.DecompressionError, RuntimeError, zstandard.ZstdError)

# zlib wbits: 16 + 15 writes a gzip member; 32 + 15 reads gzip or zlib by auto-detection.
_GZIP_WBITS = 31
_AUTO_WBITS = 47


class CompressionError(ValueError):
    """Input that a codec cannot decompress, or a codec/level Kafka does not define."""


def codec_name(codec: int) -> str:
    """Kafka's ``compression.type`` name of a codec id."""
    try:
        return CODEC_NAMES[codec]
    except KeyError:
        raise CompressionError(f"unknown compression codec id {codec}") from None


def codec_id(name: str) -> int:
    """The codec id of a ``compression.type`` name (case-insensitive, as Kafka accepts it)."""
    try:
        return CODEC_IDS[name.lower()]
    except KeyError:
        raise CompressionError(f"unknown compression.type {name!r}") from None


def default_level(codec: int) -> int | None:
    """Kafka's default level of a codec, or None for a codec without levels."""
    bounds = LEVEL_RANGES.get(codec)
    return bounds[2] if bounds else None


def check_level(codec: int, level: int | None) -> int | None:
    """Validate a Kafka ``compression.<codec>.level`` value; return the level to use
    (Kafka's default for None). Raises ``CompressionError`` outside Kafka's range."""
    codec_name(codec)
    bounds = LEVEL_RANGES.get(codec)
    if bounds is None:
        if level is not None:
            raise CompressionError(f"{codec_name(codec)} takes no compression level")
        return None
    low, high, default = bounds
    if level is None:
        return default
    if level == default or low <= level <= high:
        return level
    raise CompressionError(f"{codec_name(codec)} level {level} outside [{low}, {high}]")


def compress(codec: int, data: bytes | bytearray | memoryview, level: int | None = None) -> bytes:
    """Compress ``data`` into the container Kafka expects for ``codec``.

    ``level`` is the Kafka config value (None = Kafka's default) and is validated against
    Kafka's range, so a config error surfaces here rather than as a broker rejection.
    """
    level = check_level(codec, level)  # also rejects an unknown codec id
    if codec == NONE:
        return bytes(data)
    if codec == GZIP:
        return zlib.compress(data, level, _GZIP_WBITS)
    if codec == SNAPPY:
        return _xerial_compress(data)
    if codec == LZ4:
        return _lz4_compress(data, level)
    return zstandard.ZstdCompressor(level=level).compress(data)


def decompress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """Decompress one codec's container; raise ``CompressionError`` on malformed input."""
    decoder = _DECODERS.get(codec)
    if decoder is None:
        raise CompressionError(f"unknown compression codec id {codec}")
    try:
        return decoder(data)
    except _LIBRARY_ERRORS as exc:
        raise CompressionError(f"{codec_name(codec)} decompression failed: {exc}") from exc


def _lz4_compress(data: bytes | bytearray | memoryview, level: int) -> bytes:
    py_level = _LZ4_PY_FAST_LEVEL if level == _LZ4_JAVA_DEFAULT_LEVEL else level
    return lz4.frame.compress(
        data,
        compression_level=min(py_level, _LZ4_PY_MAX_LEVEL),
        block_linked=False,  # Kafka's Java reader rejects dependent blocks
        store_size=False,  # as Java writes it: no content-size field in the frame descriptor
    )


def _xerial_compress(data: bytes | bytearray | memoryview) -> bytes:
    view = memoryview(data)
    out = bytearray(_XERIAL_HEADER)
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK])
        out += _INT32.pack(len(block))
        out += block
    return bytes(out)


def _snappy_decompress(data: bytes | bytearray | memoryview) -> bytes:
    view = memoryview(data)
    if bytes(view[: len(_XERIAL_MAGIC)]) != _XERIAL_MAGIC:
        # No xerial header: a bare raw-snappy buffer, as librdkafka writes it.
        return bytes(cramjam.snappy.decompress_raw(view))
    pos = len(_XERIAL_HEADER)
    if len(view) < pos:
        raise CompressionError("truncated xerial snappy header")
    out = bytearray()
    while pos < len(view):
        if pos + 4 > len(view):
            raise CompressionError("truncated xerial snappy chunk length")
        (size,) = _INT32.unpack_from(view, pos)
        pos += 4
        if size < 0 or pos + size > len(view):
            raise CompressionError("truncated xerial snappy chunk")
        out += cramjam.snappy.decompress_raw(view[pos : pos + size])
        pos += size
    return bytes(out)


def _gzip_decompress(data: bytes | bytearray | memoryview) -> bytes:
    # Java's GZIPInputStream reads concatenated members; so does this loop.
    out = bytearray()
    rest = bytes(data)
    if not rest:
        raise CompressionError("empty gzip stream")
    while rest:
        decoder = zlib.decompressobj(_AUTO_WBITS)
        out += decoder.decompress(rest)
        if not decoder.eof:
            raise CompressionError("truncated gzip stream")
        rest = decoder.unused_data
    return bytes(out)


def _lz4_decompress(data: bytes | bytearray | memoryview) -> bytes:
    return lz4.frame.decompress(data)


def _zstd_decompress(data: bytes | bytearray | memoryview) -> bytes:
    # A streaming decoder: Java's ZstdOutputStream omits the content size that
    # ZstdDecompressor.decompress() would need. One decoder per frame, so a truncated last
    # frame is caught by ``eof`` and concatenated frames are all read.
    out = bytearray()
    rest = bytes(data)
    if not rest:
        raise CompressionError("empty zstd stream")
    context = zstandard.ZstdDecompressor()
    while rest:
        decoder = context.decompressobj()
        out += decoder.decompress(rest)
        if not decoder.eof:
            raise CompressionError("truncated zstd frame")
        rest = decoder.unused_data
    return bytes(out)


_DECODERS: Mapping[int, Callable[[bytes | bytearray | memoryview], bytes]] = MappingProxyType(
    {
        NONE: bytes,
        GZIP: _gzip_decompress,
        SNAPPY: _snappy_decompress,
        LZ4: _lz4_decompress,
        ZSTD: _zstd_decompress,
    }
)
