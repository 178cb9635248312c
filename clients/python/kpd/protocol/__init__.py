"""The kpd socket protocol: bytes <-> values, nothing else (see docs/protocol.md).

Pure — no I/O, no clock, no logging — so the Python client (``kpd``) and the daemon (its
ingest server and workers: ``daemon`` depends on kpd-client for it) share it. Import from
here; the pieces live in:

* ``base``       enums (frame types, error codes, ack levels, statuses), errors, limits;
* ``framing``    ``FrameDecoder``: stream splitting and the per-connection state machine;
* ``control``    HELLO, WELCOME, ERROR, PING/PONG, GOODBYE, METADATA, REPORT;
* ``records``    PRODUCE decoding and the columnar records section (ingest and workers);
* ``produce``    the one PRODUCE frame encoder (client and tests).

The daemon's ring-entry format is not part of it: ``daemon.wire.ring_entry``.

Every ``encode_*`` returns a complete frame (length prefix included); every ``decode_*``
takes the payload of a frame (``Frame.payload``: what follows the type byte) and raises
BadFrameError on a malformed body — never IndexError or struct.error.

Must not import anything outside ``kpd.protocol`` and the accelerator ``kpd.accel``.
"""

from __future__ import annotations

from kpd.protocol.base import (
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
from kpd.protocol.control import (
    MAGIC,
    REPORT_RUN_FIXED_BYTES,
    SESSION_BIT,
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
    report_run_fields,
)
from kpd.protocol.framing import Frame, FrameDecoder, Role
from kpd.protocol.produce import encode_produce, encode_produce_frame
from kpd.protocol.records import (
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
    "SESSION_BIT",
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
    "report_run_fields",
]
