"""Sans-IO splitting of a Kafka byte stream into size-prefixed frames (pure).

Every Kafka request and response travels as a 4-byte big-endian signed size followed by that
many bytes (https://kafka.apache.org/protocol#protocol_common). ``FrameSplitter`` takes bytes as
the transport delivers them, in any chunking, and returns each complete payload once; it keeps the
unfinished tail for the next call. It never reads a socket: the net layer feeds it.

Imports only ``primitives``.
"""

from __future__ import annotations

from .primitives import INT32, ProtocolError

__all__ = ["FrameSplitter"]

_SIZE_BYTES = INT32.size


class FrameSplitter:
    """Cuts a byte stream into frame payloads (size prefix removed).

    Owned by one connection's reader. After a ``ProtocolError`` the stream has lost its framing
    and cannot be resynchronised: the connection must be closed.
    """

    __slots__ = ("_buffer", "_max_frame_bytes")

    def __init__(self, max_frame_bytes: int = 100 * 1024 * 1024) -> None:
        # Bounds what a corrupt or hostile size prefix can make us buffer (the Java client's
        # analogue is NetworkReceive's maxSize).
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()  # bytes received but not yet returned as a whole frame

    @property
    def pending_bytes(self) -> int:
        """Bytes held back because their frame is not complete yet."""
        return len(self._buffer)

    def feed(self, data) -> list[bytes]:
        """Add ``data``; return the payloads of every frame it completes, in stream order."""
        buffer = self._buffer
        buffer += data
        frames = []
        pos = 0
        available = len(buffer)
        with memoryview(buffer) as view:
            while available - pos >= _SIZE_BYTES:
                size = INT32.unpack_from(view, pos)[0]
                if size < 0 or size > self._max_frame_bytes:
                    raise ProtocolError(
                        f"frame size {size} outside 0..{self._max_frame_bytes}: stream corrupt"
                    )
                end = pos + _SIZE_BYTES + size
                if end > available:
                    break
                frames.append(bytes(view[pos + _SIZE_BYTES : end]))
                pos = end
        if pos:
            del buffer[:pos]  # only after the view is released: a viewed bytearray cannot resize
        return frames
