"""Shared vocabulary of the kpd socket protocol: enums, error types, limits, string fields.

Pure (no I/O, no clock, no logging). Owns the numbers every other part of the protocol refers
to — frame types, kpd's error space, ack levels, report statuses — and the two exceptions a
decoder raises. ``docs/protocol.md`` is the normative description; the tests check that its
tables list exactly these values.

Also owns ``Persistence``, the one definition of "may these records be in Kafka" that the
daemon's engine (``daemon.kafka.errors`` re-exports it), a REPORT run and the client's
``DeliveryError`` share.

Must not import anything outside ``kpd.protocol`` (it sits below the client and kpd's ingest
engine, which both import it).
"""

from __future__ import annotations

import struct
from enum import IntEnum

__all__ = [
    "HANDSHAKE_MAX_FRAME_BYTES",
    "MAX_METADATA_TOPICS",
    "MIN_MAX_FRAME_BYTES",
    "PROTOCOL_VERSIONS",
    "AckLevel",
    "BadFrameError",
    "FatalProtocolError",
    "FrameType",
    "KpdErrorCode",
    "KpdProtocolError",
    "Persistence",
    "Status",
    "encode_frame",
    "error_code",
    "is_retriable",
]


class Persistence(IntEnum):
    """Whether records may be in the log. The one definition kpd has: the daemon's engine, the kpd
    socket protocol (a REPORT run's persistence byte carries these values; 0 on a run that did
    not fail) and the client's ``DeliveryError`` all use it.

    A failure's persistence only ever grows over several attempts: once an attempt may have
    written the records, a later clean rejection does not make them "not persisted"
    (``NOT_PERSISTED < POSSIBLY_PERSISTED``)."""

    PERSISTED = 0
    NOT_PERSISTED = 1
    POSSIBLY_PERSISTED = 2


# Protocol versions this codec speaks, lowest and highest (HELLO/WELCOME negotiate within it).
PROTOCOL_VERSIONS = (1, 2)

# Until the handshake is done neither side knows the peer's limit, so both cap frames at a
# size that fits any sane HELLO/WELCOME/ERROR. It also makes a non-kpd peer fail fast: the
# first four bytes of "GET / HTTP/1.1" read as a length of ~1.2 GB.
HANDSHAKE_MAX_FRAME_BYTES = 4096

# A server may not announce a smaller max frame than this: it guarantees room for a
# METADATA_RESPONSE to a full METADATA_REQUEST and for a record of a few tens of KiB.
MIN_MAX_FRAME_BYTES = 64 * 1024

# 128 topics x (2 + 249 name bytes + 6) + 6 header bytes < MIN_MAX_FRAME_BYTES, so a response
# always fits in one frame (Kafka caps topic names at 249 characters).
MAX_METADATA_TOPICS = 128


class FrameType(IntEnum):
    """The byte after the length prefix. C = client->server, S = server->client."""

    HELLO = 0x01  # C, first frame
    WELCOME = 0x02  # S, answer to HELLO
    ERROR = 0x03  # S, connection-level error, then the server closes
    PRODUCE = 0x04  # C, records for one topic and partition
    REPORT = 0x05  # S, delivery reports in runs
    METADATA_REQUEST = 0x06  # C
    METADATA_RESPONSE = 0x07  # S
    PING = 0x08  # C
    PONG = 0x09  # S
    GOODBYE = 0x0A  # C and S: clean close


class AckLevel(IntEnum):
    """When kpd reports a record: never, once it is in a worker ring, once Kafka acked it."""

    NONE = 0
    ACCEPTED = 1
    KAFKA = 2
    # Only valid in a PRODUCE header: "use the default the connection gave in HELLO".
    CONNECTION_DEFAULT = 3


class Status(IntEnum):
    """Outcome of a run of records in a REPORT. 0 is left unused so zeroed memory is invalid."""

    ACCEPTED = 1
    DELIVERED = 2
    FAILED = 3


class KpdErrorCode(IntEnum):
    """kpd's own error space (u16). Ranges: 1-19 connection, 20-39 malformed body,
    40-59 record outcome. Kafka's codes travel separately as ``kafka_error``."""

    NONE = 0
    FRAME_TOO_LARGE = 1
    UNKNOWN_FRAME_TYPE = 2
    UNEXPECTED_FRAME = 3
    BAD_MAGIC = 4
    UNSUPPORTED_VERSION = 5
    SEQUENCE_MISMATCH = 6
    SHUTTING_DOWN = 7
    INTERNAL_ERROR = 8
    TOO_MANY_CONNECTIONS = 9
    BAD_FRAME = 20
    BAD_RECORD_COUNT = 21
    BAD_FLAGS = 22
    BAD_LENGTH = 23
    BAD_STRING = 24
    BAD_FIELD = 25
    UNKNOWN_TOPIC = 40
    TOPIC_NOT_ALLOWED = 41
    INVALID_PARTITION = 42
    RECORD_TOO_LARGE = 43
    BUFFER_FULL = 44
    KAFKA_ERROR = 45
    DELIVERY_TIMEOUT = 46
    INVALID_TOPIC = 47


