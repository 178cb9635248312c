"""The transaction state machine (daemon/producer/transactions.py) against a fake channel
whose brokers answer from a script: which requests go where, and what each answer does to
the state. The error handling follows Java's TransactionManager handlers."""

from __future__ import annotations

import asyncio

import pytest

from daemon.kafka import messages
from daemon.net.errors import ConnectionClosedError, RequestTimedOutError
from daemon.process.txn_layout import fence_transactional_ids
from daemon.producer.transactions import (
    MarkerDenied,
    TransactionAbortable,
    TransactionFatal,
    TransactionManager,
    TransactionRetriable,
    TransactionSettings,
    TxnState,
)

COORDINATOR = (7, "coord", 9092)


class FakeBroker:
    """Answers requests from per-API scripts; records every request it got."""

    def __init__(self, name: str, log: list, scripts: dict[str, list], versions=None) -> None:
        self.name = name
        self._log = log
        self._scripts = scripts
        self._versions = versions or {}

    def version_for(self, api: messages.ApiSpec) -> int:
        return self._versions.get(api.name, api.max_version)

    async def request(self, api: messages.ApiSpec, body: dict, *, version: int) -> dict:
        self._log.append((self.name, api.name, dict(body)))
        answer = self._scripts[api.name].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeChannel:
    def __init__(self, scripts: dict[str, list], versions=None) -> None:
        self.scripts = scripts  # shared by both brokers
        self.requests: list = []
        self.bootstrap = FakeBroker("bootstrap", self.requests, scripts, versions)
        self.coordinator = FakeBroker("coordinator", self.requests, scripts, versions)
        self.asked_for: list = []

    async def any_broker(self):
        return self.bootstrap

    async def broker(self, node_id: int, host: str, port: int):
        self.asked_for.append((node_id, host, port))
        return self.coordinator

    async def close(self) -> None:
        pass


def found(code: int = 0) -> dict:
    node, host, port = COORDINATOR
    entry = {"key": "t", "node_id": node, "host": host, "port": port, "error_code": code,
             "error_message": None}  # fmt: skip
    return {"throttle_time_ms": 0, "coordinators": [entry]}


def init(code: int = 0, pid: int = 4, epoch: int = 1) -> dict:
    return {"throttle_time_ms": 0, "error_code": code, "producer_id": pid, "producer_epoch": epoch}


def added(*codes: tuple) -> dict:
    """An AddPartitionsToTxn answer: (topic, partition) or (topic, partition, error code)."""
    topics: dict[str, list] = {}
    for topic, partition, *error in codes:
        code = error[0] if error else 0
        topics.setdefault(topic, []).append({"partition_index": partition, "error_code": code})
    return {
        "throttle_time_ms": 0,
        "results": [{"name": t, "results": r} for t, r in topics.items()],
    }


def ended(code: int = 0) -> dict:
    return {"throttle_time_ms": 0, "error_code": code}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(channel: FakeChannel, clock=None) -> TransactionManager:
    settings = TransactionSettings("t", 60000, retry_backoff_s=0.0)
    return TransactionManager(settings, channel, clock or FakeClock())


def run(coro):
    return asyncio.run(coro)


def test_initialize_finds_the_coordinator_then_gets_a_fresh_epoch_there():
    channel = FakeChannel({"FindCoordinator": [found()], "InitProducerId": [init(pid=4, epoch=3)]})
    txn = manager(channel)

    run(txn.initialize())

    assert txn.state is TxnState.READY
    assert (txn.producer_id, txn.epoch) == (4, 3)
    find, init_request = channel.requests
    assert find[:2] == ("bootstrap", "FindCoordinator")
    assert find[2]["key_type"] == 1 and find[2]["coordinator_keys"] == ["t"]
    assert init_request[:2] == ("coordinator", "InitProducerId")
    # -1/-1: the coordinator bumps the epoch and aborts what an older epoch left open.
    assert init_request[2] == {"transactional_id": "t", "transaction_timeout_ms": 60000,
                               "producer_id": -1, "producer_epoch": -1}  # fmt: skip
    assert channel.asked_for == [COORDINATOR]


