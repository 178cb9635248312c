"""The blocking ``Producer``: app threads call send(); one I/O thread owns the socket.

Owns the socket, the I/O thread and the lock that guards the ProducerSession. send() only
appends to a frame under the lock; the I/O thread writes frames and reads reports.

The write policy is Nagle's without the delay, and without a thread hand-over when idle: a
send() that opens a frame while the connection is idle (nothing pending, the I/O thread
asleep in select()) seals it and writes it itself, non-blocking, under the lock that orders
frames (``kpd.outbound``); what the socket does not take at once is left to the I/O thread,
woken through its ``Doorbell``. While a write is in flight, or within
``outbound.COALESCE_AFTER_WRITE_S`` of the last one (a burst, a tight loop), records coalesce
into the open frames instead, and the I/O thread — rung once — seals and writes them all as
soon as it is free. A send() that finds the I/O thread awake makes no syscall. ``linger_ms``
> 0 adds a time-based wait on top (opt-in; the default 0 has none: kpd's own linger.ms
batches for Kafka).

A report settles a whole run of records at once inside the session (futures read their
outcome from their frame), then one ``notify_all`` on the Producer's Condition wakes
every waiter: no per-record lock or Condition. Done-callbacks run on the I/O thread outside
the lock (also those of acks "none" records settled by a caller's own write: they are handed
over), so a callback may call send() — but, as with Kafka's own producer, they should be
quick.

Reconnecting: when the connection ends (kpd restarted, its ingest process crashed, a socket
error) the I/O thread fails the records written on it (POSSIBLY_PERSISTED), then reconnects
with backoff (``reconnect``) and sends what was never written first. Meanwhile send() blocks
for a connection up to max.block.ms, and records queued before the break fail once kpd has
been unreachable that long.

Must not import asyncio or kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time

from kpd.bulk import BulkFuture, refused_bulk
from kpd.common import (
    DEFAULT_LINGER_MS,
    ClientSettings,
    Completions,
    hello_frame,
    new_session_id,
    not_connected_welcome,
    partition_count,
    read_welcome,
)
from kpd.doorbell import Doorbell
from kpd.errors import CONNECTION_LOST, DeliveryError, KpdConnectionError
from kpd.future import refused, run_callback
from kpd.outbound import COALESCE_AFTER_WRITE_S, Outbound
from kpd.policy import ATTEMPT, STOP, WAIT, MetadataWait, reconnect_step, unreachable_error
from kpd.protocol import FatalProtocolError, FrameDecoder, KpdErrorCode, Persistence, Role
from kpd.reconnect import Reconnector, unreachable
from kpd.session import AwaitingMetadata, ProducerSession

__all__ = ["Producer"]

# Below glibc's mmap threshold (128 KiB): a larger recv() buffer is mmap'd, shrunk (mremap)
# and unmapped per read, three syscalls per REPORT frame at low rates. Reports are small.
_READ_SIZE = 64 * 1024


class _Hub:
    """The futures' side of the Producer's lock: one Condition for every record's waiter."""

    def __init__(self, changed: threading.Condition) -> None:
        self.lock = changed  # entering a Condition takes its lock: the Producer's
        self._changed = changed

    def wait(self, ready, timeout: float | None) -> None:
        with self._changed:
            self._changed.wait_for(ready, timeout)

    def waiter(self, frame):
        raise TypeError("a Producer's future blocks: call result(); AsyncProducer's are awaited")


def run_callbacks(done: Completions) -> None:
    """Run the done-callbacks of the records ``done`` settled (never under the lock)."""
    for fn, future in done.pairs():
        run_callback(fn, future)


