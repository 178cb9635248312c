"""Cluster metadata for one engine: brokers, topics, partition leaders, and keeping them fresh.

Owns the current ``ClusterView`` and the refresh task. A refresh happens when something asks
for it (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, a lost
connection, a topic nobody knows yet), and at least every ``metadata.max.age.ms``. Requests are
coalesced: many asks while a refresh is running cause one more refresh, not many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.kafka import messages
from daemon.kafka.errors import ErrorCode, error_name
from daemon.net.errors import BrokerConnectionError
from daemon.net.pool import BrokerPool

__all__ = ["ClusterView", "MetadataManager", "TopicView", "UnknownTopicError"]

log = logging.getLogger(__name__)

# Metadata v10+ names topics by id or name; the all-zero id means "look up by name".
_NO_TOPIC_ID = uuid.UUID(int=0)

# Kafka error codes that mean "ask again later" for a topic in a Metadata response.
_TOPIC_NOT_READY = {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.LEADER_NOT_AVAILABLE}


class UnknownTopicError(Exception):
    def __init__(self, topic: str, message: str, code: int) -> None:
        super().__init__(f"{topic}: {message}")
        self.topic = topic
        self.code = code


@dataclass(frozen=True, slots=True)
class TopicView:
    name: str
    error_code: int
    leaders: tuple[int, ...]  # leader node id per partition (-1: none right now)

    @property
    def partition_count(self) -> int:
        return len(self.leaders)

    def available(self) -> list[int]:
        return [p for p, leader in enumerate(self.leaders) if leader >= 0]


@dataclass(frozen=True, slots=True)
class ClusterView:
    brokers: dict[int, tuple[str, int]] = field(default_factory=dict)
    topics: dict[str, TopicView] = field(default_factory=dict)

    def leader(self, topic: str, partition: int) -> int:
        view = self.topics.get(topic)
        if view is None or partition >= len(view.leaders):
            return -1
        return view.leaders[partition]


class MetadataManager:
    def __init__(
        self,
        bootstrap: list[tuple[str, int]],
        pool: BrokerPool,
        max_age_s: float,
        retry_backoff_s: float,
        on_update: Callable[[ClusterView], None],
        allow_auto_create: bool = True,
    ) -> None:
        self._pool = pool
        self._allow_auto_create = allow_auto_create
        self._max_age_s = max_age_s
        self._retry_backoff_s = retry_backoff_s
        self._on_update = on_update
        for index, (host, port) in enumerate(bootstrap):
            pool.set_address(-1 - index, host, port)  # bootstrap ids are negative
        self._bootstrap_ids = [-1 - index for index in range(len(bootstrap))]
        self.view = ClusterView()
        self._wanted: set[str] = set()  # topics this engine produces to (``want``)
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()  # set when the pool reports a new connection
        self._updated = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self.refreshes = 0
        self.refresh_failures = 0
        # Metadata requests sent so far, and per topic the number of the request whose answer
        # the topic's view comes from: an answer to a request sent after a wait began is
        # fresh, and a fresh UNKNOWN_TOPIC_OR_PARTITION ends that wait.
        self._requests_sent = 0
        self._answered_by: dict[str, int] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def request_update(self) -> None:
        self._wake.set()

    def want(self, topic: str) -> None:
        """Include ``topic`` in every metadata request from now on (asking at once if new)."""
        if topic not in self._wanted:
            self._wanted.add(topic)
            self.request_update()

    async def wait_for_topic(self, topic: str, timeout_s: float) -> TopicView:
        """The topic's view once it has partitions; UnknownTopicError after ``timeout_s``, or
        as soon as a metadata answer to a request sent after this call says the topic does
        not exist (UNKNOWN_TOPIC_OR_PARTITION: the cluster did not create it).

        Java's producer waits max.block.ms even then, and librdkafka 30 s
        (topic.metadata.propagation.max.ms) for a new topic to reach every broker's cache; kpd
        fails at once instead of holding every sender of a mistyped topic for a minute. The
        error is retriable and nothing negative is cached: the next record asks again.
        """
        view = self.view.topics.get(topic)
        if view is not None and view.leaders:
            return view
        self._wanted.add(topic)
        asked_after = self._requests_sent
        self.request_update()
        try:
            async with asyncio.timeout(timeout_s):
                async with self._updated:
                    while True:
                        view = self.view.topics.get(topic)
                        if view is not None and view.leaders:
                            return view
                        if (
                            view is not None
                            and view.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                            and self._answered_by.get(topic, 0) > asked_after
                        ):
                            self._wanted.discard(topic)  # do not keep asking for it
                            raise UnknownTopicError(
                                topic,
                                "the cluster says it does not exist "
                                "(UNKNOWN_TOPIC_OR_PARTITION) and did not create it",
                                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                            )
                        await self._updated.wait()
        except TimeoutError:
            view = self.view.topics.get(topic)
            code = view.error_code if view is not None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            message = (
                f"topic not present in metadata after {timeout_s * 1000:.0f} ms"
                f" ({error_name(code)})"
            )
            if self._pool.auth_error is not None:
                message += f"; kpd cannot connect: {self._pool.auth_error}"
            raise UnknownTopicError(topic, message, code) from None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            ok = await self._refresh_once()
            wait = self._max_age_s if ok else self._retry_backoff_s
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if ok and self._wake.is_set():
                # Coalesce bursts of asks, and never refresh faster than the retry backoff.
                await asyncio.sleep(self._retry_backoff_s)

    async def _refresh_once(self) -> bool:
        conn = self._pool.any_ready()
        if conn is None:
            await self._connect_some()
            conn = self._pool.any_ready()
            if conn is None:
                self.refresh_failures += 1
                return False
        body = {
            "topics": [{"name": t, "topic_id": _NO_TOPIC_ID} for t in sorted(self._wanted)],
            "allow_auto_topic_creation": self._allow_auto_create,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False,
        }
        self._requests_sent += 1
        request_number = self._requests_sent
        try:
            response = await conn.request(messages.METADATA, body)
        except BrokerConnectionError as exc:
            log.warning("metadata request to %s failed: %s", conn.address, exc)
            self.refresh_failures += 1
            return False
        assert response is not None
        await self._apply(response, request_number)
        self.refreshes += 1
        return True

    def connection_changed(self, connected: bool) -> None:
        """The pool's callback (through its owner): a broker connection came or went."""
        if connected:
            self._connected.set()
        else:
            self.request_update()

    async def _connect_some(self) -> None:
        """Ask the pool for every known broker and wait (bounded) until one is connected."""
        self._connected.clear()
        self._pool.connect_all([*self.view.brokers, *self._bootstrap_ids])
        if self._pool.any_ready() is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._retry_backoff_s * 10):
                    await self._connected.wait()

    async def _apply(self, response: dict, request_number: int = 0) -> None:
        brokers = {b["node_id"]: (b["host"], b["port"]) for b in response["brokers"]}
        for node_id, (host, port) in brokers.items():
            self._pool.set_address(node_id, host, port)
        topics = dict(self.view.topics)
        for t in response["topics"]:
            name = t["name"]
            code = t["error_code"]
            if code and code not in _TOPIC_NOT_READY:
                log.warning("metadata for topic %s: %s", name, error_name(code))
            count = max((p["partition_index"] for p in t["partitions"]), default=-1) + 1
            leaders = [-1] * count
            for p in t["partitions"]:
                # LEADER_NOT_AVAILABLE on a partition: it has no leader right now.
                leaderless = p["error_code"] == ErrorCode.LEADER_NOT_AVAILABLE
                leaders[p["partition_index"]] = -1 if leaderless else p["leader_id"]
            view = TopicView(name, code, tuple(leaders))
            if log.isEnabledFor(logging.DEBUG) and self.view.topics.get(name) != view:
                log.debug(
                    "metadata: topic %s now %s, leaders by partition %s",
                    name,
                    error_name(code) if code else f"{count} partitions",
                    list(leaders),
                )
            topics[name] = view
            self._answered_by[name] = request_number
        if log.isEnabledFor(logging.DEBUG) and brokers != self.view.brokers:
            log.debug("metadata: brokers now %s", brokers)
        self.view = ClusterView(brokers, topics)
        self._on_update(self.view)
        async with self._updated:
            self._updated.notify_all()