def test_concurrent_transactions_and_not_coordinator_are_retried_with_a_new_lookup():
    channel = FakeChannel({
        "FindCoordinator": [found(15), found(), found()],  # COORDINATOR_NOT_AVAILABLE first
        "InitProducerId": [init(51), init(16), init()],  # CONCURRENT_TRANSACTIONS, NOT_COORD.
    })  # fmt: skip
    txn = manager(channel)

    run(txn.initialize())

    assert txn.state is TxnState.READY
    names = [name for _, name, _ in channel.requests]
    assert names == ["FindCoordinator", "FindCoordinator", "InitProducerId", "InitProducerId",
                     "FindCoordinator", "InitProducerId"]  # fmt: skip


def test_a_lost_connection_hands_control_back_then_retries_after_a_new_lookup():
    # The sender's loop gets control back (to expire batches) and asks again on a later turn.
    lost = ConnectionClosedError("gone", request_sent=True)
    channel = FakeChannel({"FindCoordinator": [found(), found()], "InitProducerId": [lost, init()]})
    txn = manager(channel)
    with pytest.raises(TransactionRetriable):
        run(txn.initialize())
    assert txn.state is TxnState.UNINITIALIZED
    run(txn.initialize())
    assert txn.state is TxnState.READY
    assert [name for _, name, _ in channel.requests].count("FindCoordinator") == 2


def test_an_old_broker_without_init_producer_id_v3_is_fatal():
    channel = FakeChannel({"FindCoordinator": [found()]}, versions={"InitProducerId": 2})
    txn = manager(channel)
    with pytest.raises(TransactionFatal, match="v3"):
        run(txn.initialize())


@pytest.mark.parametrize("code", [90, 47, 53, 31])  # fenced (both codes), not authorized
def test_fenced_or_unauthorized_init_is_fatal_for_good(code):
    channel = FakeChannel({"FindCoordinator": [found()], "InitProducerId": [init(code)]})
    txn = manager(channel)
    with pytest.raises(TransactionFatal) as raised:
        run(txn.initialize())
    assert txn.state is TxnState.FATAL and raised.value.code == code
    with pytest.raises(TransactionFatal):  # nothing more is sent once fatal
        run(txn.add_partitions([("a", 0)]))
    assert len(channel.requests) == 2


def ready(scripts: dict[str, list], clock=None) -> tuple[TransactionManager, FakeChannel]:
    channel = FakeChannel({"FindCoordinator": [found()], "InitProducerId": [init()], **scripts})
    txn = manager(channel, clock)
    run(txn.initialize())
    return txn, channel


def test_add_partitions_opens_the_transaction_and_sends_only_new_partitions():
    txn, channel = ready({"AddPartitionsToTxn": [added(("a", 0), ("b", 1)), added(("a", 1))]})

    run(txn.add_partitions([("a", 0), ("b", 1)]))
    run(txn.add_partitions([("a", 0), ("a", 1)]))

    assert txn.state is TxnState.IN_TRANSACTION
    assert txn.partitions == {("a", 0), ("a", 1), ("b", 1)}
    first, second = (body for _, name, body in channel.requests if name == "AddPartitionsToTxn")
    assert first["topics"] == [{"name": "a", "partitions": [0]}, {"name": "b", "partitions": [1]}]
    assert second["topics"] == [{"name": "a", "partitions": [1]}]
    assert (first["producer_id"], first["producer_epoch"]) == (4, 1)


def test_add_partitions_retries_concurrent_transactions_and_unknown_partitions():
    txn, _ = ready(
        {"AddPartitionsToTxn": [added(("a", 0, 51)), added(("a", 0, 3)), added(("a", 0))]}
    )
    run(txn.add_partitions([("a", 0)]))
    assert txn.state is TxnState.IN_TRANSACTION