# Codes after which sending the same records again (on this or a new connection) can succeed
# without the client changing them. KAFKA_ERROR is absent: kpd already retried the retriable
# Kafka errors, so what reaches the client is final (look at kafka_error for details).
_RETRIABLE = frozenset(
    {
        KpdErrorCode.SHUTTING_DOWN,
        KpdErrorCode.BUFFER_FULL,
        KpdErrorCode.DELIVERY_TIMEOUT,
        KpdErrorCode.UNKNOWN_TOPIC,  # the topic may be created meanwhile
    }
)

_KNOWN_CODES = {int(code): code for code in KpdErrorCode}


def error_code(value: int) -> KpdErrorCode | int:
    """The enum member for ``value``, or the bare int for a code newer than this codec.

    Servers may add codes without a version bump; clients treat unknown ones as a failure.
    """
    return _KNOWN_CODES.get(value, value)


def is_retriable(code: int) -> bool:
    """True if records failed with ``code`` may succeed when sent again unchanged."""
    return code in _RETRIABLE


class KpdProtocolError(Exception):
    """Base of the decoder errors; ``code`` says what was wrong, ``str()`` says where."""

    def __init__(self, code: KpdErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BadFrameError(KpdProtocolError):
    """A frame of a valid length whose body is malformed; the stream itself is still in sync.

    For PRODUCE, ``first_seq``/``count`` name the records the frame carried (when its fixed
    head was readable) so the server can answer them with a FAILED run and continue. When they
    are None, the frame cannot be attributed and the server ends the connection with ERROR.
    """

    def __init__(
        self,
        code: KpdErrorCode,
        message: str,
        first_seq: int | None = None,
        count: int | None = None,
    ) -> None:
        super().__init__(code, message)
        self.first_seq = first_seq
        self.count = count


class FatalProtocolError(KpdProtocolError):
    """The byte stream cannot be trusted any more: answer ERROR (server) and close.

    ``frames`` holds the complete, valid frames that preceded the fault in the same
    ``FrameDecoder.feed`` call; the caller should still process them before closing.
    """

    def __init__(self, code: KpdErrorCode, message: str, frames: list | None = None) -> None:
        super().__init__(code, message)
        self.frames = frames if frames is not None else []


_PREFIX = struct.Struct(">IB")  # frame length (type byte + payload), frame type


def encode_frame(frame_type: FrameType, payload: bytes = b"") -> bytes:
    """A complete frame: length prefix, type byte, payload."""
    if len(payload) + 1 > 0xFFFFFFFF:
        raise ValueError("frame too large for the u32 length")
    return _PREFIX.pack(len(payload) + 1, frame_type) + payload


# --- string fields --------------------------------------------------------------------------
# A "string" is u16 byte length + UTF-8 bytes; there is no null string in this protocol.

_U16 = struct.Struct(">H")


def encode_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError(f"string of {len(raw)} UTF-8 bytes exceeds the u16 length")
    return _U16.pack(len(raw)) + raw


def read_string(buf, pos: int, what: str, limit: int | None = None) -> tuple[str, int]:
    """Decode the string at ``pos``; return ``(text, next_pos)`` or raise BadFrameError.

    ``limit`` (default: the end of ``buf``) is where the enclosing field ends.
    """
    limit = len(buf) if limit is None else limit
    if pos + 2 > limit:
        raise BadFrameError(KpdErrorCode.BAD_FRAME, f"{what}: truncated string length")
    (size,) = _U16.unpack_from(buf, pos)
    start = pos + 2
    end = start + size
    if end > limit:
        raise BadFrameError(
            KpdErrorCode.BAD_LENGTH,
            f"{what}: string of {size} bytes but only {limit - start} remain",
        )
    try:
        return str(buf[start:end], "utf-8"), end
    except UnicodeDecodeError as exc:
        raise BadFrameError(
            KpdErrorCode.BAD_STRING, f"{what}: invalid UTF-8 ({exc.reason})"
        ) from None


def unpack_fixed(layout: struct.Struct, buf, pos: int, what: str) -> tuple:
    """``layout.unpack_from`` that reports a short buffer as BAD_FRAME, never struct.error."""
    if pos + layout.size > len(buf):
        raise BadFrameError(
            KpdErrorCode.BAD_FRAME,
            f"{what}: needs {layout.size} bytes at offset {pos}, frame has {len(buf) - pos}",
        )
    return layout.unpack_from(buf, pos)


def expect_end(buf, pos: int, what: str) -> None:
    """Reject trailing bytes: new fields come with a new protocol version, never silently."""
    if pos != len(buf):
        raise BadFrameError(KpdErrorCode.BAD_FRAME, f"{what}: {len(buf) - pos} trailing bytes")
