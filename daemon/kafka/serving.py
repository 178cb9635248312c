"""The broker side of the four Kafka APIs kpd's listener serves (pure: no I/O, no clock).

kpd's Kafka-protocol listener (``socket.kafka``) poses as a broker to unmodified Kafka clients.
This module owns what that takes on the wire, and nothing else:

* ``ADVERTISED``: the APIs and versions kpd implements as a broker — ApiVersions, Metadata,
  InitProducerId, Produce (RecordBatch v2, so v3+) — so clients negotiate down to these. The
  only other entries of the ApiVersions answer are ``FEATURE_MARKERS``, which librdkafka needs
  to see before it writes v2 batches; the transactional APIs are not listed.
* ``decode_request``: a request payload (the bytes after the 4-byte size) into a ``Request``,
  or a ``RequestRefused`` saying whether an answer is possible. Request header v1 (classic) or
  v2 (flexible APIs: a tagged-field section after the client id, which stays a classic
  int16-length string — RequestHeader.json "flexibleVersions": "none" for ClientId).
* ``encode_response``: the response frame (size prefix, response header v0 or v1, body).
  ApiVersions responses always use header v0 (KIP-511), and an ApiVersions request of a version
  kpd does not know is answered with a v0 body: UNSUPPORTED_VERSION plus the advertised table,
  so the client retries with a version both sides know (ApiVersionsResponse.json).
* ``encode_produce_response``: a Produce answer from plain tuples.

The message codecs are ``messages``' (the same schemas the producer engine encodes requests
with): one schema per API, both directions. Record batches are ``incoming``'s. Produce, the
one request a client sends hundreds of times a second, is decoded and answered by straight
code written from the same schema (ProduceRequest.json / ProduceResponse.json, v3-v11): the
schema walk cost ~20 µs per request, a third of the listener's own work on one (issue 20).
Tests hold both to the schema codec's bytes and values, malformed input included.

Imports only ``daemon.kafka`` siblings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from types import MappingProxyType

from .errors import ErrorCode
from .headers import encode_response
from .messages import API_VERSIONS, INIT_PRODUCER_ID, METADATA, PRODUCE, ApiSpec
from .primitives import ProtocolError, Reader
from .varint import decode_uvarint, encode_uvarint

__all__ = [
    "ADVERTISED",
    "Request",
    "RequestRefused",
    "api_versions_body",
    "decode_request",
    "encode_produce_response",
    "encode_response",
]

# api key -> (spec, lowest version served, highest version served). Produce starts at v3, the
# first version that carries RecordBatch v2 (the only record format kpd reads). Every version in
# a range must be one ``messages`` compiles (ApiSpec.min_version..max_version).
ADVERTISED = MappingProxyType(
    {
        API_VERSIONS.key: (API_VERSIONS, 0, 3),
        METADATA.key: (METADATA, 1, 12),
        INIT_PRODUCER_ID.key: (INIT_PRODUCER_ID, 0, 4),
        PRODUCE.key: (PRODUCE, 3, 11),
    }
)
for _spec, _low, _high in ADVERTISED.values():
    assert _spec.min_version <= _low <= _high <= _spec.max_version, _spec.name

# Listed in ApiVersions but never served: librdkafka enables features by the versions a broker
# lists, not by the APIs a producer uses (rdkafka_feature.c): RecordBatch v2 — hence
# idempotence — needs Produce v3 *and* Fetch v4, zstd Produce v7 and Fetch v10, lz4
# FindCoordinator v0. A request of these is refused like any unserved one (the connection is
# closed); a producer never sends them (FindCoordinator only with a transactional.id).
FEATURE_MARKERS = MappingProxyType({1: (4, 10), 10: (0, 0)})  # Fetch, FindCoordinator

_HEAD = struct.Struct(">hhi")  # api_key, api_version, correlation_id
_FIRST_FLEXIBLE_PRODUCE = 9  # ProduceRequest.json / ProduceResponse.json "flexibleVersions"
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
# PartitionProduceResponse: index, error code, base offset, log-append time (v2+), log start
# offset (v5+).
_PARTITION_V3 = struct.Struct(">ihqq")
_PARTITION_V5 = struct.Struct(">ihqqq")
_ACKS_TIMEOUT = struct.Struct(">hi")
_NO_TAGS = b"\x00"  # an empty tagged-field section


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request of an advertised API and version."""

    api: ApiSpec
    version: int
    correlation_id: int
    client_id: str | None
    body: dict


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """A request kpd does not serve. ``answer`` is the response frame to send, when Kafka's
    rules give one (an ApiVersions request of an unknown version); otherwise the connection is
    closed, as a broker closes it for an API or version it does not know."""

    api_key: int
    version: int
    correlation_id: int
    reason: str
    answer: bytes | None = None