def test_a_partition_error_of_add_partitions_is_abortable_and_names_the_partition():
    # INVALID_TOPIC (17) on one partition; Kafka answers OPERATION_NOT_ATTEMPTED for the rest.
    txn, _ = ready({"AddPartitionsToTxn": [added(("a", 0, 55), ("bad", 0, 17))]})
    with pytest.raises(TransactionAbortable, match="bad-0: INVALID_TOPIC_EXCEPTION"):
        run(txn.add_partitions([("a", 0), ("bad", 0)]))
    assert txn.partitions == set()


def inits(channel: FakeChannel) -> list[tuple[int, int]]:
    """The (producer id, epoch) of every InitProducerId sent."""
    return [(body["producer_id"], body["producer_epoch"])
            for _, name, body in channel.requests if name == "InitProducerId"]  # fmt: skip


def end_txns(channel: FakeChannel) -> list[bool]:
    return [body["committed"] for _, name, body in channel.requests if name == "EndTxn"]


def aborted_with(txn: TransactionManager, code: int) -> None:
    """The sender's side: the abortable error ``code`` began an abort, the answers are in."""
    txn.begin_abort(f"an error {code}", code)
    run(txn.end(commit=False))


@pytest.mark.parametrize("code", [90, 47])  # PRODUCER_FENCED, INVALID_PRODUCER_EPOCH
def test_a_refused_epoch_is_abortable_and_a_granted_bump_recovers(code):
    # KIP-588: the coordinator aborted the transaction itself (timed out) and bumped the
    # epoch; it refuses EndTxn(abort), and grants InitProducerId with our id and epoch.
    txn, channel = ready({
        "AddPartitionsToTxn": [added(("a", 0, code))], "EndTxn": [ended(90)],
        "InitProducerId": [init(pid=4, epoch=1), init(pid=4, epoch=3)],
    })  # fmt: skip
    txn.partitions.add(("b", 0))  # already in the transaction
    with pytest.raises(TransactionAbortable) as raised:
        run(txn.add_partitions([("a", 0)]))
    assert raised.value.code == code
    aborted_with(txn, raised.value.code)
    assert txn.state is TxnState.UNINITIALIZED and txn.epoch_refused
    run(txn.initialize())

    assert end_txns(channel) == [False]  # refused, and the abort ended all the same
    assert inits(channel) == [(-1, -1), (4, 1)]  # the second carries our id and epoch
    assert (txn.state, txn.producer_id, txn.epoch) == (TxnState.READY, 4, 3)
    assert not txn.epoch_refused


def test_a_refused_epoch_confirmed_by_init_is_fatal_and_says_another_producer_took_the_id():
    txn, _ = ready({"InitProducerId": [init(pid=4, epoch=1), init(90, -1, -1)],
                    "AddPartitionsToTxn": [added(("a", 0))], "EndTxn": [ended(90)]})  # fmt: skip
    run(txn.add_partitions([("a", 0)]))
    aborted_with(txn, 47)  # the transaction is young: no timeout can have aborted it
    with pytest.raises(TransactionFatal, match="another producer took the transactional id"):
        run(txn.initialize())
    assert txn.state is TxnState.FATAL and txn.fatal.name == "PRODUCER_FENCED"
    assert "INVALID_PRODUCER_EPOCH" in str(txn.fatal)  # the cause is named too


def test_an_ordinary_abort_bumps_with_the_current_epoch_and_sends_end_txn_first():
    txn, channel = ready({
        "AddPartitionsToTxn": [added(("a", 0))], "EndTxn": [ended()],
        "InitProducerId": [init(pid=4, epoch=1), init(pid=4, epoch=2)],
    })  # fmt: skip
    run(txn.add_partitions([("a", 0)]))
    aborted_with(txn, 59)  # UNKNOWN_PRODUCER_ID
    run(txn.initialize())
    assert end_txns(channel) == [False]
    assert inits(channel) == [(-1, -1), (4, 1)] and txn.epoch == 2


