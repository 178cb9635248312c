"""The asyncio ``AsyncProducer``: the same session as the sync Producer, driven by a loop.

Owns one UNIX-socket transport and its ``asyncio.Protocol``. Everything runs on the event
loop's thread, so the ProducerSession needs no lock: ``send()`` appends to a frame, and the first
record of a loop tick schedules one write for the end of that tick (``call_soon``): Nagle
without the delay, as the sync Producer — every record sent in the same tick coalesces, an
idle producer writes at once, no timer (``linger_ms`` > 0 opts into one). ``data_received``
settles reports
run by run and wakes the coroutines awaiting those records. A caller cancelling an awaited
future never touches the connection, nor other coroutines awaiting the same record.

Reconnecting: when the connection ends, the records written on it fail (POSSIBLY_PERSISTED)
and a task reconnects with backoff (``reconnect``), then sends what was never written first.
Meanwhile ``await send()`` waits for a connection up to max.block.ms, and records queued before
the break fail once kpd has been unreachable that long.

Must not import threads or kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

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
from kpd.errors import CONNECTION_LOST, DeliveryError, KpdConnectionError
from kpd.future import refused, run_callback
from kpd.policy import ATTEMPT, STOP, WAIT, MetadataWait, reconnect_step, unreachable_error
from kpd.protocol import FatalProtocolError, FrameDecoder, Role
from kpd.reconnect import Reconnector, unreachable
from kpd.session import AwaitingMetadata, ProducerSession

__all__ = ["AsyncProducer"]


class _Hub:
    """How an AsyncProducer's futures wait: by awaiting; result() never blocks the loop."""

    lock = contextlib.nullcontext()  # everything runs on the loop's thread

    def wait(self, ready, timeout: float | None) -> None:
        if not ready():
            raise asyncio.InvalidStateError("the record has no result yet: await its future")

    def waiter(self, batch) -> asyncio.Future:
        # One future per awaiting coroutine, so cancelling one await leaves the others alone.
        waiter = asyncio.get_running_loop().create_future()
        if batch.waiters is None:
            batch.waiters = []
        batch.waiters.append(waiter)
        return waiter


def _wake(done: Completions) -> None:
    """Wake the coroutines awaiting records of the batches ``done`` settled; schedule the
    done-callbacks on the loop, as asyncio futures do."""
    for batch in done.frames:
        waiters, batch.waiters = batch.waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
    if done.callbacks:
        loop = asyncio.get_running_loop()
        for fn, future in done.pairs():
            loop.call_soon(run_callback, fn, future)


def _wake_if(waiter: asyncio.Future, condition: bool) -> bool:
    """Resolve ``waiter`` if ``condition`` holds; True if it is done (drop it)."""
    if condition and not waiter.done():
        waiter.set_result(None)
    return waiter.done()


