"""One Kafka client's connection to the ``socket.kafka`` listener: requests in, answers out.

Requests are cut out of the reads as views, without a copy (one spread over several reads is
joined once, when whole), and handled inside ``data_received``, one after another, without a
task per request: a Produce request whose batches admission takes at once (the common case) is
checked and admitted before the call returns, and its answer is known from the callback that
completes its last partition (a worker's report, or the publish at acks=1). Publishing, the
journal's lines and the answers' writes wait for the end of the event-loop turn
(``KafkaListener.end_turn_soon``), which does them once for all the turn's requests and
reports, in that order. At 10k records/s librdkafka sends ~1,100 small requests a second; a
task, a queue and an event per request were a third of ingest's CPU, and a ring wake-up, a
journal write and a socket write per request most of its system calls (issue 20). Only a
request that must wait — a
Metadata lookup, a batch that admission holds for ring space or a topic lookup — finishes in
a task, and the requests read after it wait for it, in order: entries are enqueued in request
order, so per-partition order holds across a client's pipelined requests.

Answers leave in request order, as the Kafka protocol requires: each request that is answered
takes a slot in the answer queue when it is handled; a slot filled before the ones ahead of it
waits for them. The known answers at the head of the queue go out in one write per turn.

Owned by ingest's event loop. Must not import the listener module (it is handed the
listener) or the server.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import struct
import time
from collections.abc import Awaitable
from typing import Any

from daemon.ingest.kafka.outcomes import Blocked, PendingOutcome
from daemon.kafka import serving
from daemon.kafka.errors import ErrorCode
from daemon.kafka.messages import API_VERSIONS, INIT_PRODUCER_ID, METADATA, PRODUCE
from daemon.kafka.primitives import ProtocolError
from kpd.protocol.base import AckLevel

__all__ = ["KafkaConnection"]

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
_MAX_QUEUED_REQUESTS = 64  # read no more from a client with this many requests unanswered
_BUFFER_FULL_THROTTLE_MS = 1000
_ACK_LEVELS = {0: AckLevel.NONE, 1: AckLevel.ACCEPTED, -1: AckLevel.KAFKA}


class _Answer:
    """A request's slot in the answer queue; ``frame`` None until its answer is known."""

    __slots__ = ("frame", "read_at")

    def __init__(self, frame: bytes | None = None, read_at: float = 0.0) -> None:
        self.frame = frame
        self.read_at = read_at  # time.monotonic() a Produce request was handled; 0: not one


class _ProduceRequest:
    """A Produce request on its way: the partitions not offered yet (``cursor``) and each
    offered partition's (topic, index, result) — an ``Outcome`` or an awaitable of one."""

    __slots__ = ("ack", "acks", "correlation_id", "cursor", "partitions", "parts", "read_at",
                 "refusal", "timeout_s", "version")  # fmt: skip

    def __init__(self, version: int, correlation_id: int, body: dict) -> None:
        self.version = version
        self.correlation_id = correlation_id
        self.acks = body["acks"]
        self.ack = _ACK_LEVELS.get(self.acks)
        self.timeout_s = max(body["timeout_ms"], 0) / 1000
        self.refusal = ErrorCode.NONE  # the request as a whole cannot be served
        if self.ack is None:
            self.refusal = ErrorCode.INVALID_REQUIRED_ACKS
        elif body["transactional_id"] is not None:
            self.refusal = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        self.partitions = [(topic_data["name"], data) for topic_data in body["topic_data"]
                           for data in topic_data["partition_data"]]  # fmt: skip
        self.cursor = 0
        self.read_at = time.monotonic()  # kpd_kafka_produce_seconds counts from here
        self.parts: list[list[Any]] = []