def test_without_kip360_bumps_an_ordinary_abort_falls_back_to_a_new_id_from_then_on():
    # tansu 0.6 answers InitProducerId(current id, epoch) with UNKNOWN_SERVER_ERROR.
    txn, channel = ready({
        "AddPartitionsToTxn": [added(("a", 0)), added(("a", 0))], "EndTxn": [ended(), ended()],
        "InitProducerId": [init(pid=4, epoch=1), init(-1, -1, -1), init(pid=4, epoch=2),
                           init(pid=4, epoch=3)],
    })  # fmt: skip
    for _ in range(2):
        run(txn.add_partitions([("a", 0)]))
        aborted_with(txn, 0)  # e.g. a batch finally failed
        run(txn.initialize())
    assert inits(channel) == [(-1, -1), (4, 1), (-1, -1), (-1, -1)]
    assert (txn.state, txn.epoch) == (TxnState.READY, 3)


def test_without_kip360_bumps_a_refused_epoch_of_a_young_transaction_is_fenced():
    # The transaction was younger than transaction.timeout.ms: no timeout aborted it, so
    # another producer took the id, and a new epoch would fence that producer.
    txn, channel = ready({"InitProducerId": [init(pid=4, epoch=1), init(-1, -1, -1)]})
    aborted_with(txn, 90)
    with pytest.raises(TransactionFatal, match="younger than transaction"):
        run(txn.initialize())
    assert inits(channel) == [(-1, -1), (4, 1)]  # no InitProducerId(-1, -1) after the refusal
    assert txn.state is TxnState.FATAL


def test_a_bump_refused_after_a_timeout_takes_a_new_epoch_instead(caplog):
    # Kafka's coordinator forgets the epoch it bumped from when it aborts a transaction by
    # timeout (prepareFenceProducerEpoch sets the last epoch to -1), so it refuses the KIP-588
    # bump; the transaction was older than transaction.timeout.ms, so a timeout may be why,
    # and InitProducerId(-1, -1) gets the worker going again.
    clock = FakeClock()
    txn, channel = ready({
        "AddPartitionsToTxn": [added(("a", 0)), added(("a", 0, 90))], "EndTxn": [ended(90)],
        "InitProducerId": [init(pid=4, epoch=1), init(90, -1, -1), init(pid=4, epoch=3)],
    }, clock)  # fmt: skip
    run(txn.add_partitions([("a", 0)]))
    clock.now += 60.0  # the outage: transaction.timeout.ms passed
    with pytest.raises(TransactionAbortable) as raised:
        run(txn.add_partitions([("b", 0)]))
    aborted_with(txn, raised.value.code)
    run(txn.initialize())
    assert inits(channel) == [(-1, -1), (4, 1), (-1, -1)]
    assert (txn.state, txn.epoch) == (TxnState.READY, 3)
    assert "does not keep the epoch it bumped" in caplog.text
    assert "InitProducerId(-1, -1)" in txn.recovered_by


@pytest.mark.parametrize("code", [90, 47])
def test_a_refused_end_txn_abort_still_ends_and_the_next_epoch_decides(code):
    txn, channel = ready({
        "AddPartitionsToTxn": [added(("a", 0))], "EndTxn": [ended(code)],
        "InitProducerId": [init(pid=4, epoch=1), init(pid=4, epoch=3)],
    })  # fmt: skip
    run(txn.add_partitions([("a", 0)]))
    aborted_with(txn, 0)
    assert txn.state is TxnState.UNINITIALIZED and txn.abort_cause == code
    run(txn.initialize())
    assert txn.state is TxnState.READY and inits(channel)[-1] == (4, 1)


def test_an_unknown_producer_id_mapping_skips_end_txn_as_java_does():
    txn, channel = ready({
        "AddPartitionsToTxn": [added(("a", 0, 49))],  # INVALID_PRODUCER_ID_MAPPING
        "InitProducerId": [init(pid=4, epoch=1), init(pid=4, epoch=2)],
    })  # fmt: skip
    txn.partitions.add(("b", 0))
    with pytest.raises(TransactionAbortable) as raised:
        run(txn.add_partitions([("a", 0)]))
    aborted_with(txn, raised.value.code)
    run(txn.initialize())
    assert end_txns(channel) == [] and txn.state is TxnState.READY


