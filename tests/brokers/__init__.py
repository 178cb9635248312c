"""Real brokers that the test suite starts itself, and independent ways to check their data.

- TansuBroker: one tansu process (Kafka-compatible, in-memory) on a free loopback port.
- MockCluster: librdkafka's multi-broker mock cluster, with fault injection.
- SecureTansu (secure_tansu.py): tansu behind a TLS terminator and SASL front
  (secure_front.py, SCRAM from `scramp`), with certificates from certs.py and an OIDC token
  endpoint (oidc.py); proven with librdkafka in tests/integration/test_secure_brokers.py.
- read_all / partition_for_key_librdkafka: confluent-kafka as the reference reader and
  partitioner.
- txn_log: the read_committed view computed from the raw log (its own Fetch and batch
  decoder), because neither broker filters aborted transactions.

Nothing here imports kpd: these are the yardsticks kpd is measured against.
"""

from __future__ import annotations

import re
import uuid

from tests.brokers.mock_cluster import ApiKey, MockCluster, MockRequest
from tests.brokers.reader import (
    CREATE_TIME,
    LOG_APPEND_TIME,
    ConsumedRecord,
    partition_for_key_librdkafka,
    read_all,
)
from tests.brokers.tansu import TansuBroker

__all__ = [
    "CREATE_TIME",
    "LOG_APPEND_TIME",
    "ApiKey",
    "ConsumedRecord",
    "MockCluster",
    "MockRequest",
    "TansuBroker",
    "partition_for_key_librdkafka",
    "read_all",
    "unique_topic_name",
]

# Kafka topic names are [a-zA-Z0-9._-]{1,249}; Kafka warns that '.' and '_' collide in
# metric names, so only '-' is used as a separator.
_NOT_TOPIC_CHARS = re.compile(r"[^a-zA-Z0-9-]+")


def unique_topic_name(hint: str = "topic") -> str:
    """A legal topic name that starts with `hint` (e.g. a test name) and is unique."""
    readable = _NOT_TOPIC_CHARS.sub("-", hint).strip("-")[:80] or "topic"
    return f"{readable}-{uuid.uuid4().hex[:10]}"
