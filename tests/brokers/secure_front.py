"""A TLS terminator and SASL front in front of tansu, for the TLS and SASL tests.

tansu 0.6.0's TLS listener does not work and its SASL cannot store users (DESIGN.md §5), so
the tests put this front between clients and a plain tansu:

- TLS (optional): the front's listener is TLS with the fixture's server certificate,
  optionally requiring a client certificate (mutual TLS); upstream to tansu is plain TCP.
- SASL (optional): the front performs the broker side of SaslHandshake v0-1 and
  SaslAuthenticate v0-2 itself — PLAIN and OAUTHBEARER by hand, SCRAM-SHA-256/512 with the
  `scramp` library — and passes every other request to tansu. Before a login succeeds only
  ApiVersions and the SASL requests are served; any other request closes the connection, as a
  Kafka broker does. With ``session_lifetime_ms`` it grants sessions that long (KIP-368) and,
  like Kafka, closes a connection that sends anything but a re-authentication after its
  session expired.

tansu must advertise the front's address (``TansuBroker(advertised_port=front.port)``) so
clients that follow Metadata come back through the front. The front runs its own asyncio loop
in a thread. It shares no code with kpd: the wire fields it reads and writes are packed here,
field by field, from Kafka's message schemas.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import scramp

from tests.brokers.ports import LOOPBACK

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
SCRAM_ITERATIONS = 4096


@dataclass
class FrontStats:
    """What the front saw; written by its loop thread, read by tests (ints and lists only)."""

    connections: int = 0
    logins: int = 0
    reauthentications: int = 0
    failed_logins: int = 0
    closed_unauthenticated: int = 0  # a request other than ApiVersions before any login
    closed_expired: int = 0  # a request other than a re-authentication after the session ended
    mechanisms: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SaslUsers:
    """Who may log in: PLAIN/SCRAM users and passwords, and accepted OAUTHBEARER tokens."""

    passwords: dict[str, str] = field(default_factory=dict)
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
    tokens: set[str] = field(default_factory=set)  # static or OIDC-issued tokens
    accept_unsecured_jwt: bool = False  # alg "none" JWTs with a sub and a future exp


# ---- wire helpers (Kafka's protocol types, packed by hand) -----------------------------------


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _request_body_offset(payload: bytes, flexible: bool) -> int:
    # Request header v1: api_key int16, api_version int16, correlation_id int32, client_id
    # nullable string (int16 length); v2 adds tagged fields (uvarint count, then each field).
    (client_id_len,) = struct.unpack_from(">h", payload, 8)
    pos = 10 + max(0, client_id_len)
    if flexible:
        count, pos = _uvarint(payload, pos)
        for _ in range(count):
            _, pos = _uvarint(payload, pos)
            size, pos = _uvarint(payload, pos)
            pos += size
    return pos


def _handshake_mechanism(payload: bytes) -> str:
    pos = _request_body_offset(payload, flexible=False)
    (length,) = struct.unpack_from(">h", payload, pos)
    return payload[pos + 2 : pos + 2 + length].decode()


def _authenticate_bytes(payload: bytes, version: int) -> bytes:
    pos = _request_body_offset(payload, flexible=version >= 2)
    if version >= 2:  # compact bytes: uvarint length + 1
        length, pos = _uvarint(payload, pos)
        return payload[pos : pos + length - 1]
    (length,) = struct.unpack_from(">i", payload, pos)
    return payload[pos + 4 : pos + 4 + length]


def _handshake_response(correlation_id: int, error: int, mechanisms: tuple[str, ...]) -> bytes:
    body = struct.pack(">ih", correlation_id, error) + struct.pack(">i", len(mechanisms))
    for name in mechanisms:
        body += struct.pack(">h", len(name)) + name.encode()
    return body


def _authenticate_response(
    correlation_id: int,
    version: int,
    error: int,
    message: str | None,
    auth_bytes: bytes,
    lifetime_ms: int,
) -> bytes:
    if version >= 2:  # response header v1 (tagged fields), compact types, tagged fields
        out = struct.pack(">i", correlation_id) + b"\x00" + struct.pack(">h", error)
        text = None if message is None else message.encode()
        out += b"\x00" if text is None else _put_uvarint(len(text) + 1) + text
        out += _put_uvarint(len(auth_bytes) + 1) + auth_bytes
        return out + struct.pack(">q", lifetime_ms) + b"\x00"
    out = struct.pack(">ih", correlation_id, error)
    text = None if message is None else message.encode()
    out += struct.pack(">h", -1) if text is None else struct.pack(">h", len(text)) + text
    out += struct.pack(">i", len(auth_bytes)) + auth_bytes
    if version >= 1:
        out += struct.pack(">q", lifetime_ms)
    return out


class _LoginFailed(Exception):
    pass


# ---- the server side of each mechanism -------------------------------------------------------


class _Login:
    """One SASL exchange on one connection; ``step`` returns (server token, done)."""

    def __init__(self, mechanism: str, users: SaslUsers) -> None:
        self.mechanism = mechanism
        self._users = users
        self._scram = None
        self.token_expiry_s: float | None = None
        if mechanism.startswith("SCRAM-"):
            scram = scramp.ScramMechanism(mechanism)
            infos = {
                user: scram.make_auth_info(password, iteration_count=SCRAM_ITERATIONS)
                for user, password in users.passwords.items()
            }

            def auth_fn(username: str):
                if username not in infos:
                    raise scramp.ScramException("unknown user")
                return infos[username]

            self._scram = scram.make_server(auth_fn)
            self._round = 0

    def step(self, token: bytes) -> tuple[bytes, bool]:
        if self.mechanism == "PLAIN":
            parts = token.split(b"\0")
            if len(parts) != 3:
                raise _LoginFailed("malformed PLAIN message")
            user, password = parts[1].decode(), parts[2].decode()
            if self._users.passwords.get(user) != password or not user:
                raise _LoginFailed("Invalid username or password")
            return b"", True
        if self._scram is not None:
            try:
                if self._round == 0:
                    self._round = 1
                    self._scram.set_client_first(token.decode())
                    return self._scram.get_server_first().encode(), False
                self._scram.set_client_final(token.decode())
                return self._scram.get_server_final().encode(), True
            except scramp.ScramException as exc:
                raise _LoginFailed(f"Authentication failed during authentication due to "
                                   f"invalid credentials with SASL mechanism {self.mechanism}"
                                   ) from exc  # fmt: skip
        return b"", self._oauthbearer(token)

    def _oauthbearer(self, token: bytes) -> bool:
        # RFC 7628: "n,," gs2 header, then kvsep (^A) separated key=value pairs, ^A^A at the end.
        text = token.decode()
        if not text.startswith("n,,\x01") or not text.endswith("\x01\x01"):
            raise _LoginFailed("malformed OAUTHBEARER message")
        pairs = dict(part.split("=", 1) for part in text[4:-2].split("\x01") if part)
        bearer = pairs.get("auth", "")
        if not bearer.startswith("Bearer "):
            raise _LoginFailed("no bearer token")
        value = bearer.removeprefix("Bearer ")
        if value in self._users.tokens:
            return True
        if self._users.accept_unsecured_jwt:
            self.token_expiry_s = _check_unsecured_jwt(value)
            return True
        raise _LoginFailed("invalid_token")


def _check_unsecured_jwt(token: str) -> float:
    try:
        header_b64, payload_b64, signature = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    except ValueError as exc:
        raise _LoginFailed("invalid_token") from exc
    if header.get("alg") != "none" or signature or not claims.get("sub"):
        raise _LoginFailed("invalid_token")
    if claims.get("exp", 0) <= time.time():
        raise _LoginFailed("invalid_token: expired")
    return float(claims["exp"])


# ---- the front -------------------------------------------------------------------------------


class SecureFront:
    """A listener on 127.0.0.1 that terminates TLS and/or SASL and forwards to tansu."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        users: SaslUsers | None = None,
        session_lifetime_ms: int = 0,
    ) -> None:
        self._tls = tls
        self._users = users
        self._lifetime_ms = session_lifetime_ms
        self.stats = FrontStats()
        self._upstream: tuple[str, int] | None = None
        # The listening socket is bound now, so tansu can advertise its port before it starts.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()  # owned by the loop thread

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, upstream: str) -> SecureFront:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("secure front did not start")
        return self

    def drop_connections(self) -> None:
        """Cut every client connection (clients must reconnect and log in again)."""
        loop = self._loop
        assert loop is not None
        done = threading.Event()

        def cut() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            done.set()

        loop.call_soon_threadsafe(cut)
        done.wait(10)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> SecureFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(self._serve_client, sock=self._sock, ssl=self._tls)

        server = loop.run_until_complete(serve())
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            loop.close()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.stats.connections += 1
        try:
            await _Session(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()


class _Session:
    """One client connection through the front, with its own upstream connection to tansu."""

    def __init__(self, front: SecureFront, reader, writer) -> None:
        self._front = front
        self._reader = reader
        self._writer = writer
        self._users = front._users
        self._authenticated = self._users is None
        self._expires_at: float | None = None  # monotonic time the session ends
        self._login: _Login | None = None
        self._answers: deque[asyncio.Future] = deque()  # responses in request order
        self._forwarded: dict[int, asyncio.Future] = {}
        self._wake = asyncio.Event()

    async def run(self) -> None:
        assert self._front._upstream is not None
        up_reader, up_writer = await asyncio.open_connection(*self._front._upstream)
        relay = asyncio.ensure_future(self._relay_upstream(up_reader))
        writer = asyncio.ensure_future(self._write_answers())
        try:
            while True:
                size = struct.unpack(">i", await self._reader.readexactly(4))[0]
                payload = await self._reader.readexactly(size)
                api_key, version, correlation_id = struct.unpack_from(">hhi", payload)
                if api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE) and self._users is not None:
                    self._answer_now(self._sasl(api_key, version, correlation_id, payload))
                    continue
                if api_key != API_VERSIONS and not self._authenticated:
                    self._front.stats.closed_unauthenticated += 1
                    return  # Kafka closes such a connection
                if api_key != API_VERSIONS and self._expired():
                    self._front.stats.closed_expired += 1
                    return  # and so does it when the session ended (KIP-368)
                future = asyncio.get_running_loop().create_future()
                self._forwarded[correlation_id] = future
                self._answers.append(future)
                up_writer.write(struct.pack(">i", size) + payload)
        finally:
            # Let answers already due go out first (an auth failure must reach the client).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    while self._answers and self._answers[0].done():
                        await asyncio.sleep(0.01)
            relay.cancel()
            writer.cancel()
            up_writer.close()

    def _expired(self) -> bool:
        return self._expires_at is not None and time.monotonic() >= self._expires_at

    def _answer_now(self, payload: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        future.set_result(payload)
        self._answers.append(future)
        self._wake.set()

    async def _relay_upstream(self, up_reader: asyncio.StreamReader) -> None:
        while True:
            size = struct.unpack(">i", await up_reader.readexactly(4))[0]
            payload = await up_reader.readexactly(size)
            (correlation_id,) = struct.unpack_from(">i", payload)
            future = self._forwarded.pop(correlation_id, None)
            if future is not None:
                future.set_result(payload)
                self._wake.set()

    async def _write_answers(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._answers and self._answers[0].done():
                payload = self._answers.popleft().result()
                self._writer.write(struct.pack(">i", len(payload)) + payload)
            await self._writer.drain()

    def _sasl(self, api_key: int, version: int, correlation_id: int, payload: bytes) -> bytes:
        users = self._users
        assert users is not None
        if api_key == SASL_HANDSHAKE:
            mechanism = _handshake_mechanism(payload)
            if mechanism not in users.mechanisms:
                return _handshake_response(correlation_id, UNSUPPORTED_SASL_MECHANISM,
                                           users.mechanisms)  # fmt: skip
            self._login = _Login(mechanism, users)
            self.stats_mechanism(mechanism)
            return _handshake_response(correlation_id, 0, users.mechanisms)
        login = self._login
        if login is None:
            return _authenticate_response(
                correlation_id,
                version,
                ILLEGAL_SASL_STATE,
                "SaslAuthenticate before SaslHandshake",
                b"",
                0,
            )
        try:
            token, done = login.step(_authenticate_bytes(payload, version))
        except _LoginFailed as exc:
            self._front.stats.failed_logins += 1
            self._login = None
            self._authenticated = False
            return _authenticate_response(
                correlation_id,
                version,
                SASL_AUTHENTICATION_FAILED,
                f"Authentication failed: {exc}",
                b"",
                0,
            )
        lifetime_ms = 0
        if done:
            lifetime_ms = self._grant(login)
        return _authenticate_response(correlation_id, version, 0, None, token, lifetime_ms)

    def stats_mechanism(self, mechanism: str) -> None:
        if mechanism not in self._front.stats.mechanisms:
            self._front.stats.mechanisms.append(mechanism)

    def _grant(self, login: _Login) -> int:
        if self._authenticated:
            self._front.stats.reauthentications += 1
        else:
            self._front.stats.logins += 1
        self._authenticated = True
        self._login = None
        lifetime_ms = self._front._lifetime_ms
        if login.token_expiry_s is not None:
            left_ms = int((login.token_expiry_s - time.time()) * 1000)
            lifetime_ms = min(lifetime_ms, left_ms) if lifetime_ms else left_ms
        self._expires_at = time.monotonic() + lifetime_ms / 1000 if lifetime_ms else None
        return lifetime_ms
