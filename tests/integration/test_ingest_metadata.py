"""Ingest's metadata lookups run with the configured connection settings, not their own.

Issue 17: ingest's broker pool was built with only client id, TLS and SASL, so a Metadata
request the broker never answered held every lookup of ingest for a hard-wired 30 s whatever
``request.timeout.ms`` said. Built now by ``daemon.net.from_config.connection_settings`` like
the workers' pools.
"""

from __future__ import annotations

import asyncio

from daemon.process.child import ingest_metadata
from tests.brokers import MockCluster
from tests.brokers.mock_cluster import ApiKey
from tests.settings_for import default_config

# A Metadata answer held this long is one the broker never gives: far beyond the deadline.
_NEVER_MS = 120_000
# The test's deadline: below the 30 s the old pool used, far above request.timeout.ms.
_DEADLINE_S = 15.0


def test_ingest_metadata_gives_up_on_a_silent_request_after_request_timeout_ms(
    mock_cluster: MockCluster, topic_name: str
):
    mock_cluster.create_topic(topic_name, partitions=3)
    # Every broker holds back its next Metadata answer (ApiVersions still answered, so the
    # connection is set up): only request.timeout.ms can end the wait.
    for broker_id in (1, 2, 3):
        mock_cluster.push_broker_request_errors(broker_id, ApiKey.METADATA, (0, _NEVER_MS))
    config = default_config(
        kafka={
            "bootstrap.servers": mock_cluster.bootstrap,
            "request.timeout.ms": 500,
            "retry.backoff.ms": 10,
        }
    )

    async def lookup() -> tuple[int, int]:
        pool, metadata = ingest_metadata(config, lambda view: None)
        metadata.start()
        try:
            view = await metadata.wait_for_topic(topic_name, _DEADLINE_S)
            return view.partition_count, metadata.refresh_failures
        finally:
            await metadata.close()
            await pool.close()

    partitions, failures = asyncio.run(lookup())

    assert partitions == 3
    assert failures >= 1  # a held request timed out and the lookup went on without it