class _Connection(asyncio.Protocol):
    """The transport's callbacks. Until WELCOME it only splits the handshake; then it hands
    every byte to the producer's session."""

    def __init__(self, producer: AsyncProducer, welcome: asyncio.Future) -> None:
        self._producer = producer
        self._welcome = welcome  # (Welcome, decoder, early frames) or an exception
        self._decoder = FrameDecoder(Role.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._can_write: asyncio.Future | None = None  # set while the transport is paused
        # Between WELCOME and attach() the producer has no session yet: hold what arrives.
        self._backlog: list[bytes] | None = []
        self._lost_reason: str | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def attach(self) -> None:
        """The producer's session exists: replay what arrived since WELCOME, then go live."""
        backlog, self._backlog = self._backlog, None
        for data in backlog:
            self._producer._on_data(data)
        if self._lost_reason is not None:
            self._producer._on_lost(self, self._lost_reason)

    def data_received(self, data: bytes) -> None:
        if not self._welcome.done():
            self._handshake(data)
        elif self._backlog is not None:
            self._backlog.append(data)
        else:
            self._producer._on_data(data)

    def _handshake(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
            if frames:
                self._welcome.set_result((read_welcome(frames), self._decoder, frames[1:]))
        except (FatalProtocolError, KpdConnectionError) as exc:
            error = (
                exc
                if isinstance(exc, KpdConnectionError)
                else KpdConnectionError(exc.code, f"bad handshake from kpd: {exc}")
            )
            self._welcome.set_exception(error)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "kpd closed the socket" if exc is None else f"{type(exc).__name__}: {exc}"
        if not self._welcome.done():
            self._welcome.set_exception(KpdConnectionError(0, f"during the handshake: {reason}"))
        elif self._backlog is not None:
            self._lost_reason = reason
        else:
            self._producer._on_lost(self, reason)
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self._can_write is not None:
            await asyncio.shield(self._can_write)


class AsyncProducer:
    """``await start()`` (or ``async with``), then ``fut = await send(...)``; ``await fut``
    gives RecordMetadata or raises DeliveryError (``fut`` is a RecordFuture, see
    kpd.future). ``acks`` and the reconnect settings as for the sync Producer."""

    def __init__(
        self,
        path: str,
        acks: str = "kafka",
        key_serializer=None,
        value_serializer=None,
        *,
        linger_ms: float = DEFAULT_LINGER_MS,
        batch_bytes: int = 64 * 1024,
        max_block_ms: float = 60_000,
        metadata_max_age_ms: float = 300_000,
        connect_timeout: float | None = 10.0,
        client_name: str | None = None,
        reconnect_backoff_ms: float = 50,
        reconnect_backoff_max_ms: float = 1000,
    ) -> None:
        self._path = path
        self._session_id = new_session_id()  # protocol v2: outlives the connections
        self._settings = settings = ClientSettings.from_arguments(
            acks,
            client_name or f"kpd-python-asyncio pid={os.getpid()}",
            batch_bytes,
            linger_ms,
            metadata_max_age_ms,
            reconnect_backoff_ms,
            reconnect_backoff_max_ms,
            max_block_ms,
        )
        self._max_block_s = settings.max_block_s
        self._link = Reconnector(
            settings.reconnect_backoff_s, settings.reconnect_backoff_max_s, settings.max_block_s
        )
        self._connected: asyncio.Event | None = None  # set while a connection is up
        self._wakeup: asyncio.Event | None = None  # close() interrupts a reconnect wait
        self._reconnecting: asyncio.Task | None = None
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._connect_timeout = connect_timeout
        self._session: ProducerSession | None = None
        self._connection: _Connection | None = None
        self._timer: asyncio.TimerHandle | None = None  # the next seal_due/metadata deadline
        self._soon: asyncio.Handle | None = None  # this tick's write, scheduled by send()
        self._waiters: list[tuple[int, asyncio.Future]] = []  # flush(): (target seq, future)
        # partitions_for() and keyed sends waiting for a count: (ready(), future) pairs.
        self._topic_waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self._ended: asyncio.Future | None = None  # resolved when no more reports will come
        self._closed = False
        self.server_name = ""

    async def start(self) -> None:
        """Connect and handshake. If kpd is not running the producer starts anyway and send()
        waits for kpd up to max_block_ms (KpdConnectionError if kpd refuses the handshake).
        Connection losses are repaired in the background."""
        loop = asyncio.get_running_loop()
        try:
            connection, welcome, decoder, early = await self._open()
        except KpdConnectionError:
            raise  # kpd answered, and said no: a configuration problem, not an outage
        except OSError as exc:
            connection, early = None, []
            welcome, decoder = not_connected_welcome(), FrameDecoder(Role.CLIENT)
            self._link.lost(loop.time(), str(exc))
        self.server_name = welcome.server_name
        self._connection = connection
        self._ended = loop.create_future()
        self._connected = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._session = ProducerSession(self._settings, welcome, decoder, loop.time, _Hub())
        if connection is None:
            self._reconnecting = loop.create_task(self._reconnect())
            return
        self._connected.set()
        self._finish(self._session.accept(early))
        connection.attach()

    async def _open(self):
        """Connect and exchange HELLO/WELCOME: (connection, welcome, decoder, early frames)."""
        loop = asyncio.get_running_loop()
        welcome_future = loop.create_future()
        try:
            transport, connection = await asyncio.wait_for(
                loop.create_unix_connection(lambda: _Connection(self, welcome_future), self._path),
                self._connect_timeout,
            )
        except OSError as exc:  # TimeoutError included
            raise unreachable(self._path, exc) from None
        resume_seq = self._session.resume_seq if self._session is not None else 0
        transport.write(hello_frame(self._settings, self._session_id, resume_seq))
        try:
            welcome, decoder, early = await asyncio.wait_for(
                asyncio.shield(welcome_future), self._connect_timeout
            )
        except BaseException:
            transport.close()
            raise
        return connection, welcome, decoder, early

    async def send(self, topic, value, key=None, partition=None, timestamp_ms=None, headers=None):
        """Queue one record; returns its RecordFuture (not awaited here): ``await`` it for
        RecordMetadata, or use done()/result()/exception()/add_done_callback() as on an
        asyncio Future (result() of a pending record raises InvalidStateError).

        Awaiting send() waits when the socket's write buffer is full (backpressure), and for
        the first keyed record of a topic until kpd told its partition count (at most
        max_block_ms, as Java's send() waits for metadata).
        """
        if self._session is None or self._closed:
            raise RuntimeError("send() before start() or after close()")
        if not self._link.connected and not await self._wait_for_connection():
            return refused(self._unreachable())
        if self._key_serializer is not None:
            key = self._key_serializer(key)
        if self._value_serializer is not None:
            value = self._value_serializer(value)
        session = self._session
        try:
            future = session.add(topic, key, value, partition, timestamp_ms, headers)
        except DeliveryError as exc:
            future = refused(exc)
        except AwaitingMetadata:
            if session.take_wake():
                self._service()  # the METADATA request for the topic goes out now
            record = (key, value, partition, timestamp_ms, headers)
            future = await self._after_metadata(topic, lambda: session.add(topic, *record), refused)
        finally:
            wake = session.take_wake()
            if wake:
                self._service_soon()
        if wake:
            await self._connection.drain()
        return future

    async def send_bulk(self, topic, values, keys=None, *, partition=None) -> BulkFuture:
        """Queue many records of one topic at once; returns one BulkFuture (not awaited
        here): ``await`` it for a BulkResult, or BulkError if any record failed. As
        ``Producer.send_bulk``; awaiting send_bulk() itself waits as send() does."""
        if self._session is None or self._closed:
            raise RuntimeError("send_bulk() before start() or after close()")
        if not self._link.connected and not await self._wait_for_connection():
            return refused_bulk(self._unreachable(), len(values))
        if self._value_serializer is not None:
            values = [self._value_serializer(value) for value in values]
        if self._key_serializer is not None and keys is not None:
            keys = [self._key_serializer(key) for key in keys]
        session = self._session
        count = len(values)
        try:
            future = session.add_bulk(topic, keys, values, partition)
        except DeliveryError as exc:
            future = refused_bulk(exc, count)
        except AwaitingMetadata:
            if session.take_wake():
                self._service()
            future = await self._after_metadata(
                topic,
                lambda: session.add_bulk(topic, keys, values, partition),
                lambda error: refused_bulk(error, count),
            )
        finally:
            wake = session.take_wake()
            if wake:
                self._service_soon()
        if wake:
            await self._connection.drain()
        return future

    async def _after_metadata(self, topic: str, attempt, refuse):
        """send()/send_bulk() of keyed records whose topic has no partition count yet: the
        shared ``policy.MetadataWait``, waited on a future the topic's answer resolves."""
        session = self._session
        loop = asyncio.get_running_loop()
        wait = MetadataWait(session, topic, attempt, refuse, self._max_block_s, loop.time())
        while True:
            if not wait.ready() and not self._closed:
                waiter = loop.create_future()
                self._topic_waiters.append((wait.ready, waiter))
                try:
                    await asyncio.wait_for(waiter, wait.remaining(loop.time()))
                except TimeoutError:
                    return wait.timed_out()
            future = wait.retry(self._closed)
            if future is not None:
                return future

    async def _wait_for_connection(self) -> bool:
        # Up to max.block.ms from the start of the outage (as the sync Producer).
        timeout = max(self._link.expires_at() - asyncio.get_running_loop().time(), 0)
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _unreachable(self) -> DeliveryError:
        return unreachable_error(self._link, self._path, asyncio.get_running_loop().time())

    async def partitions_for(self, topic: str, timeout: float | None = None) -> int:
        """As ``Producer.partitions_for``: kpd's partition count for ``topic``."""
        session = self._require_started()
        session.watch(topic)
        if session.take_wake():
            self._service()
        if session.topic_answer(topic) is None and not session.ended:
            waiter = asyncio.get_running_loop().create_future()
            self._topic_waiters.append((lambda: session.topic_answer(topic) is not None, waiter))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        return partition_count(topic, session.topic_answer(topic), session.ended, timeout)

    async def flush(self, timeout: float | None = None) -> None:
        """Send every queued record now and wait until all of them have a result."""
        session = self._require_started()
        session.seal_all()
        self._service()
        target = session.next_seq
        if session.settled_below >= target or session.ended:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise TimeoutError(f"flush: records still without a result after {timeout} s") from None

    async def close(self, timeout: float | None = None) -> None:
        """Flush, say GOODBYE, wait for kpd's GOODBYE, close. Records still without a result
        after ``timeout`` seconds fail with CONNECTION_LOST."""
        session = self._require_started()
        if not self._closed:
            self._closed = True
            session.begin_close()
            self._wakeup.set()  # a reconnect task waiting out its backoff re-checks
            self._service()
            try:
                await asyncio.wait_for(asyncio.shield(self._ended), timeout)
            except TimeoutError:
                self._finish(session.connection_lost("closed by the app before kpd reported"))
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        self._connection.transport.close()
        await asyncio.shield(self._connection.closed)

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def _require_started(self) -> ProducerSession:
        if self._session is None:
            raise RuntimeError("AsyncProducer not started")
        return self._session

    # --- loop callbacks -----------------------------------------------------------------------

    def _service_soon(self) -> None:
        """Write at the end of this loop tick, once: the records the app sends before it
        yields to the loop coalesce into the same frames."""
        if self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self._on_soon)

    def _on_soon(self) -> None:
        self._soon = None
        self._service()

    def _service(self) -> None:
        """Frame what is due, write it, and arm the timer for the next deadline."""
        session = self._session
        # Called from the loop, between the app's steps: the producer is idle, so with no
        # linger every open frame goes now (transport.write() queues behind any write in flight).
        session.seal_ready(idle=True)
        out = session.take_output() if self._link.connected else None
        if out and not session.ended:
            transport = self._connection.transport
            transport.writelines([item.data for item in out])
            # Handed to the transport counts as sent: if the connection dies now these records
            # are reported POSSIBLY_PERSISTED, the safe side.
            end_seq = max(item.end_seq for item in out)
            self._finish(session.sent(end_seq, sum(item.buffered for item in out)))
        self._arm(session.next_deadline())

    def _arm(self, deadline: float | None) -> None:
        timer = self._timer
        if timer is not None and (deadline is None or timer.when() > deadline):
            timer.cancel()
            timer = self._timer = None
        if deadline is not None and timer is None and not self._session.ended:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._service()

    def _on_data(self, data: bytes) -> None:
        session = self._session
        self._finish(session.receive(data))
        if session.ended or session.broken:
            self._connection.transport.close()  # connection_lost follows: _on_lost
        else:
            self._service()  # failures may have asked for a METADATA refresh

    def _on_lost(self, connection: _Connection, reason: str) -> None:
        if connection is not self._connection:
            return  # a connection given up on already
        session = self._session
        code, message = session.broken or (CONNECTION_LOST, f"connection to kpd lost ({reason})")
        self._link.lost(asyncio.get_running_loop().time(), message)
        self._connected.clear()
        self._finish(session.disconnected(code, message))
        if not session.ended and self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    # --- reconnecting -------------------------------------------------------------------------

    async def _reconnect(self) -> None:
        """Try again with backoff until a handshake succeeds or the producer is done; fail
        the queued records once kpd has been unreachable for max.block.ms."""
        loop = asyncio.get_running_loop()
        link, session = self._link, self._session
        while True:
            step = reconnect_step(session, link, self._path, loop.time())
            if step.action is STOP:
                self._reconnecting = None
            if step.done is not None:
                self._finish(step.done)
            if step.action is STOP:
                return
            if step.action is WAIT:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), step.wait)
            if step.action is not ATTEMPT:
                continue
            try:
                connection, welcome, decoder, early = await self._open()
            except OSError as exc:
                link.failed(loop.time(), str(exc))
                continue
            if session.ended:  # close() gave up meanwhile
                connection.transport.close()
                continue
            self._reconnecting = None
            self._connection = connection
            self.server_name = welcome.server_name
            link.succeeded()
            self._connected.set()
            self._finish(session.reconnected(welcome, decoder))
            self._finish(session.accept(early))
            connection.attach()
            self._service()
            return

    def _finish(self, done: Completions) -> None:
        """Wake awaiting records, then flush() and close() waiters whose condition now holds."""
        _wake(done)
        session = self._session
        settled = session.settled_below
        keep = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if settled >= target or session.ended:
                waiter.set_result(None)
            else:
                keep.append((target, waiter))
        self._waiters = keep
        if self._topic_waiters:
            self._topic_waiters = [
                (ready, waiter)
                for ready, waiter in self._topic_waiters
                if not _wake_if(waiter, session.ended or ready())
            ]
        if session.ended:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._ended.done():
                self._ended.set_result(None)