def test_a_refused_commit_is_abortable():
    txn, _ = ready({"AddPartitionsToTxn": [added(("a", 0))], "EndTxn": [ended(90)]})
    run(txn.add_partitions([("a", 0)]))
    txn.begin_commit()
    with pytest.raises(TransactionAbortable) as raised:
        run(txn.end(commit=True))
    assert raised.value.code == 90 and txn.state is TxnState.COMMITTING


def test_commit_sends_end_txn_and_leaves_the_producer_ready():
    txn, channel = ready({"AddPartitionsToTxn": [added(("a", 0))], "EndTxn": [ended(51), ended()]})
    run(txn.add_partitions([("a", 0)]))
    run(txn.end(commit=True))
    assert txn.state is TxnState.READY and txn.partitions == set()
    ends = [body for _, name, body in channel.requests if name == "EndTxn"]
    assert len(ends) == 2 and ends[-1]["committed"] is True  # CONCURRENT_TRANSACTIONS: again


def test_abort_leaves_the_producer_needing_a_new_epoch():
    txn, channel = ready({"AddPartitionsToTxn": [added(("a", 0))], "EndTxn": [ended()]})
    run(txn.add_partitions([("a", 0)]))
    run(txn.end(commit=False))
    assert txn.state is TxnState.UNINITIALIZED
    assert channel.requests[-1][2]["committed"] is False


def test_ending_a_transaction_with_no_partitions_sends_nothing():
    txn, channel = ready({})
    run(txn.end(commit=True))
    assert txn.state is TxnState.READY and len(channel.requests) == 2


def test_unknown_producer_id_on_commit_is_abortable():
    txn, _ = ready({"AddPartitionsToTxn": [added(("a", 0))], "EndTxn": [ended(59)]})
    run(txn.add_partitions([("a", 0)]))
    with pytest.raises(TransactionAbortable):
        run(txn.end(commit=True))


def test_an_end_txn_that_is_never_answered_is_fatal_rather_than_retried_forever():
    # tansu 0.6 closes the connection instead of answering a fenced EndTxn.
    lost = [ConnectionClosedError("closed by broker", request_sent=True) for _ in range(8)]
    txn, channel = ready({"AddPartitionsToTxn": [added(("a", 0))], "EndTxn": lost})
    channel.scripts["FindCoordinator"] = [found()] * 8  # a lookup after each loss
    run(txn.add_partitions([("a", 0)]))
    for _ in range(7):
        with pytest.raises(TransactionRetriable):
            run(txn.end(commit=True))
        assert txn.state is TxnState.IN_TRANSACTION  # still open: the commit is sent again
    with pytest.raises(TransactionFatal, match="outcome is unknown"):
        run(txn.end(commit=True))
    assert txn.state is TxnState.FATAL and txn.fatal.code == 0


def test_end_txn_timeouts_through_an_outage_are_retried_without_end():
    # A frozen or cut-off coordinator: requests time out. That is an outage, however long,
    # not an answer, so it never makes the worker fatal.
    lost = [RequestTimedOutError("no response within 1s") for _ in range(20)]
    txn, channel = ready({"AddPartitionsToTxn": [added(("a", 0))], "EndTxn": [*lost, ended()]})
    channel.scripts["FindCoordinator"] = [found()] * 20
    run(txn.add_partitions([("a", 0)]))
    for _ in range(20):
        with pytest.raises(TransactionRetriable):
            run(txn.end(commit=True))
    run(txn.end(commit=True))
    assert txn.state is TxnState.READY


