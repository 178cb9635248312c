"""Control frames of the kpd socket protocol: HELLO, WELCOME, ERROR, PING/PONG, GOODBYE,
METADATA and REPORT (pure: no I/O, no clock, no logging).

Each frame type has one ``encode_*`` (returns a complete frame) and one ``decode_*`` (takes the
payload, raises BadFrameError on a malformed body, never IndexError or struct.error). Where a
frame has cross-field rules (REPORT runs, METADATA entries) one ``_*_problem`` function states
them and both directions use it, so the encoder cannot write what the decoder rejects.

Must not import anything outside ``kpd.protocol``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from operator import itemgetter
from typing import NamedTuple

from kpd.protocol.base import (
    MAX_METADATA_TOPICS,
    MIN_MAX_FRAME_BYTES,
    PROTOCOL_VERSIONS,
    AckLevel,
    BadFrameError,
    FatalProtocolError,
    FrameType,
    KpdErrorCode,
    Persistence,
    Status,
    encode_frame,
    encode_string,
    error_code,
    expect_end,
    read_string,
    unpack_fixed,
)

__all__ = [
    "MAGIC",
    "REPORT_RUN_FIXED_BYTES",
    "SESSION_BIT",
    "ErrorFrame",
    "Hello",
    "MetadataRequest",
    "MetadataResponse",
    "ReportRun",
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
    "decode_reports",
    "decode_welcome",
    "encode_error",
    "encode_goodbye",
    "encode_hello",
    "encode_metadata_request",
    "encode_metadata_response",
    "encode_ping",
    "encode_pong",
    "encode_reports",
    "encode_welcome",
]

MAGIC = b"KPD1"

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HELLO = struct.Struct(">4sHHBI")  # magic, min version, max version, default ack, features
_WELCOME = struct.Struct(">HII")  # version, max frame bytes, features
_SESSION = struct.Struct(">QQ")  # version 2 HELLO: session id, resume seq
_RESUMED = struct.Struct(">QB")  # version 2 WELCOME: resume seq, resumed
SESSION_BIT = 1 << 63  # a session id has its top bit set (docs/protocol.md section 5)
_ERROR = struct.Struct(">H")  # code
_METADATA_HEAD = struct.Struct(">IH")  # request id, topic count
_TOPIC_META = struct.Struct(">Hi")  # error, partition count
_RUN = struct.Struct(">QIBiqqHhBH")  # see docs/protocol.md, REPORT
REPORT_RUN_FIXED_BYTES = _RUN.size  # 40; a run's message bytes follow its fixed part


# --- handshake ------------------------------------------------------------------------------


class Hello(NamedTuple):
    min_version: int
    max_version: int
    default_ack: AckLevel
    features: int  # bits the client asks for; no version defines any yet
    client_name: str
    # Version 2 (present when max_version >= 2): the session that outlives connections and
    # the lowest sequence number the client still holds without a report.
    session_id: int | None = None
    resume_seq: int = 0


class Welcome(NamedTuple):
    version: int
    max_frame_bytes: int  # frames in both directions are at most this long, prefix included
    features: int  # the granted subset of the requested bits
    server_name: str
    # Version 2: the session's next new sequence number, and whether kpd knew the session.
    resume_seq: int = 0
    resumed: bool = False


def encode_hello(
    min_version: int,
    max_version: int,
    default_ack: AckLevel,
    client_name: str,
    features: int = 0,
    session_id: int | None = None,
    resume_seq: int = 0,
) -> bytes:
    if default_ack > AckLevel.KAFKA:
        raise ValueError(f"default ack level {default_ack}")
    if (max_version >= 2) != (session_id is not None):
        raise ValueError("a HELLO offering version 2 carries a session id, and only then")
    if session_id is not None and not session_id & SESSION_BIT:
        raise ValueError("a session id has its top bit set")
    body = _HELLO.pack(MAGIC, min_version, max_version, default_ack, features)
    body += encode_string(client_name)
    if session_id is not None:
        body += _SESSION.pack(session_id, resume_seq)
    return encode_frame(FrameType.HELLO, body)


def decode_hello(payload) -> Hello:
    magic, low, high, ack, features = unpack_fixed(_HELLO, payload, 0, "HELLO")
    if magic != MAGIC:
        raise BadFrameError(KpdErrorCode.BAD_MAGIC, f"HELLO: magic {bytes(magic)!r}")
    if ack > AckLevel.KAFKA:
        raise BadFrameError(KpdErrorCode.BAD_FIELD, f"HELLO: default ack level {ack}")
    if low > high:
        raise BadFrameError(KpdErrorCode.BAD_FIELD, f"HELLO: version range {low}..{high}")
    name, pos = read_string(payload, _HELLO.size, "HELLO client name")
    session_id, resume_seq = None, 0
    if high >= 2:
        session_id, resume_seq = unpack_fixed(_SESSION, payload, pos, "HELLO session")
        if not session_id & SESSION_BIT:
            raise BadFrameError(KpdErrorCode.BAD_FIELD, f"HELLO: session id {session_id:#x}")
        pos += _SESSION.size
    expect_end(payload, pos, "HELLO")
    return Hello(low, high, AckLevel(ack), features, name, session_id, resume_seq)


def choose_version(hello: Hello, supported: tuple[int, int] = PROTOCOL_VERSIONS) -> int:
    """The highest version both sides speak; FatalProtocolError when there is none."""
    best = min(hello.max_version, supported[1])
    if best < max(hello.min_version, supported[0]):
        raise FatalProtocolError(
            KpdErrorCode.UNSUPPORTED_VERSION,
            f"client speaks {hello.min_version}..{hello.max_version}, "
            f"server {supported[0]}..{supported[1]}",
        )
    return best


def encode_welcome(
    version: int,
    max_frame_bytes: int,
    server_name: str = "kpd",
    features: int = 0,
    resume_seq: int = 0,
    resumed: bool = False,
) -> bytes:
    if max_frame_bytes < MIN_MAX_FRAME_BYTES:
        raise ValueError(f"max_frame_bytes below {MIN_MAX_FRAME_BYTES}")
    body = _WELCOME.pack(version, max_frame_bytes, features) + encode_string(server_name)
    if version >= 2:
        body += _RESUMED.pack(resume_seq, int(resumed))
    return encode_frame(FrameType.WELCOME, body)


def decode_welcome(payload) -> Welcome:
    version, max_frame, features = unpack_fixed(_WELCOME, payload, 0, "WELCOME")
    if max_frame < MIN_MAX_FRAME_BYTES:
        raise BadFrameError(KpdErrorCode.BAD_FIELD, f"WELCOME: max frame bytes {max_frame}")
    name, pos = read_string(payload, _WELCOME.size, "WELCOME server name")
    resume_seq, resumed = 0, 0
    if version >= 2:
        resume_seq, resumed = unpack_fixed(_RESUMED, payload, pos, "WELCOME session")
        if resumed > 1:
            raise BadFrameError(KpdErrorCode.BAD_FIELD, f"WELCOME: resumed {resumed}")
        pos += _RESUMED.size
    expect_end(payload, pos, "WELCOME")
    return Welcome(version, max_frame, features, name, resume_seq, bool(resumed))


# --- ERROR, PING/PONG, GOODBYE --------------------------------------------------------------


class ErrorFrame(NamedTuple):
    code: KpdErrorCode | int
    message: str


def encode_error(code: KpdErrorCode, message: str) -> bytes:
    return encode_frame(FrameType.ERROR, _ERROR.pack(code) + encode_string(message))


def decode_error(payload) -> ErrorFrame:
    (code,) = unpack_fixed(_ERROR, payload, 0, "ERROR")
    message, pos = read_string(payload, _ERROR.size, "ERROR message")
    expect_end(payload, pos, "ERROR")
    return ErrorFrame(error_code(code), message)


def _encode_u64_frame(frame_type: FrameType, value: int) -> bytes:
    return encode_frame(frame_type, _U64.pack(value))


def _decode_u64_frame(payload, what: str) -> int:
    (value,) = unpack_fixed(_U64, payload, 0, what)
    expect_end(payload, _U64.size, what)
    return value


def encode_ping(token: int) -> bytes:
    return _encode_u64_frame(FrameType.PING, token)


def decode_ping(payload) -> int:
    return _decode_u64_frame(payload, "PING")


def encode_pong(token: int) -> bytes:
    return _encode_u64_frame(FrameType.PONG, token)


def decode_pong(payload) -> int:
    return _decode_u64_frame(payload, "PONG")


def encode_goodbye(next_seq: int) -> bytes:
    """``next_seq``: the number of records the sender sent (client) or received (server)."""
    return _encode_u64_frame(FrameType.GOODBYE, next_seq)


def decode_goodbye(payload) -> int:
    return _decode_u64_frame(payload, "GOODBYE")


# --- METADATA -------------------------------------------------------------------------------


class MetadataRequest(NamedTuple):
    request_id: int
    topics: tuple[str, ...]


class TopicMetadata(NamedTuple):
    topic: str
    error: KpdErrorCode | int  # NONE, UNKNOWN_TOPIC, TOPIC_NOT_ALLOWED, ...
    partitions: int  # >= 1 when error is NONE, else -1


class MetadataResponse(NamedTuple):
    request_id: int
    topics: tuple[TopicMetadata, ...]


def encode_metadata_request(request_id: int, topics: Iterable[str]) -> bytes:
    names = [encode_string(t) for t in topics]
    if not 1 <= len(names) <= MAX_METADATA_TOPICS:
        raise ValueError(f"METADATA_REQUEST names 1..{MAX_METADATA_TOPICS} topics")
    body = _METADATA_HEAD.pack(request_id, len(names)) + b"".join(names)
    return encode_frame(FrameType.METADATA_REQUEST, body)


def _read_metadata_head(payload, what: str) -> tuple[int, int]:
    request_id, count = unpack_fixed(_METADATA_HEAD, payload, 0, what)
    if not 1 <= count <= MAX_METADATA_TOPICS:
        raise BadFrameError(KpdErrorCode.BAD_FIELD, f"{what}: {count} topics")
    return request_id, count


def decode_metadata_request(payload) -> MetadataRequest:
    request_id, count = _read_metadata_head(payload, "METADATA_REQUEST")
    pos = _METADATA_HEAD.size
    topics = []
    for _ in range(count):
        topic, pos = read_string(payload, pos, "METADATA_REQUEST topic")
        topics.append(topic)
    expect_end(payload, pos, "METADATA_REQUEST")
    return MetadataRequest(request_id, tuple(topics))


def _topic_meta_problem(error: int, partitions: int) -> str | None:
    if error == KpdErrorCode.NONE and partitions < 1:
        return f"partition count {partitions} without an error"
    if error != KpdErrorCode.NONE and partitions != -1:
        return f"partition count {partitions} with error {error}"
    return None


def encode_metadata_response(request_id: int, topics: Iterable[TopicMetadata]) -> bytes:
    entries = []
    for topic, error, partitions in topics:
        problem = _topic_meta_problem(error, partitions)
        if problem:
            raise ValueError(f"topic {topic!r}: {problem}")
        entries.append(encode_string(topic) + _TOPIC_META.pack(error, partitions))
    if not 1 <= len(entries) <= MAX_METADATA_TOPICS:
        raise ValueError(f"METADATA_RESPONSE carries 1..{MAX_METADATA_TOPICS} topics")
    body = _METADATA_HEAD.pack(request_id, len(entries)) + b"".join(entries)
    return encode_frame(FrameType.METADATA_RESPONSE, body)


def decode_metadata_response(payload) -> MetadataResponse:
    request_id, count = _read_metadata_head(payload, "METADATA_RESPONSE")
    pos = _METADATA_HEAD.size
    topics = []
    for _ in range(count):
        topic, pos = read_string(payload, pos, "METADATA_RESPONSE topic")
        error, partitions = unpack_fixed(_TOPIC_META, payload, pos, f"topic {topic!r}")
        pos += _TOPIC_META.size
        problem = _topic_meta_problem(error, partitions)
        if problem:
            raise BadFrameError(KpdErrorCode.BAD_FIELD, f"METADATA_RESPONSE {topic!r}: {problem}")
        topics.append(TopicMetadata(topic, error_code(error), partitions))
    expect_end(payload, pos, "METADATA_RESPONSE")
    return MetadataResponse(request_id, tuple(topics))


# --- REPORT ---------------------------------------------------------------------------------


class ReportRun(NamedTuple):
    """Records first_seq .. first_seq+count-1 share one outcome; record first_seq+i got
    offset base_offset+i. Failure fields are zero/empty unless status is FAILED."""

    first_seq: int
    count: int
    status: Status
    partition: int = -1  # -1: not chosen (only for FAILED)
    base_offset: int = -1  # -1: unknown (ACCEPTED, acks=0, FAILED)
    timestamp: int = -1  # broker LogAppendTime in ms, -1 for CreateTime topics / unknown
    error: KpdErrorCode | int = KpdErrorCode.NONE
    kafka_error: int = 0  # Kafka's error code when error is KAFKA_ERROR
    persistence: Persistence = Persistence.PERSISTED
    message: str = ""


def _run_problem(run: ReportRun) -> str | None:
    """Why ``run`` is not a valid REPORT run, or None. Shared by encoder and decoder."""
    if run.count < 1 or run.first_seq + run.count > 1 << 64:
        return f"count {run.count} from sequence {run.first_seq}"
    if run.partition < -1 or run.base_offset < -1 or run.timestamp < -1:
        return "partition, base_offset and timestamp must be >= -1"
    if run.kafka_error and run.error != KpdErrorCode.KAFKA_ERROR:
        return f"kafka_error {run.kafka_error} with error {run.error}"
    if run.status == Status.FAILED:
        if run.error == KpdErrorCode.NONE or run.persistence == Persistence.PERSISTED:
            return "a FAILED run needs an error and a persistence"
        return None
    if run.error or run.persistence or run.message:
        return f"{Status(run.status).name} run with failure fields"
    if run.partition == -1:
        return f"{Status(run.status).name} run without a partition"
    return None


def encode_reports(runs: Iterable[ReportRun]) -> bytes:
    parts = []
    for run in runs:
        problem = _run_problem(run)
        if problem:
            raise ValueError(f"report run {run.first_seq}: {problem}")
        message = run.message.encode("utf-8")
        parts.append(_RUN.pack(*run[:-1], len(message)))
        parts.append(message)
    body = _U32.pack(len(parts) // 2) + b"".join(parts)
    return encode_frame(FrameType.REPORT, body)


_STATUSES = {int(s): s for s in Status}
_PERSISTENCES = {int(p): p for p in Persistence}


def decode_reports(payload) -> list[ReportRun]:
    (count,) = unpack_fixed(_U32, payload, 0, "REPORT")
    pos = _U32.size
    runs = []
    for i in range(count):
        fields = unpack_fixed(_RUN, payload, pos, f"REPORT run {i}")
        pos += _RUN.size
        *head, status, partition, offset, ts, error, kafka_error, persistence, size = fields
        message = ""
        if size:
            # The message length is the last fixed field: re-read it as a string field.
            message, pos = read_string(payload, pos - 2, f"REPORT run {i} message")
        run = _make_run(i, head, status, partition, offset, ts, error, kafka_error, persistence)
        runs.append(run._replace(message=message) if message else run)
        problem = _run_problem(runs[-1])
        if problem:
            raise BadFrameError(KpdErrorCode.BAD_FIELD, f"REPORT run {i}: {problem}")
    expect_end(payload, pos, "REPORT")
    return runs


def report_run_fields(payload) -> list[tuple] | None:
    """The runs of a REPORT payload whose runs carry no message (every DELIVERED or ACCEPTED
    run's case) as raw field tuples ``(first_seq, count, status, partition, base_offset,
    timestamp, error, kafka_error, persistence, 0)``: one C-level unpack for the whole frame.
    None when a run has a message or the sizes do not add up: ``decode_reports`` then.

    For frames kpd itself encoded (ingest reading its workers' reports, encoded by
    ``encode_reports``, which checked every run): the fields are not checked again here."""
    if len(payload) < _U32.size:
        return None
    (count,) = _U32.unpack_from(payload, 0)
    if len(payload) != _U32.size + count * _RUN.size:
        return None
    fields = list(_RUN.iter_unpack(payload[_U32.size :]))
    if any(map(_MESSAGE_LEN, fields)):
        return None
    return fields


_MESSAGE_LEN = itemgetter(9)


def _make_run(index, head, status, partition, offset, ts, error, kafka_error, persistence):
    known_status = _STATUSES.get(status)
    known_persistence = _PERSISTENCES.get(persistence)
    if known_status is None or known_persistence is None:
        raise BadFrameError(
            KpdErrorCode.BAD_FIELD,
            f"REPORT run {index}: status {status}, persistence {persistence}",
        )
    first_seq, count = head
    return ReportRun(
        first_seq,
        count,
        known_status,
        partition,
        offset,
        ts,
        error_code(error),
        kafka_error,
        known_persistence,
    )
