"""Protocol version 2 sessions: a client's records and reports outliving its connections.

A version 2 client names a *session* in HELLO (a random id with the top bit set). Its
sequence numbers continue across connections, its records' ring entries carry the session id
where a version 1 connection's carry the connection id, and the workers' reports therefore
come back keyed by the session, whichever ingest and whichever connection reads them. This
module owns, per session:

* the dedupe window (``dedupe.DedupeJournal``, journaled beside the ring files): which
  sequence numbers kpd took, and each one's outcome once known;
* which connection currently speaks for the session (a newer one replaces an older one);
* the answers to a resend: a record kpd already took is answered with its outcome now, or,
  still pending, when its report comes (to whichever connection then speaks for the session);
  a record kpd never took is admitted as new.

The journal lines are written at the points docs/protocol.md section 14 names: a frame's
"taken" line after its ring entries are published and before its first answer (``published``,
called by admission between the publish and the announcements: at once before an ACCEPTED
report; for ack KAFKA with the worker's report, in the same write), an outcome's line before
the outcome is sent.

Owned by ingest's event loop. Must not import the server or the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from operator import itemgetter
from typing import Any, Protocol

from daemon.ingest.dedupe import DedupeJournal, Piece
from daemon.wire.ring_entry import RecordsEntry, seq_runs
from kpd.protocol import (
    SESSION_BIT,
    ReportRun,
    decode_reports,
    encode_reports,
    report_run_fields,
)
from kpd.protocol.base import AckLevel, KpdErrorCode, Persistence, Status

__all__ = ["KAFKA_LISTENER_ID", "SessionPeer", "Sessions", "is_session", "outcome_of", "run_of"]

log = logging.getLogger(__name__)

# The conn_id of every ring entry of the Kafka listener (``kafka.listener.SOURCE_ID``). Its
# top bit is set, yet it names no session: the listener journals its batches in its own
# dedupe journal, and its entries taken as a session's too would pile up here unresolved.
KAFKA_LISTENER_ID = 0xFFFF_FFFF_FFFF_FFFE


def is_session(conn_id: int) -> bool:
    """Whether ring entries and reports keyed ``conn_id`` are a protocol v2 session's."""
    return conn_id & SESSION_BIT != 0 and conn_id != KAFKA_LISTENER_ID


NO_REPORT = 0  # the outcome of ack-NONE records: taken, never reported


class SessionPeer(Protocol):
    """The connection speaking for a session (``connection.ClientConnection``)."""

    name: str

    def send(self, frame: bytes) -> None: ...

    def replaced(self) -> None:
        """A newer connection of the same session took over: close this one."""

    def reports_arrived(self) -> None:
        """Outcomes arrived: GOODBYE may now be due."""


def outcome_of(run: ReportRun) -> list[Any]:
    """A run's outcome as the journal stores it (everything but the sequence range)."""
    return [int(run.status), run.partition, run.base_offset, run.timestamp, int(run.error),
            run.kafka_error, int(run.persistence), run.message]  # fmt: skip


def run_of(first: int, count: int, outcome: list[Any], delta: int) -> ReportRun:
    """The run of ``count`` records from ``first``, ``delta`` records into ``outcome``'s run
    (its offset moves with it)."""
    status, partition, base_offset, timestamp, error, kafka_error, persistence, message = outcome
    if base_offset >= 0:
        base_offset += delta
    return ReportRun(first, count, Status(status), partition, base_offset, timestamp, error,
                     kafka_error, Persistence(persistence), message)  # fmt: skip


_DEFERRED_LINES = 256  # published ack-KAFKA taken lines that may wait for a report's write
_MAX_KEYS = 4096  # sessions whose journal key Sessions remembers (names come from clients)
_ERROR = itemgetter(6)  # a REPORT run's error field (kpd.protocol.report_run_fields)


