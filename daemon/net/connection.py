"""One asyncio connection to one Kafka broker.

Owns: the TCP transport, the correlation-id counter, the queue of requests awaiting responses
and the API versions negotiated at connect. Kafka answers requests on one connection strictly in
the order they were sent, so the in-flight queue is a FIFO and the head is the only request a
response may answer: a correlation-id mismatch means the stream is corrupt and the connection is
closed (KIP-392 era clients do the same). The one exception is an answer to a request sent
expecting none (Produce acks=0), which some brokers send anyway: it is recognised by its id and
dropped.

Security: with an ``ssl_context`` the transport is TLS (uvloop's); with a ``sasl`` login the
connection logs in right after ApiVersions (``daemon.net.auth``) and, when the broker grants a
session lifetime (KIP-368), logs in again on the same connection before it runs out. While
that re-authentication runs, new requests are held back and written after it, so requests in
flight are answered as usual and none is dropped.

Must not import: the producer engine, rings, processes, uvloop (the entry point picks the loop).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import ssl
import struct
from dataclasses import dataclass
from typing import Any

from daemon.kafka import headers, messages
from daemon.kafka.errors import ErrorCode
from daemon.kafka.framing import FrameSplitter
from daemon.kafka.primitives import ProtocolError
from daemon.kafka.versions import negotiate
from daemon.net.auth import SaslLogin, authenticate
from daemon.net.errors import (
    BrokerAuthError,
    BrokerConnectionError,
    ConnectionClosedError,
    RequestTimedOutError,
)
from daemon.net.tls import classify_tls_error

__all__ = ["BrokerConnection", "ConnectionSettings"]

# ApiVersions responses always carry response header v0 (KIP-511): the body, whose first field in
# every version is the int16 error code, starts right after the correlation id.
_API_VERSIONS_ERROR = struct.Struct(">h")
_API_VERSIONS_BODY_OFFSET = 4
# How many requests sent without expecting a response are remembered (see ``_unanswered``).
_MAX_UNANSWERED = 1024
# KIP-368: log in again at a random point between 85 % and 95 % of the session lifetime, as
# Java's client does, so many connections do not all re-authenticate at once.
_REAUTH_WINDOW = (0.85, 0.95)
_SASL_APIS = (messages.SASL_HANDSHAKE.key, messages.SASL_AUTHENTICATE.key)
# Frames from this size on are written as their parts (``_write``); smaller ones joined: one
# buffer is uvloop's fastest write, and copying a few KiB costs less than a writev's setup.
_WRITE_PARTS_FROM = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionSettings:
    """What one connection runs with. The Kafka settings have no defaults here: build this
    with ``daemon.net.from_config.connection_settings`` from the validated configuration."""

    client_id: str
    request_timeout_s: float  # request.timeout.ms (plus a margin on Produce connections)
    # socket.connection.setup.timeout.ms: TCP, TLS, ApiVersions and SASL of one open. A pool
    # grows it per consecutive failure (KIP-601); a single open uses it as it is.
    connect_timeout_s: float
    max_in_flight: int  # max.in.flight.requests.per.connection
    ssl_context: ssl.SSLContext | None  # TLS when set (security.protocol SSL, SASL_SSL)
    sasl: SaslLogin | None  # log in when set (SASL_PLAINTEXT, SASL_SSL)
    # kpd's own limits and name, not Kafka settings:
    max_response_bytes: int = 100 * 1024 * 1024  # a larger frame means a corrupt stream
    software_name: str = "kpd"
    software_version: str = "0.1.0"


@dataclass(slots=True)
class _Pending:
    correlation_id: int
    api: messages.ApiSpec
    version: int
    future: asyncio.Future | None  # None: sent expecting no response (held back only)
    timer: asyncio.TimerHandle | None


class _KafkaProtocol(asyncio.Protocol):
    """Adapter from asyncio callbacks to BrokerConnection; holds no state of its own."""

    def __init__(self, owner: BrokerConnection) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._on_connected(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._owner._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ssl.SSLError):  # e.g. a TLS 1.3 alert: client certificate refused
            self._owner._fail_all(classify_tls_error(self._owner.address, exc))
            return
        reason = f"connection lost: {exc}" if exc else "connection closed by broker"
        self._owner._fail_all(ConnectionClosedError(f"{self._owner.address}: {reason}"))

    def pause_writing(self) -> None:
        self._owner._writable.clear()

    def resume_writing(self) -> None:
        self._owner._writable.set()


class BrokerConnection:
    """A pipelined request/response connection to one broker.

    Use ``await BrokerConnection.open(host, port, settings)``; then ``await request(api, body)``.
    Up to ``max_in_flight`` requests are outstanding at once; further callers wait for a slot.
    Cancelling a caller only abandons its future: the reader still consumes that response, so
    the stream stays in sync.
    """

    def __init__(self, host: str, port: int, settings: ConnectionSettings) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self._settings = settings
        self._transport: asyncio.Transport | None = None
        self._splitter = FrameSplitter(settings.max_response_bytes)
        self._correlation_ids = itertools.count(1)
        # Requests written and not yet answered, in send order (owned by the event loop).
        self._pending: collections.deque[_Pending] = collections.deque()
        # Correlation ids of requests sent with expect_response=False, oldest first (owned by the
        # event loop). Kafka never answers them (Produce acks=0), but tansu 0.6 and librdkafka's
        # mock cluster do; such an answer is known by its id and dropped, as librdkafka drops a
        # response to an id it is not waiting for. An id older than a later answer can no longer
        # be answered and is pruned; maxlen bounds the ids a silent broker leaves behind.
        self._unanswered: collections.deque[int] = collections.deque(maxlen=_MAX_UNANSWERED)
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed_error: BrokerConnectionError | None = None
        self._closed = asyncio.Event()
        self.versions: dict[int, int] = {}
        self.last_used = 0.0  # loop time of the last request sent (connections.max.idle.ms)
        self.broker_versions: dict[int, tuple[int, int]] = {}
        # KIP-368 state, owned by the event loop: requests written after the re-authentication
        # (None when none runs), the timer that starts the next one, and how many succeeded.
        self._held: list[tuple[bytes | list, _Pending]] | None = None
        self._reauth_timer: asyncio.TimerHandle | None = None
        self._reauth_task: asyncio.Task | None = None
        self.reauthentications = 0

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, port: int, settings: ConnectionSettings) -> BrokerConnection:
        """Connect and negotiate API versions; raises BrokerConnectionError on failure."""
        conn = cls(host, port, settings)
        loop = asyncio.get_running_loop()
        tls = settings.ssl_context
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await loop.create_connection(
                    lambda: _KafkaProtocol(conn),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except ssl.SSLError as exc:
            raise classify_tls_error(conn.address, exc) from None
        except (OSError, TimeoutError) as exc:
            raise BrokerConnectionError(
                f"{conn.address}: cannot connect: {exc or 'timed out'}", request_sent=False
            ) from exc
        try:
            try:
                await conn._handshake()
            except ConnectionClosedError:
                if tls is None:
                    raise
                # TLS 1.3 finishes the client's side of the handshake before the broker has
                # checked the client's certificate; a broker that refuses it just closes.
                raise BrokerAuthError(
                    f"{conn.address}: TLS: the broker closed the connection before answering "
                    "(does it require a client certificate it trusts? see "
                    "ssl.certificate.location)",
                    "tls_handshake",
                ) from None
            if settings.sasl is not None:
                conn._schedule_reauth(await conn._first_login(settings.sasl))
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    @property
    def in_flight(self) -> int:
        # Requests held back during a re-authentication count: they go out right after it,
        # and max.in.flight (5 with idempotence) must hold for them too.
        return len(self._pending) + len(self._held or ())

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def close(self, reason: str = "closed by client") -> None:
        self._fail_all(ConnectionClosedError(f"{self.address}: {reason}"))

    # ---- requests --------------------------------------------------------------------

    def version_for(self, api: messages.ApiSpec) -> int:
        """The negotiated version of ``api``; raises if the broker supports none we speak."""
        try:
            return self.versions[api.key]
        except KeyError:
            raise BrokerConnectionError(
                f"{self.address}: broker supports no version of {api.name} that kpd speaks",
                request_sent=False,
            ) from None

    async def request(
        self,
        api: messages.ApiSpec,
        body: dict[str, Any],
        *,
        version: int | None = None,
        expect_response: bool = True,
    ) -> dict[str, Any] | None:
        """Send one request and return its decoded response body.

        ``expect_response=False`` is for Produce with acks=0, which the broker never answers:
        the call returns once the request is written.
        """
        if version is None:
            version = self.version_for(api)
        async with self._slots:
            future = self.send(api, version, body, expect_response=expect_response)
            if future is None:
                return None
            return await future

    def send(
        self, api: messages.ApiSpec, version: int, body: dict[str, Any], *, expect_response=True
    ) -> asyncio.Future | None:
        """Write a request now and return the future of its response (None if none expected).

        Does not wait for an in-flight slot: callers that pipeline (the producer's sinks) keep
        their own count via ``in_flight``.
        """
        if self._closed_error is not None:
            raise ConnectionClosedError(str(self._closed_error), request_sent=False)
        correlation_id = next(self._correlation_ids)
        parts, size = headers.encode_request_parts(
            api, version, correlation_id, self._settings.client_id, body
        )
        frame: bytes | list = b"".join(parts) if size < _WRITE_PARTS_FROM else parts
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self.last_used = loop.time()
        if not expect_response:
            if self._held is not None and api.key not in _SASL_APIS:
                self._held.append((frame, _Pending(correlation_id, api, version, None, None)))
                return None
            self._write(frame)
            self._unanswered.append(correlation_id)
            return None
        future = loop.create_future()
        timer = loop.call_later(self._settings.request_timeout_s, self._on_timeout, correlation_id)
        pending = _Pending(correlation_id, api, version, future, timer)
        if self._held is not None and api.key not in _SASL_APIS:
            self._held.append((frame, pending))  # written once the re-authentication is done
            return future
        self._write(frame)
        self._pending.append(pending)
        return future

    def _write(self, frame: bytes | list) -> None:
        """A frame, or a large one's parts: those go out with one ``writev`` as the buffers
        they are (a Produce request's batches are not copied once more to join them; the
        producer never changes a sent batch's bytes in place: ``ProducerBatch.build``)."""
        if type(frame) is list:
            self._transport.writelines(frame)
        else:
            self._transport.write(frame)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._writable.is_set():
            waiter = asyncio.ensure_future(self._writable.wait())
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                closed.cancel()
        if self._closed_error is not None:
            raise self._closed_error

    # ---- handshake -------------------------------------------------------------------

    async def _handshake(self) -> None:
        api = messages.API_VERSIONS
        version = api.max_version
        body = {
            "client_software_name": self._settings.software_name,
            "client_software_version": self._settings.software_version,
        }
        response = await self.request(api, body, version=version)
        assert response is not None
        if response["error_code"] == ErrorCode.UNSUPPORTED_VERSION:
            # The broker told us its ApiVersions range in a v0-shaped answer: retry within it.
            ranges = {
                k["api_key"]: (k["min_version"], k["max_version"]) for k in response["api_keys"]
            }
            lo, hi = ranges.get(api.key, (0, 0))
            version = max(lo, min(hi, api.max_version))
            response = await self.request(api, body, version=version)
            assert response is not None
        if response["error_code"] != ErrorCode.NONE:
            raise BrokerConnectionError(
                f"{self.address}: ApiVersions failed with error {response['error_code']}"
            )
        self.broker_versions = {
            k["api_key"]: (k["min_version"], k["max_version"]) for k in response["api_keys"]
        }
        self.versions = negotiate(self.broker_versions)

    # ---- SASL (first login and KIP-368 re-authentication) ----------------------------

    async def _first_login(self, login: SaslLogin) -> int:
        try:
            return await self._login(login)
        except ConnectionClosedError:
            # Some brokers (tansu) just hang up on a mechanism or login they refuse.
            raise BrokerAuthError(
                f"{self.address}: the broker closed the connection during the SASL "
                f"{login.mechanism} login (mechanism not enabled, or credentials refused)",
                "sasl_authentication",
            ) from None

    async def _login(self, login: SaslLogin) -> int:
        return await authenticate(self.address, login, self.versions, self._exchange)

    async def _exchange(self, api: messages.ApiSpec, version: int, body: dict) -> dict:
        future = self.send(api, version, body)
        assert future is not None
        return await future

    def _schedule_reauth(self, lifetime_ms: int) -> None:
        if lifetime_ms <= 0 or self._closed_error is not None:
            return
        delay = lifetime_ms / 1000 * random.uniform(*_REAUTH_WINDOW)
        loop = asyncio.get_running_loop()
        self._reauth_timer = loop.call_later(delay, self._start_reauth)

    def _start_reauth(self) -> None:
        self._reauth_timer = None
        if self._closed_error is None:
            loop = asyncio.get_running_loop()
            self._reauth_task = loop.create_task(self._reauthenticate())

    async def _reauthenticate(self) -> None:
        assert self._settings.sasl is not None
        self._held = []
        try:
            lifetime_ms = await self._login(self._settings.sasl)
        except BrokerConnectionError as exc:
            self._fail_all(exc)
            return
        finally:
            self._release_held()
        self.reauthentications += 1
        self._schedule_reauth(lifetime_ms)

    def _release_held(self) -> None:
        """Write, in order, the requests held back during a re-authentication."""
        held, self._held = self._held or [], None
        if self._closed_error is not None:
            unsent = ConnectionClosedError(str(self._closed_error), request_sent=False)
            for _, pending in held:
                self._fail_pending(pending, unsent)
            return
        assert self._transport is not None
        for frame, pending in held:
            self._write(frame)
            if pending.future is None:
                self._unanswered.append(pending.correlation_id)
            else:
                self._pending.append(pending)

    # ---- transport callbacks (event loop) --------------------------------------------

    def _on_connected(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def _on_data(self, data: bytes) -> None:
        try:
            frames = self._splitter.feed(data)
        except ProtocolError as exc:
            self._fail_all(ConnectionClosedError(f"{self.address}: bad response stream: {exc}"))
            return
        for payload in frames:
            if not self._answer_head(payload):
                return

    def _answer_head(self, payload: bytes) -> bool:
        try:
            correlation_id = headers.response_correlation_id(payload)
        except ProtocolError as exc:
            # Raised out of data_received it would reach the event loop, not the callers.
            self._fail_all(ConnectionClosedError(f"{self.address}: bad response: {exc}"))
            return False
        if self._answers_unanswered(correlation_id):
            return True
        if not self._pending:
            self._fail_all(
                ConnectionClosedError(f"{self.address}: response {correlation_id} with no request")
            )
            return False
        pending = self._pending[0]
        if correlation_id != pending.correlation_id:
            self._fail_all(
                ConnectionClosedError(
                    f"{self.address}: correlation id {correlation_id} does not match the "
                    f"oldest request's {pending.correlation_id}"
                )
            )
            return False
        self._pending.popleft()
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.future.done():  # the caller gave up; the stream is still in sync
            return True
        try:
            body = _decode_body(pending, payload)
        except ProtocolError as exc:
            error = ConnectionClosedError(f"{self.address}: undecodable {pending.api.name}: {exc}")
            pending.future.set_exception(error)
            self._fail_all(error)
            return False
        pending.future.set_result(body)
        return True

    def _answers_unanswered(self, correlation_id: int) -> bool:
        """True if ``correlation_id`` is a request sent expecting no response; forget older ones.

        Responses come in request order and ids increase, so once an answer with a higher id
        arrives, a request with a lower id that was sent expecting no response never will be.
        """
        unanswered = self._unanswered
        while unanswered and unanswered[0] < correlation_id:
            unanswered.popleft()
        if unanswered and unanswered[0] == correlation_id:
            unanswered.popleft()
            return True
        return False

    def _on_timeout(self, correlation_id: int) -> None:
        self._fail_all(
            RequestTimedOutError(
                f"{self.address}: no response to request {correlation_id} within "
                f"{self._settings.request_timeout_s:g}s"
            )
        )

    def _fail_all(self, error: BrokerConnectionError) -> None:
        if self._closed_error is None:
            self._closed_error = error
            self._closed.set()
            self._writable.set()
            if self._transport is not None:
                self._transport.abort()
            if self._reauth_timer is not None:
                self._reauth_timer.cancel()
        while self._pending:
            self._fail_pending(self._pending.popleft(), error)
        if self._held:
            held, self._held = self._held, []
            # Held back during a re-authentication, never written: the broker cannot have
            # acted on them, so their records are not in doubt.
            unsent = ConnectionClosedError(str(error), request_sent=False)
            for _, pending in held:
                self._fail_pending(pending, unsent)

    @staticmethod
    def _fail_pending(pending: _Pending, error: BrokerConnectionError) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.future is not None and not pending.future.done():
            pending.future.set_exception(error)
            # Nobody may await a future failed during close; don't warn "never retrieved".
            with contextlib.suppress(Exception):
                pending.future.exception()


def _decode_body(pending: _Pending, payload: bytes) -> dict[str, Any]:
    """The body of ``payload``, the response to ``pending``; raises ProtocolError."""
    try:
        return headers.decode_response(pending.api, pending.version, payload)[1]
    except ProtocolError:
        body = _unsupported_api_versions(pending.api, payload)
        if body is None:
            raise
        return body


def _unsupported_api_versions(api: messages.ApiSpec, payload: bytes) -> dict[str, Any] | None:
    """An UNSUPPORTED_VERSION answer to ApiVersions whose body fits none of its schemas.

    KIP-511 puts the error code first in every ApiVersions body so that a client can read it
    whatever the broker wrote after it. librdkafka's mock cluster (2.x) answers a v3 request it
    does not support with a v0 body that has a one-byte v3 array count, which is neither v0 nor
    v3. Trust only the error code and name no ranges: the handshake then retries at v0, as Java's
    NetworkClient.handleApiVersionsResponse does when the answer names no ApiVersions range.
    """
    if api is not messages.API_VERSIONS:
        return None
    end = _API_VERSIONS_BODY_OFFSET + _API_VERSIONS_ERROR.size
    if len(payload) < end:
        return None
    (error_code,) = _API_VERSIONS_ERROR.unpack_from(payload, _API_VERSIONS_BODY_OFFSET)
    if error_code != ErrorCode.UNSUPPORTED_VERSION:
        return None
    return {"error_code": error_code, "api_keys": [], "throttle_time_ms": 0}
