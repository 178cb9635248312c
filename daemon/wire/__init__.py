"""The kpd socket protocol and the ring-entry format: bytes <-> values, nothing else (see
docs/protocol.md).

Pure — no I/O, no clock, no logging — so the Python client (``daemon.client``), the ingest
server and the workers share it. Import from here; the pieces live in:

* ``base``       enums (frame types, error codes, ack levels, statuses), errors, limits;
* ``framing``    ``FrameDecoder``: stream splitting and the per-connection state machine;
* ``control``    HELLO, WELCOME, ERROR, PING/PONG, GOODBYE, METADATA, REPORT;
* ``records``    PRODUCE decoding and the columnar records section (ingest and workers);
* ``produce``    the one PRODUCE frame encoder (client and tests);
* ``ring_entry`` the entries ingest and workers exchange through their rings.

Every ``encode_*`` returns a complete frame (length prefix included); every ``decode_*``
takes the payload of a frame (``Frame.payload``: what follows the type byte) and raises
BadFrameError on a malformed body — never IndexError or struct.error.

Must not import kpd modules outside ``daemon.wire`` and the pure Kafka codec ``daemon.kafka``.
"""

from __future__ import annotations

from daemon.wire.base import (
    HANDSHAKE_MAX_FRAME_BYTES,
    MAX_METADATA_TOPICS,
    MIN_MAX_FRAME_BYTES,
    PROTOCOL_VERSIONS,
    AckLevel,
    BadFrameError,
    FatalProtocolError,
    FrameType,
    KpdErrorCode,
    KpdProtocolError,
    Persistence,
    Status,
    encode_frame,
    error_code,
    is_retriable,
)
from daemon.wire.control import (
    MAGIC,
    REPORT_RUN_FIXED_BYTES,
    ErrorFrame,
    Hello,
    MetadataRequest,
    MetadataResponse,
    ReportRun,
    TopicMetadata,
    Welcome,
    choose_version,
    decode_error,
    decode_goodbye,
    decode_hello,
    decode_metadata_request,
    decode_metadata_response,
    decode_ping,
    decode_pong,
    decode_reports,
    decode_welcome,
    encode_error,
    encode_goodbye,
    encode_hello,
    encode_metadata_request,
    encode_metadata_response,
    encode_ping,
    encode_pong,
    encode_reports,
    encode_welcome,
)
from daemon.wire.framing import Frame, FrameDecoder, Role
from daemon.wire.produce import encode_produce, encode_produce_frame
from daemon.wire.records import (
    LAYOUT_HAS_HEADERS,
    LAYOUT_HAS_TIMESTAMPS,
    ProduceHeader,
    RecordIn,
    RecordView,
    decode_produce_header,
    encode_records,
    iter_records,
)

__all__ = [
    "HANDSHAKE_MAX_FRAME_BYTES",
    "LAYOUT_HAS_HEADERS",
    "LAYOUT_HAS_TIMESTAMPS",
    "MAGIC",
    "MAX_METADATA_TOPICS",
    "MIN_MAX_FRAME_BYTES",
    "PROTOCOL_VERSIONS",
    "REPORT_RUN_FIXED_BYTES",
    "AckLevel",
    "BadFrameError",
    "ErrorFrame",
    "FatalProtocolError",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "Hello",
    "KpdErrorCode",
    "KpdProtocolError",
    "MetadataRequest",
    "MetadataResponse",
    "Persistence",
    "ProduceHeader",
    "RecordIn",
    "RecordView",
    "ReportRun",
    "Role",
    "Status",
    "TopicMetadata",
    "Welcome",
    "choose_version",
    "decode_error",
    "decode_goodbye",
    "decode_hello",
    "decode_metadata_request",
    "decode_metadata_response",
    "decode_ping",
    "decode_pong",
    "decode_produce_header",
    "decode_reports",
    "decode_welcome",
    "encode_error",
    "encode_frame",
    "encode_goodbye",
    "encode_hello",
    "encode_metadata_request",
    "encode_metadata_response",
    "encode_ping",
    "encode_pong",
    "encode_produce",
    "encode_produce_frame",
    "encode_records",
    "encode_reports",
    "encode_welcome",
    "error_code",
    "is_retriable",
    "iter_records",
]