def api_versions_body(error_code: int = ErrorCode.NONE) -> dict:
    """The ApiVersions response body: ``ADVERTISED`` and ``error_code``."""
    versions = {key: (low, high) for key, (_, low, high) in ADVERTISED.items()}
    versions.update(FEATURE_MARKERS)
    keys = [
        {"api_key": key, "min_version": low, "max_version": high}
        for key, (low, high) in sorted(versions.items())
    ]
    return {"error_code": error_code, "api_keys": keys, "throttle_time_ms": 0}


def decode_request(payload) -> Request | RequestRefused:
    """Decode one request payload. Raises ``ProtocolError`` only when not even the fixed
    header (api key, version, correlation id) is there or the body does not parse: the
    connection can only be closed then."""
    if len(payload) < _HEAD.size:
        raise ProtocolError(f"request of {len(payload)} bytes has no header")
    api_key, version, correlation_id = _HEAD.unpack_from(payload, 0)
    served = ADVERTISED.get(api_key)
    if served is None:
        return RequestRefused(
            api_key, version, correlation_id, f"API key {api_key} is not served by kpd"
        )
    api, low, high = served
    if not low <= version <= high:
        reason = f"{api.name} v{version} is not served (kpd serves v{low}-v{high})"
        answer = None
        if api is API_VERSIONS:
            # KIP-511: header v0 and a v0 body, which every client version can read.
            answer = encode_response(
                API_VERSIONS, 0, correlation_id, api_versions_body(ErrorCode.UNSUPPORTED_VERSION)
            )
        return RequestRefused(api_key, version, correlation_id, reason, answer)
    reader = Reader(payload, _HEAD.size)
    client_id = reader.nullable_string()
    if api.request_header_version(version) >= 2:
        reader.skip_tagged_fields()
    if api is PRODUCE:
        body = _decode_produce(reader, version)
    else:
        body = api.decode_request(version, payload, reader.pos)
    return Request(api, version, correlation_id, client_id, body)


def _decode_produce(reader: Reader, version: int) -> dict:
    """A ProduceRequest body (v3+), as ``PRODUCE.decode_request`` gives it (but each
    partition's records a view of ``reader``'s buffer, not a copy), read with plain ``struct``
    calls and index arithmetic (a handful of calls where the schema walk made ~70)."""
    buf, pos = reader.buf, reader.pos
    try:
        return _produce_body(buf, pos, version >= _FIRST_FLEXIBLE_PRODUCE)
    except (struct.error, IndexError, ValueError) as exc:
        # struct.error/IndexError: a read past the end; ValueError: a corrupt varint.
        raise ProtocolError(f"cannot decode ProduceRequest v{version}: {exc}") from None
    except ProtocolError as exc:
        raise ProtocolError(f"cannot decode ProduceRequest v{version}: {exc}") from None


def _produce_body(buf: memoryview, pos: int, flexible: bool) -> dict:
    transactional_id, pos = _text(buf, pos, flexible, True)
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(buf, pos)
    pos += _ACKS_TIMEOUT.size
    topics = []
    count, pos = _array_length(buf, pos, flexible)
    for _ in range(count):
        name, pos = _text(buf, pos, flexible, False)
        partitions = []
        n, pos = _array_length(buf, pos, flexible)
        for _ in range(n):
            (index,) = _INT32.unpack_from(buf, pos)
            length, pos = _length(buf, pos + 4, flexible, _INT32)
            if length is None:
                records = None
            else:
                _need(buf, pos, length)
                records = buf[pos : pos + length]  # a view: read_batch copies what it keeps
                pos += length
            partitions.append({"index": index, "records": records})
            if flexible:  # the common empty tagged-field section without a call
                pos = pos + 1 if buf[pos] == 0 else _skip_tags(buf, pos)
        topics.append({"name": name, "partition_data": partitions})
        if flexible:
            pos = pos + 1 if buf[pos] == 0 else _skip_tags(buf, pos)
    if flexible:
        pos = pos + 1 if buf[pos] == 0 else _skip_tags(buf, pos)
    if pos != len(buf):
        raise ProtocolError(f"{len(buf) - pos} bytes left over")
    return {"transactional_id": transactional_id, "acks": acks, "timeout_ms": timeout_ms,
            "topic_data": topics}  # fmt: skip