def _kept_for_restart(run: ReportRun) -> bool:
    """A draining worker's SHUTTING_DOWN for records it keeps in its ring: they are produced
    after the next start, so for a session it is no outcome (the real one comes then)."""
    return (
        run.error == KpdErrorCode.SHUTTING_DOWN
        and run.partition >= 0
        and run.persistence is Persistence.POSSIBLY_PERSISTED
    )


def _outcome_when_taken(partition: int, ack: AckLevel) -> Any:
    """What the journal knows of records the moment they are taken."""
    if ack == AckLevel.NONE:  # no outcome will ever come
        return NO_REPORT
    if ack == AckLevel.ACCEPTED:
        # Published: that is the outcome, whenever its report goes out (after a sync with
        # rings.fsync); no worker reports these, so it is journaled in the taken line itself.
        # (An outcome holds no sequence range: the run's first and count are left out.)
        return outcome_of(ReportRun(0, 0, Status.ACCEPTED, partition))
    return None  # ack KAFKA: the worker's report brings it


def _gaps(pieces: list[Piece], first: int, count: int) -> list[tuple[int, int]]:
    """The sub-ranges of ``[first, first + count)`` that ``pieces`` (a lookup's) leave out:
    the sequence numbers the journal does not hold."""
    gaps, cursor = [], first
    for piece in pieces:
        if piece.first > cursor:
            gaps.append((cursor, piece.first - cursor))
        cursor = piece.first + piece.count
    if cursor < first + count:
        gaps.append((cursor, first + count - cursor))
    return gaps


