"""Resending a predecessor's batches under its producer id (daemon/producer/resend.py via
``ProducerEngine.resend``) against real brokers: which brokers recognise such a resend, and
what each verdict means. The batches are written by kpd's BatchBuilder and first sent over a
``BrokerConnection`` of the test's own, as a killed worker would have sent them.

Probed here (and relied on by tests/integration/test_daemon_in_flight.py): tansu keeps an
idempotent producer's sequences across connections and answers a resend
DUPLICATE_SEQUENCE_NUMBER (without the offset); librdkafka's mock cluster checks sequences only
for transactional producers and appends the resend again.
"""

from __future__ import annotations

import asyncio

import pytest

from daemon.config import producer_settings
from daemon.kafka import messages
from daemon.kafka.errors import ErrorCode
from daemon.producer.accumulator import AccumulatorSettings
from daemon.producer.engine import ProducerEngine, accumulator_settings
from daemon.producer.resend import ResendBatch, Verdict, stamped_batch
from tests.brokers import read_all, unique_topic_name
from tests.integration.test_produce_wire import Wire

pytestmark = pytest.mark.timeout(60)


def _batch(settings: AccumulatorSettings, topic, pid, epoch, sequence, values) -> ResendBatch:
    records = [(1_700_000_000_000, None, value, ()) for value in values]
    payload = stamped_batch(settings, records, pid, epoch, sequence)
    return ResendBatch(topic, 0, payload, len(values))


async def _first_send(wire: Wire, topic: str, batch: ResendBatch) -> tuple[int, int]:
    leaders = await wire.leaders(topic, 1)
    conn = await wire.connection(leaders[0])
    data = [{"index": 0, "records": batch.payload}]
    body = {"acks": -1, "timeout_ms": 10_000, "topic_data": [{"name": topic,
                                                              "partition_data": data}]}  # fmt: skip
    response = await conn.request(messages.PRODUCE, body)
    answer = response["responses"][0]["partition_responses"][0]
    return answer["error_code"], answer["base_offset"]


async def _resend_after_a_first_send(bootstrap: str, topic: str):
    """Two batches of one producer id sent and answered on one connection, that connection
    closed; then an engine resends both, a third never sent, and one of an unknown id."""
    settings = producer_settings(bootstrap_servers=bootstrap, linger_ms=0)
    acc = accumulator_settings(settings)
    wire = Wire(bootstrap, None)
    try:
        pid, epoch = await wire.init_producer_id()
        first = _batch(acc, topic, pid, epoch, 0, [b"a0", b"a1"])
        second = _batch(acc, topic, pid, epoch, 2, [b"b0"])
        assert await _first_send(wire, topic, first) == (0, 0)
        assert await _first_send(wire, topic, second) == (0, 2)
    finally:
        wire.close()
    never_sent = _batch(acc, topic, pid, epoch, 3, [b"c0", b"c1"])
    engine = ProducerEngine(settings, lambda outcome: None)
    await engine.start()
    try:
        results = await engine.resend([first, second, never_sent])
        stranger = _batch(acc, topic, pid + 1000, 0, 5, [b"d0"])
        after = _batch(acc, topic, pid + 1000, 0, 6, [b"d1"])
        forgotten = await engine.resend([stranger, after])
        return results, forgotten, dict(engine.counters.resent_records)
    finally:
        await engine.close(0)


def test_tansu_recognises_a_resend_under_the_same_producer_id_and_epoch(tansu):
    topic = tansu.create_topic(unique_topic_name("resend"), 1)
    results, forgotten, counted = asyncio.run(_resend_after_a_first_send(tansu.bootstrap, topic))
    assert [r.verdict for r in results] == [Verdict.DUPLICATE, Verdict.DUPLICATE, Verdict.APPENDED]
    assert results[2].base_offset == 3  # the batch never sent is appended after the others
    # A producer id the broker does not know: the first batch is refused, the rest of the
    # partition is not even sent (it could only be out of order).
    assert [r.verdict for r in forgotten] == [Verdict.FORGOTTEN, Verdict.FORGOTTEN]
    assert forgotten[0].why == ErrorCode.UNKNOWN_PRODUCER_ID.name
    assert counted == {"duplicate": 3, "appended": 2, "forgotten": 2}
    values = [r.value for r in read_all(tansu.bootstrap, topic, 5)]  # exact: nothing twice
    assert values == [b"a0", b"a1", b"b0", b"c0", b"c1"]


def test_librdkafka_mock_appends_an_idempotent_resend_again(mock_cluster):
    # Why the fault tests of in-flight batches run on tansu only (see the module docstring).
    topic = mock_cluster.create_topic(unique_topic_name("resend-mock"), 1, replication=1)
    results, forgotten, _ = asyncio.run(_resend_after_a_first_send(mock_cluster.bootstrap, topic))
    assert [r.verdict for r in results] == [Verdict.APPENDED] * 3
    assert [r.base_offset for r in results] == [3, 5, 6]  # a0 a1 b0 written twice
    assert [r.verdict for r in forgotten] == [Verdict.APPENDED] * 2  # no sequence check at all
