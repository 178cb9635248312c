"""BrokerConnection against a fake broker written here: a real asyncio TCP server on loopback.

The fake broker reads size-prefixed frames with plain ``struct``, decodes them with
``headers.decode_request`` and answers with ``headers.encode_response`` — or with bytes packed
field by field where the shape of the answer is the point of the test (KIP-511 error answers).
Each test gives the broker a script: an async function that reads requests and answers them in
whatever order, chunking or wrongness the behaviour under test needs. Nothing sleeps to
synchronise: tests and scripts hand each other asyncio events, and every test runs under a
deadline so a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from daemon.kafka import headers, messages
from daemon.net.connection import BrokerConnection, ConnectionSettings
from daemon.net.errors import BrokerConnectionError, ConnectionClosedError, RequestTimedOutError
from tests.settings_for import settings_for

LOOPBACK = "127.0.0.1"
DEADLINE_S = 5.0  # every test finishes well within this, or fails

UNSUPPORTED_VERSION = 35  # Kafka error code (protocol guide, "Error Codes")

# What the fake broker advertises unless a test says otherwise: api key -> (min, max).
BROKER_RANGES = {
    messages.PRODUCE.key: (0, 11),
    messages.METADATA.key: (0, 12),
    messages.API_VERSIONS.key: (0, 3),
    messages.INIT_PRODUCER_ID.key: (0, 4),
}


# ---- the fake broker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the fake broker decoded it."""

    api: messages.ApiSpec
    version: int
    correlation_id: int
    client_id: str | None
    body: dict[str, Any]


class BrokerSide:
    """The broker's end of one accepted connection, driven by a test's script."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hung_up: asyncio.Event
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._hung_up = hung_up
        # Writes go out at once, so a 1-byte write really leaves as its own segment.
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def next_request(self) -> Received:
        (size,) = struct.unpack(">i", await self._reader.readexactly(4))
        payload = await self._reader.readexactly(size)
        return Received(*headers.decode_request(payload))

    async def expect_hang_up(self) -> None:
        """Wait for the client to close the connection, then tell the test it did."""
        try:
            unexpected = await self._reader.read(1)
        except ConnectionResetError:  # an aborted socket may reset rather than end
            unexpected = b""
        assert unexpected == b"", f"client sent more after it should have hung up: {unexpected!r}"
        self._hung_up.set()

    def response(self, request: Received, body: dict[str, Any], **header: int) -> bytes:
        """The whole response frame to ``request``; ``correlation_id=`` overrides the id."""
        correlation_id = header.get("correlation_id", request.correlation_id)
        return headers.encode_response(request.api, request.version, correlation_id, body)

    async def answer(self, request: Received, body: dict[str, Any], **header: int) -> None:
        await self.write(self.response(request, body, **header))

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def handshake(self, ranges: dict[int, tuple[int, int]] = BROKER_RANGES) -> Received:
        """Answer the client's ApiVersions request with ``ranges``; return that request."""
        request = await self.next_request()
        assert request.api is messages.API_VERSIONS
        await self.answer(request, api_versions_body(ranges))
        return request

    def close(self) -> None:
        self._writer.close()


Script = Callable[[BrokerSide], Awaitable[None]]


def api_versions_body(ranges: dict[int, tuple[int, int]], error_code: int = 0) -> dict:
    return {
        "error_code": error_code,
        "api_keys": [
            {"api_key": key, "min_version": low, "max_version": high}
            for key, (low, high) in ranges.items()
        ],
    }


@dataclass
class FakeBroker:
    port: int
    hung_up: asyncio.Event  # set by a script's expect_hang_up()


@contextlib.asynccontextmanager
async def fake_broker(script: Script) -> AsyncIterator[FakeBroker]:
    """Serve ``script`` to each connection on a loopback port.

    On exit a script must have finished without error (its exception is re-raised here) or be
    still waiting (it is stopped): a broker-side assertion can never pass silently.
    """
    hung_up = asyncio.Event()
    scripts: list[asyncio.Task] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        scripts.append(asyncio.current_task())
        try:
            await script(BrokerSide(reader, writer, hung_up))
        except asyncio.CancelledError:
            pass  # stopped at the end of the test: not an error of the stream's own callback
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, LOOPBACK, 0)
    try:
        yield FakeBroker(server.sockets[0].getsockname()[1], hung_up)
    finally:
        server.close()
        for task in scripts:
            if task.done():
                task.result()  # re-raise what the broker side asserted
            else:
                task.cancel()
        await asyncio.gather(*scripts, return_exceptions=True)
        await server.wait_closed()


