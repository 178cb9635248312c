"""The client side of one producer's connections to kpd, sans-IO: records in, frames out,
reports in.

Owns what the sync and asyncio producers share after the handshake and how its parts meet:
``framer`` (records placed and appended to open PRODUCE frames, sealed and numbered),
``topics`` (partition counts and METADATA), ``resend`` (the frames that survive a reconnect
and their renumbering), ``inflight`` (sealed frames awaiting reports, outcomes per run). The
session itself holds the outbox of frames to write, dispatches the frames kpd sends, and
decides what a connection's end does (``disconnected``/``reconnected``: written frames fail
POSSIBLY_PERSISTED, frames not yet written are renumbered for the new connection and sent
there). add() returns each record's ``RecordFuture``, add_bulk() one ``BulkFuture`` for
many. A keyed record of a topic whose partition count is unknown raises
``AwaitingMetadata``: the adapter waits (max.block.ms, ``policy.MetadataWait``) and calls
again. It does no I/O and never blocks: the adapters (``sync``, ``aio``) move bytes, wake
waiters and run the done-callbacks listed in the ``Completions`` it returns.

Not thread-safe: an adapter serialises every call (the sync one under its lock).

Must not import sockets, threads or asyncio.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from kpd.bulk import BulkFuture
from kpd.common import ClientSettings, Completions, Outgoing
from kpd.errors import CONNECTION_LOST, DeliveryError
from kpd.framer import Framer
from kpd.future import Hub
from kpd.inflight import InFlight
from kpd.partitioner import Partitioner
from kpd.produce_frame import ProduceFrame
from kpd.protocol import (
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
    decode_reports,
    encode_goodbye,
)
from kpd.protocol.produce import with_base_seq
from kpd.resend import ResendWindow
from kpd.topics import AwaitingMetadata, TopicTable

__all__ = ["AwaitingMetadata", "ProducerSession"]


class ProducerSession:
    """One producer's state across its connections, after the first WELCOME. See the module
    docstring. ``hub`` is the adapter's waiting mechanism, handed to every future."""

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
        # The one partitioner of kpd (kpd.partitioner), as ingest uses it: Java's murmur2 for
        # keys, KIP-794 sticky runs of batch_bytes for keyless records.
        partitioner = Partitioner("default", settings.sticky_bytes, False, rng)
        self._topics = TopicTable(partitioner, settings.metadata_max_age_s, clock, self._wake)
        self._framer = Framer(
            self._topics,
            settings.batch_bytes,
            settings.sticky_bytes,
            settings.linger_s,
            clock,
            hub,
            self._wake,
            self._sealed,
        )
        self._framer.set_max_frame(welcome.max_frame_bytes)
        # add(topic, key, value, partition=None, timestamp=None, headers=None): queue one
        # record; returns its RecordFuture. Then read/clear ``wake``. Raises DeliveryError
        # (the record is not queued) when the connection has ended or the record can never
        # fit a frame; ValueError/TypeError for arguments kpd would reject; AwaitingMetadata
        # (nothing queued) for a keyed record while its topic's count is unknown.
        # send()'s hot path, so it is the framer's own add (one C call with the accelerator)
        # until the session refuses records: then _refused_add.
        self.add = self._framer.add
        self._resend = ResendWindow()
        self.version = welcome.version  # of the current (or last) connection
        self._resend.keep_unreported = welcome.version >= 2
        self._outbox: deque[Outgoing] = deque()  # framed, not yet taken by the adapter
        # Bytes framed but not yet written: what the adapter bounds for backpressure. A plain
        # attribute, read by send() on every record. Written only by the session.
        self.buffered_bytes = 0
        self._inflight = InFlight()  # framed records awaiting their results
        # True after something the adapter must act on without waiting for its next deadline:
        # a topic to ask METADATA for, a first linger deadline, a frame to write. The adapter
        # reads and clears it after every add()/watch(), also when those raised.
        self.wake = False
        self._closing = False
        self._refusing = False  # closing or ended: add() raises
        # The opposite, as a plain attribute: what send()'s fast line (``Appender.send``)
        # reads, under the adapter's lock, before it appends without calling add().
        self.taking = True
        self.ended = False  # for good: close() finished (GOODBYE) or gave up
        self.end_error: DeliveryError | None = None  # why it ended, unless by a clean GOODBYE
        # (code, message) once the current connection is over (ERROR from kpd, a malformed
        # stream): the adapter closes the socket and calls disconnected(code, message).
        self.broken: tuple[int, str] | None = None
        # Version 2: why the last connection ended, for records kpd turns out not to know.
        self._lost_by: tuple[int, str] = (CONNECTION_LOST, "connection to kpd lost")

    def _wake(self) -> None:
        self.wake = True

    # --- records in -------------------------------------------------------------------------

    def _refused_add(self, topic, key, value, partition=None, timestamp=None, headers=None):
        """``add`` once the session refuses records (closing or ended)."""
        raise self._refusal()

    def _stop_taking_records(self) -> None:
        self._refusing = True
        self.taking = False
        self.add = self._refused_add

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
        return self._framer.add_bulk(topic, keys, values, partition)

    def gated_send(self, lock, link, buffer_limit: int, general, woke):
        """send() for the sync Producer: one call that takes ``lock`` without waiting,
        checks ``taking``, ``link.connected`` and ``buffered_bytes <= buffer_limit``, and
        appends a plain record (calling ``woke()`` under the lock if that raised ``wake``);
        anything else goes to ``general`` with the same arguments (``kpd.appender``:
        ``Appender.send``). In C with the accelerator."""
        return self._framer.gated_send(lock, self, link, buffer_limit, general, woke)

    def take_wake(self) -> bool:
        """``wake``, cleared: True once after something the adapter must act on."""
        wake, self.wake = self.wake, False
        return wake

    def _sealed(self, frame: ProduceFrame, data: bytes) -> None:
        """The framer sealed ``frame``: queue its bytes, numbered for this connection."""
        origin = self._resend.origin
        if origin:
            data = with_base_seq(data, frame.base_seq - origin)
        self._inflight.add(frame)
        if not self._outbox:
            self.wake = True
        out = Outgoing(data, self._framer.next_seq, len(data), frame)
        self._outbox.append(out)
        self._resend.sealed(out)
        self.buffered_bytes += len(data)

    def seal_due(self) -> None:
        """Frame every open frame whose linger has expired (linger_ms > 0 only)."""
        self._framer.seal_due()

    def seal_ready(self, idle: bool) -> None:
        """Frame what the write policy sends now: with no linger (the default) every open
        frame when the adapter is ``idle`` (nothing of its own in flight) and none while a
        write is; with a linger, the frames whose linger expired."""
        if idle and not self._settings.linger_s:
            self._framer.seal_all()
        else:
            self._framer.seal_due()

    def seal_all(self) -> None:
        """Frame every open frame now (flush, close)."""
        self._framer.seal_all()

    def begin_close(self) -> None:
        """Frame everything, then queue GOODBYE; add() refuses records from now on."""
        if self._closing or self.ended:
            return
        self.seal_all()
        self._closing = True
        self._stop_taking_records()
        self._outbox.append(self._goodbye())

    def _goodbye(self) -> Outgoing:
        return Outgoing(encode_goodbye(self._framer.next_seq - self._resend.origin), -1, 0)

    # --- frames out ---------------------------------------------------------------------------

    def take_output(self) -> list[Outgoing]:
        """Frames to write, in order: METADATA requests that are due, then framed records.
        Nothing while kpd drains: what is framed waits for the next connection."""
        if self._resend.draining:
            return []
        out = [] if self._closing or self.ended else self._topics.requests()
        out.extend(self._outbox)
        self._outbox.clear()
        return out

    def sent(self, end_seq: int, nbytes: int) -> Completions:
        """The adapter wrote every frame up to ``end_seq``; ``nbytes``: their ``buffered`` sum.

        With acks "none" that settles those records: no report will come for them.
        """
        self.buffered_bytes -= nbytes
        self._resend.written(end_seq)
        done = Completions()
        self._inflight.written(end_seq, self._settings.ack is AckLevel.NONE, done)
        return done

    @property
    def next_seq(self) -> int:
        return self._framer.next_seq

    @property
    def resume_seq(self) -> int:
        """For a version 2 HELLO: the lowest record without a report, in the session's
        numbering (kpd may forget everything below it)."""
        return self._inflight.lowest_seq(self._framer.next_seq) - self._resend.origin

    @property
    def settled_below(self) -> int:
        """Every record with a lower sequence number has its result (flush waits on this)."""
        return self._inflight.lowest_seq(self._framer.next_seq)

    def next_deadline(self) -> float | None:
        """When the adapter must call seal_due()/take_output() again, if nothing else happens."""
        deadline = self._framer.next_deadline()
        refresh = self._topics.next_refresh
        if refresh != float("inf"):
            deadline = refresh if deadline is None else min(deadline, refresh)
        return deadline

    # --- topics -------------------------------------------------------------------------------

    def watch(self, topic: str) -> None:
        """Ask for ``topic``'s partition count if it is new here (then ask ``take_wake()``)."""
        if topic not in self._topics.entries:
            self._topics.add(topic)

    def placement_ready(self, topic: str) -> bool:
        """True once add() can place a keyed record of ``topic`` or refuse it for good: its
        count is known, or kpd's answer is a final error, or the connection ended."""
        return self.ended or self._topics.placement_ready(topic)

    def metadata_timed_out(self, topic: str, waited_ms: float) -> DeliveryError:
        """A keyed send() waited ``waited_ms`` (max.block.ms) for ``topic``'s count in vain:
        the error for its record (see ``TopicTable.metadata_timed_out``)."""
        return self._topics.metadata_timed_out(topic, waited_ms)

    def topic_answer(self, topic: str) -> tuple[int, KpdErrorCode | int] | None:
        """kpd's last (partition count, error) for ``topic``; None until it has answered."""
        return self._topics.answer(topic)

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
            origin = self._resend.origin
            for run in decode_reports(frame.payload):
                if origin:
                    run = run._replace(first_seq=run.first_seq + origin)
                if run.error == KpdErrorCode.SHUTTING_DOWN and self._resend.hold(run):
                    continue
                # Protocol §8: ask again after INVALID_PARTITION (partitions may have been
                # added) and UNKNOWN_TOPIC (the topic may have been created meanwhile).
                self._topics.want(self._inflight.apply(run, done))
        elif kind is FrameType.METADATA_RESPONSE:
            self._topics.on_response(frame.payload)
        elif kind is FrameType.ERROR:
            error = decode_error(frame.payload)
            self._break(error.code, f"kpd closed the connection: {error.message}")
        elif kind is FrameType.GOODBYE:
            self._on_goodbye(done)
        # PONG: this client sends no PING; the decoder allows it, so it is ignored.

    def _on_goodbye(self, done: Completions) -> None:
        # Protocol §9: the server sent every report it owes before its GOODBYE. Anything still
        # open here was never reported (a server that closed early); its outcome is unknown.
        if self._inflight or self._framer.lingering or self._outbox:
            self._end(CONNECTION_LOST, "kpd said goodbye without reporting these records", done)
        self.ended = True
        self._stop_taking_records()

    # --- connections end, the producer goes on ------------------------------------------------

    def _break(self, code: int, message: str) -> None:
        if self.broken is None:
            self.broken = (code, message)

    def disconnected(self, code: int, message: str) -> Completions:
        """The connection is over (EOF, socket error, ERROR, malformed stream) and the producer
        will reconnect: frames written on it fail POSSIBLY_PERSISTED with ``code`` (kpd may
        have taken them: resending could duplicate), frames not yet written wait for the next
        connection, and so do open frames (and a GOODBYE queued by begin_close())."""
        done = Completions()
        self.broken = None
        if self.ended:
            return done
        if self.version >= 2:
            # A session: what was written stays, to be sent again if the next kpd knows the
            # session (decided in reconnected(), which fails it with this code otherwise).
            self._lost_by = (code, message)
            self._outbox.clear()
            self._topics.connection_ended()
            return done
        self._fail_written(code, message, done)
        self._outbox.clear()  # control frames die with the connection; PRODUCE ones are kept
        self._topics.connection_ended()
        return done

    def _fail_written(self, code: int, message: str, done: Completions) -> None:
        """Frames written on the ended connection fail POSSIBLY_PERSISTED, except those a
        draining kpd refused (they are sent again)."""
        resend_from, again_bytes = self._resend.connection_ended()
        if resend_from is not None:
            self.buffered_bytes += again_bytes
            self._inflight.rewind_written(resend_from)
        self._inflight.fail_written(code, message, done)

    def reconnected(self, welcome: Welcome, decoder: FrameDecoder) -> Completions:
        """A new connection is past WELCOME. If both it and the last one are version 2 and kpd
        knew the session, every frame with a record still without a report goes out again,
        numbering unchanged (kpd answers what it took, takes the rest). Otherwise frames
        written on the last one fail POSSIBLY_PERSISTED, and frames never written go out
        renumbered from 0 (version 1) or WELCOME's resume_seq, in the order they were sealed
        (so per partition, in send() order)."""
        done = Completions()
        self._decoder = decoder
        requeue = self.version >= 2 and welcome.version >= 2 and welcome.resumed
        if requeue:
            self.buffered_bytes += self._resend.requeue_unreported()
        elif self.version >= 2:
            # kpd does not know the session (it expired, or this kpd speaks version 1): what
            # was written may be in Kafka and cannot be asked about.
            self._fail_written(*self._lost_by, done)
        self.version = welcome.version
        self._resend.keep_unreported = welcome.version >= 2
        max_frame = welcome.max_frame_bytes
        self._framer.set_max_frame(max_frame)
        if self._resend.too_large(max_frame):
            # Rare (kpd restarted with a smaller socket.max_frame_bytes). Dropping only the big
            # frames would leave a gap in the numbering, so they all fail, as never sent.
            self.fail_queued(
                KpdErrorCode.RECORD_TOO_LARGE,
                f"kpd's max frame is now {max_frame} bytes, smaller than a frame queued "
                "while reconnecting",
                done,
            )
        if requeue:
            self._outbox = deque(self._resend.unwritten)  # same numbering: nothing rewritten
        else:
            start = welcome.resume_seq if welcome.version >= 2 else 0
            self._outbox = deque(self._resend.renumber(self._framer.next_seq, start))
        if self._closing:
            self._outbox.append(self._goodbye())
        self.wake = True
        return done

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def pending(self) -> bool:
        """Records are queued or in flight (sealed, without a result, or still open)."""
        return bool(self._inflight) or self._framer.open_count > 0

    def fail_queued(self, code: int, message: str, done: Completions | None = None) -> Completions:
        """Every record waiting for a connection fails NOT_PERSISTED (it was never written):
        kpd stayed unreachable for max.block.ms. The producer keeps trying to reconnect."""
        done = Completions() if done is None else done
        self.seal_all()
        self._outbox.clear()
        self._resend.clear()
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
        self.ended = True
        self._stop_taking_records()
        self.end_error = DeliveryError(code, 0, Persistence.NOT_PERSISTED, message)
        self.seal_all()  # unsent frames are sealed, never to be written
        self._outbox.clear()
        self._resend.clear()
        self._inflight.fail_all(code, message, done)
        self.buffered_bytes = 0

    def _refusal(self) -> DeliveryError:
        if self.end_error is not None:
            error = self.end_error
            return DeliveryError(error.code, 0, Persistence.NOT_PERSISTED, error.message)
        return DeliveryError(
            CONNECTION_LOST, 0, Persistence.NOT_PERSISTED, "the producer is closing"
        )