class Sessions:
    """The sessions of one ingest: their windows (journaled) and their current connections."""

    def __init__(self, journal: DedupeJournal) -> None:
        self.journal = journal
        self._peers: dict[int, SessionPeer] = {}
        self._keys: dict[int, str] = {}  # ``key`` by session id (``_key_of``), bounded
        # Entries staged and not yet journaled: (key, first, count, partition, ack level);
        # after their publish, ack-KAFKA ones may wait here for their report (``published``).
        self._unjournaled: list[tuple[str, int, int, int, AckLevel]] = []
        self._only_kafka = True  # every line in _unjournaled is of an ack-KAFKA entry
        # Whether published lines may wait for their report: not when rings.fsync syncs the
        # journal (``durable``), whose lines then reach the disk as they always did.
        self._may_defer = not journal.durable
        # Resent records, by what kpd made of them (for the log and tests): answered from the
        # journal, pending (answered when their report comes), taken as new.
        self.resent = {"answered": 0, "pending": 0, "taken": 0}

    @staticmethod
    def key(session_id: int) -> str:
        return f"{session_id:016x}"

    def _key_of(self, session_id: int) -> str:
        """``key``, remembered for the sessions seen lately (the hot paths ask per frame)."""
        if len(self._keys) >= _MAX_KEYS:
            self._keys.clear()
        key = self._keys[session_id] = self.key(session_id)
        return key

    # ---- connections ---------------------------------------------------------------------

    def attach(self, peer: SessionPeer, session_id: int, resume_seq: int) -> tuple[int, bool]:
        """``peer`` now speaks for the session; returns (the next new sequence number, whether
        kpd knew the session). The client holds nothing below ``resume_seq``."""
        self.flush()
        old = self._peers.get(session_id)
        self._peers[session_id] = peer
        if old is not None and old is not peer:
            old.replaced()
        key = self.key(session_id)
        window = self.journal.window(key)
        resumed = window is not None
        self.journal.touch(key)
        self.journal.forget_below(key, resume_seq)
        taken_end = window.next_seq if window is not None else None
        next_seq = max(taken_end if taken_end is not None else resume_seq, resume_seq)
        if resume_seq or resumed:
            log.info("%s: session %s %s at %d (the client holds records from %d)", peer.name,
                     key, "resumed" if resumed else "unknown, new", next_seq,
                     resume_seq)  # fmt: skip
        return next_seq, resumed

    def detach(self, peer: SessionPeer, session_id: int) -> None:
        self.flush()
        log.info("%s: session %s: resent records so far: %s", peer.name, self.key(session_id),
                 self.resent)  # fmt: skip
        if self._peers.get(session_id) is peer:
            del self._peers[session_id]
            self.journal.touch(self.key(session_id))  # the idle clock starts now

    def pending(self, session_id: int) -> int:
        self.flush()
        window = self.journal.window(self.key(session_id))
        return 0 if window is None else window.pending

    # ---- taking records ------------------------------------------------------------------

    def taken(self, session_id: int, first: int, count: int, offsets, partition: int,
              ack: AckLevel) -> None:  # fmt: skip
        """Admission staged a ring entry of the session (``offsets``: its scattered sequence
        offsets, or None): its lines wait for the next ``flush``, after the publish."""
        key = self._keys.get(session_id) or self._key_of(session_id)
        if ack != AckLevel.KAFKA:
            self._only_kafka = False
        if offsets is None:
            self._unjournaled.append((key, first, count, partition, ack))
            return
        for offset, _, k in seq_runs(offsets, 0, count):
            self._unjournaled.append((key, first + offset, k, partition, ack))

    def published(self) -> None:
        """Admission published the entries staged since: their lines are written now — or,
        when every one is of an ack-KAFKA entry, whose first answer is its worker's report,
        they wait for the write of the next report (``report`` flushes first), so a report's
        write carries the taken lines of the frames it follows: one write per report, not
        one per frame more (at most ``_DEFERRED_LINES`` wait).

        Nothing taken is lost to a kill -9 meanwhile, as for a kill between a publish and its
        line (docs/protocol.md section 14): the records are in a ring (``adopt``) or, once
        produced, their report is in a reports ring (``report`` journals records it does
        not know as taken). Every question about a window flushes first."""
        if not self._unjournaled:
            return
        if self._may_defer and self._only_kafka and len(self._unjournaled) < _DEFERRED_LINES:
            return
        self.flush()

    def flush(self) -> None:
        """Write the lines of the entries staged and published since the last flush."""
        lines, self._unjournaled = self._unjournaled, []
        self._only_kafka = True
        if not lines:
            return
        journal = self.journal
        with journal.batched():
            # A session's ack-KAFKA ranges in a row go in together (``taken_many``).
            run_key, run = None, []
            for key, first, count, partition, ack in lines:
                if ack == AckLevel.KAFKA and key == run_key:
                    run.append((first, count))
                    continue
                if run:
                    journal.taken_many(run_key, run)
                if ack == AckLevel.KAFKA:
                    run_key, run = key, [(first, count)]
                else:
                    run_key, run = None, []
                    journal.taken(key, first, count, _outcome_when_taken(partition, ack))
            if run:
                journal.taken_many(run_key, run)

    def adopt(self, entries: Iterable[RecordsEntry]) -> int:
        """Ring entries that an earlier ingest published and that are not released yet: the
        ones of sessions are journaled as taken where the journal does not know them.

        Closes the window between a ring publish and its "taken" line (a kill -9 of ingest
        in between, or in the middle of a frame published entry by entry while it waited
        for ring space): the ring is the truth of what was taken. Called before ingest
        serves anyone. Returns the records it journaled."""
        adopted = 0
        with self.journal.batched():
            for entry in entries:
                if not is_session(entry.conn_id):
                    continue
                key = self.key(entry.conn_id)
                if entry.seq_offsets is None:
                    ranges = [(entry.base_seq, entry.count)]
                else:
                    runs = seq_runs(entry.seq_offsets, 0, entry.count)
                    ranges = [(entry.base_seq + offset, k) for offset, _, k in runs]
                outcome = _outcome_when_taken(entry.partition, AckLevel(entry.ack))
                for first, count in ranges:
                    adopted += self._take_unknown(key, first, count, outcome)
        return adopted

    def _take_unknown(self, key: str, first: int, count: int, outcome: Any) -> int:
        """Journal as taken, with ``outcome``, the records of ``[first, first + count)`` the
        journal does not know (a ring entry or a report of records whose "taken" line a
        kill -9 of ingest cut off), so a resend is answered; returns how many."""
        taken = 0
        for gap_first, gap_count in _gaps(self.journal.lookup(key, first, count), first, count):
            self.journal.taken(key, gap_first, gap_count, outcome)
            taken += gap_count
        return taken

    def resend(self, session_id: int, first: int, count: int) -> list[tuple[int, int]]:
        """A resent frame ``[first, first + count)``: answers what kpd knows now, to the
        session's connection; returns the sub-ranges kpd never took (refused, or lost with a
        connection before they reached a ring), to be admitted as new: none is in Kafka."""
        self.flush()
        pieces = self.journal.lookup(self.key(session_id), first, count)
        before = dict(self.resent)
        runs = []
        for piece in pieces:
            if piece.outcome is None:
                self.resent["pending"] += piece.count  # its report goes to the session's
                continue  # connection when it comes
            self.resent["answered"] += piece.count
            if piece.outcome != NO_REPORT:
                runs.append(run_of(piece.first, piece.count, piece.outcome, piece.delta))
        untaken = _gaps(pieces, first, count)
        self.resent["taken"] += sum(k for _, k in untaken)
        log.debug("session %s: resent records %d..%d: %s", self.key(session_id), first,
                 first + count - 1, {k: v - before[k] for k, v in self.resent.items()})  # fmt: skip
        peer = self._peers.get(session_id)
        if runs and peer is not None:
            peer.send(encode_reports(runs))
        return untaken

    # ---- outcomes ------------------------------------------------------------------------

    def accepted(self, session_id: int, frame: bytes) -> None:
        """Ingest's own ACCEPTED report for the session: journaled, then sent."""
        self.report(session_id, memoryview(frame))

    def report(self, session_id: int, frame: memoryview) -> None:
        """A REPORT frame for the session (a worker's, or ingest's ACCEPTED): each run is
        journaled — in one write with the taken lines still waiting (``published``) — then
        the frame goes to the session's current connection, if any."""
        key = self._keys.get(session_id) or self._key_of(session_id)
        fields = report_run_fields(frame[5:])
        if fields is not None and not any(map(_ERROR, fields)):
            # The common case (no failures, no messages): from the raw run fields, with no
            # run object per run, and no run kept for a restart.
            runs = [(first, count, [*outcome[:-1], ""]) for first, count, *outcome in fields]
            with self.journal.batched():
                self.flush()
                self._journal_outcomes(key, runs)
            send = bytes(frame) if fields else None
        else:
            runs = decode_reports(frame[5:])
            kept = [run for run in runs if not _kept_for_restart(run)]
            with self.journal.batched():
                self.flush()
                self._journal_outcomes(key, [(run.first_seq, run.count, outcome_of(run))
                                             for run in kept])  # fmt: skip
            send = None
            if kept:
                send = bytes(frame) if len(kept) == len(runs) else encode_reports(kept)
        peer = self._peers.get(session_id)
        if peer is not None and send is not None:
            peer.send(send)
            peer.reports_arrived()

    def _journal_outcomes(self, key: str, runs: list[tuple[int, int, list[Any]]]) -> None:
        """Journal each ``(first, count, outcome)``; records the journal never took (their
        taken line cut off by a kill -9 of ingest) are taken with that outcome."""
        for first, count, outcome in self.journal.resolved_many(key, runs):
            self._take_unknown(key, first, count, outcome)

    def expire(self) -> list[str]:
        """Drop sessions idle (no connection) for longer than the journal's expiry."""
        self.flush()
        live = {self.key(session_id) for session_id in self._peers}
        gone = self.journal.expire(live.__contains__)
        if gone:
            log.info("%d idle sessions expired", len(gone))
        return gone