class _ProduceAnswer:
    """Collects a Produce request's partition outcomes into its answer slot: each part's
    result becomes its ``Outcome`` as it is known (at once for most; a ``PendingOutcome``
    calls back from the worker's report), and the last one writes the answer."""

    __slots__ = ("_conn", "_request", "_slot", "_waiting")

    def __init__(self, conn: KafkaConnection, request: _ProduceRequest, slot: _Answer) -> None:
        self._conn = conn
        self._request = request
        self._slot = slot
        waits = [part for part in request.parts if not isinstance(part[2], tuple)]
        self._waiting = len(waits) + 1  # + 1 until every callback is set: none completes early
        for part in waits:
            result = part[2]
            if isinstance(result, PendingOutcome):
                result.then(functools.partial(self._part_done, part))
            else:  # a resend waiting for its first copy's outcome (a coroutine)
                future = asyncio.ensure_future(result)
                future.add_done_callback(functools.partial(self._resend_done, part))
        self._part_done(None, None)

    def _part_done(self, part: list | None, outcome) -> None:
        if part is not None:
            part[2] = outcome
        self._waiting -= 1
        if not self._waiting:
            self._complete()

    def _resend_done(self, part: list, future: asyncio.Future) -> None:
        if future.cancelled():  # the loop is closing
            return
        try:
            outcome = future.result()
        except Exception:
            log.exception("%s: a resend's outcome failed", self._conn.name)
            self._conn.fatal("kpd could not answer a request")
            return
        self._part_done(part, outcome)

    def _complete(self) -> None:
        conn = self._conn
        if conn.closed:
            return
        try:
            self._slot.frame = self._frame()
        except Exception:
            log.exception("%s: answering a request failed", conn.name)
            conn.fatal("kpd could not answer a request")
            return
        conn.answer_ready()

    def _frame(self) -> bytes:
        request, conn = self._request, self._conn
        by_topic: dict[str, list] = {}
        throttle = 0
        for topic, index, (error, base_offset, append_time) in request.parts:
            if error:
                conn.count_error(error)
                if error == ErrorCode.REQUEST_TIMED_OUT:
                    throttle = _BUFFER_FULL_THROTTLE_MS
            by_topic.setdefault(topic, []).append((index, error, base_offset, append_time))
        return serving.encode_produce_response(request.version, request.correlation_id,
                                               list(by_topic.items()), throttle)  # fmt: skip


