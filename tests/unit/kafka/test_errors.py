"""The Kafka error table and the Produce error classification."""

from __future__ import annotations

import pytest

from daemon.kafka.errors import (
    ERRORS,
    Action,
    ErrorCode,
    Persistence,
    classify,
    code_of,
    error_info,
    error_name,
)


@pytest.mark.parametrize(
    ("code", "name", "retriable"),
    [
        # Facts from Kafka's Errors.java and the Retriable column of protocol_errors.html.
        (-1, "UNKNOWN_SERVER_ERROR", False),
        (0, "NONE", False),
        (2, "CORRUPT_MESSAGE", True),
        (3, "UNKNOWN_TOPIC_OR_PARTITION", True),
        (6, "NOT_LEADER_OR_FOLLOWER", True),
        (7, "REQUEST_TIMED_OUT", True),
        (8, "BROKER_NOT_AVAILABLE", False),
        (10, "MESSAGE_TOO_LARGE", False),
        (13, "NETWORK_EXCEPTION", True),
        (18, "RECORD_LIST_TOO_LARGE", False),
        (19, "NOT_ENOUGH_REPLICAS", True),
        (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", True),
        (29, "TOPIC_AUTHORIZATION_FAILED", False),
        (45, "OUT_OF_ORDER_SEQUENCE_NUMBER", False),
        (46, "DUPLICATE_SEQUENCE_NUMBER", False),
        (47, "INVALID_PRODUCER_EPOCH", False),
        (56, "KAFKA_STORAGE_ERROR", True),
        (59, "UNKNOWN_PRODUCER_ID", False),
        (74, "FENCED_LEADER_EPOCH", True),
        (87, "INVALID_RECORD", False),
        (90, "PRODUCER_FENCED", False),
        (100, "UNKNOWN_TOPIC_ID", True),
        (120, "TRANSACTION_ABORTABLE", False),
        (133, "SHARE_SESSION_LIMIT_REACHED", True),
    ],
)
def test_table_rows_match_kafka_errors_java(code: int, name: str, retriable: bool) -> None:
    info = error_info(code)
    assert info is not None
    assert (info.code, info.name, info.retriable) == (code, name, retriable)
    assert error_name(code) == name
    assert code_of(name) == code


def test_table_covers_every_code_from_minus_one_to_133_once() -> None:
    assert sorted(ERRORS) == list(range(-1, 134))
    names = [info.name for info in ERRORS.values()]
    assert len(set(names)) == len(names)


def test_only_retriable_errors_ask_for_a_metadata_refresh() -> None:
    # Java's InvalidMetadataException extends RetriableException.
    refreshing = [info for info in ERRORS.values() if info.refresh_metadata]
    assert refreshing
    assert all(info.retriable for info in refreshing)


def test_error_name_of_an_unknown_code_still_shows_the_number() -> None:
    assert "4242" in error_name(4242)
    assert error_info(4242) is None


def test_code_of_rejects_an_unknown_name() -> None:
    with pytest.raises(KeyError):
        code_of("NOT_A_KAFKA_ERROR")


@pytest.mark.parametrize(
    ("code", "action", "persistence"),
    [
        (0, Action.SUCCESS, Persistence.PERSISTED),
        # The broker already holds the batch from an earlier attempt.
        (46, Action.SUCCESS, Persistence.PERSISTED),
        (3, Action.REFRESH_AND_RETRY, Persistence.NOT_PERSISTED),
        (5, Action.REFRESH_AND_RETRY, Persistence.NOT_PERSISTED),
        (6, Action.REFRESH_AND_RETRY, Persistence.NOT_PERSISTED),
        (56, Action.REFRESH_AND_RETRY, Persistence.NOT_PERSISTED),
        # The connection dropped with the request in flight: it may have been appended.
        (13, Action.REFRESH_AND_RETRY, Persistence.POSSIBLY_PERSISTED),
        # The ack wait timed out / replication fell short after the append.
        (7, Action.RETRY, Persistence.POSSIBLY_PERSISTED),
        (20, Action.RETRY, Persistence.POSSIBLY_PERSISTED),
        (19, Action.RETRY, Persistence.NOT_PERSISTED),
        (2, Action.RETRY, Persistence.NOT_PERSISTED),
        (10, Action.SPLIT, Persistence.NOT_PERSISTED),
        (45, Action.BUMP_EPOCH, Persistence.NOT_PERSISTED),
        (47, Action.BUMP_EPOCH, Persistence.NOT_PERSISTED),
        (59, Action.BUMP_EPOCH, Persistence.NOT_PERSISTED),
        (90, Action.FATAL, Persistence.NOT_PERSISTED),
        (53, Action.FATAL, Persistence.NOT_PERSISTED),
        (18, Action.FAIL, Persistence.NOT_PERSISTED),
        (29, Action.FAIL, Persistence.NOT_PERSISTED),
        (32, Action.FAIL, Persistence.NOT_PERSISTED),
        (87, Action.FAIL, Persistence.NOT_PERSISTED),
        (76, Action.FAIL, Persistence.NOT_PERSISTED),
        # Nothing is known of what the broker did.
        (-1, Action.FAIL, Persistence.POSSIBLY_PERSISTED),
        (32000, Action.FAIL, Persistence.POSSIBLY_PERSISTED),
    ],
)
def test_classify_produce_error_codes(code: int, action: Action, persistence: Persistence) -> None:
    result = classify(code)
    assert (result.code, result.action, result.persistence) == (code, action, persistence)


def test_classify_names_the_error() -> None:
    assert classify(6).name == "NOT_LEADER_OR_FOLLOWER"


def test_failed_persistence_over_attempts_is_the_max_of_the_attempts() -> None:
    timed_out = classify(7).persistence
    then_rejected = classify(6).persistence
    assert max(timed_out, then_rejected) is Persistence.POSSIBLY_PERSISTED
    assert classify(0).persistence is Persistence.PERSISTED


def test_every_retriable_code_is_retried_or_resolved_by_the_producer() -> None:
    for code, info in ERRORS.items():
        if info.retriable:
            assert classify(code).action in (Action.RETRY, Action.REFRESH_AND_RETRY), code


def test_error_code_names_every_row_of_the_table_and_nothing_else() -> None:
    assert {(code.value, code.name) for code in ErrorCode} == {
        (code, info.name) for code, info in ERRORS.items()
    }
    # Kafka's Errors.java numbers, not the table's, so a shifted row cannot go unnoticed.
    assert (ErrorCode.NOT_COORDINATOR, ErrorCode.PRODUCER_FENCED) == (16, 90)
    assert ErrorCode.UNKNOWN_SERVER_ERROR == -1
