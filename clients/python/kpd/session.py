"""The client side of one kpd connection, sans-IO: records in, frames out, reports in.

Owns what the sync and asyncio producers share after the handshake: partitioning (keyed ->
Java's murmur2, keyless -> sticky, explicit -> honoured), per-(topic, partition) batching in
``Batch``es (sealed into PRODUCE frames by ``encoding``), the connection's sequence numbers,
METADATA requests and partition counts, dispatching the frames kpd sends, and what survives a
reconnect (``disconnected``/``reconnected``: written frames fail POSSIBLY_PERSISTED, frames not
yet written are renumbered for the new connection and sent there). add() returns each record's
``RecordFuture``, add_bulk() one ``BulkFuture`` for many; sealed batches awaiting results live
in ``InFlight`` and store outcomes per report run. A keyed record of a topic whose partition
count is unknown raises ``AwaitingMetadata``: the adapter waits (max.block.ms) and calls again,
so records leave partitioned by the one partitioner kpd's ingest uses too. It does no I/O and
never blocks: the adapters (``sync``, ``aio``)
move bytes, wake waiters and run the done-callbacks listed in the ``Completions`` it returns.

Not thread-safe: an adapter serialises every call (the sync one under its lock).

Must not import sockets, threads or asyncio, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from itertools import accumulate, repeat
from operator import add

from kpd.batch import Batch
from kpd.bulk import BulkFuture, RefusedPiece
from kpd.common import (
    ClientSettings,
    Completions,
    Outgoing,
    check_bytes,
    headers_list,
)
from kpd.errors import CONNECTION_LOST, DeliveryError
from kpd.future import Hub, RecordFuture
from kpd.grouping import bytes_column, keyed_groups, keyless_groups, lengths
from kpd.inflight import InFlight
from kpd.partitioner import Partitioner, TopicPlacement
from kpd.protocol import (
    MAX_METADATA_TOPICS,
    AckLevel,
    BadFrameError,
    FatalProtocolError,
    Frame,
    FrameDecoder,
    FrameType,
    KpdErrorCode,
    Persistence,
    Welcome,
    decode_error,
    decode_metadata_response,
    decode_reports,
    encode_goodbye,
    encode_metadata_request,
    is_retriable,
)
from kpd.protocol.base import encode_string
from kpd.protocol.produce import FIXED_RECORD_BYTES, frame_overhead, with_base_seq
from kpd.protocol.records import header_blob

__all__ = ["AwaitingMetadata", "ProducerSession"]

# After an error answer (UNKNOWN_TOPIC: the topic may be created any moment) the topic is asked
# again after this backoff, doubling up to the cap, like Java's retry.backoff(.max).ms.
_ERROR_REFRESH_S = 0.1
_ERROR_REFRESH_MAX_S = 1.0


class AwaitingMetadata(Exception):
    """add() needs ``topic``'s partition count before it can place a keyed record; nothing was
    queued. The adapter waits until ``placement_ready(topic)`` (or max.block.ms passed, then
    ``metadata_timed_out``), and calls add() again — as Java's send() waits for metadata."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.topic = topic


# Written frames kept (their bytes) in case kpd answers them SHUTTING_DOWN while draining for a
# restart: those are sent again on the next connection instead of failing. Only the newest
# frames matter (kpd refuses what arrives after it began to drain), so the window is bounded.
_RESEND_WINDOW_BYTES = 16 * 1024 * 1024