def _length(buf: memoryview, pos: int, flexible: bool, classic: struct.Struct):
    """``(length or None for null, position after it)``: a compact (uvarint N + 1) or a
    classic (``classic``-sized, -1 null) length prefix."""
    if flexible:
        value = buf[pos]
        if value < 0x80:
            pos += 1
        else:
            value, pos = decode_uvarint(buf, pos)
        return (None if value == 0 else value - 1), pos
    (value,) = classic.unpack_from(buf, pos)
    if value < -1:
        raise ProtocolError(f"negative length {value} at offset {pos}")
    return (None if value == -1 else value), pos + classic.size


def _need(buf: memoryview, pos: int, size: int) -> None:
    if size > len(buf) - pos:
        raise ProtocolError(f"need {size} bytes at offset {pos}, only {len(buf) - pos} left")


def _text(buf: memoryview, pos: int, flexible: bool, nullable: bool):
    length, pos = _length(buf, pos, flexible, _INT16)
    if length is None:
        if nullable:
            return None, pos
        raise ProtocolError(f"null string at offset {pos} where null is not allowed")
    _need(buf, pos, length)
    try:
        return str(buf[pos : pos + length], "utf-8"), pos + length
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"invalid UTF-8 in string at offset {pos}: {exc}") from None


def _array_length(buf: memoryview, pos: int, flexible: bool) -> tuple[int, int]:
    count, pos = _length(buf, pos, flexible, _INT32)
    if count is None:
        raise ProtocolError(f"null array at offset {pos} where null is not allowed")
    if count > len(buf) - pos:  # each element takes a byte at least
        raise ProtocolError(f"array of {count} elements cannot fit in {len(buf) - pos} bytes")
    return count, pos


def _skip_tags(buf: memoryview, pos: int) -> int:
    """Past a tagged-field section (KIP-482); no Produce request field is tagged, so every
    tag is one kpd does not know and skips."""
    count, pos = decode_uvarint(buf, pos)
    for _ in range(count):
        _, pos = decode_uvarint(buf, pos)  # the tag
        size, pos = decode_uvarint(buf, pos)
        _need(buf, pos, size)
        pos += size
    return pos


def encode_produce_response(version: int, correlation_id: int, topics, throttle_ms: int) -> bytes:
    """A ProduceResponse frame (v3+), as ``encode_response(PRODUCE, ...)`` writes it:
    ``topics`` is ``[(name, [(index, error code, base offset, log-append time), ...]), ...]``;
    the log start offset is -1 (unknown), no record errors, no error message, no leader hint
    (a tagged field left out at its default)."""
    flexible = version >= _FIRST_FLEXIBLE_PRODUCE
    out = [b"", _INT32.pack(correlation_id)]
    if flexible:
        out.append(_NO_TAGS)  # response header v1
    _array_head(len(topics), flexible, out)
    # v8+: an empty RecordErrors array and a null ErrorMessage; flexible: the tags section.
    if flexible:
        partition_tail = b"\x01\x00\x00"
    elif version >= 8:
        partition_tail = b"\x00\x00\x00\x00\xff\xff"
    else:
        partition_tail = b""
    with_log_start = version >= 5
    for name, partitions in topics:
        encoded = name.encode()
        if flexible:
            out.append(encode_uvarint(len(encoded) + 1))
        else:
            out.append(_INT16.pack(len(encoded)))
        out.append(encoded)
        _array_head(len(partitions), flexible, out)
        for index, error, base_offset, append_time in partitions:
            if with_log_start:
                out.append(_PARTITION_V5.pack(index, error, base_offset, append_time, -1))
            else:
                out.append(_PARTITION_V3.pack(index, error, base_offset, append_time))
            out.append(partition_tail)
        if flexible:
            out.append(_NO_TAGS)
    out.append(_INT32.pack(throttle_ms))
    if flexible:
        out.append(_NO_TAGS)
    out[0] = _INT32.pack(sum(map(len, out)))
    return b"".join(out)


def _array_head(count: int, flexible: bool, out: list) -> None:
    out.append(encode_uvarint(count + 1) if flexible else _INT32.pack(count))
