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

The message codecs are ``messages``' (the same schemas the producer engine encodes requests
with): one schema per API, both directions. Record batches are ``incoming``'s.

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

__all__ = [
    "ADVERTISED",
    "Request",
    "RequestRefused",
    "api_versions_body",
    "decode_request",
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
    body = api.decode_request(version, payload, reader.pos)
    return Request(api, version, correlation_id, client_id, body)