class _Topic:
    """Per-topic routing state. ``partitions`` is 0 while unknown: keyless records then go
    with partition -1 (kpd keeps them sticky per frame), keyed ones wait for the count."""

    __slots__ = (
        "answer",
        "batches",
        "encoded",
        "error_backoff",
        "key_partitions",
        "name",
        "partitions",
        "placement",
        "refresh_at",
        "requested",
        "waited_out",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.encoded = encode_string(name)  # as the PRODUCE head carries it
        self.partitions = 0
        self.placement: TopicPlacement | None = None  # set once the count is known
        # ``placement.keys``, read inline by add(): key -> its partition of ``partitions``.
        self.key_partitions: dict[bytes, int] = {}
        self.batches: dict[int, Batch] = {}  # partition (or -1) -> the frame filling now
        self.refresh_at = 0.0
        self.error_backoff = 0.0  # the next refresh delay after an error answer
        self.requested = False  # a METADATA_REQUEST naming this topic is outstanding
        self.answer: tuple[int, KpdErrorCode | int] | None = None  # the last (count, error)
        # Set when a wait for the count expired (max.block.ms): keyed records then fail at
        # once with this error until a count arrives, instead of each waiting again.
        self.waited_out: DeliveryError | None = None


class ProducerSession:
    """One connection's producer state after WELCOME. See the module docstring.

    ``hub`` is the adapter's waiting mechanism, handed to every future (``future.Hub``).
    """

    def __init__(
        self,
        settings: ClientSettings,
        welcome: Welcome,
        decoder: FrameDecoder,
        clock: Callable[[], float],
        hub: Hub,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._decoder = decoder  # already past WELCOME: it knows the max frame size
        self._clock = clock
        self._hub = hub
        # The one partitioner of kpd (kpd.partitioner), as ingest uses it: Java's
        # murmur2 for keys, KIP-794 sticky runs of batch_bytes for keyless records.
        self._partitioner = Partitioner("default", settings.sticky_bytes, False, rng)
        self._max_frame = welcome.max_frame_bytes
        self._batch_limit = min(settings.batch_bytes, welcome.max_frame_bytes)
        self._topics: dict[str, _Topic] = {}
        self._lingering: deque[Batch] = deque()  # open frames, oldest (earliest deadline) first
        self._outbox: deque[Outgoing] = deque()  # framed, not yet taken by the adapter
        # PRODUCE frames sealed but not yet confirmed written (``sent``), oldest first: a suffix
        # of the sealed frames, since frames are written in order. After a reconnect they are
        # sent again on the new connection: kpd never saw them whole.
        self._unwritten: deque[Outgoing] = deque()
        # Written PRODUCE frames, newest last, while they may still be refused by a draining
        # kpd (see _RESEND_WINDOW_BYTES); trimmed from the left.
        self._recent: deque[Outgoing] = deque()
        self._recent_bytes = 0
        # Set once kpd answered a whole frame SHUTTING_DOWN / NOT_PERSISTED: it is draining for
        # a restart and accepts nothing more on this connection. Frames from _resend_from on
        # (all written after kpd began to drain, hence refused or never read) are sent again
        # on the next connection; nothing more is written on this one.
        self._draining = False
        self._resend_from: int | None = None
        # Sequence numbers restart at 0 on every connection (protocol section 1) while futures,
        # flush() and InFlight keep one numbering for the producer's life: on the wire a record
        # is ``seq - _origin``. 0 until the first reconnect.
        self._origin = 0
        # Bytes framed but not yet written: what the adapter bounds for backpressure. A plain
        # attribute, read by send() on every record. Written only by the session.
        self.buffered_bytes = 0
        self._inflight = InFlight()  # framed records awaiting their results
        self._next_seq = 0
        self._open_batches = 0  # frames in _topics[...].batches, i.e. unsealed ones
        # True after something the adapter must act on without waiting for its next deadline:
        # a topic to ask METADATA for, a first linger deadline, a frame to write. The adapter
        # reads and clears it after every add()/watch(), also when those raised.
        self.wake = False
        self._meta_wanted: dict[str, None] = {}  # topics to ask about (ordered set)
        self._meta_inflight: dict[int, tuple[str, ...]] = {}  # request_id -> topics
        self._next_request_id = 0
        self._next_refresh = float("inf")
        self._closing = False
        self._refusing = False  # closing or ended: add() raises
        self.ended = False  # for good: close() finished (GOODBYE) or gave up
        self.end_error: DeliveryError | None = None  # why it ended, unless by a clean GOODBYE
        # (code, message) once the current connection is over (ERROR from kpd, a malformed
        # stream): the adapter closes the socket and calls disconnected(code, message).
        self.broken: tuple[int, str] | None = None

    # --- records in -------------------------------------------------------------------------

    def add(self, topic, key, value, partition=None, timestamp=None, headers=None):
        """Queue one record; returns its RecordFuture. Then read/clear ``wake``.

        Raises DeliveryError (the record is not queued) when the connection has ended or the
        record can never fit a frame; ValueError/TypeError for arguments kpd would reject.
        This is send()'s hot path: records without timestamp or headers that fit the open
        frame take the straight line below; everything else goes through _add_general.
        """
        if self._refusing:
            raise self._refusal()
        if type(key) is not bytes and key is not None:
            key = check_bytes(key, "key")
        if type(value) is not bytes and value is not None:
            value = check_bytes(value, "value")
        state = self._topics.get(topic)
        if state is None:
            state = self._new_topic(topic)
        if partition is None:
            if key is not None:
                partition = state.key_partitions.get(key)
                if partition is None:
                    partition = self._key_partition(state, key)
            elif state.partitions:
                size = 0 if value is None else len(value)
                partition = self._partitioner.sticky(state.placement, size)
            else:
                partition = -1
        elif type(partition) is not int or partition < 0:
            raise ValueError(f"partition must be a non-negative int or None, not {partition!r}")
        if timestamp is not None or headers:
            return self._add_general(state, partition, key, value, timestamp, headers)
        frame = state.batches.get(partition)
        if frame is None:
            frame = self._open(state, partition)
        size = frame.size + frame.per_record
        if key is not None:
            size += len(key)
        if value is not None:
            size += len(value)
        if size >= self._batch_limit:  # rare: one test for both limits (batch <= max frame)
            return self._add_last(state, frame, partition, key, value, size)
        keys = frame.keys
        future = RecordFuture(frame, len(keys))
        keys.append(key)
        frame.values.append(value)
        frame.size = size
        return future

    def _add_last(self, state: _Topic, frame: Batch, partition: int, key, value, size: int):
        """add() for a record that fills its frame: append and seal, or start the next."""
        if size > self._max_frame:
            return self._add_general(state, partition, key, value, None, None)
        future = RecordFuture(frame, len(frame.keys))
        frame.keys.append(key)
        frame.values.append(value)
        frame.size = size
        self._seal(frame)
        return future

    def _add_general(self, state: _Topic, partition: int, key, value, timestamp, headers):
        """add() for records with a timestamp or headers, or that do not fit the open frame."""
        if timestamp is not None and (type(timestamp) is not int or not -1 <= timestamp < 2**63):
            raise ValueError(f"timestamp_ms must be an int in [-1, 2**63), not {timestamp!r}")
        blob = header_blob(headers_list(headers)) if headers else b""
        data_bytes = (0 if key is None else len(key)) + (0 if value is None else len(value))
        frame = state.batches.get(partition)
        if frame is None:
            frame = self._open(state, partition)
        grown = frame.per_record + data_bytes + frame.add_columns(timestamp, blob)
        if frame.size + grown > self._max_frame and frame.keys:
            self._seal(frame)  # the frame is full: send it and start the next one
            frame = self._open(state, partition)
            grown = frame.per_record + data_bytes + frame.add_columns(timestamp, blob)
        if frame.size + grown > self._max_frame:
            alone = frame.size + grown
            self._drop(frame)  # opened for this record alone: it must not linger
            raise DeliveryError(
                KpdErrorCode.RECORD_TOO_LARGE,
                0,
                Persistence.NOT_PERSISTED,
                f"record needs a {alone}-byte frame, max frame is {self._max_frame} bytes",
            )
        index = len(frame.keys)
        frame.keys.append(key)
        frame.values.append(value)
        frame.store_columns(index, timestamp, blob)
        frame.size += grown
        future = RecordFuture(frame, index)
        if frame.size >= self._batch_limit:
            self._seal(frame)
        return future

    def add_bulk(self, topic, keys, values, partition=None) -> BulkFuture:
        """Queue many records of one topic; returns one BulkFuture for all. Then read/clear
        ``wake``. ``keys``: None (all keyless) or one key per value.

        Raises AwaitingMetadata (nothing queued) for keyed records while the topic's count is
        unknown, DeliveryError when the connection has ended, ValueError/TypeError for bad
        arguments. Per record it costs a few C-level passes over the columns plus one Python
        loop step to group by partition (~0.1-0.2 us), not send()'s ~1 us.
        """
        if self._refusing:
            raise self._refusal()
        values = bytes_column(values, "value")
        count = len(values)
        if keys is not None:
            keys = bytes_column(keys, "key")
            if len(keys) != count:
                raise ValueError(f"{len(keys)} keys for {count} values")
            if count and keys[0] is None and keys.count(None) == count:
                keys = None
        state = self._topics.get(topic)
        if state is None:
            state = self._new_topic(topic)
        if partition is not None:
            if type(partition) is not int or partition < 0:
                raise ValueError(f"partition must be a non-negative int or None, not {partition!r}")
            groups = [(partition, keys, values)]
            order = None
        elif keys is None:
            budget = self._settings.sticky_bytes
            groups = keyless_groups(self._partitioner, state.placement, values, budget)
            order = None
        else:
            if state.placement is None:
                self._key_partition(state, keys[0])  # raises: AwaitingMetadata or the refusal
            groups, order = keyed_groups(self._partitioner, state.placement, keys, values)
        pieces: list[tuple] = []
        for part, group_keys, group_values in groups:
            self._append_group(state, part, group_keys, group_values, pieces)
        return BulkFuture(pieces, count, self._hub, order)

    def _append_group(self, state: _Topic, partition: int, keys, values, pieces: list) -> None:
        """Append one partition's records to its frames, sealing each that fills; note the
        ``(frame, lo, hi)`` pieces. A record too large for any frame fails alone."""
        count = len(values)
        frame = state.batches.get(partition)
        if frame is not None and frame.per_record == FIXED_RECORD_BYTES:
            # The common case, a group that fits the open frame: two C-level sums, no list.
            size = FIXED_RECORD_BYTES * count + sum(lengths(values))
            if keys is not None:
                size += sum(lengths(keys))
            if frame.size + size < self._batch_limit:
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
            frame = state.batches.get(partition)
            if frame is None:
                frame = self._open(state, partition)
            elif frame.per_record != FIXED_RECORD_BYTES:
                self._seal(frame)  # it has timestamp/header columns: start a plain one
                continue
            room = self._batch_limit - frame.size
            # Records start..end-1 keep the frame under batch_limit; one more may take it to
            # batch_limit or past it (then it is sealed), as long as it stays within a frame.
            end = bisect_left(ends, ends[start] + room, start + 1) - 1
            if end < count and frame.size + ends[end + 1] - ends[start] <= self._max_frame:
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
            if frame.size >= self._batch_limit:
                self._seal(frame)
            start = end

    def _too_large(self, needed: int) -> RefusedPiece:
        return RefusedPiece(
            DeliveryError(
                KpdErrorCode.RECORD_TOO_LARGE,
                0,
                Persistence.NOT_PERSISTED,
                f"record needs a {needed}-byte frame, max frame is {self._max_frame} bytes",
            )
        )

    def take_wake(self) -> bool:
        """``wake``, cleared: True once after something the adapter must act on."""
        wake, self.wake = self.wake, False
        return wake

    def _key_partition(self, state: _Topic, key: bytes) -> int:
        """The partition of a key that missed ``key_partitions``; raises AwaitingMetadata
        while the topic's count is unknown, DeliveryError if it will not come."""
        placement = state.placement
        if placement is not None:
            return placement.for_key(key)
        answer = state.answer
        if answer is not None and answer[1] and not is_retriable(answer[1]):
            raise DeliveryError(
                answer[1],
                0,
                Persistence.NOT_PERSISTED,
                f"topic {state.name!r}: kpd answered {_code_name(answer[1])} for its metadata",
            )
        if state.waited_out is not None:
            error = state.waited_out
            raise DeliveryError(error.code, 0, Persistence.NOT_PERSISTED, error.message)
        raise AwaitingMetadata(state.name)

    def _new_topic(self, name: str) -> _Topic:
        if not isinstance(name, str) or not name:
            raise ValueError(f"topic must be a non-empty str, not {name!r}")
        state = _Topic(name)  # encodes the name: raises before anything is registered
        self._topics[name] = state
        self._meta_wanted[name] = None
        self.wake = True
        return state

    def _open(self, state: _Topic, partition: int) -> Batch:
        deadline = self._clock() + self._settings.linger_s
        frame = Batch(state.name, partition, frame_overhead(state.encoded), deadline, self._hub)
        state.batches[partition] = frame
        self._lingering.append(frame)
        self._open_batches += 1
        if self._open_batches == 1:
            self.wake = True  # the adapter may be sleeping without a deadline
        return frame

    def _drop(self, frame: Batch) -> None:
        frame.sealed = True  # _lingering skips it
        del self._topics[frame.topic].batches[frame.partition]
        self._open_batches -= 1
        if self._lingering and self._lingering[-1] is frame:
            self._lingering.pop()  # opened for a record that was refused: forget it

    def _seal(self, frame: Batch) -> None:
        """Turn ``frame`` into a PRODUCE frame numbered with the next sequence numbers."""
        self._drop(frame)
        if not frame.keys:
            return
        base = self._next_seq
        # Sequence numbers are given when a frame is sealed, not when it opened, because
        # frames of different partitions fill concurrently but must go out numbered in the
        # order they are sent (protocol §6: base_seq = previous base_seq + count).
        data = frame.seal(self._topics[frame.topic].encoded, base)
        if self._origin:
            data = with_base_seq(data, base - self._origin)
        self._next_seq = base + frame.count
        self._inflight.add(frame)
        if not self._outbox:
            self.wake = True
        out = Outgoing(data, self._next_seq, len(data), frame)
        self._outbox.append(out)
        self._unwritten.append(out)
        self.buffered_bytes += len(data)

    def seal_due(self) -> None:
        """Frame every batch whose linger has expired."""
        lingering = self._lingering
        now = self._clock()
        while lingering and (lingering[0].sealed or lingering[0].deadline <= now):
            batch = lingering.popleft()
            if not batch.sealed:
                self._seal(batch)

    def seal_all(self) -> None:
        """Frame every open batch now (flush, close)."""
        while self._lingering:
            batch = self._lingering.popleft()
            if not batch.sealed:
                self._seal(batch)

    def begin_close(self) -> None:
        """Frame everything, then queue GOODBYE; add() refuses records from now on."""
        if self._closing or self.ended:
            return
        self.seal_all()
        self._closing = self._refusing = True
        self._outbox.append(Outgoing(encode_goodbye(self._next_seq - self._origin), -1, 0))

    # --- frames out ---------------------------------------------------------------------------

    def take_output(self) -> list[Outgoing]:
        """Frames to write, in order: METADATA requests that are due, then framed batches.
        Nothing while kpd drains: what is framed waits for the next connection."""
        if self._draining:
            return []
        out = self._metadata_requests()
        out.extend(self._outbox)
        self._outbox.clear()
        return out

    def sent(self, end_seq: int, nbytes: int) -> Completions:
        """The adapter wrote every frame up to ``end_seq``; ``nbytes``: their ``buffered`` sum.

        With acks "none" that settles those records: no report will come for them.
        """
        self.buffered_bytes -= nbytes
        unwritten, recent = self._unwritten, self._recent
        while unwritten and unwritten[0].end_seq <= end_seq:
            out = unwritten.popleft()
            recent.append(out)
            self._recent_bytes += len(out.data)
        keep_from = self._resend_from
        while recent and (keep_from is None or recent[0].batch.base_seq < keep_from):
            if recent[0].batch.remaining and self._recent_bytes <= _RESEND_WINDOW_BYTES:
                break
            self._recent_bytes -= len(recent.popleft().data)
        done = Completions()
        self._inflight.written(end_seq, self._settings.ack is AckLevel.NONE, done)
        return done

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def settled_below(self) -> int:
        """Every record with a lower sequence number has its result (flush waits on this)."""
        return self._inflight.lowest_seq(self._next_seq)

    def next_deadline(self) -> float | None:
        """When the adapter must call seal_due()/take_output() again, if nothing else happens."""
        lingering = self._lingering
        while lingering and lingering[0].sealed:
            lingering.popleft()
        deadline = lingering[0].deadline if lingering else None
        if self._next_refresh != float("inf"):
            deadline = self._next_refresh if deadline is None else min(deadline, self._next_refresh)
        return deadline

    # --- METADATA -----------------------------------------------------------------------------

    def _metadata_requests(self) -> list[Outgoing]:
        if self._closing or self.ended:
            return []
        if self._clock() >= self._next_refresh:
            self._mark_due_topics()
        wanted = [t for t in self._meta_wanted if not self._topics[t].requested]
        self._meta_wanted.clear()
        out = []
        for start in range(0, len(wanted), MAX_METADATA_TOPICS):
            topics = tuple(wanted[start : start + MAX_METADATA_TOPICS])
            request_id = self._next_request_id
            self._next_request_id = (request_id + 1) & 0xFFFFFFFF
            self._meta_inflight[request_id] = topics
            for topic in topics:
                self._topics[topic].requested = True
            out.append(Outgoing(encode_metadata_request(request_id, topics), -1, 0))
        return out

    def _mark_due_topics(self) -> None:
        now = self._clock()
        self._next_refresh = float("inf")
        for state in self._topics.values():
            if state.refresh_at <= now:
                self._meta_wanted[state.name] = None
            else:
                self._next_refresh = min(self._next_refresh, state.refresh_at)

    def _on_metadata(self, payload) -> None:
        response = decode_metadata_response(payload)
        topics = self._meta_inflight.pop(response.request_id, ())
        now = self._clock()
        for entry in response.topics:
            state = self._topics.get(entry.topic)
            if state is None or entry.topic not in topics:
                continue
            state.requested = False
            state.answer = (entry.partitions, entry.error)
            if entry.error == KpdErrorCode.NONE and entry.partitions > 0:
                # The placement object stays the same; a new count clears its keys in place.
                state.placement = self._partitioner.topic(state.name, entry.partitions)
                state.key_partitions = state.placement.keys
                state.partitions = entry.partitions
                state.waited_out = None
                state.error_backoff = 0.0
                state.refresh_at = now + self._settings.metadata_max_age_s
            else:
                # A count already known stays in use (kpd fails records with the precise
                # error if the topic is really gone); an unknown one is asked again soon, as
                # the topic may be created any moment and keyed senders may be waiting.
                state.error_backoff = min(
                    max(2 * state.error_backoff, _ERROR_REFRESH_S), _ERROR_REFRESH_MAX_S
                )
                state.refresh_at = now + state.error_backoff
            self._next_refresh = min(self._next_refresh, state.refresh_at)

    def watch(self, topic: str) -> None:
        """Ask for ``topic``'s partition count if it is new here (then ask ``take_wake()``)."""
        if topic not in self._topics:
            self._new_topic(topic)

    def placement_ready(self, topic: str) -> bool:
        """True once add() can place a keyed record of ``topic`` or refuse it for good: its
        count is known, or kpd's answer is a final error, or the connection ended."""
        if self.ended:
            return True
        state = self._topics.get(topic)
        if state is None or state.placement is not None:
            return True
        answer = state.answer
        return answer is not None and bool(answer[1]) and not is_retriable(answer[1])

    def metadata_timed_out(self, topic: str, waited_ms: float) -> DeliveryError:
        """A keyed send() waited ``waited_ms`` (max.block.ms) for ``topic``'s count in vain:
        the error for its record. Later keyed records fail at once with it until a count
        arrives; the topic keeps being asked meanwhile."""
        state = self._topics[topic]
        answer = state.answer
        if answer is not None and answer[1]:
            code = answer[1]
            detail = f"kpd answered {_code_name(code)}"
        else:
            code = KpdErrorCode.DELIVERY_TIMEOUT
            detail = "kpd has not answered"
        error = DeliveryError(
            code,
            0,
            Persistence.NOT_PERSISTED,
            f"topic {topic!r} not present in metadata after {waited_ms:g} ms "
            f"(max.block.ms; {detail})",
        )
        if state.placement is None:
            state.waited_out = error
        return error

    def topic_answer(self, topic: str) -> tuple[int, KpdErrorCode | int] | None:
        """kpd's last (partition count, error) for ``topic``; None until it has answered."""
        state = self._topics.get(topic)
        return None if state is None else state.answer

    @property
    def unmatched_reports(self) -> int:
        """Reported records that had no open future (acks "none" failures, duplicates)."""
        return self._inflight.unmatched

    # --- frames in ----------------------------------------------------------------------------

    def receive(self, data: bytes) -> Completions:
        """Bytes read from the socket; returns the futures they settle."""
        done = Completions()
        try:
            frames = self._decoder.feed(data)
        except FatalProtocolError as exc:
            self._dispatch(exc.frames, done)
            self._break(exc.code, f"kpd sent a malformed stream: {exc.message}")
            return done
        self._dispatch(frames, done)
        return done

    def accept(self, frames: list[Frame]) -> Completions:
        """Frames that arrived with WELCOME, already split by the handshake."""
        done = Completions()
        self._dispatch(frames, done)
        return done

    def _dispatch(self, frames: list[Frame], done: Completions) -> None:
        for frame in frames:
            if self.ended or self.broken:
                return
            try:
                self._handle(frame, done)
            except BadFrameError as exc:
                # Protocol §4: a client MUST close the connection on any malformed server frame.
                self._break(exc.code, f"kpd sent a malformed {frame.type.name}: {exc.message}")

    def _handle(self, frame: Frame, done: Completions) -> None:
        kind = frame.type
        if kind is FrameType.REPORT:
            origin = self._origin
            for run in decode_reports(frame.payload):
                if origin:
                    run = run._replace(first_seq=run.first_seq + origin)
                if run.error == KpdErrorCode.SHUTTING_DOWN and self._hold_for_resend(run):
                    continue
                # Protocol §8: ask again after INVALID_PARTITION (partitions may have been
                # added) and UNKNOWN_TOPIC (the topic may have been created meanwhile).
                for topic in self._inflight.apply(run, done):
                    self._meta_wanted[topic] = None
        elif kind is FrameType.METADATA_RESPONSE:
            self._on_metadata(frame.payload)
        elif kind is FrameType.ERROR:
            error = decode_error(frame.payload)
            self._break(error.code, f"kpd closed the connection: {error.message}")
        elif kind is FrameType.GOODBYE:
            self._on_goodbye(done)
        # PONG: this client sends no PING; the decoder allows it, so it is ignored.

    def _hold_for_resend(self, run) -> bool:
        """A draining kpd refused a frame (protocol section 9: a whole frame, partition -1,
        NOT_PERSISTED): stop writing here, and keep the frame for the next connection if its
        bytes are still at hand (True: the run settles nothing)."""
        if run.partition != -1 or run.persistence is not Persistence.NOT_PERSISTED:
            return False  # a worker's SHUTTING_DOWN: records it had taken
        self._draining = True
        for out in reversed(self._recent):  # the refused frames are the newest written
            batch = out.batch
            if batch.base_seq < run.first_seq:
                break
            if batch.base_seq == run.first_seq:
                if batch.count != run.count or batch.remaining != batch.count:
                    return False
                if self._resend_from is None or run.first_seq < self._resend_from:
                    self._resend_from = run.first_seq
                return True
        return False

    def _on_goodbye(self, done: Completions) -> None:
        # Protocol §9: the server sent every report it owes before its GOODBYE. Anything still
        # open here was never reported (a server that closed early); its outcome is unknown.
        if self._inflight or self._lingering or self._outbox:
            self._end(CONNECTION_LOST, "kpd said goodbye without reporting these records", done)
        self.ended = self._refusing = True

    # --- connections end, the producer goes on ------------------------------------------------

    def _break(self, code: int, message: str) -> None:
        if self.broken is None:
            self.broken = (code, message)

    def disconnected(self, code: int, message: str) -> Completions:
        """The connection is over (EOF, socket error, ERROR, malformed stream) and the producer
        will reconnect: frames written on it fail POSSIBLY_PERSISTED with ``code`` (kpd may
        have taken them: resending could duplicate), frames not yet written wait for the next
        connection, and so do open batches (and a GOODBYE queued by begin_close())."""
        done = Completions()
        self.broken = None
        if self.ended:
            return done
        self._draining = False
        if self._resend_from is not None:
            # Everything written from there on reached a kpd that no longer accepted records.
            again = [out for out in self._recent if out.batch.base_seq >= self._resend_from]
            self._unwritten.extendleft(reversed(again))
            self.buffered_bytes += sum(len(out.data) for out in again)
            self._inflight.rewind_written(self._resend_from)
            self._resend_from = None
        self._recent.clear()
        self._recent_bytes = 0
        self._inflight.fail_written(code, message, done)
        self._outbox.clear()  # control frames die with the connection; PRODUCE ones are kept
        self._meta_inflight.clear()
        for state in self._topics.values():
            state.requested = False
            self._meta_wanted[state.name] = None  # ask again: kpd may have restarted
        return done

    def reconnected(self, welcome: Welcome, decoder: FrameDecoder) -> Completions:
        """A new connection is past WELCOME: frames never written go out first on it,
        renumbered from 0 in the order they were sealed (so per partition, in send() order)."""
        done = Completions()
        self._decoder = decoder
        self._max_frame = welcome.max_frame_bytes
        self._batch_limit = min(self._settings.batch_bytes, welcome.max_frame_bytes)
        unwritten = self._unwritten
        if any(len(out.data) > self._max_frame for out in unwritten):
            # Rare (kpd restarted with a smaller socket.max_frame_bytes). Dropping only the big
            # frames would leave a gap in the numbering, so they all fail, as never sent.
            self.fail_queued(
                KpdErrorCode.RECORD_TOO_LARGE,
                f"kpd's max frame is now {self._max_frame} bytes, smaller than a frame queued "
                "while reconnecting",
                done,
            )
        self._origin = unwritten[0].batch.base_seq if unwritten else self._next_seq
        self._unwritten = deque(
            out._replace(data=with_base_seq(out.data, out.batch.base_seq - self._origin))
            for out in unwritten
        )
        self._outbox = deque(self._unwritten)
        if self._closing:
            self._outbox.append(Outgoing(encode_goodbye(self._next_seq - self._origin), -1, 0))
        self.wake = True
        return done

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def pending(self) -> bool:
        """Records are queued or in flight (sealed, without a result, or still open)."""
        return bool(self._inflight) or self._open_batches > 0

    def fail_queued(self, code: int, message: str, done: Completions | None = None) -> Completions:
        """Every record waiting for a connection fails NOT_PERSISTED (it was never written):
        kpd stayed unreachable for max.block.ms. The producer keeps trying to reconnect."""
        done = Completions() if done is None else done
        self.seal_all()
        self._outbox.clear()
        self._unwritten.clear()
        self._inflight.fail_all(code, message, done)  # the written ones failed on disconnect
        self.buffered_bytes = 0
        return done

    # --- the end ------------------------------------------------------------------------------

    def connection_lost(self, reason: str) -> Completions:
        """The producer stops for good (closed, or closing and the connection ended): settle
        every open record with CONNECTION_LOST."""
        done = Completions()
        if not self.ended:
            self._end(CONNECTION_LOST, f"connection to kpd lost ({reason})", done)
        return done

    def _end(self, code: int, message: str, done: Completions) -> None:
        """Fail every record without a result: sent ones POSSIBLY_PERSISTED, others NOT."""
        self.ended = self._refusing = True
        self.end_error = DeliveryError(code, 0, Persistence.NOT_PERSISTED, message)
        self.seal_all()  # unsent batches become frames that are never written
        self._outbox.clear()
        self._unwritten.clear()
        self._inflight.fail_all(code, message, done)
        self.buffered_bytes = 0

    def _refusal(self) -> DeliveryError:
        if self.end_error is not None:
            error = self.end_error
            return DeliveryError(error.code, 0, Persistence.NOT_PERSISTED, error.message)
        return DeliveryError(
            CONNECTION_LOST, 0, Persistence.NOT_PERSISTED, "the producer is closing"
        )


def _code_name(code: KpdErrorCode | int) -> str:
    return getattr(code, "name", None) or f"error {code}"
