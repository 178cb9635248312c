"""The Kafka-protocol listener (``socket.kafka``): Kafka requests in, ring entries out.

Any unmodified Kafka client sets ``bootstrap.servers`` to this TCP listener and produces
through kpd. kpd poses as the single broker (node 0) leading every partition: ApiVersions
advertises only what kpd serves (``daemon.kafka.serving``), Metadata shows the real cluster's
partition counts, InitProducerId hands out kpd's own producer ids (``producers``), and each
Produce partition's batch is checked (``daemon.kafka.incoming``), laid out as a kpd records
section and handed to ingest's ``Admission.admit`` — the one way into the rings, which a kpd
client's PRODUCE frame and a ``socket.lines`` writer take too: the listener is one record source
(``admission.RecordSource``) and its own ``ReportReader``. The client's partition is honoured;
admission's refusals become Kafka error codes (``outcomes``).

Acks: 0 -> ring ack level NONE (no response at all, as Kafka does); 1 -> ACCEPTED (answered
once the entry is published to its ring); -1 -> KAFKA (answered with the worker's report: the
real base offset and log-append time).

Order: a connection's requests are handled one after another (entries enqueued in request
order, so per-partition order holds across pipelined requests) and answered in request order
(the Kafka protocol requires it); waiting for outcomes does not hold up the next request. The
connections (``kafka.connection``) handle a request inside ``data_received`` and offer each
partition with ``offer_partition``, which awaits nothing unless admission has to wait.

The loop turn: what a turn brings (requests read, report frames forwarded) is published,
journaled and answered once, at the turn's end (``end_turn_soon`` schedules ``_end_turn``):
one ring wake-up per worker, one journal write and one socket write per connection for all
of it, in the order the guarantees need — the entries published, then the journal's lines
(the batches taken, the outcomes known) written, then the answers (after a sync with
``rings.fsync: always``). The journal holds its lines meanwhile (``DedupeJournal.hold``).
After a ring's report frames were forwarded the end comes at once (``keep_reports``): their
outcome lines are written before the server releases the frames' ring entries (a kill -9
finds each outcome in the reports ring or the journal), and their answers leave without
waiting for the rest of the loop turn.

Reports: every ring entry of this listener carries one stable conn_id (``SOURCE_ID``) and a
sequence number from a counter that starts at the wall clock in ns, above any earlier ingest's.
The ingest server hands workers' reports for ``SOURCE_ID`` to the listener
(``IngestServer.hear_reports``) without counting it as a connection of its socket. So after
ingest (or the whole daemon) was killed, the reports of entries the old listener wrote still
reach the new one, which records them as the first outcome of batches an idempotent producer
will resend.

Must not import the server module (it receives ingest's ``Admission``), uvloop or the engines.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import functools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from daemon.ingest.admission import Admission, ReportReader, is_legal_topic
from daemon.ingest.dedupe import DedupeJournal, Piece
from daemon.ingest.kafka.connection import KafkaConnection
from daemon.ingest.kafka.outcomes import Blocked, PendingOutcome, kafka_code
from daemon.ingest.kafka.producers import Outcome, ProducerRegistry, SequenceCheck
from daemon.ingest.sessions import KAFKA_LISTENER_ID
from daemon.kafka import incoming
from daemon.kafka.errors import ErrorCode
from kpd.protocol import decode_reports
from kpd.protocol.base import AckLevel, KpdErrorCode, Persistence, Status
from kpd.protocol.records import ProduceHeader

__all__ = ["SOURCE_ID", "KafkaListener", "KafkaListenerSettings", "KafkaStats",
           "keep_unread_reports"]  # fmt: skip

log = logging.getLogger(__name__)

# The conn_id of every ring entry this listener writes: outside admission's ids for other
# sources ((ms clock & 0x7FFFFFFF) << 32 plus a counter: bit 63 clear) and, though its top bit
# is set, no protocol v2 session's (``sessions.is_session``).
SOURCE_ID = KAFKA_LISTENER_ID
NODE_ID = 0
CLUSTER_ID = "kpd"
_FRAME_HEAD = 5  # a kpd REPORT frame: u32 length, type byte
_METADATA_LOOKUP_S = 10.0  # at most this long on an unknown topic inside one Metadata request


@dataclass(frozen=True, slots=True)
class KafkaListenerSettings:
    host: str
    port: int
    max_connections: int
    max_request_bytes: int
    state_path: str | None  # the dedupe journal; None keeps it in memory only
    producer_expiry_s: float  # socket.kafka_producer_expiry (producer.id.expiration.ms)
    durable: bool  # rings.fsync is not "never": compactions of the journal sync their file


@dataclass(frozen=True, slots=True)
class KafkaStats:
    connections: int
    requests: int
    records: int  # records accepted into rings through this listener
    errors: dict[int, int]  # Kafka error code -> partitions (or requests) answered with it
    producers: int  # producer ids known
    # Produce request handled -> its answer written (acks 1 and all; not answers refused
    # before the request was decoded): what kpd adds to a client's round trip.
    produce_time: Any  # None when not timed


class _Pending(PendingOutcome):
    """A batch in rings whose outcome the listener waits for. Owned by the event loop."""

    __slots__ = ("append_time", "base_offset", "count", "delivered", "error", "outcome",
                 "persisted", "remaining", "start")  # fmt: skip

    def __init__(self, start: int, count: int) -> None:
        super().__init__()
        self.start = start
        self.count = count
        self.remaining = count
        # A plain int, not ErrorCode.NONE: the journal writes a delivered batch's outcome
        # as ints without the JSON encoder, which an IntEnum member would cost.
        self.error = 0
        self.base_offset = -1
        self.append_time = -1
        self.delivered = 0  # records delivered (or accepted, at acks=1)
        self.persisted = False  # some failed record may have been written (POSSIBLY_PERSISTED)
        self.outcome: Outcome | None = None  # once every record's outcome is known

    @property
    def never_produced(self) -> bool:
        """Failed as a whole and not written anywhere: its resend may be taken as new."""
        return self.delivered == 0 and not self.persisted


class KafkaListener:
    """The ``socket.kafka`` server, its connections, and the record source of their batches."""

    def __init__(self, settings: KafkaListenerSettings, admission: Admission,
                 produce_time: Any = None) -> None:  # fmt: skip
        """``produce_time``: a histogram (``observe(seconds)``) for kpd_kafka_produce_seconds,
        a Produce request handled -> its answer written; None: not timed."""
        self.settings = settings
        self.admission = admission
        journal = DedupeJournal(
            settings.state_path,
            window_records=2**62,  # bounded by batches instead (producers.BATCHES_KEPT)
            idle_expiry_s=settings.producer_expiry_s,
            durable=settings.durable,
        )
        admission.ring_sync.watch(journal)  # on the disk as the rings are (rings.fsync)
        self.producers = ProducerRegistry(journal)
        # (worker count, ring capacity): the shape ring positions in taken lines refer to.
        self._ring_shape = admission.ring_shape
        self._withdraw_unpublished()
        # Above every sequence number an earlier listener used (it counted from its own start
        # time, by at most one per record), and above every kept batch's.
        self._next_seq = max(time.time_ns(), self.producers.highest_ring_seq())
        self._pending: dict[int, _Pending] = {}  # by first sequence number
        self._starts: list[int] = []  # the keys of _pending, ascending
        # Idempotent batches waiting in admission, by (journal key, first sequence number):
        # a resend arriving meanwhile waits for their outcome instead of being taken again.
        self._admitting: dict[tuple[str, int], _Pending] = {}
        self.connections: set[KafkaConnection] = set()
        self.requests = 0
        self.records = 0
        self.produce_time = produce_time
        self.errors: collections.Counter[int] = collections.Counter()
        self._server: asyncio.AbstractServer | None = None
        self.quiescing = False
        # admission.RecordSource: ring entries carry SOURCE_ID; reports come back under it.
        self.conn_id = SOURCE_ID
        self.name = "kafka listener"
        self.reader: ReportReader = self  # it hears its own outcomes
        # Write-ahead: an idempotent batch's journal line is written once its first entry is
        # staged and before admission publishes it (admission.RecordSource.write_ahead), so a
        # kill -9 of ingest between the publish and the line cannot leave a batch in a ring
        # that the next listener would take again when the client resends it.
        self.write_ahead = self._entry_staged
        admission.before_publish = journal.write_held
        # Idempotent batches in admission whose first entry is not staged yet, by ring seq.
        self._unstaged: dict[int, tuple[SequenceCheck, int]] = {}
        # A Kafka client lingered (its linger.ms) before each Produce request: the workers
        # send these entries at once, not after a second linger.ms (issue 20's latency).
        self.batched = True
        self.owed = 0  # records whose outcome a worker or a publish still owes
        self._waiting = 0  # batches waiting in admit for a topic lookup or ring space
        # Idempotent batches admitted but not yet published: (pending, their sequence check)
        self._staged: list[tuple[_Pending, SequenceCheck]] = []
        self.idle = asyncio.Event()  # set while none waits: what quiesce waits for
        self.idle.set()
        # The loop turn's end (``_end_turn``): scheduled once per turn with work; until it
        # runs the journal holds its lines, and outcomes and answers wait for it.
        self._turn_ending = False
        self._answering: list[_Pending] = []  # outcomes known this turn, journaled at its end
        self._writers: list[KafkaConnection] = []  # connections with answers to write
        self._reports_unkept = False  # outcome lines held that ``keep_reports`` must write

    @property
    def busy(self) -> bool:
        return self._waiting > 0

    def stats(self) -> KafkaStats:
        return KafkaStats(
            len(self.connections),
            self.requests,
            self.records,
            dict(self.errors),
            self.producers.stats()[0],
            self.produce_time,
        )

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: KafkaConnection(self), self.settings.host, self.settings.port
        )
        log.info(
            "Kafka protocol listener on %s:%d (anyone who can reach it can produce)",
            self.settings.host,
            self.settings.port,
        )

    async def quiesce(self) -> None:
        """Accept no more connections or records; requests already read get
        NOT_LEADER_OR_FOLLOWER, so clients retry them after reconnecting. Batches waiting in
        admission for ring space finish first (at most max.block.ms)."""
        self.quiescing = True
        if self._server is not None:
            self._server.close()
        await self.admission.wait_idle(lambda: (self,))

    def close(self) -> None:
        self.quiescing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        self.producers.close()  # writes the lines a turn holds

    # ---- the loop turn -----------------------------------------------------------------

    def end_turn_soon(self) -> None:
        """Publish, journal and answer what this loop turn brings once, at its end: every
        request read and every report frame of the turn share one ring wake-up per worker, one
        journal write and one socket write per connection (issue 20: at 10k records/s these
        were a write each per request, most of ingest's system time)."""
        if not self._turn_ending:
            self._turn_ending = True
            self.producers.journal.hold()
            asyncio.get_running_loop().call_soon(self._end_turn_if_due)

    def write_soon(self, conn: KafkaConnection) -> None:
        """``conn`` has answers ready: written at the turn's end, after the journal."""
        self._writers.append(conn)
        self.end_turn_soon()

    def _end_turn_if_due(self) -> None:
        if self._turn_ending:  # not brought forward by ``keep_reports`` meanwhile
            self._end_turn()

    def _end_turn(self) -> None:
        """In this order: publish what was admitted (and journal the idempotent batches
        taken), write the journal's lines, let the outcomes known answer (once their lines
        are synced, with ``rings.fsync: always``), write each connection's answers."""
        try:
            self.publish()
        finally:
            self.producers.journal.flush()
            answering, self._answering = self._answering, []
            after_sync = self.admission.ring_sync.after_sync
            for pending in answering:  # their answers join ``_writers``, still this turn's
                after_sync(functools.partial(pending.resolve, pending.outcome))
            writers, self._writers = self._writers, []
            self._turn_ending = False
            for conn in writers:
                conn.write_answers()

    # ---- Produce -----------------------------------------------------------------------

    async def produce_partition(self, topic: str, partition: int, data, version: int,
                                ack: AckLevel, timeout_s: float):  # fmt: skip
        """Check and admit one partition's batch. Returns an ``Outcome`` or an awaitable of
        one (the answer once the ack level is reached)."""
        result = self.offer_partition(topic, partition, data, version, ack, timeout_s)
        if isinstance(result, Blocked):
            result = await self.finish_admit(result)
        return result.future() if isinstance(result, PendingOutcome) else result

    def offer_partition(self, topic: str, partition: int, data, version: int, ack: AckLevel,
                        timeout_s: float):  # fmt: skip
        """``produce_partition`` without an await on the common path (a connection's request
        is handled inside ``data_received``, no task per request): an ``Outcome``, a
        ``PendingOutcome`` (answered once the ack level is reached), an awaitable of an
        ``Outcome`` (a resend waiting for its first copy), or ``Blocked`` — admission waits (a
        lookup, ring space): await ``finish_admit(blocked)`` before anything else is
        admitted; its result is one of the others."""
        batch = incoming.read_batch(data, version)
        if isinstance(batch, incoming.BatchRefused):
            log.info("kafka client: %s-%d: %s", topic, partition, batch.message)
            return batch.error_code, -1, -1
        if self.quiescing:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, -1, -1
        check = None
        if batch.producer_id >= 0:  # an idempotent producer's batch
            check = self.producers.check(batch.producer_id, batch.producer_epoch, topic,
                                         partition, batch.base_sequence, batch.count)  # fmt: skip
            if check.error:
                return check.error, -1, -1
            if check.resend:
                return self._resent(check, batch.count, timeout_s)
        return self._admit(topic, partition, batch, ack, check)

    def _admit(self, topic, partition, batch, ack, check: SequenceCheck | None):
        start = self._next_seq
        self._next_seq += batch.count
        header = ProduceHeader(start, batch.count, partition, ack, topic,
                               memoryview(batch.section), batch.keyless)  # fmt: skip
        pending = self._track(start, batch.count)  # admission's refusals land here too
        if check is not None:
            self.producers.admitting(check, batch.count)
            self._admitting[check.key, check.first] = pending
            self._unstaged[start] = (check, batch.count)
        waiting = self.admission.admit(self, header, ack)
        if waiting is not None:
            return Blocked(waiting, pending, check, batch.count, ack)
        return self._admitted(pending, check, batch.count, ack)

    async def finish_admit(self, blocked: Blocked):
        """The rest of a batch admission is waiting for: its result as ``offer_partition``'s."""
        self.publish()  # nothing admitted stays unpublished behind an await
        self._waiting += 1
        self.idle.clear()
        try:
            await blocked.waiting
        finally:
            self._waiting -= 1
            if not self._waiting:
                self.idle.set()
        return self._admitted(blocked.pending, blocked.check, blocked.count, blocked.ack)

    def _admitted(self, pending: _Pending, check: SequenceCheck | None, count: int, ack):
        if ack == AckLevel.NONE or pending.error:
            # No outcome comes for acks=0 records; a refused batch is answered now (admission
            # takes a batch whole or not at all, so nothing of it is in a ring).
            if pending.start in self._pending:
                self._untrack(pending)
            if pending.error:
                if check is not None:
                    self._unstaged.pop(pending.start, None)
                    self._done_admitting(check)
                    self.producers.refused(check)
                return pending.error, -1, -1
        self.records += count
        if check is not None:
            self._staged.append((pending, check))  # taken once published
        if ack == AckLevel.NONE:
            return ErrorCode.NONE, -1, -1
        return pending

    def publish(self) -> None:
        """Publish what admission staged (once per loop turn: one ring wake-up per worker,
        not one per request or partition; the idempotent batches' lines are written before
        it, ``_entry_staged``)."""
        self.admission.publish_all()
        staged, self._staged = self._staged, []
        if not staged:
            return
        with self.producers.journal.batched():  # one write for the request's outcomes
            for pending, check in staged:
                self._done_admitting(check)
                if pending.outcome is not None:  # acks=1 announced by the publish
                    self._journal_outcome(pending)

    def _entry_staged(self, first_seq: int, ring_index: int, end_pos: int) -> None:
        """admission.RecordSource.write_ahead: a batch's first entry is staged in a ring and
        not yet published: its taken line names where it ends (``_withdraw_unpublished``).
        Admission writes the line out before the publish (``before_publish``)."""
        unstaged = self._unstaged.pop(first_seq, None)
        if unstaged is not None:
            check, count = unstaged
            self.producers.taken(check, count, [first_seq, ring_index, end_pos,
                                                *self._ring_shape])  # fmt: skip

    def _withdraw_unpublished(self) -> None:
        """At the start: a taken batch whose entry the rings never published (ingest was
        killed between its line and the publish) is withdrawn, so the client's resend is
        taken as new; its records are nowhere else. Lines naming rings of another worker
        count or size (re-routed since) are kept: their batches may be in any ring."""
        admission = self.admission

        def published(ring: int, end: int, their_workers: int, their_capacity: int) -> bool:
            if (their_workers, their_capacity) != self._ring_shape:
                return True
            return end <= admission.published_end(ring)

        withdrawn = self.producers.withdraw_unpublished(published)
        if withdrawn:
            log.info("kafka listener: %d idempotent batches journaled but never published "
                     "before the last stop: their resends are taken as new", withdrawn)  # fmt: skip

    def _done_admitting(self, check: SequenceCheck) -> None:
        self._admitting.pop((check.key, check.first), None)

    def _resent(self, check: SequenceCheck, count: int, timeout_s: float):
        """A resent batch: its first outcome, once known (also of a first copy still waiting
        in admission). One whose outcome never arrives (its report was lost with a killed
        daemon) is answered NONE at offset -1 after the request's timeout: a success without
        an offset, as its records are in kpd's rings or already in Kafka."""
        pending = self._admitting.get((check.key, check.first))
        if pending is None:
            outcome = _outcome_of(self.producers.lookup(check, count), check.first, count)
            if outcome is not None:
                return outcome
            ring_seq = self.producers.ring_seq_of(check)  # taken: the check found it
            pending = self._pending.get(ring_seq) or self._track(ring_seq, count)
        return _first_outcome(pending.future(), timeout_s)

    def _track(self, start: int, count: int) -> _Pending:
        pending = _Pending(start, count)
        self._pending[start] = pending
        bisect.insort(self._starts, start)
        return pending

    def _untrack(self, pending: _Pending) -> None:
        del self._pending[pending.start]
        self._starts.pop(bisect.bisect_left(self._starts, pending.start))

    # ---- what admission and the ingest server call back ----------------------------------

    def forward_reports(self, records: int, report_frame) -> None:
        """A worker's REPORT frame for entries of this listener (``IngestServer``): the
        outcomes are journaled and answered at the turn's end."""
        self.owed -= records
        self.end_turn_soon()
        self._reports_unkept = True
        for run in _runs(report_frame):
            pending = self._outcome(*run)
            if pending is not None:
                self._answering.append(pending)

    def keep_reports(self) -> None:
        """``IngestServer.ReportSink``: the turn's end, now: the outcome lines of the frames
        forwarded are written before the server releases their ring entries (a kill -9 then
        finds each outcome in the reports ring or in the journal) — after publishing what this
        turn admitted, so no batch is journaled as taken before its entries are in a ring —
        and the answers they complete are written."""
        if not self._reports_unkept:
            return
        self._reports_unkept = False
        # The turn's end, brought forward for the answers these reports complete: written
        # now, not after the rest of the loop turn's callbacks. What later callbacks of the
        # turn bring is held for an end of its own (``end_turn_soon``).
        self._end_turn()

    def owe(self, n: int) -> None:
        """admission.ReportReader: ``n`` records' outcomes are on their way."""
        self.owed += n

    def accepted(self, frame: bytes, n: int) -> None:
        """admission.ReportReader: entries of acks=1 batches are published (and synced)."""
        self.forward_reports(n, frame)

    def refused(self, first_seq: int, count: int, code: KpdErrorCode, message: str,
                kafka_error: int) -> None:  # fmt: skip
        """admission.RecordSource: records admission did not take (it counted them)."""
        log.info("kafka client: %d records refused: %s", count, message)
        error = kafka_code(code, kafka_error)
        pending = self._outcome(first_seq, count, Status.FAILED, -1, -1, error,
                                Persistence.NOT_PERSISTED)  # fmt: skip
        if pending is not None:
            self._answering.append(pending)
            self.end_turn_soon()

    def _outcome(self, seq, count, status, base_offset, append_time, error,
                 persistence) -> _Pending | None:  # fmt: skip
        """Note a run's outcome; the batch, journaled, once its last record's is known."""
        index = bisect.bisect_right(self._starts, seq) - 1
        pending = self._pending.get(self._starts[index]) if index >= 0 else None
        if pending is None or seq >= pending.start + pending.count:
            # No one waits (the client left, or an earlier ingest wrote the entry).
            _keep_unawaited(self.producers, seq, count, status, base_offset, append_time, error,
                            persistence)  # fmt: skip
            return None
        pending.remaining -= count
        if status == Status.FAILED:
            if not pending.error:
                pending.error = error
            pending.persisted |= persistence != Persistence.NOT_PERSISTED
        else:
            pending.delivered += count
            if seq == pending.start:
                pending.base_offset, pending.append_time = base_offset, append_time
        if pending.remaining > 0:
            return None
        self._untrack(pending)
        pending.outcome = (pending.error, pending.base_offset, pending.append_time)
        self._journal_outcome(pending)
        return pending

    def _journal_outcome(self, pending: _Pending) -> None:
        """A batch's final outcome into the journal (a no-op for batches not journaled):
        delivered, or never produced (withdrawn: its retry is new). A failure that may have
        been written (a draining worker keeps records for the next start, an in-doubt
        request) is no final outcome: the batch stays pending, a later report (after a
        restart) resolves it, and a resend meanwhile waits for it."""
        if not pending.error:
            self.producers.resolved(pending.start, pending.count, pending.outcome)
        elif pending.never_produced:
            self.producers.withdrawn(pending.start)

    # ---- Metadata and InitProducerId ---------------------------------------------------

    async def metadata(self, body: dict, sockname) -> dict:
        host, port = sockname[0], sockname[1]
        if host in ("0.0.0.0", "::"):
            host = self.settings.host
        requested = body["topics"]
        if requested is None:  # all topics: the ones ingest knows
            names = self.admission.topics.names()
        else:
            names = [t["name"] for t in requested if t["name"] is not None]
        topics = [await self._topic_metadata(name) for name in names]
        return {
            "brokers": [{"node_id": NODE_ID, "host": host, "port": port}],
            "cluster_id": CLUSTER_ID,
            "controller_id": NODE_ID,
            "topics": topics,
        }

    async def _topic_metadata(self, name: str) -> dict:
        topics = self.admission.topics
        answer = {"name": name, "error_code": ErrorCode.NONE, "partitions": []}
        if not is_legal_topic(name):
            answer["error_code"] = ErrorCode.INVALID_TOPIC_EXCEPTION
            return answer
        if not topics.allowed(name):
            answer["error_code"] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            return answer
        try:
            timeout = min(self.admission.max_block_s, _METADATA_LOOKUP_S)
            count = await topics.partition_count(name, timeout)
        except Exception:
            answer["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            return answer
        answer["partitions"] = [
            {"partition_index": i, "leader_id": NODE_ID, "leader_epoch": 0,
             "replica_nodes": [NODE_ID], "isr_nodes": [NODE_ID]}
            for i in range(count)
        ]  # fmt: skip
        return answer

    def init_producer_id(self, body: dict) -> dict:
        if body["transactional_id"] is not None:
            # kpd's exactly-once is the daemon's own kafka.transactional.id.
            return {"error_code": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    "producer_id": -1, "producer_epoch": -1}  # fmt: skip
        producer_id, epoch = self.producers.init_producer(body["producer_id"],
                                                          body["producer_epoch"])  # fmt: skip
        return {"error_code": ErrorCode.NONE, "producer_id": producer_id, "producer_epoch": epoch}


def keep_unread_reports(journal: DedupeJournal, report_frames: Iterable[bytes]) -> int:
    """Journal the reports of this listener's entries that a killed daemon never read (from
    its reports rings, before the next listener starts), by the ring sequence number each
    taken batch is tagged with: the workers released those entries, so no report comes
    again, and a client resending the batch after the restart gets its first outcome (a
    delivered batch's offset; a batch that failed whole, never written, is new again).
    Returns the runs read."""
    registry = ProducerRegistry(journal)
    runs = 0
    with journal.batched():
        for frame in report_frames:
            for run in _runs(frame):
                _keep_unawaited(registry, *run)
                runs += 1
    return runs


def _keep_unawaited(producers: ProducerRegistry, seq, count, status, base_offset, append_time,
                    error, persistence) -> None:  # fmt: skip
    failed = status == Status.FAILED
    outcome = (error if failed else ErrorCode.NONE, base_offset, append_time)
    producers.unawaited(seq, count, outcome, persistence != Persistence.NOT_PERSISTED)


def _runs(report_frame) -> Iterator[tuple]:
    """A REPORT frame's runs as the listener reads them: (first seq, count, status, base
    offset, log-append time, Kafka error code, persistence)."""
    for run in decode_reports(memoryview(report_frame)[_FRAME_HEAD:]):
        yield (run.first_seq, run.count, run.status, run.base_offset, run.timestamp,
               kafka_code(run.error, run.kafka_error), run.persistence)  # fmt: skip


def _outcome_of(pieces: list[Piece], first: int, count: int) -> Outcome | None:
    """A resent batch's answer from its journaled pieces; None while any is pending. The
    base offset and log-append time are its first record's; the error, the first failure's."""
    if not pieces or pieces[0].first != first or sum(p.count for p in pieces) != count:
        return None
    if any(piece.outcome is None for piece in pieces):
        return None
    error = next((p.outcome[0] for p in pieces if p.outcome[0]), ErrorCode.NONE)
    head = pieces[0]
    _, base_offset, append_time = head.outcome
    if base_offset >= 0:
        base_offset += head.delta
    return error, base_offset, append_time


async def _first_outcome(future: asyncio.Future, timeout_s: float) -> Outcome:
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout_s)
    except TimeoutError:
        # Written once, offset unknown: NONE at offset -1 is what Kafka answers a duplicate
        # (with its offset) as every client reads it. DUPLICATE_SEQUENCE_NUMBER says the same to
        # Java and librdkafka, but kafkajs takes it as fatal and rejects records kpd holds.
        return ErrorCode.NONE, -1, -1
