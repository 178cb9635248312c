"""Framing of the kpd socket protocol: splitting a byte stream into frames and enforcing
which frame types each side may send when (pure: no I/O, no clock, no logging).

``FrameDecoder`` is sans-IO: the connection owner feeds it whatever the socket returned and
gets whole frames back. Everything it rejects is fatal for the connection, because it is
checked before a body is read — sizes and types — and after such a fault the stream cannot
be trusted. Body validation belongs to the ``decode_*`` functions.

Must not import anything outside ``kpd.protocol``.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import NamedTuple

from kpd.protocol.base import (
    HANDSHAKE_MAX_FRAME_BYTES,
    MIN_MAX_FRAME_BYTES,
    BadFrameError,
    FatalProtocolError,
    FrameType,
    KpdErrorCode,
)
from kpd.protocol.control import decode_welcome

__all__ = ["Frame", "FrameDecoder", "Role"]

_LENGTH = struct.Struct(">I")


class Role(Enum):
    """Which end of the connection owns a FrameDecoder (it decodes the OTHER end's frames)."""

    SERVER = "server"
    CLIENT = "client"


class Frame(NamedTuple):
    type: FrameType
    payload: memoryview  # read-only view of the bytes after the type byte


_FRAME_TYPES = {int(t): t for t in FrameType}
_new_frame = tuple.__new__  # builds a Frame without its Python-level __new__

# Frame types each role may receive, before and after the handshake (docs: state machine).
_ALLOWED = {
    (Role.SERVER, False): frozenset({FrameType.HELLO}),
    (Role.SERVER, True): frozenset(
        {FrameType.PRODUCE, FrameType.METADATA_REQUEST, FrameType.PING, FrameType.GOODBYE}
    ),
    (Role.CLIENT, False): frozenset({FrameType.WELCOME, FrameType.ERROR}),
    (Role.CLIENT, True): frozenset(
        {
            FrameType.REPORT,
            FrameType.METADATA_RESPONSE,
            FrameType.PONG,
            FrameType.ERROR,
            FrameType.GOODBYE,
        }
    ),
}
# Frames after which the sender may send nothing more.
_LAST = {Role.SERVER: {FrameType.GOODBYE}, Role.CLIENT: {FrameType.GOODBYE, FrameType.ERROR}}


class FrameDecoder:
    """Sans-IO splitter of one connection's incoming byte stream into frames.

    It enforces what can be checked before a body is read — the max frame size and the frame
    types allowed in the current state — because a violation there means the stream can no
    longer be trusted: ``feed`` raises FatalProtocolError (carrying the valid frames that
    preceded the fault) and so does every later call. A server's decoder accepts frames up to
    its configured ``max_frame_bytes`` once HELLO has arrived; a client's learns the limit from
    the WELCOME frame it splits. Before that, HANDSHAKE_MAX_FRAME_BYTES applies.
    """

    def __init__(self, role: Role, max_frame_bytes: int | None = None) -> None:
        if (role is Role.SERVER) != (max_frame_bytes is not None):
            raise ValueError("a server decoder needs max_frame_bytes; a client learns it")
        if max_frame_bytes is not None and max_frame_bytes < MIN_MAX_FRAME_BYTES:
            raise ValueError(f"max_frame_bytes below {MIN_MAX_FRAME_BYTES}")
        self._role = role
        self._configured_max = max_frame_bytes
        self._limit = HANDSHAKE_MAX_FRAME_BYTES
        self._open = False  # handshake done
        self._ended = False  # the peer sent its last frame (GOODBYE, or ERROR from a server)
        self._fault: FatalProtocolError | None = None
        # Incoming bytes not yet split; joined only once enough for the next frame arrived,
        # so a large frame delivered in many reads is copied once, not once per read.
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 4
        # Frame types allowed after the handshake that end nothing, by their byte (_split).
        self._plain_types = {
            int(t): t for t in _ALLOWED[role, True] - _LAST[role]
        }  # fmt: skip

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame; non-zero at EOF means the peer stopped mid-frame."""
        return self._have

    @property
    def max_frame_bytes(self) -> int:
        """The limit applied to the next frame (length prefix included)."""
        return self._limit

    def feed(self, data: bytes) -> list[Frame]:
        if self._fault is not None:
            raise FatalProtocolError(self._fault.code, self._fault.message)
        if data:
            # Payload views point into this chunk, so it must be immutable.
            self._chunks.append(data if type(data) is bytes else bytes(data))
            self._have += len(data)
        if self._have < self._need:
            return []
        buf = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        frames: list[Frame] = []
        try:
            pos = self._split(buf, frames)
        except FatalProtocolError as exc:
            self._fault = exc
            self._chunks, self._have = [], 0
            exc.frames = frames
            raise
        rest = buf[pos:]
        self._chunks = [rest] if rest else []
        self._have = len(rest)
        return frames

    def _split(self, buf: bytes, frames: list[Frame]) -> int:
        view = memoryview(buf)
        pos, end = 0, len(buf)
        # After the handshake, a frame whose type is allowed and changes no state (everything
        # but the last frame) is checked with one lookup: the loop below, for a whole buffer of
        # them, does what _check_length, _check_type and _after do for one.
        plain = self._plain_types if self._open and not self._ended else None
        if plain:
            limit = self._limit
            while end - pos >= 5:
                (length,) = _LENGTH.unpack_from(buf, pos)
                frame_type = plain.get(buf[pos + 4])
                if frame_type is None or length == 0 or 4 + length > limit:
                    break  # the general loop checks it and says what is wrong
                if end - pos < 4 + length:
                    self._need = 4 + length
                    return pos
                frames.append(_new_frame(Frame, (frame_type, view[pos + 5 : pos + 4 + length])))
                pos += 4 + length
        while True:
            if end - pos < 4:
                self._need = 4
                return pos
            (length,) = _LENGTH.unpack_from(buf, pos)
            self._check_length(length)
            if end - pos < 5:
                self._need = 5
                return pos
            frame_type = self._check_type(buf[pos + 4])
            if end - pos < 4 + length:
                self._need = 4 + length
                return pos
            frame = Frame(frame_type, view[pos + 5 : pos + 4 + length])
            self._after(frame)
            frames.append(frame)
            pos += 4 + length

    def _check_length(self, length: int) -> None:
        if length == 0:
            raise FatalProtocolError(KpdErrorCode.BAD_FRAME, "frame length 0 (no type byte)")
        if 4 + length > self._limit:
            phase = "handshake frame" if not self._open else "frame"
            raise FatalProtocolError(
                KpdErrorCode.FRAME_TOO_LARGE,
                f"{phase} of {4 + length} bytes exceeds the limit of {self._limit}",
            )

    def _check_type(self, raw: int) -> FrameType:
        frame_type = _FRAME_TYPES.get(raw)
        if frame_type is None:
            raise FatalProtocolError(
                KpdErrorCode.UNKNOWN_FRAME_TYPE, f"unknown frame type {raw:#04x}"
            )
        if self._ended or frame_type not in _ALLOWED[self._role, self._open]:
            state = (
                "after the last frame"
                if self._ended
                else ("after the handshake" if self._open else "during the handshake")
            )
            raise FatalProtocolError(
                KpdErrorCode.UNEXPECTED_FRAME, f"{frame_type.name} not allowed {state}"
            )
        return frame_type

    def _after(self, frame: Frame) -> None:
        """State transitions once a whole frame is split."""
        if frame.type in _LAST[self._role]:
            self._ended = True
        elif not self._open:
            self._open = True
            if self._role is Role.SERVER:
                self._limit = self._configured_max
            else:
                self._limit = _welcome_limit(frame.payload)


def _welcome_limit(payload: memoryview) -> int:
    try:
        return decode_welcome(payload).max_frame_bytes
    except BadFrameError as exc:
        raise FatalProtocolError(exc.code, exc.message) from None
