"""Kafka protocol error codes as one table of data, and what a producer does about each.

Owns:

* ``ERRORS`` — every code of Kafka's ``org.apache.kafka.common.protocol.Errors`` (-1 … 133, the
  list Kafka 4.1 and librdkafka 2.16 know) with its name, whether Java marks it retriable (its
  exception extends ``RetriableException``; the "Retriable" column of Kafka's generated
  protocol_errors.html), and whether the client's metadata is stale when it is seen (the
  exception extends ``InvalidMetadataException``, on which Java's Sender requests a metadata
  update).
* ``ErrorCode`` — the same table's codes by name (an ``IntEnum`` made from ``ERRORS``), for
  every comparison with a code elsewhere in kpd: ``code == ErrorCode.NOT_COORDINATOR``, never
  ``code == 16`` (``tests/unit/test_errors.py`` rejects bare numbers).
* ``classify(code)`` — the action for one partition's error code in a *Produce* response, and
  whether that partition's records may have been written if the action ends in failure. The
  persistence facts follow librdkafka's ``rd_kafka_err_action`` (``MSG_NOT_PERSISTED`` /
  ``MSG_POSSIBLY_PERSISTED``); the idempotence rules follow Java's ``TransactionManager`` and
  ``Sender`` (KIP-360: bump the epoch instead of failing the producer).

Data, not classes: there is no exception type per code. Unknown codes (a broker newer than this
table) are handled as Java handles them — as the non-retriable UNKNOWN_SERVER_ERROR — but are
reported as POSSIBLY_PERSISTED, because nothing is known about what the broker did.

Pure: must not import anything outside the standard library but kpd-client's protocol
vocabulary (``Persistence``, which the client and kpd's socket protocol share).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType

# The one definition of whether records may be in the log, shared with the kpd protocol and
# the client: it lives in kpd-client (kpd.protocol.base) and is re-exported here for the engine.
from kpd.protocol.base import Persistence

__all__ = [
    "ERRORS",
    "Action",
    "ErrorAction",
    "ErrorCode",
    "ErrorInfo",
    "Persistence",
    "classify",
    "code_of",
    "error_info",
    "error_name",
]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """One row of the error table."""

    code: int
    name: str
    retriable: bool
    refresh_metadata: bool


# (code, name, retriable, refresh_metadata). Names are Java's enum constants (Errors.java).
_ROWS: tuple[tuple[int, str, bool, bool], ...] = (
    (-1, "UNKNOWN_SERVER_ERROR", False, False),
    (0, "NONE", False, False),
    (1, "OFFSET_OUT_OF_RANGE", False, False),
    (2, "CORRUPT_MESSAGE", True, False),
    (3, "UNKNOWN_TOPIC_OR_PARTITION", True, True),
    (4, "INVALID_FETCH_SIZE", False, False),
    (5, "LEADER_NOT_AVAILABLE", True, True),
    (6, "NOT_LEADER_OR_FOLLOWER", True, True),
    (7, "REQUEST_TIMED_OUT", True, False),
    (8, "BROKER_NOT_AVAILABLE", False, False),
    (9, "REPLICA_NOT_AVAILABLE", True, True),
    (10, "MESSAGE_TOO_LARGE", False, False),
    (11, "STALE_CONTROLLER_EPOCH", False, False),
    (12, "OFFSET_METADATA_TOO_LARGE", False, False),
    (13, "NETWORK_EXCEPTION", True, True),
    (14, "COORDINATOR_LOAD_IN_PROGRESS", True, False),
    (15, "COORDINATOR_NOT_AVAILABLE", True, False),
    (16, "NOT_COORDINATOR", True, False),
    (17, "INVALID_TOPIC_EXCEPTION", False, False),
    (18, "RECORD_LIST_TOO_LARGE", False, False),
    (19, "NOT_ENOUGH_REPLICAS", True, False),
    (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", True, False),
    (21, "INVALID_REQUIRED_ACKS", False, False),
    (22, "ILLEGAL_GENERATION", False, False),
    (23, "INCONSISTENT_GROUP_PROTOCOL", False, False),
    (24, "INVALID_GROUP_ID", False, False),
    (25, "UNKNOWN_MEMBER_ID", False, False),
    (26, "INVALID_SESSION_TIMEOUT", False, False),
    (27, "REBALANCE_IN_PROGRESS", False, False),
    (28, "INVALID_COMMIT_OFFSET_SIZE", False, False),
    (29, "TOPIC_AUTHORIZATION_FAILED", False, False),
    (30, "GROUP_AUTHORIZATION_FAILED", False, False),
    (31, "CLUSTER_AUTHORIZATION_FAILED", False, False),
    (32, "INVALID_TIMESTAMP", False, False),
    (33, "UNSUPPORTED_SASL_MECHANISM", False, False),
    (34, "ILLEGAL_SASL_STATE", False, False),
    (35, "UNSUPPORTED_VERSION", False, False),
    (36, "TOPIC_ALREADY_EXISTS", False, False),
    (37, "INVALID_PARTITIONS", False, False),
    (38, "INVALID_REPLICATION_FACTOR", False, False),
    (39, "INVALID_REPLICA_ASSIGNMENT", False, False),
    (40, "INVALID_CONFIG", False, False),
    (41, "NOT_CONTROLLER", True, False),
    (42, "INVALID_REQUEST", False, False),
    (43, "UNSUPPORTED_FOR_MESSAGE_FORMAT", False, False),
    (44, "POLICY_VIOLATION", False, False),
    (45, "OUT_OF_ORDER_SEQUENCE_NUMBER", False, False),
    (46, "DUPLICATE_SEQUENCE_NUMBER", False, False),
    (47, "INVALID_PRODUCER_EPOCH", False, False),
    (48, "INVALID_TXN_STATE", False, False),
    (49, "INVALID_PRODUCER_ID_MAPPING", False, False),
    (50, "INVALID_TRANSACTION_TIMEOUT", False, False),
    (51, "CONCURRENT_TRANSACTIONS", False, False),
    (52, "TRANSACTION_COORDINATOR_FENCED", False, False),
    (53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", False, False),
    (54, "SECURITY_DISABLED", False, False),
    (55, "OPERATION_NOT_ATTEMPTED", False, False),
    (56, "KAFKA_STORAGE_ERROR", True, True),
    (57, "LOG_DIR_NOT_FOUND", False, False),
    (58, "SASL_AUTHENTICATION_FAILED", False, False),
    (59, "UNKNOWN_PRODUCER_ID", False, False),
    (60, "REASSIGNMENT_IN_PROGRESS", False, False),
    (61, "DELEGATION_TOKEN_AUTH_DISABLED", False, False),
    (62, "DELEGATION_TOKEN_NOT_FOUND", False, False),
    (63, "DELEGATION_TOKEN_OWNER_MISMATCH", False, False),
    (64, "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", False, False),
    (65, "DELEGATION_TOKEN_AUTHORIZATION_FAILED", False, False),
    (66, "DELEGATION_TOKEN_EXPIRED", False, False),
    (67, "INVALID_PRINCIPAL_TYPE", False, False),
    (68, "NON_EMPTY_GROUP", False, False),
    (69, "GROUP_ID_NOT_FOUND", False, False),
    (70, "FETCH_SESSION_ID_NOT_FOUND", True, False),
    (71, "INVALID_FETCH_SESSION_EPOCH", True, False),
    (72, "LISTENER_NOT_FOUND", True, True),
    (73, "TOPIC_DELETION_DISABLED", False, False),
    (74, "FENCED_LEADER_EPOCH", True, True),
    (75, "UNKNOWN_LEADER_EPOCH", True, True),
    (76, "UNSUPPORTED_COMPRESSION_TYPE", False, False),
    (77, "STALE_BROKER_EPOCH", False, False),
    (78, "OFFSET_NOT_AVAILABLE", True, False),
    (79, "MEMBER_ID_REQUIRED", False, False),
    (80, "PREFERRED_LEADER_NOT_AVAILABLE", True, True),
    (81, "GROUP_MAX_SIZE_REACHED", False, False),
    (82, "FENCED_INSTANCE_ID", False, False),
    (83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", True, True),
    (84, "ELECTION_NOT_NEEDED", True, True),
    (85, "NO_REASSIGNMENT_IN_PROGRESS", False, False),
    (86, "GROUP_SUBSCRIBED_TO_TOPIC", False, False),
    (87, "INVALID_RECORD", False, False),
    (88, "UNSTABLE_OFFSET_COMMIT", True, False),
    (89, "THROTTLING_QUOTA_EXCEEDED", True, False),
    (90, "PRODUCER_FENCED", False, False),
    (91, "RESOURCE_NOT_FOUND", False, False),
    (92, "DUPLICATE_RESOURCE", False, False),
    (93, "UNACCEPTABLE_CREDENTIAL", False, False),
    (94, "INCONSISTENT_VOTER_SET", False, False),
    (95, "INVALID_UPDATE_VERSION", False, False),
    (96, "FEATURE_UPDATE_FAILED", False, False),
    (97, "PRINCIPAL_DESERIALIZATION_FAILURE", False, False),
    (98, "SNAPSHOT_NOT_FOUND", False, False),
    (99, "POSITION_OUT_OF_RANGE", False, False),
    (100, "UNKNOWN_TOPIC_ID", True, True),
    (101, "DUPLICATE_BROKER_REGISTRATION", False, False),
    (102, "BROKER_ID_NOT_REGISTERED", False, False),
    (103, "INCONSISTENT_TOPIC_ID", True, True),
    (104, "INCONSISTENT_CLUSTER_ID", False, False),
    (105, "TRANSACTIONAL_ID_NOT_FOUND", False, False),
    (106, "FETCH_SESSION_TOPIC_ID_ERROR", True, False),
    (107, "INELIGIBLE_REPLICA", False, False),
    (108, "NEW_LEADER_ELECTED", False, False),
    (109, "OFFSET_MOVED_TO_TIERED_STORAGE", False, False),
    (110, "FENCED_MEMBER_EPOCH", False, False),
    (111, "UNRELEASED_INSTANCE_ID", False, False),
    (112, "UNSUPPORTED_ASSIGNOR", False, False),
    (113, "STALE_MEMBER_EPOCH", False, False),
    (114, "MISMATCHED_ENDPOINT_TYPE", False, False),
    (115, "UNSUPPORTED_ENDPOINT_TYPE", False, False),
    (116, "UNKNOWN_CONTROLLER_ID", False, False),
    (117, "UNKNOWN_SUBSCRIPTION_ID", False, False),
    (118, "TELEMETRY_TOO_LARGE", False, False),
    (119, "INVALID_REGISTRATION", False, False),
    (120, "TRANSACTION_ABORTABLE", False, False),
    (121, "INVALID_RECORD_STATE", False, False),
    (122, "SHARE_SESSION_NOT_FOUND", True, False),
    (123, "INVALID_SHARE_SESSION_EPOCH", True, False),
    (124, "FENCED_STATE_EPOCH", False, False),
    (125, "INVALID_VOTER_KEY", False, False),
    (126, "DUPLICATE_VOTER", False, False),
    (127, "VOTER_NOT_FOUND", False, False),
    (128, "INVALID_REGULAR_EXPRESSION", False, False),
    (129, "REBOOTSTRAP_REQUIRED", False, False),
    (130, "STREAMS_INVALID_TOPOLOGY", False, False),
    (131, "STREAMS_INVALID_TOPOLOGY_EPOCH", False, False),
    (132, "STREAMS_TOPOLOGY_FENCED", False, False),
    (133, "SHARE_SESSION_LIMIT_REACHED", True, False),
)

ERRORS: MappingProxyType[int, ErrorInfo] = MappingProxyType(
    {row[0]: ErrorInfo(*row) for row in _ROWS}
)
_BY_NAME: MappingProxyType[str, int] = MappingProxyType({row[1]: row[0] for row in _ROWS})

# Made from the table, so the table stays the one place a code is written. Members compare
# equal to plain ints (a decoded response's ``error_code``), and codes the table lacks (a
# broker newer than kpd) stay plain ints: ``ErrorCode`` is for naming, not for decoding.
ErrorCode = enum.IntEnum("ErrorCode", [(name, code) for code, name, _, _ in _ROWS])


def error_info(code: int) -> ErrorInfo | None:
    """The table row of ``code``, or None for a code this table does not know."""
    return ERRORS.get(code)


def error_name(code: int) -> str:
    """Kafka's name of an error code; unknown codes get a name that still shows the number."""
    info = ERRORS.get(code)
    return info.name if info is not None else f"UNKNOWN_ERROR_CODE_{code}"