def test_an_abort_whose_end_txn_is_never_answered_ends_and_leaves_the_verdict_to_init():
    # tansu 0.6 closes the connection instead of answering a fenced EndTxn(abort): the abort's
    # outcome does not matter, and InitProducerId says whether the producer may go on.
    lost = [ConnectionClosedError("closed by broker", request_sent=True) for _ in range(8)]
    txn, channel = ready({"AddPartitionsToTxn": [added(("a", 0))], "EndTxn": lost})
    channel.scripts["FindCoordinator"] = [found()] * 8
    run(txn.add_partitions([("a", 0)]))
    txn.begin_abort("a batch failed", 90)
    for _ in range(7):
        with pytest.raises(TransactionRetriable):
            run(txn.end(commit=False))
    run(txn.end(commit=False))
    assert txn.state is TxnState.UNINITIALIZED and txn.epoch_refused


def test_fencing_bumps_the_epoch_of_every_old_id():
    channel = FakeChannel({
        "FindCoordinator": [found(), found()], "InitProducerId": [init(), init()],
    })  # fmt: skip
    run(fence_transactional_ids(["x-2-0", "x-2-1"], channel, TransactionSettings("", 1000, 0.0)))
    inits = [body["transactional_id"] for _, name, body in channel.requests
             if name == "InitProducerId"]  # fmt: skip
    assert inits == ["x-2-0", "x-2-1"]


# ---- transitions the sender's side asks for (the manager's own methods) ----------------------


def test_begin_commit_only_from_an_open_transaction():
    txn, _ = ready({"AddPartitionsToTxn": [added(("a", 0))]})
    with pytest.raises(RuntimeError):
        txn.begin_commit()  # READY: nothing to commit
    run(txn.add_partitions([("a", 0)]))
    txn.begin_commit()
    assert txn.state is TxnState.COMMITTING


def test_begin_abort_marks_the_transaction_aborting_but_never_leaves_fatal():
    txn, _ = ready({"AddPartitionsToTxn": [added(("a", 0))]})
    run(txn.add_partitions([("a", 0)]))
    txn.begin_abort("a batch failed")
    assert txn.state is TxnState.ABORTING
    txn.fail(TransactionFatal(90, "fenced"))
    txn.begin_abort("too late")
    assert txn.state is TxnState.FATAL


def test_state_is_read_only_from_outside():
    txn, _ = ready({})
    with pytest.raises(AttributeError):
        txn.state = TxnState.COMMITTING


# ---- commit markers -------------------------------------------------------------------------


def offsets_added(code: int = 0) -> dict:
    return {"throttle_time_ms": 0, "error_code": code}


def offset_committed(code: int = 0) -> dict:
    partition = {"partition_index": 3, "error_code": code}
    return {"throttle_time_ms": 0, "topics": [{"name": "events", "partitions": [partition]}]}


def offsets_fetched(*partitions: tuple, code: int = 0) -> dict:
    """An OffsetFetch answer: (topic, partition, offset, metadata[, error code]) each."""
    topics: dict[str, list] = {}
    for topic, partition, offset, metadata, *error in partitions:
        topics.setdefault(topic, []).append({
            "partition_index": partition, "committed_offset": offset,
            "committed_leader_epoch": -1, "metadata": metadata,
            "error_code": error[0] if error else 0,
        })  # fmt: skip
    return {
        "throttle_time_ms": 0,
        "topics": [{"name": t, "partitions": p} for t, p in topics.items()],
        "error_code": code,
    }


def in_transaction(channel: FakeChannel) -> TransactionManager:
    channel.scripts.setdefault("FindCoordinator", []).insert(0, found())
    channel.scripts.setdefault("InitProducerId", []).insert(0, init(pid=4, epoch=3))
    channel.scripts.setdefault("AddPartitionsToTxn", []).insert(0, added(("events", 3)))
    txn = manager(channel)
    run(txn.initialize())
    run(txn.add_partitions([("events", 3)]))
    channel.requests.clear()
    return txn


