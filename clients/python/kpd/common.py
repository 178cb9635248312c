"""Small shared pieces of the client: settings, the values adapters and session exchange,
the handshake frames, and argument checks. Pure: no I/O, no clock.

Must not import sockets, threads or asyncio, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from kpd.errors import KpdConnectionError, RecordMetadata, TopicError
from kpd.protocol import (
    MIN_MAX_FRAME_BYTES,
    PROTOCOL_VERSIONS,
    SESSION_BIT,
    AckLevel,
    BadFrameError,
    Frame,
    FrameType,
    Welcome,
    decode_error,
    decode_welcome,
    encode_hello,
)

__all__ = [
    "ACKS",
    "DEFAULT_LINGER_MS",
    "ClientSettings",
    "Completions",
    "Outgoing",
    "check_bytes",
    "headers_list",
    "hello_frame",
    "make_metadata",
    "new_session_id",
    "not_connected_welcome",
    "partition_count",
    "read_welcome",
]

DEFAULT_LINGER_MS = 0.0  # the producers' linger_ms argument: ClientSettings.linger_s in ms
ACKS = {"none": AckLevel.NONE, "accepted": AckLevel.ACCEPTED, "kafka": AckLevel.KAFKA}
_BYTES_LIKE = (bytes, bytearray, memoryview)
_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__


@dataclass(frozen=True, slots=True)
class ClientSettings:
    ack: AckLevel = AckLevel.KAFKA
    client_name: str = "kpd-python"
    # A PRODUCE frame is sent once it holds this many bytes (capped by the server's max frame).
    batch_bytes: int = 64 * 1024
    # 0: no time-based wait (Nagle without the delay: an idle producer writes a frame at once,
    # records coalesce only while a write is in flight; kpd's own linger.ms batches for Kafka).
    # > 0, opt-in: an open frame also waits up to this long for more records.
    linger_s: float = 0.0
    # Keyless records move to another partition after this many bytes (KIP-794).
    sticky_bytes: int = 64 * 1024
    # Partition counts are refreshed this often (Java's metadata.max.age.ms: 5 minutes).
    metadata_max_age_s: float = 300.0
    # After kpd went away: first wait before reconnecting, growing x2 per failed attempt up to
    # the max (Kafka's reconnect.backoff.ms = 50 and reconnect.backoff.max.ms = 1000).
    reconnect_backoff_s: float = 0.05
    reconnect_backoff_max_s: float = 1.0
    # send() blocks at most this long for buffer space or a connection; records queued while
    # kpd is unreachable fail after this long (Kafka's max.block.ms: 60 s).
    max_block_s: float = 60.0

    @classmethod
    def from_arguments(
        cls,
        acks: str,
        client_name: str,
        batch_bytes: int,
        linger_ms: float,
        metadata_max_age_ms: float,
        reconnect_backoff_ms: float = 50.0,
        reconnect_backoff_max_ms: float = 1000.0,
        max_block_ms: float = 60_000.0,
    ) -> ClientSettings:
        """The settings both producers build from their keyword arguments (ms, names)."""
        if acks not in ACKS:
            raise ValueError(f"acks must be one of {sorted(ACKS)}, not {acks!r}")
        if not 0 < reconnect_backoff_ms <= reconnect_backoff_max_ms:
            raise ValueError(
                "need 0 < reconnect_backoff_ms <= reconnect_backoff_max_ms, not "
                f"{reconnect_backoff_ms} and {reconnect_backoff_max_ms}"
            )
        if max_block_ms < 0:
            raise ValueError(f"max_block_ms must be >= 0, not {max_block_ms}")
        return cls(
            ack=ACKS[acks],
            client_name=client_name,
            batch_bytes=batch_bytes,
            linger_s=linger_ms / 1000,
            sticky_bytes=batch_bytes,
            metadata_max_age_s=metadata_max_age_ms / 1000,
            reconnect_backoff_s=reconnect_backoff_ms / 1000,
            reconnect_backoff_max_s=reconnect_backoff_max_ms / 1000,
            max_block_s=max_block_ms / 1000,
        )


class Outgoing(NamedTuple):
    data: bytes
    end_seq: int  # sequence number after this PRODUCE frame's records; -1: a control frame
    buffered: int  # bytes of it counted in buffered_bytes (PRODUCE frames only)
    frame: object = None  # the ProduceFrame of a PRODUCE frame (resent after a reconnect)


class Completions:
    """What settling reports did: ``frames`` that got outcomes (asyncio wakes their awaiters)
    and done-callbacks the adapter runs outside its lock: ``callbacks[i](arguments[i])``.

    Two parallel lists rather than one of (fn, future) pairs: a report settling thousands of
    records with callbacks would allocate a tuple per record that the cycle collector
    tracks (and counts towards its next collection)."""

    __slots__ = ("arguments", "callbacks", "frames")

    def __init__(self) -> None:
        self.frames: list = []
        self.callbacks: list = []
        self.arguments: list = []

    def __bool__(self) -> bool:
        return bool(self.frames)

    def add(self, fn, argument) -> None:
        self.callbacks.append(fn)
        self.arguments.append(argument)

    def take(self, other: Completions) -> None:
        """Add ``other``'s callbacks after these (its frames are not taken)."""
        self.callbacks.extend(other.callbacks)
        self.arguments.extend(other.arguments)

    def pairs(self):
        """``(fn, argument)`` for every callback, in order."""
        return zip(self.callbacks, self.arguments, strict=True)


