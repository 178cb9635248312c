"""The engine in exactly-once mode against tansu and librdkafka's mock cluster, judged by
the log oracle (tests/brokers/txn_log.py).

tansu's read_committed consumers see aborted records (its Fetch sends no aborted list) and the
mock filters nothing either, so every check here reads the raw log and derives the committed
view from the control records. The oracle itself is proven first, on what confluent-kafka's
transactional producer wrote.
"""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer

from daemon.config import producer_settings
from daemon.kafka.errors import error_name
from tests.brokers.txn_log import committed_view, read_committed, read_partition
from tests.engine_producer import DeliveryFailed, KafkaProducer

pytestmark = pytest.mark.timeout(90)


def test_oracle_sees_commit_abort_commit_as_the_first_and_third(tansu, topic_factory):
    topic = topic_factory(tansu, 1)
    producer = Producer({"bootstrap.servers": tansu.bootstrap, "transactional.id": topic})
    producer.init_transactions(20)
    for index, commit in enumerate((True, False, True)):
        producer.begin_transaction()
        producer.produce(topic, key=b"k", value=b"txn%d" % index)
        producer.flush(20)
        (producer.commit_transaction if commit else producer.abort_transaction)(20)

    batches = read_partition(tansu.bootstrap, topic, 0)
    view = committed_view(batches)

    # Three data batches and three control batches (COMMIT, ABORT, COMMIT), all transactional.
    assert [b.control_type for b in batches if b.control] == [1, 0, 1]
    assert all(b.transactional for b in batches)
    assert [r.value for r in view.visible] == [b"txn0", b"txn2"]
    assert (view.committed, view.aborted, view.aborted_records) == (2, 1, 1)
    assert view.open_transactions == {}


def test_oracle_hides_a_transaction_that_never_ended(tansu, topic_factory):
    topic = topic_factory(tansu, 1)
    producer = Producer({"bootstrap.servers": tansu.bootstrap, "transactional.id": topic})
    producer.init_transactions(20)
    producer.begin_transaction()
    producer.produce(topic, value=b"left open")
    producer.flush(20)

    view = committed_view(read_partition(tansu.bootstrap, topic, 0))

    assert view.visible == []
    assert sum(view.open_transactions.values()) == 1


def _transactional(broker, topic: str, **overrides):
    """Exactly-once settings with short transactions, the topic's name as transactional id."""
    fields = {"transaction_interval_ms": 50, "linger_ms": 1, **overrides}
    return producer_settings(bootstrap_servers=broker.bootstrap, transactional_id=topic, **fields)


def _assert_committed_once_where_reported(views, values: list[bytes], reports) -> None:
    """Each value is committed once (aborted copies hidden, no transaction left open), at the
    partition and offset its report gave."""
    visible = {(p, r.offset): r.value for p, v in views.items() for r in v.visible}
    assert sorted(visible.values()) == sorted(values)
    assert all(v.open_transactions == {} for v in views.values())
    for value, report in zip(values, reports, strict=True):
        assert visible[(report.partition, report.offset)] == value


async def _send(producer: KafkaProducer, topic: str, values: list[bytes]) -> list:
    futures = [await producer.send(topic, value, key=value[-1:]) for value in values]
    await producer.flush(30)
    return futures


def test_engine_commits_each_record_once_and_reports_committed_offsets(tansu, topic_factory):
    topic = topic_factory(tansu, 3)
    values = [b"r%05d" % i for i in range(3000)]

    async def run():
        settings = producer_settings(
            bootstrap_servers=tansu.bootstrap,
            transactional_id=topic,
            transaction_interval_ms=20,
            linger_ms=1,
        )
        async with KafkaProducer(settings) as producer:
            futures = await _send(producer, topic, values)
            counters = producer.engine.counters
            return [f.result() for f in futures], counters.transactions_committed

    reports, committed = asyncio.run(run())
    views = read_committed(tansu.bootstrap, topic, 3)

    visible = {(p, r.offset): r.value for p, v in views.items() for r in v.visible}
    assert sorted(visible.values()) == values  # each record once, none aborted
    for value, report in zip(values, reports, strict=True):
        assert visible[(report.partition, report.offset)] == value
    assert committed >= 1
    assert all(v.open_transactions == {} for v in views.values())