def _handshake(path: str, hello: bytes, timeout: float | None):
    """Connect and exchange HELLO/WELCOME (blocking). Returns (socket, welcome, decoder, frames).

    Raises OSError naming the socket (KpdConnectionError if kpd refused or broke the handshake).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise unreachable(path, exc) from None
        sock.sendall(hello)
        decoder = FrameDecoder(Role.CLIENT)
        frames: list = []
        while not frames:
            data = sock.recv(_READ_SIZE)
            if not data:
                raise KpdConnectionError(0, "kpd closed the connection during the handshake")
            try:
                frames = decoder.feed(data)
            except FatalProtocolError as exc:
                raise KpdConnectionError(exc.code, f"bad handshake from kpd: {exc}") from None
        welcome = read_welcome(frames)
        sock.setblocking(False)
        return sock, welcome, decoder, frames[1:]
    except BaseException:
        sock.close()
        raise


class Producer:
    """Send records to kpd over its UNIX socket; ``send()`` returns a RecordFuture of
    RecordMetadata (kpd.future).

    ``acks``: "none" (futures resolve once the frame is written), "accepted" (once kpd holds
    the record in a worker ring; offset -1) or "kafka" (once Kafka acknowledged it).
    The first connection is tried here: if kpd is not running the Producer starts anyway and
    ``send()`` waits for kpd up to ``max_block_ms``; KpdConnectionError if kpd refuses the
    handshake. Connection losses are repaired in the background: see
    ``reconnect_backoff_ms``, ``reconnect_backoff_max_ms`` and ``max_block_ms`` in
    docs/client.md.
    """

    def __init__(
        self,
        path: str,
        acks: str = "kafka",
        key_serializer=None,
        value_serializer=None,
        *,
        linger_ms: float = DEFAULT_LINGER_MS,
        batch_bytes: int = 64 * 1024,
        buffer_bytes: int = 32 * 1024 * 1024,
        max_block_ms: float = 60_000,
        metadata_max_age_ms: float = 300_000,
        connect_timeout: float | None = 10.0,
        client_name: str | None = None,
        reconnect_backoff_ms: float = 50,
        reconnect_backoff_max_ms: float = 1000,
    ) -> None:
        settings = ClientSettings.from_arguments(
            acks,
            client_name or f"kpd-python pid={os.getpid()}",
            batch_bytes,
            linger_ms,
            metadata_max_age_ms,
            reconnect_backoff_ms,
            reconnect_backoff_max_ms,
            max_block_ms,
        )
        self._path = path
        self._settings = settings
        self._connect_timeout = connect_timeout
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._serializing = key_serializer is not None or value_serializer is not None
        self._buffer_bytes = buffer_bytes
        self._max_block_s = max_block_ms / 1000
        self._session_id = new_session_id()  # protocol v2: outlives the connections
        try:
            self._sock, welcome, decoder, early = _handshake(
                path, hello_frame(settings, self._session_id), connect_timeout
            )
            down = None
        except KpdConnectionError:
            raise  # kpd answered, and said no: a configuration problem, not an outage
        except OSError as exc:
            # kpd is not running (yet): start anyway, as Java's KafkaProducer does; send()
            # waits for it up to max_block_ms, the I/O thread keeps trying (issue 19).
            self._sock, down = None, str(exc)
            welcome, decoder, early = not_connected_welcome(), FrameDecoder(Role.CLIENT), []
        self.server_name = welcome.server_name
        # Guards the session and every field below; the I/O thread and send() share them.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # settled/buffered/ended moved
        hub = _Hub(self._changed)
        self._session = ProducerSession(settings, welcome, decoder, time.monotonic, hub)
        self._settled_below = 0  # published after the futures below it were resolved
        # Connected or not, and when to try again; read by send() to block while disconnected.
        self._link = Reconnector(
            settings.reconnect_backoff_s, settings.reconnect_backoff_max_s, settings.max_block_s
        )
        if down is not None:
            self._link.lost(time.monotonic(), down)
        self._io_done = False  # the I/O thread has exited
        self._closed = False  # close() was called: send() raises
        self._woken = False  # the doorbell was rung and not yet drained
        # The I/O thread is asleep in select() with nothing to write: the next record must
        # ring the doorbell. Set only under the lock, after the I/O thread found nothing to do.
        self._io_idle = False
        self._doorbell = Doorbell()
        # What is written on the current connection, by send() when idle or the I/O thread.
        self._outbound = Outbound()
        # Done-callbacks of records a caller's own write settled (acks "none"): the I/O thread
        # runs them, as every other done-callback.
        self._handed = Completions()
        if not self._serializing:
            # send()'s hot path in one call (C with the accelerator): this instance attribute
            # hides the method below, which stays the general path it falls back to.
            self.send = self._session.gated_send(
                self._lock, self._link, buffer_bytes, self._send_general, self._woken_by_add
            )
        run_callbacks(self._session.accept(early))
        self._thread = threading.Thread(target=self._io_main, name="kpd-client-io", daemon=True)
        self._thread.start()

    # --- the app's side ---------------------------------------------------------------------

    def send(self, topic, value, key=None, partition=None, timestamp_ms=None, headers=None):
        """Queue one record; returns its ``RecordFuture`` (kpd.future): the
        ``concurrent.futures.Future`` protocol — result(timeout), exception(timeout), done(),
        add_done_callback(fn) — for RecordMetadata.

        The future fails with DeliveryError (never raised here) when kpd or the connection
        fails the record. Raises RuntimeError after close(), TypeError/ValueError for bad
        arguments.
        """
        if self._serializing:
            key, value = self._serialize(key, value)
        with self._lock:
            if self._closed:
                raise RuntimeError("send() on a closed Producer")
            session = self._session
            if not self._link.connected and not self._wait_for_connection():
                return refused(self._unreachable())
            if session.buffered_bytes > self._buffer_bytes and not self._wait_for_buffer():
                return refused(self._buffer_full())
            try:
                return session.add(topic, key, value, partition, timestamp_ms, headers)
            except DeliveryError as exc:
                return refused(exc)
            except AwaitingMetadata:
                record = (key, value, partition, timestamp_ms, headers)
                return self._after_metadata(topic, lambda: session.add(topic, *record), refused)
            finally:
                # Only when a frame opened (or a topic needs METADATA) and the I/O thread is
                # asleep with nothing to write: an awake one finds the record on its own.
                if session.wake:
                    session.wake = False
                    if self._io_idle:
                        self._write_idle()

    _send_general = send  # what the gated send() hands every record it does not take

    def send_bulk(self, topic, values, keys=None, *, partition=None) -> BulkFuture:
        """Queue many records of one topic at once; returns ONE ``BulkFuture`` for all of
        them (kpd.bulk), like confluent-kafka's produce_batch: ~0.2 us of app CPU
        per record instead of send()'s ~1 us, and no future object per record.

        ``values``: a sequence of values; ``keys``: None (keyless) or one key per value;
        ``partition``: one explicit partition for all, or None (murmur2 of each key, sticky
        for keyless records, as send()). Serializers apply per record. ``future.result()``
        gives a BulkResult (``result[i]``: record i's RecordMetadata) or raises BulkError
        listing each failed record's index and DeliveryError; add_done_callback(fn) calls
        fn once for the whole bulk. Raises RuntimeError after close(), TypeError/ValueError
        for bad arguments (nothing is queued then).
        """
        if self._serializing:
            values, keys = self._serialize_bulk(values, keys)
        with self._lock:
            if self._closed:
                raise RuntimeError("send_bulk() on a closed Producer")
            session = self._session
            count = len(values)
            if not self._link.connected and not self._wait_for_connection():
                return refused_bulk(self._unreachable(), count)
            if session.buffered_bytes > self._buffer_bytes and not self._wait_for_buffer():
                return refused_bulk(self._buffer_full(), count)
            try:
                return session.add_bulk(topic, keys, values, partition)
            except DeliveryError as exc:
                return refused_bulk(exc, count)
            except AwaitingMetadata:
                return self._after_metadata(
                    topic,
                    lambda: session.add_bulk(topic, keys, values, partition),
                    lambda error: refused_bulk(error, count),
                )
            finally:
                if session.wake:
                    session.wake = False
                    if self._io_idle:
                        self._write_idle()

    def _serialize_bulk(self, values, keys):
        serialize_value = self._value_serializer
        if serialize_value is not None:
            values = [serialize_value(value) for value in values]
        if self._key_serializer is not None and keys is not None:
            keys = [self._key_serializer(key) for key in keys]
        return values, keys

    def _after_metadata(self, topic: str, attempt, refuse):
        """send()/send_bulk() of keyed records whose topic has no partition count yet (under
        the lock): the shared ``policy.MetadataWait``, waited on the Producer's Condition."""
        session = self._session
        wait = MetadataWait(session, topic, attempt, refuse, self._max_block_s, time.monotonic())
        while True:
            if session.take_wake() and not self._woken:
                self._wake()  # the METADATA request for the topic goes out now
            ready = self._changed.wait_for(
                lambda: wait.ready() or self._io_done or self._closed,
                wait.remaining(time.monotonic()),
            )
            if not ready:
                return wait.timed_out()
            future = wait.retry(self._io_done or self._closed)
            if future is not None:
                return future

    def _serialize(self, key, value):
        if self._key_serializer is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None:
            value = self._value_serializer(value)
        return key, value

    def _wait_for_buffer(self) -> bool:
        # Backpressure, like Java's buffer.memory/max.block.ms: frames pile up only when kpd
        # stops reading; block the sender for a while, then let the record fail (its future).
        return self._changed.wait_for(
            lambda: self._session.buffered_bytes <= self._buffer_bytes or self._io_done,
            self._max_block_s,
        )

    def _wait_for_connection(self) -> bool:
        # Like Java's send() blocking on metadata, up to max.block.ms — counted from the start
        # of the outage, so that once kpd has been away that long every send() fails at once
        # instead of stalling the app max.block.ms per record.
        timeout = max(self._link.expires_at() - time.monotonic(), 0)
        return self._changed.wait_for(lambda: self._link.connected or self._io_done, timeout)

    def _unreachable(self) -> DeliveryError:
        return unreachable_error(self._link, self._path, time.monotonic())

    def _buffer_full(self) -> DeliveryError:
        return DeliveryError(
            KpdErrorCode.BUFFER_FULL,
            0,
            Persistence.NOT_PERSISTED,
            f"more than {self._buffer_bytes} bytes waited to be written to kpd "
            f"for {self._max_block_s} s",
        )

    def partitions_for(self, topic: str, timeout: float | None = None) -> int:
        """The partition count of ``topic`` from kpd (asking it if needed), like Java's
        ``partitionsFor``. Raises TopicError if kpd does not know or allow the topic,
        TimeoutError after ``timeout`` seconds, ConnectionError if the connection ended."""
        with self._lock:
            self._session.watch(topic)
            if self._session.take_wake() and not self._woken:
                self._wake()
            self._changed.wait_for(
                lambda: self._session.topic_answer(topic) is not None or self._io_done, timeout
            )
            answer = self._session.topic_answer(topic)
            io_done = self._io_done
        return partition_count(topic, answer, io_done, timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Send every queued record now and wait until all of them have a result.

        Raises TimeoutError if ``timeout`` seconds pass first. Failed records do not make
        flush raise: their futures carry the errors.
        """
        with self._lock:
            self._session.seal_all()
            target = self._session.next_seq
            if not self._woken:
                self._wake()
            done = self._changed.wait_for(
                lambda: self._settled_below >= target or self._io_done, timeout
            )
        if not done:
            raise TimeoutError(f"flush: records still without a result after {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        """Flush, say GOODBYE, wait for kpd's GOODBYE (which follows its last report), close.

        Records still without a result after ``timeout`` seconds fail with CONNECTION_LOST.
        """
        with self._lock:
            if self._closed:
                already = True
            else:
                already, self._closed = False, True
                self._session.begin_close()
                self._changed.notify_all()  # an I/O thread waiting to reconnect re-checks
                if not self._woken:
                    self._wake()
        if not already:
            with self._lock:
                self._changed.wait_for(lambda: self._io_done, timeout)
            self._stop_io()
        self._thread.join()

    def _stop_io(self) -> None:
        """Make the I/O thread fail what is left and exit (no-op if it already has)."""
        with self._lock:
            if self._io_done:
                return
            done = self._session.connection_lost("closed by the app before kpd reported")
        run_callbacks(done)
        with self._lock:
            self._changed.notify_all()
            if not self._woken:
                self._wake()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _woken_by_add(self) -> None:
        """Under the lock, after the gated send() opened the first frame (session.wake):
        what send()'s general path does after an add."""
        session = self._session
        session.wake = False
        if self._io_idle:
            self._write_idle()

    def _write_idle(self) -> None:
        """Under the lock, in send() after a frame opened while the I/O thread sleeps with
        nothing to write: Nagle without the delay, on the caller's thread. Seal the open frames
        and write them now, unless a write is pending or ended a moment ago (then the I/O
        thread coalesces); whatever the socket does not take, the I/O thread writes."""
        outbound, session = self._outbound, self._session
        now = time.monotonic()
        if (
            outbound.pending
            or outbound.sock is None
            or session.broken is not None
            or now - outbound.wrote_at < COALESCE_AFTER_WRITE_S
        ):
            self._wake()
            return
        session.seal_ready(idle=True)
        frames = session.take_output()
        if not frames:
            self._wake()  # lingering frames: the I/O thread keeps their deadline
            return
        outbound.queue(frames)
        try:
            written = outbound.write()
        except OSError:
            self._wake()  # the connection broke: the I/O thread finds out and reconnects
            return
        self._wrote(written, now)
        if outbound.pending:
            self._wake()  # the socket is full: the I/O thread finishes the write

    def _wrote(self, written: int, now: float) -> None:
        """Under the lock: ``written`` bytes of the pending frames went out."""
        sent_end, sent_bytes = self._outbound.consume(written, now)
        if sent_end < 0 and not sent_bytes:
            return
        done = self._session.sent(sent_end, sent_bytes)
        if done.callbacks:
            if threading.current_thread() is self._thread:
                self._publish_locked(done)
                return
            self._handed.take(done)
            self._wake()
        if done:
            self._settle_locked()

    def _wake(self) -> None:
        """Called under the lock: ring the doorbell unless it is already ringing."""
        self._io_idle = False
        if self._io_done or self._woken:
            return
        self._woken = True
        self._doorbell.ring()

    # --- the I/O thread -----------------------------------------------------------------------

    def _io_main(self) -> None:
        try:
            if self._sock is None and not self._connect_again():
                return  # closed before kpd was ever reached
            while True:
                broken = self._serve()
                self._sock.close()
                if broken is None or not self._reconnect(*broken):
                    return
        except Exception as exc:
            with self._lock:
                done = self._session.connection_lost(f"{type(exc).__name__}: {exc}")
            run_callbacks(done)
            if not isinstance(exc, OSError):
                raise  # a client bug: let threading.excepthook print it
        finally:
            if self._sock is not None:
                self._sock.close()
            with self._lock:
                self._io_done = True  # from now on _wake() is a no-op: the doorbell is gone
                self._doorbell.close()
                self._settled_below = self._session.next_seq
                self._changed.notify_all()

    def _serve(self) -> tuple[int, str] | None:
        """Move frames on the current connection until it is over: returns None once the
        session has ended (close() finished), else (code, why) the connection broke."""
        try:
            self._serve_connection()
        except OSError as exc:  # ECONNRESET, EPIPE: kpd went away mid-write or mid-read
            return CONNECTION_LOST, f"connection to kpd lost ({type(exc).__name__}: {exc})"
        with self._lock:
            if self._session.ended:
                return None
            return self._session.broken or (CONNECTION_LOST, "kpd closed the socket")

    def _serve_connection(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ)
        selector.register(self._doorbell.fd, selectors.EVENT_READ)
        outbound = self._outbound
        pending = outbound.pending  # guarded by the lock; the I/O thread writes its head
        mask_now = selectors.EVENT_READ
        with self._lock:
            outbound.attach(self._sock)
        try:
            while True:
                with self._lock:
                    session = self._session
                    # Nagle without the delay: nothing in flight, so every open frame goes
                    # now; while a write is in flight, records coalesce into open frames.
                    session.seal_ready(idle=not pending)
                    outbound.queue(session.take_output())
                    if session.ended or session.broken:
                        return
                    deadline = session.next_deadline()
                    # Asleep with nothing to write: the next send() writes its frame itself.
                    self._io_idle = not pending
                if pending:
                    self._write()
                    if not pending:
                        continue  # all written: records sent meanwhile go out now, not later
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
                if events != mask_now:
                    selector.modify(self._sock, events)
                    mask_now = events
                timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
                ready = selector.select(timeout)
                # Awake: send() needs no doorbell until the loop above found nothing to do.
                # A plain store: a stale True read by send() costs one spare ring, no more.
                self._io_idle = False
                for key, mask in ready:
                    if key.fileobj is self._sock:
                        if mask & selectors.EVENT_READ and not self._read():
                            return
                    else:
                        self._drain_doorbell()
        finally:
            with self._lock:
                outbound.detach()  # send() writes nothing more on this connection
            selector.close()

    def _drain_doorbell(self) -> None:
        # Drain before clearing the flag: a wake after this rings it afresh.
        self._doorbell.drain()
        with self._lock:
            self._woken = False
            handed = self._handed
            if handed.callbacks:
                self._handed = Completions()
        if handed.callbacks:
            run_callbacks(handed)

    def _read(self) -> bool:
        """Read and process what kpd sent; False once the connection is over."""
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            return False  # EOF: _serve tells why
        with self._lock:
            done = self._session.receive(data)
            ended = self._session.ended or self._session.broken is not None
            if not done.callbacks:
                self._settle_locked()
        if done.callbacks:
            self._publish(done)
        return not ended

    def _write(self) -> None:
        """Write as much as the socket takes, every pending frame in one syscall (each call
        that releases the GIL costs this thread a GIL hand-over), outside the lock; note
        which frames went out completely."""
        written = self._outbound.write()
        if written:
            with self._lock:
                self._wrote(written, time.monotonic())

    def _publish(self, done: Completions) -> None:
        # Outcomes are visible as soon as the session stored them; callbacks run first (outside
        # the lock: they may call send()), then waiters (result(), flush()) are told.
        run_callbacks(done)
        with self._lock:
            self._settle_locked()

    def _settle_locked(self) -> None:
        """Under the lock: publish settled_below and wake every waiter, once per read/write."""
        self._settled_below = max(self._settled_below, self._session.settled_below)
        self._changed.notify_all()

    # --- reconnecting (the I/O thread) ------------------------------------------------------

    def _reconnect(self, code: int, reason: str) -> bool:
        """After the connection broke: fail what was written on it, then try again with
        backoff until a handshake succeeds (True) or the producer is done (False)."""
        with self._lock:
            done = self._session.disconnected(code, reason)
            self._link.lost(time.monotonic(), reason)
        self._publish(done)
        return self._connect_again()

    def _connect_again(self) -> bool:
        """Try with backoff until a handshake succeeds (True) or the producer is done."""
        while True:
            with self._lock:
                if not self._await_attempt():
                    return False
            with self._lock:
                hello = hello_frame(self._settings, self._session_id, self._session.resume_seq)
            try:
                sock, welcome, decoder, early = _handshake(self._path, hello, self._connect_timeout)
            except OSError as exc:
                with self._lock:
                    self._link.failed(time.monotonic(), str(exc))
                continue
            with self._lock:
                self._sock = sock
                self.server_name = welcome.server_name
                done = self._session.reconnected(welcome, decoder)
                done.take(self._session.accept(early))
                self._link.succeeded()
            self._publish(done)
            return True

    def _await_attempt(self) -> bool:
        """Under the lock: wait until the next attempt is due (``policy.reconnect_step``);
        False once there is nothing left to do."""
        while True:
            step = reconnect_step(self._session, self._link, self._path, time.monotonic())
            if step.done is not None:
                self._publish_locked(step.done)
            if step.action is STOP:
                return False
            if step.action is ATTEMPT:
                return True
            if step.action is WAIT:
                self._changed.wait(step.wait)  # close() and flush() notify

    def _publish_locked(self, done: Completions) -> None:
        """Under the lock: run ``done``'s callbacks with the lock released, then tell waiters."""
        if done.callbacks:
            self._lock.release()
            try:
                run_callbacks(done)
            finally:
                self._lock.acquire()
        self._settle_locked()
