"""A transactional producer's side of the transaction protocol (KIP-98): the state machine
and the requests to the transaction coordinator.

Owns one transactional id's state (``TxnState``), its producer id and epoch, the partitions
added to the open transaction and the coordinator connection. The sender decides *when* to
begin, add, commit and abort (it owns the batches); this module does the talking and says
what each answer means, following Java's ``TransactionManager`` handlers:

* FindCoordinator(key_type=1) finds the coordinator; NOT_COORDINATOR or
  COORDINATOR_NOT_AVAILABLE on any request looks it up again and retries;
* COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS (the previous transaction is still
  completing) and UNKNOWN_TOPIC_OR_PARTITION retry after ``retry.backoff.ms``;
* the authorization errors and INVALID_TXN_STATE are fatal: ``TransactionFatal``, and the
  producer id never writes again;
* PRODUCER_FENCED / INVALID_PRODUCER_EPOCH (``EPOCH_REFUSED``) are abortable, and fatal only
  once the coordinator confirms them (below);
* any other partition error of AddPartitionsToTxn, and UNKNOWN_PRODUCER_ID /
  INVALID_PRODUCER_ID_MAPPING / TRANSACTION_ABORTABLE, are abortable: ``TransactionAbortable``;
  the sender aborts and replays the transaction's records under a new epoch.

InitProducerId with the transactional id and producer id/epoch -1 bumps the epoch; the
coordinator aborts whatever transaction the previous epoch left open, which is how a restarted
worker fences its crashed predecessor (and how kpd fences the ids of an old worker layout).
It needs InitProducerId v3+ (tansu 0.6 answers v0-2 with UNKNOWN_SERVER_ERROR).

After an abort the manager asks for the next epoch with its *current* producer id and epoch
(KIP-360, v3+), as Java's ``TransactionManager`` does. That request is also how a producer
whose transaction the coordinator aborted comes back (KIP-588): a transaction open longer than
``transaction.timeout.ms`` — a broker outage is enough — is aborted by the coordinator, which
bumps the epoch as it does, so the producer's next Produce, AddPartitionsToTxn or EndTxn is
refused (INVALID_PRODUCER_EPOCH from a partition leader, PRODUCER_FENCED from the
coordinator). A producer fenced by another instance gets the same answers. KIP-588 has the
coordinator remember the epoch it bumped from and grant InitProducerId with it, while a
fencing InitProducerId(-1, -1) makes it forget (``TransactionMetadata
.prepareIncrementProducerEpoch`` accepts the current or the remembered epoch, else
PRODUCER_FENCED). So after the EndTxn(abort) — which such a coordinator refuses, and that
refusal ends the abort all the same — the manager sends InitProducerId with its id and epoch.
Granted, the producer goes on. Refused, what decides is the transaction's age when the
refusal came: Kafka's coordinator aborts by timeout through ``prepareFenceProducerEpoch``,
which forgets the previous epoch as a fence does (read in apache/kafka's
TransactionMetadata.scala), so it refuses the bump after its own timeout abort too. A
transaction open longer than ``transaction.timeout.ms`` may have been aborted so, and the
manager takes a new epoch with InitProducerId(-1, -1) (which would fence another producer of
the id: the id is this worker's own); a younger one cannot have timed out, so another
producer took the id and the manager is fatal. A coordinator without the KIP-360 form
(tansu 0.6 answers it with UNKNOWN_SERVER_ERROR) is treated the same way without the bump
(and tansu 0.6 never aborts a transaction by timeout, measured).

The connections come through a ``Channel`` so that the state machine runs against a fake one
in unit tests (the real one is ``txn_channel.DirectChannel``). Must not import the sender, the
accumulator or anything of process/
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.kafka import messages
from daemon.kafka.errors import ErrorCode, error_name
from daemon.net.errors import BrokerConnectionError, RequestTimedOutError

__all__ = [
    "EPOCH_REFUSED",
    "Channel",
    "MarkerDenied",
    "TransactionAbortable",
    "TransactionFatal",
    "TransactionManager",
    "TransactionRetriable",
    "TransactionSettings",
    "TxnState",
]

log = logging.getLogger(__name__)

_MIN_INIT_PRODUCER_ID_VERSION = 3  # transactional InitProducerId below v3: tansu errors
_GROUP_KEY, _TRANSACTION_KEY = 0, 1  # FindCoordinator key_type
# Consecutive lost answers to one EndTxn after which its fate counts as unknowable: tansu 0.6
# closes the connection instead of answering a fenced EndTxn, so retrying forever would hang.
# Only connections closed after the request went out count: a request timeout is an outage
# (a broker frozen or cut off), and an outage must not make the worker fatal.
_MAX_LOST_END_TXN = 8

_RETRY = frozenset({ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.CONCURRENT_TRANSACTIONS})
# TxnOffsetCommit codes Java's TxnOffsetCommitHandler retries besides those above.
_MARKER_RETRY = frozenset({ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.REQUEST_TIMED_OUT})
_NEW_COORDINATOR = frozenset({ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.NOT_COORDINATOR})
# Not allowed (topic, cluster, transactional id authorization), INVALID_TXN_STATE, and
# UNSUPPORTED_VERSION: this producer can never write again.
FATAL_CODES = frozenset(
    {
        ErrorCode.TOPIC_AUTHORIZATION_FAILED,
        ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.INVALID_TXN_STATE,
        ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
# Our epoch is no longer the coordinator's: it aborted our transaction (timed out) or another
# producer took the id. INVALID_PRODUCER_EPOCH comes from partition leaders and coordinators
# before Kafka 2.7, PRODUCER_FENCED from newer coordinators. Abortable until InitProducerId
# with our id and epoch says which (see the module docstring).
EPOCH_REFUSED = frozenset({ErrorCode.INVALID_PRODUCER_EPOCH, ErrorCode.PRODUCER_FENCED})
# The coordinator does not know this producer id: go straight to InitProducerId (Java skips
# EndTxn on INVALID_PRODUCER_ID_MAPPING the same way). A refused epoch still sends the
# EndTxn(abort): a coordinator that aborted the transaction refuses it, harmlessly, and one
# that did not (another producer's refusal was a leader's alone) aborts it now.
_NO_END_TXN = frozenset({ErrorCode.INVALID_PRODUCER_ID_MAPPING})
_ABORTABLE = frozenset(
    {
        ErrorCode.UNKNOWN_PRODUCER_ID,
        ErrorCode.INVALID_PRODUCER_ID_MAPPING,
        ErrorCode.TRANSACTION_ABORTABLE,  # KIP-890: the broker says abort, then go on
        *EPOCH_REFUSED,
    }
)
# How coordinators without KIP-360's InitProducerId(current id, epoch) answer it: tansu 0.6
# with UNKNOWN_SERVER_ERROR (measured); others may call the request invalid.
_NO_EPOCH_BUMP = frozenset(
    {
        ErrorCode.UNKNOWN_SERVER_ERROR,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNSUPPORTED_VERSION,
    }
)


class TxnState(enum.Enum):
    UNINITIALIZED = "uninitialized"  # no producer id yet (or a new epoch is needed)
    READY = "ready"  # a producer id; no transaction open
    IN_TRANSACTION = "in_transaction"  # partitions added; records flowing
    COMMITTING = "committing"  # no more drains; EndTxn(commit) once in-flight is back
    ABORTING = "aborting"  # an abortable error: EndTxn(abort), new epoch, replay
    FATAL = "fatal"  # fenced or not authorized: this id writes nothing more


class TransactionFatal(Exception):
    """The transactional id can never write again (fenced, not authorized)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = error_name(code) if code else "TRANSACTION_FATAL"