def test_second_producer_with_the_same_id_fences_the_first(tansu, topic_factory):
    topic = topic_factory(tansu, 1)

    async def run():
        def settings():
            return producer_settings(
                bootstrap_servers=tansu.bootstrap,
                transactional_id=topic,
                transaction_interval_ms=50_000,  # keep the first transaction open
                linger_ms=0,
            )

        first = await KafkaProducer(settings()).start()
        pending = await first.send(topic, b"from the first")
        # Wait for the first record to be written inside the open transaction.
        while first.engine.counters.records_sent == 0:
            await asyncio.sleep(0.01)
        async with KafkaProducer(settings()) as second:
            (later,) = await _send(second, topic, [b"from the second"])
            assert later.result().offset >= 0
            after = await first.send(topic, b"first, after the fence")
            with pytest.raises(DeliveryFailed) as fenced:
                await asyncio.wait_for(asyncio.shield(after), 20)
            stats = first.engine.stats().transaction
            await first.close()
        return fenced.value.error, pending, stats

    error, pending, stats = asyncio.run(run())

    assert error.name == "PRODUCER_FENCED"
    assert "writes nothing more" in error.message
    assert stats.state == "fatal" and "PRODUCER_FENCED" in stats.error
    with pytest.raises(DeliveryFailed):
        pending.result()  # its transaction was aborted by the fence: reported failed
    view = committed_view(read_partition(tansu.bootstrap, topic, 0))
    assert [r.value for r in view.visible] == [b"from the second"]
    assert view.aborted >= 1  # the fence aborted the first one's open transaction


def test_abortable_produce_error_aborts_and_replays_instead_of_failing(mock_cluster):
    # UNKNOWN_PRODUCER_ID on a Produce inside a transaction: Java aborts (KIP-360); kpd then
    # sends the whole transaction again under a new epoch, and no record is failed.
    topic = mock_cluster.create_topic("eos-abortable", 2, 3)
    first, second = [b"a%04d" % i for i in range(200)], [b"b%04d" % i for i in range(200)]

    async def run():
        async with KafkaProducer(_transactional(mock_cluster, topic)) as producer:
            futures = await _send(producer, topic, first)
            mock_cluster.push_request_errors(0, 59)  # ApiKey 0: Produce
            futures += [await producer.send(topic, v, key=v[-1:]) for v in second]
            await producer.flush(30)
            counters = producer.engine.counters
            results = [f.result() for f in futures]  # raises if any record failed
            return results, counters.transactions_aborted

    results, aborted = asyncio.run(run())
    views = read_committed(mock_cluster.bootstrap, topic, 2)

    assert aborted == 1
    visible = {(p, r.offset): r.value for p, v in views.items() for r in v.visible}
    assert sorted(visible.values()) == first + second  # each once; the aborted copies hidden
    # Whatever the aborted transaction had written is behind an ABORT marker, not left open.
    assert all(v.open_transactions == {} for v in views.values())
    for value, report in zip(first + second, results, strict=True):
        assert visible[(report.partition, report.offset)] == value


def test_records_still_expire_while_the_coordinator_is_unreachable():
    # Nothing listens on the port: InitProducerId never gets through, and the sender's loop
    # must still expire queued records at delivery.timeout.ms instead of waiting forever.
    from daemon.producer.engine import ProducerEngine
    from tests.brokers.ports import free_port

    outcomes = []

    async def run():
        settings = producer_settings(
            bootstrap_servers=f"127.0.0.1:{free_port()}",
            transactional_id="unreachable",
            request_timeout_ms=300,
            delivery_timeout_ms=800,
            linger_ms=0,
            retry_backoff_ms=20,
            reconnect_backoff_ms=20,
        )
        engine = ProducerEngine(settings, outcomes.append)
        await engine.start()
        assert engine.append(engine.queue("t", 0), 0, None, b"v", (), "token")
        try:
            await engine.flush(10)
        finally:
            await engine.close(0)

    asyncio.run(run())

    (outcome,) = outcomes
    assert outcome.tokens == ["token"]
    assert outcome.error.name == "DELIVERY_TIMEOUT"


# The answers a coordinator's own abort leaves behind: after a transaction outlived
# transaction.timeout.ms (a broker outage is enough), Kafka's coordinator aborted it and bumped
# the epoch, so the producer's next Produce is refused by the partition leader
# (INVALID_PRODUCER_EPOCH) and its next AddPartitionsToTxn or EndTxn by the coordinator
# (PRODUCER_FENCED). Neither test broker times a transaction out (measured: both still take
# AddPartitionsToTxn and EndTxn seconds after a 1 s timeout), so the mock is told to answer
# them: the errors are a real coordinator's, the abort is then kpd's own.
_COORDINATOR_ABORTED = {
    "Produce refused by the leader": (0, 47),  # ApiKey 0 Produce, INVALID_PRODUCER_EPOCH
    "AddPartitionsToTxn refused": (24, 90),  # PRODUCER_FENCED
    "EndTxn(commit) refused": (26, 90),
}