def test_commit_marker_adds_the_group_then_commits_the_token_at_the_group_coordinator():
    channel = FakeChannel({
        "AddOffsetsToTxn": [offsets_added(51), offsets_added()],  # CONCURRENT_TRANSACTIONS
        "FindCoordinator": [found(), found()],
        "TxnOffsetCommit": [offset_committed(14), offset_committed(16), offset_committed()],
    })  # fmt: skip
    txn = in_transaction(channel)

    run(txn.commit_marker("t", "events", 3, 1234567, "kpd ring r0"))

    names = [(to, name) for to, name, _ in channel.requests]
    assert names == [
        ("coordinator", "AddOffsetsToTxn"), ("coordinator", "AddOffsetsToTxn"),
        ("bootstrap", "FindCoordinator"),  # the group's coordinator: its own lookup
        ("coordinator", "TxnOffsetCommit"),  # COORDINATOR_LOAD_IN_PROGRESS: again
        ("coordinator", "TxnOffsetCommit"),  # NOT_COORDINATOR: look the group up again
        ("bootstrap", "FindCoordinator"), ("coordinator", "TxnOffsetCommit"),
    ]  # fmt: skip
    assert channel.requests[0][2] == {"transactional_id": "t", "producer_id": 4,
                                      "producer_epoch": 3, "group_id": "t"}  # fmt: skip
    assert channel.requests[2][2]["key_type"] == 0 and channel.requests[2][2]["key"] == "t"
    commit = channel.requests[3][2]
    assert (commit["group_id"], commit["producer_id"], commit["producer_epoch"]) == ("t", 4, 3)
    assert commit["topics"] == [{"name": "events", "partitions": [
        {"partition_index": 3, "committed_offset": 1234567, "committed_metadata": "kpd ring r0"},
    ]}]  # fmt: skip
    assert txn.state is TxnState.IN_TRANSACTION


def test_a_refused_epoch_on_the_marker_aborts_the_transaction():
    channel = FakeChannel({
        "AddOffsetsToTxn": [offsets_added()],
        "FindCoordinator": [found()],
        "TxnOffsetCommit": [offset_committed(90)],  # PRODUCER_FENCED
    })  # fmt: skip
    txn = in_transaction(channel)

    with pytest.raises(TransactionAbortable) as raised:
        run(txn.commit_marker("t", "events", 3, 1, ""))
    assert raised.value.code == 90
    assert txn.fatal is None


def test_a_denied_group_names_the_acl_to_grant_and_leaves_the_transaction_committable():
    channel = FakeChannel({"AddOffsetsToTxn": [offsets_added(30)]})  # GROUP_AUTHORIZATION_FAILED
    txn = in_transaction(channel)

    with pytest.raises(MarkerDenied, match="grant the principal Read on the group"):
        run(txn.commit_marker("t", "events", 3, 1, ""))
    assert txn.state is TxnState.IN_TRANSACTION and txn.fatal is None


def test_committed_marker_waits_until_no_commit_of_the_group_is_pending():
    channel = FakeChannel({
        "FindCoordinator": [found()],
        "OffsetFetch": [
            offsets_fetched(("events", 3, -1, "", 88)),  # UNSTABLE_OFFSET_COMMIT
            offsets_fetched(code=88),  # the same as the top-level code
            offsets_fetched(("events", 3, 10, None)),
        ],
    })  # fmt: skip
    txn = manager(channel)

    assert run(txn.committed_marker("t", "events", 3)) == (10, "")
    fetches = [body for _, name, body in channel.requests if name == "OffsetFetch"]
    assert len(fetches) == 3
    assert fetches[0] == {"group_id": "t", "require_stable": True,
                          "topics": [{"name": "events", "partition_indexes": [3]}]}  # fmt: skip


@pytest.mark.parametrize("answer", [
    offsets_fetched(code=69),  # GROUP_ID_NOT_FOUND
    {"throttle_time_ms": 0, "topics": None, "error_code": 0},  # tansu: null for no offsets
    offsets_fetched(("events", 3, -1, None)),
    offsets_fetched(("events", 3, -1, None, 3)),  # UNKNOWN_TOPIC_OR_PARTITION
])  # fmt: skip
def test_no_committed_marker(answer):
    channel = FakeChannel({"FindCoordinator": [found()], "OffsetFetch": [answer]})

    assert run(manager(channel).committed_marker("t", "events", 3)) == (-1, "")
