"""Shared fakes for the producer's unit tests: settings from the schema, a clock, a broker pool
of fake connections, a metadata view, and the one wait helper.

Settings come from the schema's defaults plus explicit overrides (``config``), so a unit test
never runs with a value production cannot have. The fakes stand in for ``BrokerPool``,
``BrokerConnection`` and ``MetadataManager`` at the seams the sender uses; the rest (the
accumulator, counters, the completions) is the real code.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from daemon.config import ProducerSettings, producer_settings
from daemon.kafka import messages
from daemon.net.errors import BrokerConnectionError
from daemon.producer.metadata import ClusterView

BOOTSTRAP = "127.0.0.1:9092"


def config(**overrides: Any) -> ProducerSettings:
    """``ProducerSettings`` from the schema's defaults, overridden by attribute name
    (``linger_ms=0``), validated as the ``kafka:`` section of a file is."""
    return producer_settings(bootstrap_servers=BOOTSTRAP, **overrides)


def in_loop(test: Callable[..., Coroutine]) -> Callable[..., None]:
    """Run an ``async def`` test in a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class FakeClock:
    """The sender's clock: time moves only when a test moves it. It starts far ahead of any
    loop's clock (monotonic: seconds since boot), so code that takes one for the other arms
    its timers for times that never come, and the test fails on every machine, not only on
    one booted less than a start value ago (1000 s used to hide it wherever CI had run
    longer)."""

    def __init__(self, now: float = 1e7) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class SentRequest:
    """One ProduceRequest a fake connection took, and the future its answer resolves."""

    body: dict
    future: asyncio.Future | None  # None with acks=0

    @property
    def partitions(self) -> list[tuple[str, int]]:
        return [
            (topic["name"], part["index"])
            for topic in self.body["topic_data"]
            for part in topic["partition_data"]
        ]

    def answer(self, code: int = 0, base_offset: int = 0, message: str | None = None) -> None:
        """Answer every partition of the request with ``code``."""
        responses: dict[str, list[dict]] = {}
        for topic, partition in self.partitions:
            responses.setdefault(topic, []).append(
                {
                    "index": partition,
                    "error_code": code,
                    "base_offset": base_offset,
                    "log_append_time_ms": -1,
                    "error_message": message,
                }
            )
        result = {
            "responses": [
                {"name": name, "partition_responses": parts} for name, parts in responses.items()
            ]
        }
        self.future.set_result(result)

    def lose(self, exc: BaseException) -> None:
        """The connection failed with the request in flight."""
        self.future.set_exception(exc)


@dataclass
class FakeConnection:
    """A broker connection at the sender's seams: ``send`` (Produce), ``request``
    (InitProducerId) and ``version_for``."""

    node_id: int
    produced: list[SentRequest] = field(default_factory=list)
    producer_ids_given: int = 0
    refuse_send: BrokerConnectionError | None = None  # raised by the next send

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", 9000 + self.node_id)

    def version_for(self, api: messages.ApiSpec) -> int:
        return 9 if api is messages.PRODUCE else 4

    def send(self, api, version: int, body: dict, expect_response: bool = True):
        assert api is messages.PRODUCE
        if self.refuse_send is not None:
            exc, self.refuse_send = self.refuse_send, None
            raise exc
        future = asyncio.get_running_loop().create_future() if expect_response else None
        self.produced.append(SentRequest(body, future))
        return future

    async def request(self, api, body: dict, version: int | None = None) -> dict:
        assert api is messages.INIT_PRODUCER_ID
        self.producer_ids_given += 1
        return {"error_code": 0, "producer_id": 7000 + self.producer_ids_given, "producer_epoch": 0}


class FakePool:
    """The connection pool: every broker of ``connections`` is connected."""

    def __init__(self, *connections: FakeConnection) -> None:
        self.connections = {conn.node_id: conn for conn in connections}
        self.auth_error: str | None = None

    def get(self, node_id: int) -> FakeConnection | None:
        return self.connections.get(node_id)

    def any_ready(self) -> FakeConnection | None:
        return next(iter(self.connections.values()), None)

    def produced(self) -> list[SentRequest]:
        return [req for conn in self.connections.values() for req in conn.produced]


class FakeMetadata:
    """The metadata manager at the sender's seams: a view the test sets, counted asks."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.updates_requested = 0

    def request_update(self) -> None:
        self.updates_requested += 1