def run(test: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body under the suite's deadline.

    Anything that reaches the event loop's exception handler — an exception escaping a
    transport callback, a failed future nobody retrieved — fails the test: the connection must
    route every failure to its callers, not to the loop's log.
    """
    unhandled: list[dict] = []

    async def bounded() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
        async with asyncio.timeout(DEADLINE_S):
            await test()

    asyncio.run(bounded())
    assert not unhandled, f"errors reached the event loop: {unhandled}"


def settings(**overrides: Any) -> ConnectionSettings:
    return settings_for(
        ConnectionSettings, **{"client_id": "kpd-test", "request_timeout_s": 5.0, **overrides}
    )


def metadata_request(*topics: str) -> dict:
    return {"topics": [{"name": name} for name in topics], "allow_auto_topic_creation": False}


def echo_topics(request: Received) -> dict:
    """A Metadata answer naming the topics the request asked for, so each answer is traceable."""
    return {"topics": [{"name": t["name"], "partitions": []} for t in request.body["topics"]]}


def topic_names(response: dict | None) -> list[str]:
    assert response is not None
    return [topic["name"] for topic in response["topics"]]


# ---- handshake and version negotiation -----------------------------------------------------------


def test_open_negotiates_the_highest_common_version_of_each_api() -> None:
    ranges = {
        messages.API_VERSIONS.key: (0, 3),
        messages.PRODUCE.key: (0, 7),  # below kpd's max 11: 7 is chosen
        messages.METADATA.key: (0, 20),  # above kpd's max 12: 12 is chosen
        messages.INIT_PRODUCER_ID.key: (5, 9),  # no overlap with kpd's 0-4: unusable
        999: (0, 1),  # an API kpd does not know: ignored
    }
    seen: list[Received] = []

    async def script(broker: BrokerSide) -> None:
        seen.append(await broker.handshake(ranges))

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            assert conn.versions == {
                messages.API_VERSIONS.key: 3,
                messages.PRODUCE.key: 7,
                messages.METADATA.key: 12,
            }
            assert conn.broker_versions[messages.INIT_PRODUCER_ID.key] == (5, 9)
            assert conn.version_for(messages.PRODUCE) == 7
            with pytest.raises(BrokerConnectionError, match="InitProducerId") as failure:
                conn.version_for(messages.INIT_PRODUCER_ID)
            assert failure.value.request_sent is False
            conn.close()

    run(test)
    (hello,) = seen
    # The first request is ApiVersions at kpd's highest version, naming the client (KIP-511).
    assert (hello.version, hello.client_id) == (3, "kpd-test")
    assert hello.body["client_software_name"] == "kpd"


def test_open_retries_api_versions_at_the_range_a_kip_511_unsupported_version_answer_names() -> (
    None
):
    versions_seen: list[int] = []

    async def script(broker: BrokerSide) -> None:
        first = await broker.next_request()
        versions_seen.append(first.version)
        # A broker that speaks ApiVersions v0-v2 answers v3 with a v0 body (KIP-511):
        await broker.write(
            struct.pack(">i", 4 + 2 + 4 + 6)  # frame size
            + struct.pack(">i", first.correlation_id)  # response header v0
            + struct.pack(">h", UNSUPPORTED_VERSION)  # ErrorCode
            + struct.pack(">i", 1)  # ApiKeys: int32 array length
            + struct.pack(">hhh", messages.API_VERSIONS.key, 0, 2)  # ApiKey, Min, Max
        )
        retry = await broker.next_request()
        versions_seen.append(retry.version)
        await broker.answer(retry, api_versions_body({**BROKER_RANGES, 18: (0, 2)}))

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            assert conn.versions[messages.API_VERSIONS.key] == 2
            assert conn.versions[messages.PRODUCE.key] == 11
            conn.close()

    run(test)
    assert versions_seen == [3, 2]


def test_open_retries_api_versions_at_v0_after_librdkafka_mocks_malformed_unsupported_answer() -> (
    None
):
    # librdkafka's mock cluster answers ApiVersions v3 (it speaks v0-v2) with error code,
    # a one-byte array count, the entries and ThrottleTimeMs: neither a v0 nor a v3 body. Only
    # the error code, first in every version, can be trusted; Java's NetworkClient retries at v0.
    versions_seen: list[int] = []

    async def script(broker: BrokerSide) -> None:
        first = await broker.next_request()
        versions_seen.append(first.version)
        body = (
            struct.pack(">h", UNSUPPORTED_VERSION)  # ErrorCode
            + struct.pack(">b", 1)  # entry count as a raw int8 (not a compact count of 2)
            + struct.pack(">hhh", messages.API_VERSIONS.key, 0, 2)  # ApiKey, Min, Max
            + struct.pack(">i", 0)  # ThrottleTimeMs
        )
        await broker.write(struct.pack(">ii", 4 + len(body), first.correlation_id) + body)
        retry = await broker.next_request()
        versions_seen.append(retry.version)
        await broker.answer(retry, api_versions_body({**BROKER_RANGES, 18: (0, 2)}))

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            assert conn.versions[messages.API_VERSIONS.key] == 2
            assert conn.versions[messages.METADATA.key] == 12
            conn.close()

    run(test)
    assert versions_seen == [3, 0]


def test_open_fails_when_api_versions_stays_unsupported_after_the_retry() -> None:
    async def script(broker: BrokerSide) -> None:
        for _ in range(2):
            request = await broker.next_request()
            body = api_versions_body({18: (0, 0)}, error_code=UNSUPPORTED_VERSION)
            await broker.answer(request, body)
        await broker.expect_hang_up()  # the client gives up rather than carrying on

    async def test() -> None:
        async with fake_broker(script) as broker:
            with pytest.raises(BrokerConnectionError, match=f"error {UNSUPPORTED_VERSION}"):
                await BrokerConnection.open(LOOPBACK, broker.port, settings())
            await broker.hung_up.wait()

    run(test)


def test_connect_refused_is_a_broker_connection_error_with_no_request_sent() -> None:
    # A bound socket that never listens: the kernel refuses connections to its port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as placeholder:
        placeholder.bind((LOOPBACK, 0))
        port = placeholder.getsockname()[1]

        async def test() -> None:
            with pytest.raises(BrokerConnectionError, match="cannot connect") as failure:
                await BrokerConnection.open(LOOPBACK, port, settings())
            assert failure.value.request_sent is False
            assert not isinstance(failure.value, ConnectionClosedError)

        run(test)


# ---- requests and responses ----------------------------------------------------------------------


def test_pipelined_requests_are_all_written_before_any_answer_and_answered_in_order() -> None:
    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        requests = [await broker.next_request() for _ in range(3)]
        # All three arrived before any answer; the answers go back in one write.
        await broker.write(b"".join(broker.response(r, echo_topics(r)) for r in requests))

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            version = conn.version_for(messages.METADATA)
            futures = [
                conn.send(messages.METADATA, version, metadata_request(name))
                for name in ("a", "b", "c")
            ]
            assert conn.in_flight == 3
            answers = [topic_names(await future) for future in futures]
            assert answers == [["a"], ["b"], ["c"]]
            assert conn.in_flight == 0
            conn.close()

    run(test)


def produce_body(*payloads) -> dict:
    parts = [{"index": i, "records": payload} for i, payload in enumerate(payloads)]
    return {"transactional_id": None, "acks": -1, "timeout_ms": 30000,
            "topic_data": [{"name": "t", "partition_data": parts}]}  # fmt: skip


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_large_request_written_as_its_parts_arrives_whole_and_in_order(loop) -> None:
    # Produce requests from 64 KiB on go out as their parts (no join of the batches' bytes):
    # 4 MiB of them do not fit the socket's buffer at once, so the transport keeps the rest;
    # a small request written after them must still arrive after them.
    big = [bytearray(range(256)) * 8192, bytes(range(255, -1, -1)) * 8192]

    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        first, second = await broker.next_request(), await broker.next_request()
        assert [bytes(p["records"]) for p in first.body["topic_data"][0]["partition_data"]] == [
            bytes(b) for b in big
        ]
        assert second.body["topic_data"][0]["partition_data"][0]["records"] == b"small"
        await broker.write(b"".join(
            broker.response(r, {"responses": [], "throttle_time_ms": 0}) for r in (first, second)
        ))  # fmt: skip

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            version = conn.version_for(messages.PRODUCE)
            futures = [conn.send(messages.PRODUCE, version, produce_body(*big)),
                       conn.send(messages.PRODUCE, version, produce_body(b"small"))]  # fmt: skip
            for future in futures:
                assert (await future)["responses"] == []
            conn.close()

    if loop == "asyncio":
        run(test)
    else:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(asyncio.wait_for(test(), DEADLINE_S))


def test_a_response_written_one_byte_at_a_time_still_decodes() -> None:
    async def script(broker: BrokerSide) -> None:
        hello = await broker.next_request()  # the ApiVersions handshake, dribbled too
        await dribble(broker, broker.response(hello, api_versions_body(BROKER_RANGES)))
        request = await broker.next_request()
        await dribble(broker, broker.response(request, echo_topics(request)))

    async def dribble(broker: BrokerSide, frame: bytes) -> None:
        for index in range(len(frame)):
            await broker.write(frame[index : index + 1])
            # Let the client's reader run before the next byte goes out, so it meets each byte
            # alone. Two yields: this task's wake-up is queued ahead of the reader's I/O
            # callback, so after one yield the next byte would already be on its way. (This
            # only shapes the chunking; the assertions wait on results, not on time.)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            assert conn.versions[messages.PRODUCE.key] == 11
            assert topic_names(await conn.request(messages.METADATA, metadata_request("x"))) == [
                "x"
            ]
            conn.close()

    run(test)


def test_request_without_response_returns_once_written_and_keeps_ids_in_step() -> None:
    produced: list[Received] = []
    records = b"opaque record batch bytes"

    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        for _ in range(2):  # answered by nobody: a broker never answers Produce with acks=0
            produced.append(await broker.next_request())
        request = await broker.next_request()
        await broker.answer(request, echo_topics(request))

    def acks0(partition: int) -> dict:
        data = [{"index": partition, "records": records}]
        return {
            "acks": 0,
            "timeout_ms": 1000,
            "topic_data": [{"name": "t", "partition_data": data}],
        }

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            assert conn.send(messages.PRODUCE, 3, acks0(0), expect_response=False) is None
            assert conn.in_flight == 0
            reply = await conn.request(messages.PRODUCE, acks0(1), expect_response=False)
            assert reply is None
            # The next answered request still matches its own response.
            assert topic_names(await conn.request(messages.METADATA, metadata_request("m"))) == [
                "m"
            ]
            assert not conn.closed
            conn.close()

    run(test)
    assert [(r.api, r.version, r.body["acks"]) for r in produced] == [
        (messages.PRODUCE, 3, 0),
        (messages.PRODUCE, 11, 0),
    ]
    assert [r.body["topic_data"][0]["partition_data"][0]["records"] for r in produced] == [
        records,
        records,
    ]


def test_an_answer_to_a_request_sent_expecting_none_is_dropped_not_taken_for_the_next() -> None:
    # Kafka never answers Produce acks=0; tansu 0.6 and librdkafka's mock cluster do. Such an
    # answer must not be matched against the next request, nor close the connection.
    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        first, silent, last = [await broker.next_request() for _ in range(3)]
        assert silent.body["acks"] == 0
        partition = {"index": 0, "error_code": 0, "base_offset": 0}
        produce_answer = {"responses": [{"name": "t", "partition_responses": [partition]}]}
        await broker.write(
            broker.response(first, echo_topics(first))
            + broker.response(silent, produce_answer)
            + broker.response(last, echo_topics(last))
        )

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            version = conn.version_for(messages.METADATA)
            first = conn.send(messages.METADATA, version, metadata_request("a"))
            acks0 = {
                "acks": 0,
                "timeout_ms": 1000,
                "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": b"r"}]}],
            }
            assert conn.send(messages.PRODUCE, 11, acks0, expect_response=False) is None
            last = conn.send(messages.METADATA, version, metadata_request("c"))
            assert topic_names(await first) == ["a"]
            assert topic_names(await last) == ["c"]
            assert not conn.closed
            conn.close()

    run(test)


def test_cancelling_one_caller_leaves_the_reader_in_step_for_later_requests() -> None:
    both_received = asyncio.Event()
    release = asyncio.Event()

    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        first, second = await broker.next_request(), await broker.next_request()
        both_received.set()
        await release.wait()
        await broker.answer(first, echo_topics(first))  # its caller is gone by now
        await broker.answer(second, echo_topics(second))
        third = await broker.next_request()
        await broker.answer(third, echo_topics(third))

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            first = asyncio.create_task(conn.request(messages.METADATA, metadata_request("a")))
            second = asyncio.create_task(conn.request(messages.METADATA, metadata_request("b")))
            await both_received.wait()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            release.set()
            assert topic_names(await second) == ["b"]
            assert topic_names(await conn.request(messages.METADATA, metadata_request("c"))) == [
                "c"
            ]
            assert not conn.closed
            conn.close()

    run(test)


# ---- failures that close the connection ----------------------------------------------------------


def test_a_request_timeout_closes_the_connection_and_fails_every_request_in_flight() -> None:
    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        await broker.next_request()
        await broker.next_request()
        await broker.expect_hang_up()  # never answers; waits for the client to hang up

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(
                LOOPBACK, broker.port, settings(request_timeout_s=0.2)
            )
            version = conn.version_for(messages.METADATA)
            futures = [
                conn.send(messages.METADATA, version, metadata_request(name)) for name in "ab"
            ]
            for future in futures:
                with pytest.raises(RequestTimedOutError, match=r"within 0\.2s") as failure:
                    await future
                assert failure.value.request_sent is True  # the broker may have acted on it
            await conn.wait_closed()
            assert conn.closed and conn.in_flight == 0
            with pytest.raises(ConnectionClosedError) as refused:
                conn.send(messages.METADATA, version, metadata_request("late"))
            assert refused.value.request_sent is False
            await broker.hung_up.wait()  # the socket is really gone, not just marked closed

    run(test)


def test_a_correlation_id_mismatch_closes_the_connection_with_a_clear_error() -> None:
    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        first, _second = await broker.next_request(), await broker.next_request()
        stray = first.correlation_id + 100
        await broker.answer(first, echo_topics(first), correlation_id=stray)
        await broker.expect_hang_up()

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            version = conn.version_for(messages.METADATA)
            futures = [
                conn.send(messages.METADATA, version, metadata_request(name)) for name in "ab"
            ]
            for future in futures:
                with pytest.raises(ConnectionClosedError, match="correlation id") as failure:
                    await future
                assert "does not match" in str(failure.value)
            assert conn.closed
            await broker.hung_up.wait()

    run(test)


def test_eof_from_the_broker_fails_requests_in_flight_with_connection_closed() -> None:
    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        await broker.next_request()
        await broker.next_request()
        broker.close()

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            version = conn.version_for(messages.METADATA)
            futures = [
                conn.send(messages.METADATA, version, metadata_request(name)) for name in "ab"
            ]
            for future in futures:
                with pytest.raises(ConnectionClosedError, match="closed by broker") as failure:
                    await future
                assert not isinstance(failure.value, RequestTimedOutError)
                assert failure.value.request_sent is True
            await conn.wait_closed()
            assert conn.closed

    run(test)


def test_an_undecodable_response_closes_the_connection() -> None:
    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        request = await broker.next_request()
        # A frame holding only the correlation id and two stray bytes: no Metadata body fits.
        await broker.write(struct.pack(">iiH", 6, request.correlation_id, 0xFFFF))
        await broker.expect_hang_up()

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            with pytest.raises(ConnectionClosedError, match="undecodable Metadata"):
                await conn.request(messages.METADATA, metadata_request("a"))
            assert conn.closed
            await broker.hung_up.wait()

    run(test)


def test_a_response_too_short_to_hold_a_correlation_id_closes_the_connection() -> None:
    async def script(broker: BrokerSide) -> None:
        await broker.handshake()
        await broker.next_request()
        await broker.write(struct.pack(">iH", 2, 0))  # a 2-byte frame: no room for an id
        await broker.expect_hang_up()

    async def test() -> None:
        async with fake_broker(script) as broker:
            conn = await BrokerConnection.open(LOOPBACK, broker.port, settings())
            with pytest.raises(ConnectionClosedError, match="no correlation id"):
                await conn.request(messages.METADATA, metadata_request("a"))
            assert conn.closed
            await broker.hung_up.wait()

    run(test)
