"""The broker pool's connection policy: setup timeouts that grow (KIP-601), idle close."""

from __future__ import annotations

import asyncio
import random

from daemon.net.connection import ConnectionSettings
from daemon.net.pool import BrokerPool, ReconnectPolicy
from tests.settings_for import settings_for


def test_setup_timeout_doubles_per_failure_up_to_its_maximum_with_jitter():
    policy = settings_for(ReconnectPolicy, setup_timeout_max_s=5.0)
    rng = random.Random(1)
    for failures, base in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (10, 5.0)]:
        timeout = policy.setup_timeout(1.0, failures, rng)
        assert base * 0.8 <= timeout <= base * 1.2, (failures, timeout)


def test_a_connection_unused_for_connections_max_idle_is_closed(tansu):
    host, port = tansu.bootstrap.rsplit(":", 1)
    changes: list[tuple[int, bool]] = []

    async def scenario() -> None:
        pool = BrokerPool(
            settings_for(ConnectionSettings, client_id="pool-test"),
            settings_for(ReconnectPolicy, max_idle_s=0.2),
            lambda node, up: changes.append((node, up)),
        )
        pool.set_address(7, host, int(port))
        try:
            async with asyncio.timeout(10):
                while pool.get(7) is None:
                    await asyncio.sleep(0.01)
                connection = pool.get(7)
                await connection.wait_closed()  # nothing is sent: the sweeper closes it
                while len(changes) < 2:  # the pool hears of the close a loop turn later
                    await asyncio.sleep(0.01)
        finally:
            await pool.close()

    asyncio.run(scenario())
    assert changes[:2] == [(7, True), (7, False)]
