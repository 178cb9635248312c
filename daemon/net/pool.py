"""At most one connection per broker, opened on demand, re-opened with backoff.

Owns the BrokerConnection objects of one producer engine and their connect tasks. Callers ask
``get(node_id)`` without waiting: the pool answers with a ready connection or None and starts
connecting in the background, so one slow or dead broker never stalls the others.

Must not import the producer engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from daemon.net.connection import BrokerConnection, ConnectionSettings
from daemon.net.errors import BrokerAuthError, BrokerConnectionError

__all__ = ["BrokerPool", "ReconnectPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectPolicy:
    """How a pool reconnects; built by ``daemon.net.from_config.reconnect_policy``. The first
    setup timeout is the connection settings' ``connect_timeout_s``, the one owner of
    socket.connection.setup.timeout.ms; this policy holds only its cap."""

    backoff_s: float  # reconnect.backoff.ms
    backoff_max_s: float  # reconnect.backoff.max.ms
    setup_timeout_max_s: float  # socket.connection.setup.timeout.max.ms
    max_idle_s: float  # connections.max.idle.ms

    def delay(self, failures: int, rng: random.Random) -> float:
        # Exponential with ±20% jitter, like Java's ExponentialBackoff for reconnects.
        base = min(self.backoff_max_s, self.backoff_s * (2 ** max(0, failures - 1)))
        return base * rng.uniform(0.8, 1.2)

    def setup_timeout(self, first_s: float, failures: int, rng: random.Random) -> float:
        # KIP-601: the connect timeout grows exponentially per consecutive failure, ±20%.
        base = min(self.setup_timeout_max_s, first_s * (2**failures))
        return base * rng.uniform(0.8, 1.2)


class _Slot:
    __slots__ = (
        "address",
        "connection",
        "failures",
        "last_error",
        "next_attempt",
        "task",
        "watcher",
    )

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.connection: BrokerConnection | None = None
        self.task: asyncio.Task | None = None
        # Watches the current connection for its close. Referenced here because the event
        # loop keeps only weak references to tasks: an unreferenced watcher can be collected
        # mid-wait, and the pool would never report the broker lost.
        self.watcher: asyncio.Task | None = None
        self.failures = 0
        self.next_attempt = 0.0
        self.last_error = ""  # logged once; a repeat of the same failure is not logged again


class BrokerPool:
    """Connections keyed by broker node id (bootstrap addresses use negative ids)."""

    def __init__(
        self,
        settings: ConnectionSettings,
        policy: ReconnectPolicy,
        on_change: Callable[[int, bool], None],
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._on_change = on_change  # (node_id, connected) — wakes the sender / metadata
        self._rng = rng or random.Random()
        self._slots: dict[int, _Slot] = {}
        self._closed = False
        self._sweeper: asyncio.Task | None = None  # closes idle connections
        self.connects = 0
        self.connect_failures = 0
        self.disconnects = 0
        # TLS and SASL refusals by BrokerAuthError.reason, and the latest one in words (None
        # once a connection succeeds again): kpd_broker_auth_failures_total and `kpd status`.
        self.auth_failures: dict[str, int] = {}
        self.auth_error: str | None = None
        self._reauthentications_closed = 0  # of connections no longer open

    def set_address(self, node_id: int, host: str, port: int) -> None:
        """Record (or update) where a broker listens; a moved broker gets a new connection."""
        slot = self._slots.get(node_id)
        if slot is None:
            self._slots[node_id] = _Slot((host, port))
        elif slot.address != (host, port):
            slot.address = (host, port)
            if slot.connection is not None:
                slot.connection.close("broker address changed")

    def get(self, node_id: int) -> BrokerConnection | None:
        """A ready connection to ``node_id``, or None while (re)connecting."""
        slot = self._slots.get(node_id)
        if slot is None:
            return None
        conn = slot.connection
        if conn is not None and not conn.closed:
            return conn
        self._start_connect(node_id, slot)
        return None

    def ready(self) -> list[tuple[int, BrokerConnection]]:
        return [
            (node_id, slot.connection)
            for node_id, slot in self._slots.items()
            if slot.connection is not None and not slot.connection.closed
        ]

    def any_ready(self) -> BrokerConnection | None:
        """A ready connection for cluster-wide requests (Metadata, InitProducerId): a real
        broker rather than a bootstrap alias when there is one."""
        ready = self.ready()
        ready.sort(key=lambda item: item[0] < 0)
        return ready[0][1] if ready else None

    @property
    def reauthentications(self) -> int:
        """KIP-368 re-authentications that succeeded, on open and closed connections."""
        open_ = sum(s.connection.reauthentications for s in self._slots.values() if s.connection)
        return self._reauthentications_closed + open_

    def known(self) -> list[int]:
        return list(self._slots)

    def connect_all(self, node_ids: list[int]) -> None:
        for node_id in node_ids:
            self.get(node_id)

    def _start_connect(self, node_id: int, slot: _Slot) -> None:
        if self._closed or (slot.task is not None and not slot.task.done()):
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, slot.next_attempt - loop.time())
        slot.task = loop.create_task(self._connect(node_id, slot, delay))

    async def _connect(self, node_id: int, slot: _Slot, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        host, port = slot.address
        # This attempt's timeout, grown from the settings' first one (their owner).
        first = self._settings.connect_timeout_s
        timeout = self._policy.setup_timeout(first, slot.failures, self._rng)
        settings = dataclasses.replace(self._settings, connect_timeout_s=timeout)
        log.debug("broker %s (%s:%s): connecting (timeout %.1fs)", node_id, host, port, timeout)
        try:
            conn = await BrokerConnection.open(host, port, settings)
        except BrokerConnectionError as exc:
            slot.failures += 1
            self.connect_failures += 1
            slot.next_attempt = asyncio.get_running_loop().time() + self._policy.delay(
                slot.failures, self._rng
            )
            if isinstance(exc, BrokerAuthError):
                self.auth_failures[exc.reason] = self.auth_failures.get(exc.reason, 0) + 1
                self.auth_error = str(exc)
            # One line per cause: a broker refusing every attempt in the same way is logged
            # once, not at every backoff (the metrics count every attempt).
            text = str(exc)
            if text != slot.last_error:
                log.warning("broker %s: %s", node_id, text)
                slot.last_error = text
            log.debug(
                "broker %s: next connection attempt in %.2fs (%d failures in a row)",
                node_id,
                slot.next_attempt - asyncio.get_running_loop().time(),
                slot.failures,
            )
            self._on_change(node_id, False)
            return
        if self._closed:
            conn.close("pool closed")
            return
        slot.connection = conn
        if slot.last_error:
            log.info(
                "broker %s (%s:%s): connected after %d failed attempt(s)",
                node_id,
                host,
                port,
                slot.failures,
            )
        slot.failures = 0
        slot.last_error = ""
        self.auth_error = None
        self.connects += 1
        log.debug("broker %s (%s:%s): connected", node_id, host, port)
        loop = asyncio.get_running_loop()
        slot.watcher = loop.create_task(self._watch(node_id, slot, conn))
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._close_idle())
        self._on_change(node_id, True)

    async def _close_idle(self) -> None:
        """connections.max.idle.ms: close connections nothing was sent on for that long."""
        max_idle = self._policy.max_idle_s
        while not self._closed:
            await asyncio.sleep(min(60.0, max(0.05, max_idle / 4)))
            now = asyncio.get_running_loop().time()
            for slot in self._slots.values():
                conn = slot.connection
                if conn is not None and not conn.in_flight and now - conn.last_used > max_idle:
                    conn.close(f"idle for more than {max_idle * 1000:.0f} ms")

    async def _watch(self, node_id: int, slot: _Slot, conn: BrokerConnection) -> None:
        await conn.wait_closed()
        if slot.connection is conn:
            slot.connection = None
            self.disconnects += 1
            log.debug("broker %s (%s:%s): connection closed", node_id, *slot.address)
            self._reauthentications_closed += conn.reauthentications
            slot.next_attempt = asyncio.get_running_loop().time() + self._policy.backoff_s
            if not self._closed:
                self._on_change(node_id, False)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for slot in self._slots.values():
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await slot.task
            if slot.connection is not None:
                slot.connection.close("producer closed")