class KafkaConnection(asyncio.Protocol):
    """One Kafka client. Owns its read buffer, its unhandled requests and its answer order."""

    def __init__(self, listener) -> None:
        self._listener = listener  # kafka.listener.KafkaListener
        self.transport: asyncio.Transport | None = None
        # A request begun in an earlier read: its pieces, their size, and the size it needs
        # before it can be cut (4 until its size prefix is whole).
        self._head: list = []
        self._head_size = 0
        self._head_needs = 0
        self._requests: collections.deque[memoryview] = collections.deque()  # read, not handled
        self._answers: collections.deque[_Answer] = collections.deque()  # in request order
        self._blocked: asyncio.Task | None = None  # the request that waits; the rest wait too
        self._paused = False
        self._write_due = False  # the listener writes this connection's answers this turn
        self.closed = False
        self.name = "kafka client"

    # ---- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.name = f"kafka client {peer[0]}:{peer[1]}"
        listener = self._listener
        if len(listener.connections) >= listener.settings.max_connections:
            log.warning("%s: refused, %d connections already (socket.max_connections)",
                        self.name, len(listener.connections))  # fmt: skip
            transport.abort()
            self.closed = True
            return
        listener.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._listener.connections.discard(self)
        if self._blocked is not None:
            self._blocked.cancel()

    def data_received(self, data: bytes) -> None:
        """Cut the requests out of what was read, without copying them: each is a view of
        the read's bytes. A request spread over several reads is joined once, when whole (at
        flat out librdkafka's requests are up to a MiB: copies and a growing buffer per read
        were most of ingest's system time, in page faults)."""
        if self._head:
            self._head.append(data)
            self._head_size += len(data)
            if self._head_size < self._head_needs:
                return
            data = b"".join(self._head)
            self._head.clear()
        view = memoryview(data)
        pos, end = 0, len(view)
        limit = self._listener.settings.max_request_bytes
        needs = 4
        while end - pos >= 4:
            (size,) = _SIZE.unpack_from(view, pos)
            if size < 0 or size > limit:
                self.fatal(f"request of {size} bytes (the limit is {limit})")
                return
            if end - pos - 4 < size:
                needs = 4 + size
                break
            self._requests.append(view[pos + 4 : pos + 4 + size])
            pos += 4 + size
        if pos < end:
            self._head.append(view[pos:])
            self._head_size = end - pos
            self._head_needs = needs
        self._handle_requests()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()
        self.closed = True

    def fatal(self, reason: str) -> None:
        log.warning("%s: closing: %s", self.name, reason)
        self._listener.errors[-1] += 1
        self._head.clear()
        self._requests.clear()
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    # ---- requests ----------------------------------------------------------------------

    def _handle_requests(self) -> None:
        """Handle the requests read, in order, until one has to wait."""
        requests = self._requests
        while requests and self._blocked is None and not self.closed:
            try:
                waiting = self._handle(requests.popleft())
            except ProtocolError as exc:
                self.fatal(f"bad request: {exc}")
            except Exception:
                log.exception("%s: request handling failed", self.name)
                self.fatal("kpd could not handle the request")
            else:
                if waiting is not None:
                    loop = asyncio.get_running_loop()
                    self._blocked = loop.create_task(self._finish(waiting))
        self._pause_or_resume()

    async def _finish(self, waiting: Awaitable) -> None:
        """The request that had to wait, then the ones read after it."""
        try:
            await waiting
        except ProtocolError as exc:
            self.fatal(f"bad request: {exc}")
        except Exception:
            log.exception("%s: request handling failed", self.name)
            self.fatal("kpd could not handle the request")
        self._blocked = None
        self._handle_requests()

    def _pause_or_resume(self) -> None:
        if self.closed:
            return
        queued = len(self._requests) + len(self._answers)
        if not self._paused and queued >= _MAX_QUEUED_REQUESTS:
            self._paused = True
            self.transport.pause_reading()
        elif self._paused and queued < _MAX_QUEUED_REQUESTS:
            self._paused = False
            self.transport.resume_reading()

    def _handle(self, payload: memoryview) -> Awaitable | None:
        """One request; an awaitable when it has to wait (the next ones wait for it)."""
        listener = self._listener
        listener.requests += 1
        request = serving.decode_request(payload)
        if isinstance(request, serving.RequestRefused):
            if request.answer is not None:
                self._answer_now(request.answer)
            else:
                self.fatal(request.reason)
            return None
        api, version, correlation_id, body = (request.api, request.version,
                                              request.correlation_id, request.body)  # fmt: skip
        if api is PRODUCE:
            return self._offer(_ProduceRequest(version, correlation_id, body))
        if api is API_VERSIONS:
            self._answer_now(serving.encode_response(api, version, correlation_id,
                                                     serving.api_versions_body()))  # fmt: skip
        elif api is METADATA:
            return self._metadata(version, correlation_id, body)
        elif api is INIT_PRODUCER_ID:
            answer = listener.init_producer_id(body)
            self.count_error(answer["error_code"])
            self._answer_now(serving.encode_response(api, version, correlation_id, answer))
        return None

    async def _metadata(self, version: int, correlation_id: int, body: dict) -> None:
        answer = await self._listener.metadata(body, self.transport.get_extra_info("sockname"))
        self._answer_now(serving.encode_response(METADATA, version, correlation_id, answer))

    # ---- Produce -----------------------------------------------------------------------

    def _offer(self, request: _ProduceRequest) -> Awaitable | None:
        """Offer the request's partitions from ``cursor`` on; an awaitable once one has to
        wait in admission (the rest are offered after it)."""
        listener = self._listener
        while request.cursor < len(request.partitions):
            topic, data = request.partitions[request.cursor]
            request.cursor += 1
            if request.refusal:
                result = (request.refusal, -1, -1)
            else:
                result = listener.offer_partition(topic, data["index"], data["records"] or b"",
                                                  request.version, request.ack,
                                                  request.timeout_s)  # fmt: skip
                if isinstance(result, Blocked):
                    return self._offer_after(request, topic, data["index"], result)
            request.parts.append([topic, data["index"], result])
        listener.end_turn_soon()  # publishes the request's entries
        self._answer_produce(request)
        return None

    async def _offer_after(self, request: _ProduceRequest, topic: str, index: int,
                           blocked: Blocked) -> None:  # fmt: skip
        request.parts.append([topic, index, await self._listener.finish_admit(blocked)])
        waiting = self._offer(request)
        if waiting is not None:
            await waiting

    def _answer_produce(self, request: _ProduceRequest) -> None:
        if request.acks == 0:
            for _, _, result in request.parts:  # nobody reads an answer to acks=0; count errors
                if isinstance(result, tuple):
                    self.count_error(result[0])
            return
        slot = _Answer(None, request.read_at)
        self._answers.append(slot)
        _ProduceAnswer(self, request, slot)

    def count_error(self, code: int) -> None:
        if code:
            self._listener.errors[code] += 1

    # ---- answers, in request order -----------------------------------------------------

    def _answer_now(self, frame: bytes) -> None:
        self._answers.append(_Answer(frame))
        self.answer_ready()

    def answer_ready(self) -> None:
        """An answer is known: written at the loop turn's end (``KafkaListener.write_soon``),
        with the others of the turn, after their journal lines."""
        if not self._write_due:
            self._write_due = True
            self._listener.write_soon(self)

    def write_answers(self) -> None:
        """Write the answers at the head of the queue that are known, in one write."""
        self._write_due = False
        answers = self._answers
        if not answers or answers[0].frame is None or self.closed:
            return
        frames = []
        timed = self._listener.produce_time
        now = time.monotonic() if timed is not None else 0.0
        while answers and answers[0].frame is not None:
            answer = answers.popleft()
            frames.append(answer.frame)
            if answer.read_at and timed is not None:
                timed.observe(now - answer.read_at)
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if self._paused:
            self._pause_or_resume()
