"""Frame building: records in, sealed PRODUCE frames out, per (topic, partition).

Owns placing each record (keyed -> Java's murmur2 through the one partitioner, keyless ->
sticky, explicit -> honoured), appending it to the open ``ProduceFrame`` of its partition
(send()'s hot path: two list appends and a size sum), sealing a frame when it reaches
``batch_bytes`` or its linger deadline passes, and numbering sealed frames with the
producer's sequence numbers (in the order they are sealed: protocol §6, base_seq = previous
base_seq + count). A sealed frame goes to ``sealed(frame, data)``, the session's.

Sizes are exact: a frame's ``size`` is the bytes it would have if sealed now, so no frame
passes kpd's max frame and a record too large for any frame fails alone (RECORD_TOO_LARGE).

Pure: time comes from the injected clock. Not thread-safe: the session's adapter serialises.
Must not import sockets, threads or asyncio.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from itertools import accumulate, repeat
from operator import add

from kpd.appender import Appender
from kpd.bulk import BulkFuture, RefusedPiece
from kpd.common import check_bytes, headers_list
from kpd.errors import DeliveryError
from kpd.future import Hub, RecordFuture
from kpd.grouping import bytes_column, keyed_groups, keyless_groups, lengths
from kpd.partitioner import KEY_MEMO_SIZE
from kpd.produce_frame import ProduceFrame
from kpd.protocol import KpdErrorCode, Persistence
from kpd.protocol.produce import FIXED_RECORD_BYTES, frame_overhead
from kpd.protocol.records import header_blob
from kpd.topics import TopicEntry, TopicTable

__all__ = ["Framer"]

_NEVER = float("inf")  # the deadline of a frame opened without a linger


class Framer:
    """The open frames of one producer (they outlive connections) and their numbering.

    ``wake()`` is called when the first frame opens (the adapter may be sleeping without a
    deadline); ``sealed(frame, data)`` receives each sealed frame with its bytes.
    """

    def __init__(
        self,
        topics: TopicTable,
        batch_bytes: int,
        sticky_bytes: int,
        linger_s: float,
        clock: Callable[[], float],
        hub: Hub,
        wake: Callable[[], None],
        sealed: Callable[[ProduceFrame, bytes], None],
    ) -> None:
        self._topics = topics
        self._partitioner = topics.partitioner
        self._batch_bytes = batch_bytes
        self._sticky_bytes = sticky_bytes
        self._linger_s = linger_s
        self._clock = clock
        self._hub = hub
        self._wake = wake
        self._sealed = sealed
        self.max_frame = 0
        self.batch_limit = 0  # min(batch_bytes, max_frame): a frame is sealed at this size
        self._appender = Appender(
            topics.entries, 0, sticky_bytes, KEY_MEMO_SIZE, self._add_other, self._open
        )
        # add(topic, key, value, partition, timestamp, headers): queue one record, return its
        # RecordFuture (see ``ProducerSession.add``). send()'s hot path: one call of the
        # appender, in C when the accelerator is built; what it does not take goes through
        # _add_other.
        self.add = self._appender.add
        self._lingering: deque[ProduceFrame] = deque()  # open frames, earliest deadline first
        self.open_count = 0  # frames in the topics' open_frames, i.e. unsealed ones
        self.next_seq = 0

    def gated_send(self, lock, session, link, buffer_limit: int, general, woke):
        """The sync Producer's send(): the appender's ``send``, gated by these (see
        ``kpd.appender``)."""
        self._appender.gate(lock, session, link, buffer_limit, general, woke)
        return self._appender.send

    def set_max_frame(self, max_frame: int) -> None:
        """kpd's max frame, from its WELCOME (per connection)."""
        self.max_frame = max_frame
        self.batch_limit = self._appender.batch_limit = min(self._batch_bytes, max_frame)

    # --- one record ---------------------------------------------------------------------------

    def _add_other(self, topic, key, value, partition, timestamp, headers):
        """add() for what the appender does not take (``kpd.appender``): a new topic or
        frame, a full frame, a keyless run that moves, timestamps, headers, other argument
        types. Checks the arguments, places the record, hands it to _add_general."""
        if type(key) is not bytes and key is not None:
            key = check_bytes(key, "key")
        if type(value) is not bytes and value is not None:
            value = check_bytes(value, "value")
        entry = self._topics.entries.get(topic)
        if entry is None:
            entry = self._topics.add(topic)
        if partition is None:
            if key is not None:
                partition = entry.key_partitions.get(key)
                if partition is None:
                    partition = self._topics.key_partition(entry, key)
            elif entry.partitions:
                size = 0 if value is None else len(value)
                partition = self._partitioner.sticky(entry.placement, size)
            else:
                partition = -1
        elif type(partition) is not int or partition < 0:
            raise ValueError(f"partition must be a non-negative int or None, not {partition!r}")
        return self._add_general(entry, partition, key, value, timestamp, headers)

    def _add_general(self, entry: TopicEntry, partition: int, key, value, timestamp, headers):
        """A placed record into its partition's frame: opens the frame if needed, seals it
        when the record fills it (or starts the next one when the record does not fit)."""
        if timestamp is not None and (type(timestamp) is not int or not -1 <= timestamp < 2**63):
            raise ValueError(f"timestamp_ms must be an int in [-1, 2**63), not {timestamp!r}")
        blob = header_blob(headers_list(headers)) if headers else b""
        data_bytes = (0 if key is None else len(key)) + (0 if value is None else len(value))
        frame = entry.open_frames.get(partition)
        if frame is None:
            frame = self._open(entry, partition)
        grown = frame.per_record + data_bytes + frame.add_columns(timestamp, blob)
        if frame.size + grown > self.max_frame and frame.keys:
            self._seal(frame)  # the frame is full: send it and start the next one
            frame = self._open(entry, partition)
            grown = frame.per_record + data_bytes + frame.add_columns(timestamp, blob)
        if frame.size + grown > self.max_frame:
            alone = frame.size + grown
            self._drop(frame)  # opened for this record alone: it must not linger
            raise DeliveryError(
                KpdErrorCode.RECORD_TOO_LARGE,
                0,
                Persistence.NOT_PERSISTED,
                f"record needs a {alone}-byte frame, max frame is {self.max_frame} bytes "
                "(raise socket.max_frame_bytes in kpd's config)",
            )
        index = len(frame.keys)
        frame.keys.append(key)
        frame.values.append(value)
        frame.store_columns(index, timestamp, blob)
        frame.size += grown
        future = RecordFuture(frame, index)
        if frame.size >= self.batch_limit:
            self._seal(frame)
        return future

    # --- many records -------------------------------------------------------------------------

    def add_bulk(self, topic, keys, values, partition) -> BulkFuture:
        """Queue many records of one topic; one BulkFuture. See ``ProducerSession.add_bulk``."""
        values = bytes_column(values, "value")
        count = len(values)
        if keys is not None:
            keys = bytes_column(keys, "key")
            if len(keys) != count:
                raise ValueError(f"{len(keys)} keys for {count} values")
            if count and keys[0] is None and keys.count(None) == count:
                keys = None
        entry = self._topics.entries.get(topic)
        if entry is None:
            entry = self._topics.add(topic)
        if partition is not None:
            if type(partition) is not int or partition < 0:
                raise ValueError(f"partition must be a non-negative int or None, not {partition!r}")
            groups = [(partition, keys, values)]
            order = None
        elif keys is None:
            budget = self._sticky_bytes
            groups = keyless_groups(self._partitioner, entry.placement, values, budget)
            order = None
        else:
            if entry.placement is None:
                self._topics.key_partition(entry, keys[0])  # raises: AwaitingMetadata, refusal
            groups, order = keyed_groups(self._partitioner, entry.placement, keys, values)
        pieces: list[tuple] = []
        for part, group_keys, group_values in groups:
            self._append_group(entry, part, group_keys, group_values, pieces)
        return BulkFuture(pieces, count, self._hub, order)

    def _append_group(self, entry: TopicEntry, partition: int, keys, values, pieces: list):
        """Append one partition's records to its frames, sealing each that fills; note the
        ``(frame, lo, hi)`` pieces. A record too large for any frame fails alone."""
        count = len(values)
        frame = entry.open_frames.get(partition)
        if frame is not None and frame.per_record == FIXED_RECORD_BYTES:
            # The common case, a group that fits the open frame: two C-level sums, no list.
            size = FIXED_RECORD_BYTES * count + sum(lengths(values))
            if keys is not None:
                size += sum(lengths(keys))
            if frame.size + size < self.batch_limit:
                lo = len(frame.keys)
                frame.keys.extend([None] * count if keys is None else keys)
                frame.values.extend(values)
                frame.size += size
                pieces.append((frame, lo, lo + count))
                return
        sizes = lengths(values) if keys is None else map(add, lengths(keys), lengths(values))
        # ends[i]: frame bytes of records 0..i-1 of the group (data plus their two lengths).
        ends = list(accumulate(map(add, sizes, repeat(FIXED_RECORD_BYTES)), initial=0))
        start = 0
        while start < count:
            frame = entry.open_frames.get(partition)
            if frame is None:
                frame = self._open(entry, partition)
            elif frame.per_record != FIXED_RECORD_BYTES:
                self._seal(frame)  # it has timestamp/header columns: start a plain one
                continue
            room = self.batch_limit - frame.size
            # Records start..end-1 keep the frame under batch_limit; one more may take it to
            # batch_limit or past it (then it is sealed), as long as it stays within a frame.
            end = bisect_left(ends, ends[start] + room, start + 1) - 1
            if end < count and frame.size + ends[end + 1] - ends[start] <= self.max_frame:
                end += 1
            if end == start:
                if frame.keys:
                    self._seal(frame)
                    continue
                self._drop(frame)
                pieces.append((self._too_large(frame.size + ends[start + 1] - ends[start]), 0, 1))
                start += 1
                continue
            lo = len(frame.keys)
            if keys is None:
                frame.keys.extend([None] * (end - start))
            else:
                frame.keys.extend(keys[start:end])
            frame.values.extend(values[start:end])
            frame.size += ends[end] - ends[start]
            pieces.append((frame, lo, lo + end - start))
            if frame.size >= self.batch_limit:
                self._seal(frame)
            start = end

    def _too_large(self, needed: int) -> RefusedPiece:
        return RefusedPiece(
            DeliveryError(
                KpdErrorCode.RECORD_TOO_LARGE,
                0,
                Persistence.NOT_PERSISTED,
                f"record needs a {needed}-byte frame, max frame is {self.max_frame} bytes "
                "(raise socket.max_frame_bytes in kpd's config)",
            )
        )

    # --- open, seal ---------------------------------------------------------------------------

    def _open(self, entry: TopicEntry, partition: int) -> ProduceFrame:
        # No linger (the default): no deadline, the adapter seals when it is idle.
        deadline = self._clock() + self._linger_s if self._linger_s else _NEVER
        overhead = frame_overhead(entry.encoded)
        frame = ProduceFrame(entry.name, partition, overhead, deadline, self._hub)
        entry.open_frames[partition] = frame
        self._lingering.append(frame)
        self.open_count += 1
        if self.open_count == 1:
            self._wake()  # the adapter may be sleeping without a deadline
        return frame

    def _drop(self, frame: ProduceFrame) -> None:
        frame.sealed = True  # _lingering skips it
        del self._topics.entries[frame.topic].open_frames[frame.partition]
        self.open_count -= 1
        if self._lingering and self._lingering[-1] is frame:
            self._lingering.pop()  # opened for a record that was refused: forget it

    def _seal(self, frame: ProduceFrame) -> None:
        """Turn ``frame`` into a PRODUCE frame numbered with the next sequence numbers."""
        self._drop(frame)
        if not frame.keys:
            return
        base = self.next_seq
        # Sequence numbers are given when a frame is sealed, not when it opened, because
        # frames of different partitions fill concurrently but must go out numbered in the
        # order they are sent (protocol §6: base_seq = previous base_seq + count).
        data = frame.seal(self._topics.entries[frame.topic].encoded, base)
        self.next_seq = base + frame.count
        self._sealed(frame, data)

    def seal_due(self) -> None:
        """Frame every open frame whose linger has expired."""
        lingering = self._lingering
        now = self._clock()
        while lingering and (lingering[0].sealed or lingering[0].deadline <= now):
            frame = lingering.popleft()
            if not frame.sealed:
                self._seal(frame)

    def seal_all(self) -> None:
        """Frame every open frame now (flush, close)."""
        while self._lingering:
            frame = self._lingering.popleft()
            if not frame.sealed:
                self._seal(frame)

    def next_deadline(self) -> float | None:
        """The earliest linger deadline of an open frame."""
        lingering = self._lingering
        while lingering and lingering[0].sealed:
            lingering.popleft()
        if not lingering or lingering[0].deadline is _NEVER:
            return None
        return lingering[0].deadline

    @property
    def lingering(self) -> bool:
        """Frames were opened and not yet taken off the linger queue."""
        return bool(self._lingering)
