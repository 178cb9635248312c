"""Request and response headers, and whole size-prefixed frames (pure).

Owns the framing of one Kafka exchange: ``encode_request`` builds the frame a client writes
(``encode_request_parts``: the same frame as its parts, for a large one)
(4-byte big-endian size, request header, body) and ``decode_response`` reads the payload a
``FrameSplitter`` hands back. The reverse pair (``decode_request`` / ``encode_response``) serves
fake brokers in tests.

Header versions (RequestHeader.json v0-v2, ResponseHeader.json v0-v1):

* request header v1 = api_key int16, api_version int16, correlation_id int32, client_id
  NULLABLE_STRING; v2 (flexible APIs) appends a tagged-field section. The client id stays a
  *classic* int16-length string even in v2 ("flexibleVersions": "none" in RequestHeader.json) so
  that any broker can read the header of an ApiVersions request of a version it does not know.
* response header v0 = correlation_id int32; v1 (flexible APIs) appends a tagged-field section —
  except for ApiVersions, whose responses always use v0 (KIP-511; see ``ApiSpec``).

Imports only ``primitives`` and ``messages``.
"""

from __future__ import annotations

import struct

from .messages import API_BY_KEY, ApiSpec
from .primitives import INT32, ProtocolError, Reader, write_nullable_string

__all__ = [
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_request_parts",
    "encode_response",
    "response_correlation_id",
]

_REQUEST_HEAD = struct.Struct(">hhi")  # api_key, api_version, correlation_id
_NO_TAGS = b"\x00"  # an empty tagged-field section: count 0


def _frame(out: list) -> bytes:
    """Fill the size placeholder at ``out[0]`` and join: the one copy of every part."""
    out[0] = INT32.pack(sum(map(len, out)))
    return b"".join(out)


def encode_request(
    api: ApiSpec, version: int, correlation_id: int, client_id: str | None, body: dict
) -> bytes:
    """The whole request frame, size prefix included, ready for ``transport.write``."""
    return b"".join(encode_request_parts(api, version, correlation_id, client_id, body)[0])


def encode_request_parts(
    api: ApiSpec, version: int, correlation_id: int, client_id: str | None, body: dict
) -> tuple[list, int]:
    """``encode_request``'s frame as its parts (the size prefix first), not joined, and its
    size: a large Produce request's record batches can go to ``transport.writelines`` as the
    buffers they are, without one more copy of their bytes."""
    out: list = [b""]
    out.append(_REQUEST_HEAD.pack(api.key, version, correlation_id))
    write_nullable_string(client_id, out)
    if api.request_header_version(version) >= 2:
        out.append(_NO_TAGS)
    api.write_request(version, body, out)
    size = sum(map(len, out))
    out[0] = INT32.pack(size)
    return out, size + 4


def encode_response(api: ApiSpec, version: int, correlation_id: int, body: dict) -> bytes:
    """The whole response frame, size prefix included."""
    out: list = [b"", INT32.pack(correlation_id)]
    if api.response_header_version(version) >= 1:
        out.append(_NO_TAGS)
    api.write_response(version, body, out)
    return _frame(out)


def decode_request(payload) -> tuple[ApiSpec, int, int, str | None, dict]:
    """``(api, version, correlation_id, client_id, body)`` of a request payload (no size)."""
    reader = Reader(payload)
    api_key, version, correlation_id = reader.int16(), reader.int16(), reader.int32()
    api = API_BY_KEY.get(api_key)
    if api is None:
        raise ProtocolError(f"request for API key {api_key}, which kpd does not speak")
    client_id = reader.nullable_string()
    if api.request_header_version(version) >= 2:
        reader.skip_tagged_fields()
    return api, version, correlation_id, client_id, api.decode_request(version, payload, reader.pos)


def response_correlation_id(payload) -> int:
    """The correlation id that starts every response payload, whatever its API and version."""
    if len(payload) < 4:
        raise ProtocolError(f"response of {len(payload)} bytes has no correlation id")
    return INT32.unpack_from(payload, 0)[0]


def decode_response(api: ApiSpec, version: int, payload) -> tuple[int, dict]:
    """``(correlation_id, body)`` of a response payload (no size prefix).

    The caller knows ``api`` and ``version`` from the request it matched by correlation id.
    """
    reader = Reader(payload)
    correlation_id = reader.int32()
    if api.response_header_version(version) >= 1:
        reader.skip_tagged_fields()
    return correlation_id, api.decode_response(version, payload, reader.pos)
