"""The transaction protocol's own broker connections (``DirectChannel``): one to a bootstrap
server for FindCoordinator and one to the coordinator, re-opened when lost.

``TransactionManager`` talks through the ``Channel`` protocol so that its state machine runs
against a fake channel in unit tests; this is the real one. Must not import the sender, the
accumulator or anything of process/.
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.net.connection import BrokerConnection, ConnectionSettings

__all__ = ["DirectChannel"]


class DirectChannel:
    """Connections of its own for the transaction protocol: one to a bootstrap server (for
    FindCoordinator) and one to the coordinator, re-opened when lost. Owned by one loop."""

    def __init__(self, bootstrap: Iterable[tuple[str, int]], settings: ConnectionSettings) -> None:
        self._bootstrap = list(bootstrap)
        self._settings = settings
        self._connections: dict[tuple[str, int], BrokerConnection] = {}
        self._next = 0

    async def any_broker(self) -> BrokerConnection:
        address = self._bootstrap[self._next % len(self._bootstrap)]
        self._next += 1
        return await self._open(address)

    async def broker(self, node_id: int, host: str, port: int) -> BrokerConnection:
        return await self._open((host, port))

    async def _open(self, address: tuple[str, int]) -> BrokerConnection:
        conn = self._connections.get(address)
        if conn is None or conn.closed:
            conn = await BrokerConnection.open(address[0], address[1], self._settings)
            self._connections[address] = conn
        return conn

    async def close(self) -> None:
        for conn in self._connections.values():
            conn.close("transactions closed")
        self._connections.clear()
