"""Building PRODUCE frames on the client side (pure: no I/O, no clock, no logging).

``ProduceBatchWriter`` fills one frame incrementally, column by column (the layout is in
``codec_records`` and docs/protocol.md section 6), and knows the exact frame size at every
step, so a client fills frames up to the server's ``max_frame_bytes`` and no further.

Must not import kpd modules outside ``daemon.ingest.codec*``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from daemon.ingest.codec_base import AckLevel, FrameType, encode_string
from daemon.ingest.codec_records import (
    PRODUCE_FIXED,
    SEQ_LIMIT,
    RecordIn,
    RecordsBuilder,
    header_blob,
)

__all__ = ["ProduceBatchWriter", "RecordTooLargeError", "encode_produce"]

_FRAME_PREFIX = struct.Struct(">IB")  # length, type
_MAX_FRAME_LENGTH = 0xFFFFFFFF


class RecordTooLargeError(ValueError):
    """A single record that cannot fit in a frame of the writer's max size."""


class ProduceBatchWriter:
    """Builds one PRODUCE frame incrementally (client side).

    ``append`` returns the number of bytes the frame grew by, or 0 when the record would push
    the frame past ``max_frame_bytes`` (the writer is then unchanged: ``finish()`` it and start
    the next writer at ``next_seq``). A record too large for even an empty frame raises
    RecordTooLargeError — the client fails it locally with RECORD_TOO_LARGE.
    """

    def __init__(
        self,
        base_seq: int,
        topic: str,
        partition: int = -1,
        ack: AckLevel = AckLevel.CONNECTION_DEFAULT,
        max_frame_bytes: int | None = None,
    ) -> None:
        if not 0 <= base_seq < SEQ_LIMIT:
            raise ValueError(f"base_seq {base_seq} outside u64")
        if not -1 <= partition <= 0x7FFFFFFF:
            raise ValueError(f"partition {partition}")
        self.base_seq = base_seq
        self._head_fields = (partition, AckLevel(ack))
        self._topic = encode_string(topic)
        self._max = _MAX_FRAME_LENGTH + 4 if max_frame_bytes is None else max_frame_bytes
        self._builder = RecordsBuilder()
        self._finished = False
        # Frame bytes that do not depend on the records: prefix, fixed head, topic.
        self._fixed = _FRAME_PREFIX.size + PRODUCE_FIXED.size + len(self._topic)
        self._size = self._fixed + self._builder.size()  # what finish() would return now

    @property
    def count(self) -> int:
        return self._builder.count

    @property
    def next_seq(self) -> int:
        """The sequence number the record after this frame's last one gets."""
        return self.base_seq + self._builder.count

    @property
    def size(self) -> int:
        """Bytes ``finish()`` would return now (length prefix included)."""
        return self._size

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> int:
        if self._finished:
            raise RuntimeError("append after finish")
        blob = header_blob(headers)
        data_bytes = (0 if key is None else len(key)) + (0 if value is None else len(value))
        data_bytes += len(blob)
        has_ts = timestamp is not None
        added = self._builder.added_bytes(data_bytes, has_ts, bool(blob))
        if self._size + added > self._max:
            empty = RecordsBuilder()
            alone = self._fixed + empty.size() + empty.added_bytes(data_bytes, has_ts, bool(blob))
            if alone > self._max:
                raise RecordTooLargeError(
                    f"record needs a {alone}-byte frame, max frame is {self._max} bytes"
                )
            return 0
        self._builder.add(key, value, timestamp, blob)
        self._size += added
        return added

    def finish(self) -> bytes:
        """The complete frame (length prefix included). The writer is spent afterwards."""
        if self._builder.count == 0:
            raise ValueError("a PRODUCE frame carries at least one record")
        self._finished = True
        partition, ack = self._head_fields
        section = self._builder.section()
        body_len = PRODUCE_FIXED.size + len(self._topic) + len(section)
        return b"".join(
            (
                _FRAME_PREFIX.pack(1 + body_len, FrameType.PRODUCE),
                PRODUCE_FIXED.pack(self.base_seq, self._builder.count, partition, ack),
                self._topic,
                section,
            )
        )


def encode_produce(
    base_seq: int,
    topic: str,
    partition: int,
    records: Iterable[RecordIn],
    ack: AckLevel = AckLevel.CONNECTION_DEFAULT,
) -> bytes:
    """A whole PRODUCE frame (length prefix included) for ``records``."""
    writer = ProduceBatchWriter(base_seq, topic, partition, ack)
    for key, value, timestamp, headers in records:
        if not writer.append(key, value, timestamp, headers):
            raise ValueError("records exceed the 4 GiB a frame's u32 length can describe")
    return writer.finish()