def make_metadata(topic: str, partition: int, offset: int, timestamp: int) -> RecordMetadata:
    # One RecordMetadata per record: skip NamedTuple's Python-level __new__ (~70 ns each).
    return _tuple_new(RecordMetadata, (topic, partition, offset, timestamp))


def new_session_id() -> int:
    """A protocol v2 session id: random, top bit set (docs/protocol.md section 5)."""
    return SESSION_BIT | int.from_bytes(os.urandom(8), "big")


def hello_frame(settings: ClientSettings, session_id: int, resume_seq: int = 0) -> bytes:
    """HELLO offering versions 1 and 2, naming the producer's session and the lowest sequence
    number (in the session's numbering) it still holds without a report."""
    return encode_hello(*PROTOCOL_VERSIONS, settings.ack, settings.client_name,
                        session_id=session_id, resume_seq=resume_seq)  # fmt: skip


def not_connected_welcome() -> Welcome:
    """What a producer starts with when kpd is not running yet: version 0 (no session to
    resume) and the smallest frame limit kpd may announce, replaced by the first WELCOME."""
    return Welcome(0, MIN_MAX_FRAME_BYTES, 0, "")


def read_welcome(frames: list[Frame]) -> Welcome:
    """The WELCOME among the first frames of a connection; KpdConnectionError on ERROR."""
    first = frames[0]
    try:
        if first.type is FrameType.ERROR:
            error = decode_error(first.payload)
            raise KpdConnectionError(error.code, f"kpd refused the connection: {error.message}")
        return decode_welcome(first.payload)
    except BadFrameError as exc:
        raise KpdConnectionError(exc.code, f"malformed handshake from kpd: {exc}") from None


def partition_count(topic: str, answer, ended: bool, timeout: float | None) -> int:
    """What ``partitions_for`` returns or raises, given ``topic_answer(topic)``."""
    if answer is None:
        if ended:
            raise ConnectionError("the connection to kpd has ended")
        raise TimeoutError(f"no partition count for {topic!r} after {timeout} s")
    partitions, error = answer
    if error:
        raise TopicError(topic, error)
    return partitions


def check_bytes(obj: Any, what: str) -> bytes | None:
    """``obj`` as bytes for the wire; a TypeError names what was wrong, before any state moved."""
    if obj is None or type(obj) is bytes:
        return obj
    if isinstance(obj, _BYTES_LIKE):
        return bytes(obj)
    raise TypeError(f"{what} must be bytes or None (or set a serializer), not {type(obj).__name__}")


def headers_list(headers) -> Sequence[tuple[str, bytes | None]]:
    """Accept a mapping as well as a sequence of (key, value) pairs, like kafka-python."""
    if hasattr(headers, "items"):
        return list(headers.items())
    return headers
