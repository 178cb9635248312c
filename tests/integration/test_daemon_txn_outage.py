"""Exactly-once through a broker outage longer than ``transaction.timeout.ms`` (issue 19
item 12): the real daemon, its workers in transactions, the brokers cut off for longer than
the transaction timeout and then back; every accepted record must be committed exactly once
(the log oracle, tests/brokers/txn_log.py), in key order, without a worker going fatal and
without a restart of kpd.

Neither test broker aborts a transaction by timeout (measured on tansu 0.6 and librdkafka
2.16's mock: both still take AddPartitionsToTxn and EndTxn of a transaction open five times
its 1 s timeout). So on tansu the outage is real (the broker process frozen with SIGSTOP, as
a partition that blackholes packets looks) and its transaction simply survives; on the mock
the brokers are taken down for the outage and answer what Kafka's coordinator and leaders
answer after the coordinator aborted the timed-out transaction and bumped the epoch
(INVALID_PRODUCER_EPOCH on Produce, PRODUCER_FENCED on AddPartitionsToTxn): the recovery
(KIP-588, InitProducerId with the current id and epoch, then the replay) is kpd's own.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.brokers import TansuBroker
from tests.daemon_harness import KpdDaemon, wait_for
from tests.integration.test_daemon_exactly_once import _assert_committed_once, _assert_key_order
from tests.integration.test_daemon_lifecycle import LoadClient

pytestmark = pytest.mark.timeout(240)

_TIMEOUT_MS = 2000  # transaction.timeout.ms; every outage below lasts longer
_COUNT = 6000


def _config(topic: str) -> dict:
    return {"kafka": {
        "transactional.id": topic, "transaction.interval.ms": 100,
        "transaction.timeout.ms": _TIMEOUT_MS, "request.timeout.ms": 1000,
        "delivery.timeout.ms": 120_000, "retry.backoff.ms": 50,
        "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200,
    }}  # fmt: skip


def _outage(daemon: KpdDaemon, client: LoadClient, cut, restore, before_restore=None) -> None:
    """Cut the brokers once records flow, keep them cut for twice the transaction timeout
    while the client keeps sending, then restore them."""
    wait_for(lambda: client.progress() >= 1000, 60, "records flowing")
    cut()
    try:
        ends = time.monotonic() + 2 * _TIMEOUT_MS / 1000
        wait_for(lambda: time.monotonic() >= ends, 30, "the outage to outlast the timeout")
        if before_restore is not None:
            before_restore()
    finally:
        restore()


def _assert_recovered(daemon: KpdDaemon, client: LoadClient, bootstrap: str, topic: str):
    results = client.wait()
    log = daemon.log_tail(400_000)
    assert daemon.stop() == 0
    failed = [r for r in results if r[1] != "ok"]
    assert not failed, f"{len(failed)} records failed, first {failed[:3]}\n{log[-5000:]}"
    assert "writes nothing more" not in log, log[-5000:]
    views = _assert_committed_once(bootstrap, topic, 4, "k", _COUNT)
    assert all(v.open_transactions == {} for v in views.values())
    _assert_key_order(views)
    return log


def test_tansu_frozen_longer_than_the_transaction_timeout(tmp_path):
    topic = "eos-outage-tansu"
    with TansuBroker(tmp_path) as broker:  # its own: the outage must not reach other tests
        broker.create_topic(topic, 4)
        with KpdDaemon(tmp_path, broker.bootstrap, workers=2, extra=_config(topic)) as daemon:
            client = LoadClient(daemon, topic, "k", _COUNT, rate=500)
            _outage(
                daemon, client,
                cut=lambda: os.kill(broker.pid, signal.SIGSTOP),
                restore=lambda: os.kill(broker.pid, signal.SIGCONT),
            )  # fmt: skip
            _assert_recovered(daemon, client, broker.bootstrap, topic)


def test_mock_cluster_down_longer_than_the_transaction_timeout_then_the_coordinator_aborted(
    mock_cluster, tmp_path
):
    topic = mock_cluster.create_topic("eos-outage-mock", 4, 3)
    brokers = (1, 2, 3)

    def refuse_the_old_epoch():
        # What the brokers answer once the coordinator aborted the timed-out transactions
        # (one of each per worker).
        mock_cluster.push_request_errors(0, 47, 47)  # Produce: INVALID_PRODUCER_EPOCH
        mock_cluster.push_request_errors(24, 90, 90)  # AddPartitionsToTxn: PRODUCER_FENCED

    with KpdDaemon(tmp_path, mock_cluster.bootstrap, workers=2, extra=_config(topic)) as daemon:
        client = LoadClient(daemon, topic, "k", _COUNT, rate=500)
        _outage(
            daemon, client,
            cut=lambda: [mock_cluster.broker_down(b) for b in brokers],
            restore=lambda: [mock_cluster.broker_up(b) for b in brokers],
            before_restore=refuse_the_old_epoch,
        )  # fmt: skip
        log = _assert_recovered(daemon, client, mock_cluster.bootstrap, topic)
    recoveries = [line for line in log.splitlines() if "recovered from" in line]
    assert recoveries, log[-5000:]
    assert all("KIP-588" in line for line in recoveries)