@pytest.mark.parametrize("where", list(_COORDINATOR_ABORTED))
def test_a_transaction_the_coordinator_aborted_is_replayed_under_a_granted_epoch(
    mock_cluster, where
):
    api_key, code = _COORDINATOR_ABORTED[where]
    topic = mock_cluster.create_topic(f"eos-recover-{api_key}", 2, 3)
    first, second = [b"a%04d" % i for i in range(200)], [b"b%04d" % i for i in range(200)]

    async def run():
        async with KafkaProducer(_transactional(mock_cluster, topic)) as producer:
            futures = await _send(producer, topic, first)
            epoch_before = producer.engine.stats().transaction.epoch
            mock_cluster.push_request_errors(api_key, code)
            futures += [await producer.send(topic, v, key=v[-1:]) for v in second]
            await producer.flush(30)
            results = [f.result() for f in futures]  # raises if any record failed
            return results, producer.engine.counters, epoch_before, producer.engine.stats()

    results, counters, epoch_before, stats = asyncio.run(run())
    views = read_committed(mock_cluster.bootstrap, topic, 2)

    assert dict(counters.transaction_recoveries) == {error_name(code): 1}
    assert counters.transactions_aborted == 1
    assert stats.transaction.state != "fatal" and stats.transaction.error is None
    assert stats.transaction.epoch > epoch_before  # the granted epoch (KIP-588)
    _assert_committed_once_where_reported(views, first + second, results)


def test_a_refused_epoch_that_init_producer_id_confirms_is_fatal(mock_cluster):
    # Another producer took the id: the coordinator refuses InitProducerId with our id and
    # epoch too (PRODUCER_FENCED), and the worker stops writing, as before KIP-588.
    topic = mock_cluster.create_topic("eos-fenced-confirmed", 1, 3)

    async def run():
        async with KafkaProducer(_transactional(mock_cluster, topic)) as producer:
            await _send(producer, topic, [b"before"])
            mock_cluster.push_request_errors(0, 47)  # Produce: INVALID_PRODUCER_EPOCH
            mock_cluster.push_request_errors(22, 90)  # InitProducerId: PRODUCER_FENCED
            late = await producer.send(topic, b"after")
            with pytest.raises(DeliveryFailed) as failed:
                await asyncio.wait_for(asyncio.shield(late), 20)
            return failed.value.error, producer.engine.stats().transaction, producer.engine

    error, stats, engine = asyncio.run(run())

    assert error.name == "PRODUCER_FENCED" and "another producer took" in error.message
    assert stats.state == "fatal" and "INVALID_PRODUCER_EPOCH" in stats.error
    assert not engine.counters.transaction_recoveries


def test_a_bump_refused_after_an_outage_longer_than_the_timeout_takes_a_new_epoch(mock_cluster):
    # Kafka's coordinator refuses the KIP-588 bump after its own timeout abort (it forgets
    # the epoch it bumped from); a transaction older than transaction.timeout.ms may have been
    # aborted so, and the worker goes on under InitProducerId(-1, -1) instead of stopping.
    topic = mock_cluster.create_topic("eos-recover-fresh", 2, 3)
    first, second = [b"a%04d" % i for i in range(200)], [b"b%04d" % i for i in range(200)]
    brokers = (1, 2, 3)

    async def run():
        settings = _transactional(
            mock_cluster, topic, transaction_interval_ms=300, transaction_timeout_ms=1000,
            request_timeout_ms=500, retry_backoff_ms=20,
        )  # fmt: skip
        async with KafkaProducer(settings) as producer:
            futures = await _send(producer, topic, first)
            futures += [await producer.send(topic, v, key=v[-1:]) for v in second]
            while producer.engine.stats().transaction.state != "in_transaction":
                await asyncio.sleep(0.005)  # poll a condition: the transaction is open
            for broker in brokers:
                mock_cluster.broker_down(broker)
            await asyncio.sleep(1.5)  # the outage itself: longer than transaction.timeout.ms
            mock_cluster.push_request_errors(26, 90)  # EndTxn(commit): PRODUCER_FENCED
            mock_cluster.push_request_errors(22, 90)  # InitProducerId(id, epoch): refused
            for broker in brokers:
                mock_cluster.broker_up(broker)
            await producer.flush(30)
            results = [f.result() for f in futures]  # raises if any record failed
            return results, producer.engine.counters, producer.engine.stats()

    results, counters, stats = asyncio.run(run())
    views = read_committed(mock_cluster.bootstrap, topic, 2)

    assert dict(counters.transaction_recoveries) == {"PRODUCER_FENCED": 1}
    assert stats.transaction.error is None
    _assert_committed_once_where_reported(views, first + second, results)