class TransactionRetriable(Exception):
    """The coordinator could not be reached this time; ask again on a later loop turn (the
    sender meanwhile keeps expiring batches past ``delivery.timeout.ms``)."""


class MarkerDenied(Exception):
    """The principal may not use the commit marker's group (GROUP_AUTHORIZATION_FAILED)."""


class TransactionAbortable(Exception):
    """The open transaction must be aborted; the producer may go on after that."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class TransactionSettings:
    transactional_id: str
    timeout_ms: int = 60000  # transaction.timeout.ms
    retry_backoff_s: float = 0.1


class Channel(Protocol):
    """Where requests go: any broker (FindCoordinator) or one broker (the coordinator)."""

    async def any_broker(self) -> Any: ...

    async def broker(self, node_id: int, host: str, port: int) -> Any: ...

    async def close(self) -> None: ...


class TransactionManager:
    """One transactional id's state machine. Owned by the engine's event loop."""

    def __init__(
        self,
        settings: TransactionSettings,
        channel: Channel,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._channel = channel
        self._clock = clock
        self._state = TxnState.UNINITIALIZED  # changed only by this class's methods
        self.producer_id = -1
        self.epoch = -1
        self.partitions: set[tuple[str, int]] = set()  # added to the open transaction
        self.fatal: TransactionFatal | None = None
        self._coordinator: tuple[int, str, int] | None = None
        self._group_coordinators: dict[str, tuple[int, str, int]] = {}  # for commit markers
        self._unanswered_end_txn = 0  # EndTxn requests sent and lost in a row
        self._failures_in_a_row = 0  # requests to the coordinator that failed to connect or answer
        # Why the open transaction is being aborted: the error code that began the abort (0:
        # none from a broker), until the next epoch is granted. An EPOCH_REFUSED cause is
        # what InitProducerId with our id and epoch must confirm or clear (KIP-588).
        self.abort_cause = ErrorCode.NONE
        self._skip_end_txn = False  # the coordinator would refuse EndTxn(abort): don't send it
        self._can_bump = True  # False once the coordinator answered KIP-360's form as unknown
        # When the open transaction's first AddPartitionsToTxn went out: the coordinator's
        # transaction.timeout.ms runs from its arrival, so no earlier than this.
        self._opened_at: float | None = None
        # The refused epoch came when the open transaction was older than
        # transaction.timeout.ms: the coordinator may have aborted it by timeout.
        self._maybe_timed_out = False
        self.recovered_by = ""  # how the last epoch after a refused one was had (for the log)

    @property
    def transactional_id(self) -> str:
        return self.settings.transactional_id

    @property
    def state(self) -> TxnState:
        return self._state

    # ---- transitions the sender's side decides -------------------------------------------

    def begin_commit(self) -> None:
        """Stop adding to the open transaction: EndTxn(commit) once its answers are in."""
        if self._state is not TxnState.IN_TRANSACTION:
            raise RuntimeError(f"cannot commit in state {self._state.value}")
        self._state = TxnState.COMMITTING

    def begin_abort(self, why: str, code: int = ErrorCode.NONE) -> None:
        """An abortable error: EndTxn(abort) once the transaction's answers are in, then a new
        epoch and a replay. ``code`` is the broker's error, if any: a refused epoch makes the
        next InitProducerId confirm that we were not fenced. Called again
        while aborting, it only adds the cause; a fatal state stays fatal."""
        if self._state is TxnState.FATAL:
            return
        if not self.abort_cause or (code in EPOCH_REFUSED and not self.epoch_refused):
            self.abort_cause = code  # the first error; the first refused epoch above others
        if code in EPOCH_REFUSED and self._opened_at is not None:
            age_s = self._clock() - self._opened_at
            self._maybe_timed_out |= age_s * 1000 >= self.settings.timeout_ms
        self._skip_end_txn |= code in _NO_END_TXN
        if self._state is not TxnState.ABORTING:
            log.warning("%s: aborting the transaction: %s", self.transactional_id, why)
            self._state = TxnState.ABORTING

    @property
    def epoch_refused(self) -> bool:
        """The abort under way began with our epoch refused (the coordinator aborted the
        transaction itself, or we are fenced: the next InitProducerId tells)."""
        return self.abort_cause in EPOCH_REFUSED

    # ---- the protocol --------------------------------------------------------------------

    async def initialize(self) -> None:
        """Get a producer id and the next epoch for the transactional id (fencing any older
        producer and aborting its open transaction); READY afterwards.

        The first time it asks with producer id/epoch -1; afterwards with the current ones
        (KIP-360), which the coordinator grants unless another producer took the id since or
        it forgot the epoch on a timeout abort. So a refused epoch is cleared here (KIP-588),
        replaced by a new one if the transaction was old enough to have timed out, or else
        confirmed (fatal)."""
        self._require_not_fatal()
        answer = None
        if self.producer_id >= 0 and self._can_bump:
            answer = await self._init_producer_id(bump=True)
            code = answer["error_code"]
            if code in _NO_EPOCH_BUMP:
                self._cannot_bump(code)
                answer = None
            elif code in EPOCH_REFUSED and self.epoch_refused and self._maybe_timed_out:
                self._bump_refused_after_timeout(code)
                answer = None
            else:
                self.recovered_by = "the coordinator granted the epoch bump (KIP-588)"
        if answer is None:
            if self.epoch_refused and not self._maybe_timed_out:
                self._fatal(self.abort_cause, self._unconfirmed_message())
            answer = await self._init_producer_id(bump=False)
            self.recovered_by = "a new epoch from InitProducerId(-1, -1)"
        code = answer["error_code"]
        if code != ErrorCode.NONE and (self.epoch_refused or code in EPOCH_REFUSED):
            self._fatal(code, self._fenced_message(code))
        self._check(code, "InitProducerId")
        self.producer_id = answer["producer_id"]
        self.epoch = answer["producer_epoch"]
        self.partitions.clear()
        self.abort_cause = ErrorCode.NONE
        self._skip_end_txn = False
        self._maybe_timed_out = False
        self._opened_at = None
        self._state = TxnState.READY
        log.info(
            "transactional id %s: producer id %d epoch %d",
            self.transactional_id,
            self.producer_id,
            self.epoch,
        )

    async def _init_producer_id(self, bump: bool) -> dict:
        body = {
            "transactional_id": self.transactional_id,
            "transaction_timeout_ms": self.settings.timeout_ms,
            "producer_id": self.producer_id if bump else -1,
            "producer_epoch": self.epoch if bump else -1,
        }
        return await self._call(messages.INIT_PRODUCER_ID, body, _MIN_INIT_PRODUCER_ID_VERSION)

    def _cannot_bump(self, code: int) -> None:
        self._can_bump = False
        log.warning(
            "%s: the coordinator cannot bump an epoch with InitProducerId(producer id, epoch) "
            "(KIP-360: %s); kpd asks for a new epoch with (-1, -1) from now on, and takes a "
            "refused epoch as fenced",
            self.transactional_id,
            error_name(code),
        )

    def _bump_refused_after_timeout(self, code: int) -> None:
        log.warning(
            "%s: InitProducerId with producer id %d epoch %d refused (%s) after %s came while "
            "the transaction was open longer than transaction.timeout.ms = %d ms: the "
            "coordinator aborted it by timeout and does not keep the epoch it bumped (no "
            "KIP-588), so kpd asks for a new epoch with (-1, -1), which would fence another "
            "producer of this transactional id",
            self.transactional_id, self.producer_id, self.epoch, error_name(code),
            error_name(self.abort_cause), self.settings.timeout_ms,
        )  # fmt: skip

    def _fenced_message(self, code: int) -> str:
        cause = f"{error_name(self.abort_cause)}, and " if self.epoch_refused else ""
        return (
            f"fenced: {cause}InitProducerId with producer id {self.producer_id} epoch "
            f"{self.epoch} was refused ({error_name(code)}): another producer took the "
            "transactional id"
        )

    def _unconfirmed_message(self) -> str:
        return (
            f"fenced: {error_name(self.abort_cause)} while the transaction was younger than "
            f"transaction.timeout.ms = {self.settings.timeout_ms} ms, so not aborted by "
            "timeout: another producer took the transactional id"
        )

    async def add_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """AddPartitionsToTxn for partitions not yet in the transaction; the first one opens
        the transaction (IN_TRANSACTION)."""
        self._require_not_fatal()
        new = sorted(set(partitions) - self.partitions)
        if not new:
            return
        if self._opened_at is None:  # the transaction's first: the coordinator's timer starts
            self._opened_at = self._clock()
        topics: dict[str, list[int]] = {}
        for topic, partition in new:
            topics.setdefault(topic, []).append(partition)
        body = {
            "transactional_id": self.transactional_id,
            "producer_id": self.producer_id,
            "producer_epoch": self.epoch,
            "topics": [{"name": t, "partitions": p} for t, p in topics.items()],
        }
        while True:
            answer = await self._call(messages.ADD_PARTITIONS_TO_TXN, body)
            codes = [
                (topic["name"], result["partition_index"], result["error_code"])
                for topic in answer["results"]
                for result in topic["results"]
            ]
            if not await self._retry_add(codes):
                break
        self.partitions.update(new)
        # Produce answers that arrived meanwhile may have moved the state on (ABORTING, FATAL).
        if self._state in (TxnState.READY, TxnState.IN_TRANSACTION):
            self._state = TxnState.IN_TRANSACTION

    async def _retry_add(self, codes: list[tuple[str, int, int]]) -> bool:
        """Act on AddPartitionsToTxn's per-partition codes; True means send it again."""
        failed = [(t, p, c) for t, p, c in codes if c != ErrorCode.NONE]
        if not failed:
            return False
        errors = {c for _, _, c in failed}
        fatal = errors & FATAL_CODES
        if fatal:
            self._check(min(fatal), "AddPartitionsToTxn")
        refused = errors & EPOCH_REFUSED
        if refused:
            code = min(refused)
            raise TransactionAbortable(code, f"AddPartitionsToTxn: {error_name(code)}")
        if errors & _NEW_COORDINATOR:
            self._coordinator = None
        if errors <= _RETRY | _NEW_COORDINATOR | {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}:
            await asyncio.sleep(self.settings.retry_backoff_s)
            return True
        skipped = ErrorCode.OPERATION_NOT_ATTEMPTED  # named in no message: a partner failed
        real = [f"{t}-{p}: {error_name(c)}" for t, p, c in failed if c != skipped]
        code = next(c for _, _, c in failed if c != skipped)
        raise TransactionAbortable(code, "AddPartitionsToTxn failed: " + ", ".join(real))

    async def end(self, commit: bool) -> None:
        """EndTxn: commit or abort the open transaction. Afterwards READY (commit) or
        UNINITIALIZED (abort: the sender gets a new epoch before it replays).

        An abort is not sent when the coordinator does not know our producer id, and an abort
        it refuses still ends here: either way the coordinator has aborted, or will abort,
        the transaction, and the next InitProducerId says whether this producer may go on."""
        self._require_not_fatal()
        if self.partitions and not (not commit and self._skip_end_txn):
            body = {
                "transactional_id": self.transactional_id,
                "producer_id": self.producer_id,
                "producer_epoch": self.epoch,
                "committed": commit,
            }
            code = await self._end_txn(body, commit)
            if not commit and code in _ABORTABLE:
                self.begin_abort(f"EndTxn(abort): {error_name(code)}", code)
            else:
                self._check(code, "EndTxn")
        self.partitions.clear()
        if commit:
            self._opened_at = None
        self._state = TxnState.READY if commit else TxnState.UNINITIALIZED

    async def _end_txn(self, body: dict, commit: bool) -> int:
        """Send EndTxn; its error code. Connections closed after it went out count as lost
        answers (tansu 0.6 closes the connection instead of answering a fenced EndTxn), and
        ``_MAX_LOST_END_TXN`` in a row end it: a commit's outcome is then unknown (fatal), an
        abort's does not matter (the next InitProducerId says whether we may go on)."""
        try:
            answer = await self._call(messages.END_TXN, body)
        except TransactionRetriable as exc:
            lost = exc.__cause__
            if (
                isinstance(lost, BrokerConnectionError)
                and lost.request_sent
                and not isinstance(lost, RequestTimedOutError)
            ):  # a timeout is an outage, however long: not an answer
                self._unanswered_end_txn += 1
            if self._unanswered_end_txn < _MAX_LOST_END_TXN:
                raise
            self._unanswered_end_txn = 0
            if commit:
                self._fatal(0, f"EndTxn unanswered {_MAX_LOST_END_TXN} times in a row: its "
                            f"outcome is unknown ({lost})")  # fmt: skip
            log.warning(
                "%s: EndTxn(abort) unanswered %d times in a row (%s); InitProducerId decides "
                "whether this producer may go on",
                self.transactional_id, _MAX_LOST_END_TXN, lost,
            )  # fmt: skip
            return ErrorCode.NONE
        self._unanswered_end_txn = 0
        return answer["error_code"]

    # ---- commit markers: did a transaction commit? ----------------------------------------

    async def commit_marker(
        self, group: str, topic: str, partition: int, token: int, metadata: str
    ) -> None:
        """Put a marker in the open transaction: ``token`` as ``group``'s committed offset
        of (``topic``, ``partition``), committed or aborted with the transaction's records
        (AddOffsetsToTxn, then TxnOffsetCommit to the group's coordinator: Java's
        ``sendOffsetsToTransaction``, which Kafka Connect's exactly-once sources use to keep
        their source positions, KIP-618). ``committed_markers`` reads it back after a
        restart. The partition must exist (the group coordinator checks); any partition of
        the transaction does."""
        self._require_not_fatal()
        body = {
            "transactional_id": self.transactional_id,
            "producer_id": self.producer_id,
            "producer_epoch": self.epoch,
            "group_id": group,
        }
        answer = await self._call(messages.ADD_OFFSETS_TO_TXN, body)
        self._check_marker(answer["error_code"], "AddOffsetsToTxn", group)
        commit = {
            **body,
            "topics": [{"name": topic, "partitions": [
                {"partition_index": partition, "committed_offset": token,
                 "committed_metadata": metadata},
            ]}],
        }  # fmt: skip
        while True:
            answer = await self._call(messages.TXN_OFFSET_COMMIT, commit, group=group)
            codes = {p["error_code"] for t in answer["topics"] for p in t["partitions"]}
            codes.discard(ErrorCode.NONE)
            if not codes:
                return
            if codes & _NEW_COORDINATOR:
                self._forget_coordinator(group)
            if codes <= _RETRY | _NEW_COORDINATOR | _MARKER_RETRY:
                await asyncio.sleep(self.settings.retry_backoff_s)
                continue
            self._check_marker(min(codes), "TxnOffsetCommit", group)

    async def committed_marker(self, group: str, topic: str, partition: int) -> tuple[int, str]:
        """``group``'s committed offset of (``topic``, ``partition``) and its metadata — the
        marker ``commit_marker`` left there — or (-1, "") for none. Asked with RequireStable
        (OffsetFetch v7+, KIP-447), the coordinator answers only once no transaction with
        offsets of the group is still completing (UNSTABLE_OFFSET_COMMIT until then, retried
        here), so a commit that a fencing InitProducerId was finishing is seen. Below v7 the
        answer may predate such a commit."""
        self._require_not_fatal()
        body = {
            "group_id": group,
            "topics": [{"name": topic, "partition_indexes": [partition]}],
            "require_stable": True,
        }
        while True:
            answer = await self._call(messages.OFFSET_FETCH, body, min_version=1, group=group)
            code = answer["error_code"]
            if code == ErrorCode.GROUP_ID_NOT_FOUND:
                return -1, ""
            unstable = code == ErrorCode.UNSTABLE_OFFSET_COMMIT
            if not unstable:
                self._check_marker(code, "OffsetFetch", group)
            found = [
                p
                for t in answer["topics"] or ()  # null: tansu's "no offsets"
                if t["name"] == topic
                for p in t["partitions"]
                if p["partition_index"] == partition
            ]
            for p in found:
                unstable |= p["error_code"] == ErrorCode.UNSTABLE_OFFSET_COMMIT
            if not unstable:
                break
            await asyncio.sleep(self.settings.retry_backoff_s)
        if not found or found[0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            return -1, ""
        self._check_marker(found[0]["error_code"], "OffsetFetch", group)
        return found[0]["committed_offset"], found[0]["metadata"] or ""

    def _check_marker(self, code: int, what: str, group: str) -> None:
        """A commit marker's error: a denied group raises ``MarkerDenied`` (checked before
        anything is added to the transaction, which can still commit without it); a refused
        epoch and the abortable codes abort; anything else is fatal as in ``_check``."""
        if code == ErrorCode.GROUP_AUTHORIZATION_FAILED:
            raise MarkerDenied(f"{what}: {_group_denied(group)}")
        self._check(code, what)

    def fail(self, error: TransactionFatal) -> None:
        """Enter FATAL for good (the sender saw a fatal error in a Produce answer)."""
        if self.fatal is None:
            self.fatal = error
            log.error(
                "transactional id %s is fenced or not authorized (%s); this worker writes "
                "nothing more until kpd restarts",
                self.transactional_id,
                error,
            )
        self._state = TxnState.FATAL

    # ---- requests to the coordinator -----------------------------------------------------

    async def _call(
        self, api: messages.ApiSpec, body: dict, min_version: int = 0, group: str | None = None
    ) -> dict:
        """Send ``api`` to the transaction coordinator (or ``group``'s coordinator) until it
        answers with a code that is not "look again" or "try later". A connection failure
        raises ``TransactionRetriable`` (caused by the ``BrokerConnectionError``) after the
        backoff."""
        while True:
            try:
                conn = await self._coordinator_connection(group)
                version = conn.version_for(api)
                if version < min_version:
                    raise TransactionFatal(
                        ErrorCode.UNSUPPORTED_VERSION,
                        f"the broker speaks {api.name} v{version}; transactions need "
                        f"v{min_version}+",
                    )
                answer = await conn.request(api, body, version=version)
            except BrokerConnectionError as exc:
                self._forget_coordinator(group)
                self._failures_in_a_row += 1
                # An outage fails every attempt: say so at once, then now and then.
                level = logging.WARNING if self._failures_in_a_row % 100 == 1 else logging.DEBUG
                log.log(level, "%s for %s: %s; retrying (%d failed in a row)", api.name,
                        self.transactional_id, exc, self._failures_in_a_row)  # fmt: skip
                await asyncio.sleep(self.settings.retry_backoff_s)
                raise TransactionRetriable(f"{api.name}: {exc}") from exc
            self._failures_in_a_row = 0
            code = answer.get("error_code", ErrorCode.NONE)
            if code in _NEW_COORDINATOR:
                self._forget_coordinator(group)
            if code in _NEW_COORDINATOR or code in _RETRY:
                await asyncio.sleep(self.settings.retry_backoff_s)
                continue
            return answer

    async def _coordinator_connection(self, group: str | None = None) -> Any:
        if group is not None:
            found = self._group_coordinators.get(group)
            if found is None:
                found = self._group_coordinators[group] = await self._find_coordinator(
                    group, _GROUP_KEY
                )
            return await self._channel.broker(*found)
        if self._coordinator is None:
            self._coordinator = await self._find_coordinator(
                self.transactional_id, _TRANSACTION_KEY
            )
        return await self._channel.broker(*self._coordinator)

    def _forget_coordinator(self, group: str | None) -> None:
        if group is None:
            self._coordinator = None
        else:
            self._group_coordinators.pop(group, None)

    async def _find_coordinator(self, key: str, key_type: int) -> tuple[int, str, int]:
        kind = "group" if key_type == _GROUP_KEY else "transaction"
        while True:
            conn = await self._channel.any_broker()
            version = conn.version_for(messages.FIND_COORDINATOR)
            body = {"key": key, "key_type": key_type, "coordinator_keys": [key]}
            answer = await conn.request(messages.FIND_COORDINATOR, body, version=version)
            found = answer["coordinators"][0] if version >= 4 else answer
            code = found["error_code"]
            if code == ErrorCode.NONE:
                log.info("%s coordinator of %s: node %d at %s:%d", kind, key,
                         found["node_id"], found["host"], found["port"])  # fmt: skip
                return found["node_id"], found["host"], found["port"]
            if key_type == _GROUP_KEY and code == ErrorCode.GROUP_AUTHORIZATION_FAILED:
                self._fatal(code, _group_denied(key))
            self._check_fatal(code, "FindCoordinator")
            await asyncio.sleep(self.settings.retry_backoff_s)

    # ---- error handling ------------------------------------------------------------------

    def _check(self, code: int, what: str) -> None:
        if code == ErrorCode.NONE:
            return
        self._check_fatal(code, what)
        if code in _ABORTABLE:
            raise TransactionAbortable(code, f"{what}: {error_name(code)}")
        # Java: "Unexpected error in ..." is fatal for every handler.
        self._fatal(code, f"{what}: unexpected {error_name(code)}")

    def _check_fatal(self, code: int, what: str) -> None:
        if code in FATAL_CODES:
            self._fatal(code, f"{what}: {error_name(code)}")

    def _fatal(self, code: int, message: str) -> None:
        error = TransactionFatal(code, f"{self.transactional_id}: {message}")
        self.fail(error)
        raise error

    def _require_not_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal


def _group_denied(group: str) -> str:
    return (
        f"GROUP_AUTHORIZATION_FAILED for group {group!r}: exactly-once mode commits a marker "
        "of each transaction as that group's offset (grant the principal Read on the group, "
        "the same name as the transactional id)"
    )