class Action(enum.Enum):
    """What the producer does with a partition's batch after its Produce response."""

    SUCCESS = "success"  # done: report the records delivered
    RETRY = "retry"  # send the same batch again after retry.backoff.ms
    REFRESH_AND_RETRY = "refresh_and_retry"  # refresh metadata (leader moved), then retry
    BUMP_EPOCH = "bump_epoch"  # idempotence lost its sequence state: bump the epoch (KIP-360),
    #                            restamp the batch, retry
    SPLIT = "split"  # batch over the broker's max.message.bytes: split it, retry the pieces
    FATAL = "fatal"  # this producer id can never write again (fenced, not authorized)
    FAIL = "fail"  # report the records failed


@dataclass(frozen=True, slots=True)
class ErrorAction:
    """``classify``'s answer. ``persistence`` is what to report if the records finally fail
    after this response (or, for SUCCESS, that they are in the log)."""

    code: int
    action: Action
    persistence: Persistence

    @property
    def name(self) -> str:
        return error_name(self.code)


# Codes whose Produce answer means the broker may have appended the batch before failing:
# the ack wait timed out, replication fell short after the append, the connection dropped with
# the request in flight, or the broker hit an unexpected error.
# librdkafka rd_kafka_err_action: RD_KAFKA_ERR_ACTION_MSG_POSSIBLY_PERSISTED.
_POSSIBLY_PERSISTED = frozenset(
    {
        ErrorCode.UNKNOWN_SERVER_ERROR,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.NETWORK_EXCEPTION,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)

# Idempotent-producer codes that Java (KIP-360) resolves by bumping the epoch and resetting
# sequence numbers rather than failing the producer: the broker lost or rejected our sequence
# state, and the batch itself was not appended.
_BUMP_EPOCH = frozenset(
    {
        ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.UNKNOWN_PRODUCER_ID,
    }
)

# A producer id that can never write again: another instance took the transactional id
# (PRODUCER_FENCED), or it lacks the ACL to write idempotently/transactionally (Java's
# TransactionManager makes these fatal).
_FATAL = frozenset(
    {
        ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
        ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ErrorCode.PRODUCER_FENCED,
    }
)


def _classify_uncached(code: int) -> ErrorAction:
    if code == ErrorCode.NONE:
        return ErrorAction(code, Action.SUCCESS, Persistence.PERSISTED)
    if code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
        # The broker already holds this batch from an earlier attempt (Java's Sender treats it
        # as success; the offset in the response is not meaningful).
        return ErrorAction(code, Action.SUCCESS, Persistence.PERSISTED)
    persistence = (
        Persistence.POSSIBLY_PERSISTED
        if code in _POSSIBLY_PERSISTED or code not in ERRORS
        else Persistence.NOT_PERSISTED
    )
    info = ERRORS.get(code)
    if code == ErrorCode.MESSAGE_TOO_LARGE:
        action = Action.SPLIT  # Java's Sender splits a batch of >1 record and retries
    elif code in _BUMP_EPOCH:
        action = Action.BUMP_EPOCH
    elif code in _FATAL:
        action = Action.FATAL
    elif info is not None and info.retriable:
        action = Action.REFRESH_AND_RETRY if info.refresh_metadata else Action.RETRY
    else:
        action = Action.FAIL
    return ErrorAction(code, action, persistence)


# Every known code is classified once here; classify() is then one dict lookup per partition.
_CLASSIFIED: MappingProxyType[int, ErrorAction] = MappingProxyType(
    {code: _classify_uncached(code) for code in ERRORS}
)


def classify(code: int) -> ErrorAction:
    """The action for one partition's error code in a Produce response.

    A SPLIT of a single-record batch cannot split further: the caller fails it (that record
    is over the broker's limit) with the returned persistence, NOT_PERSISTED.
    """
    action = _CLASSIFIED.get(code)
    return action if action is not None else _classify_uncached(code)


def code_of(name: str) -> int:
    """The code of a Kafka error name (e.g. ``"NOT_LEADER_OR_FOLLOWER"`` -> 6)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown Kafka error name {name!r}") from None
