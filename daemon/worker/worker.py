"""A worker: its records ring in, its producer engine to Kafka, its reports ring out.

Owns one engine, the consuming end of its records ring and the producing end of its reports
ring. Commit on ack: an entry's ring space is released only once every record in it has an
outcome *and* that outcome was published to the reports ring, so a worker killed at any point
is replaced by one that re-reads exactly the entries whose reports may not have gone out.

Done journal: release is contiguous, so an entry Kafka acknowledged behind an older one in
flight stays unreleased. Each outcome is therefore staged in the ring's done journal
(``done_journal``) in the outcome callback itself and published before its reports go out; a
worker that adopts the ring after a kill -9 reports the records the journal has with their first
outcome and appends only the others, so nothing Kafka acknowledged is produced twice.

Stopping keeps what is not delivered: ``close`` ends the engine at once, and every record
without a Kafka acknowledgement by then stays in the ring (its entry is never released) for the
next daemon, which adopts the ring file and produces it. A client waiting for its Kafka outcome
(ack KAFKA) hears FAILED ``SHUTTING_DOWN`` with ``POSSIBLY_PERSISTED``: not lost, and
resending it would duplicate it.

Tokens: each record's engine token is ``entry_id << 32 | index``, an int, so the hot path
appends no objects and an outcome's records split into per-entry runs by arithmetic.

Reports at the granularity the client reads: only entries of ack level KAFKA are reported (the
ring entry carries the level; ingest reported ACCEPTED once the entry was published, NONE
gets nothing), in runs of consecutive sequence numbers — one per entry of a batch, or, for an
entry ingest partitioned itself, one per stretch of consecutive sequence numbers in it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from daemon.config import ProducerSettings
from daemon.metrics import DeliveryTally
from daemon.producer.accumulator import PartitionQueue
from daemon.producer.engine import ProducerEngine
from daemon.producer.outcomes import BatchOutcome
from daemon.ring import LAYOUT_VERSION, AckWindow, RingConsumer, RingProducer
from daemon.wire.columns import packed_columns
from daemon.wire.ring_entry import decode_records_entry, encode_report_entry, seq_runs
from daemon.worker.commit_marks import CommitMarks
from daemon.worker.done_journal import DoneJournal, DoneRun
from daemon.worker.flight_journal import FlightBatch
from daemon.worker.in_flight import InFlight
from daemon.worker.reports import chunks, done_run_of, kept_runs, recorded_outcome, run_of
from kpd.protocol import ReportRun, encode_reports
from kpd.protocol.base import AckLevel
from kpd.protocol.records import (
    LAYOUT_HAS_TIMESTAMPS,
    iter_records,
)

__all__ = ["Worker"]

log = logging.getLogger(__name__)

_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_READ_MAX_BYTES = 1 << 20  # per ring read: bounds the time between outcome handling
_LOOP_TICK_S = 0.001  # the event loop clock's resolution (uvloop: libuv's millisecond time)


@dataclass(slots=True)
class _EntryState:
    conn_id: int
    base_seq: int
    partition: int
    end_pos: int
    remaining: int
    received_ms: int
    count: int
    reported: bool  # ack KAFKA: the client waits for these outcomes
    seq_offsets: bytes | None  # an entry ingest partitioned: each record's seq - base_seq
    # The CreateTime every record of the entry got from kpd (received_ms) when the client sent
    # no timestamps column, else -1: reported so the client's RecordMetadata has the record's
    # timestamp, as Java's does (records with their own timestamps: the client knows them).
    assigned_ts: int = -1
    kept: bool = False  # some records stay in the ring for the next daemon: never release
    seal: int = 0  # the entry's seal in the ring: the done journal's runs name it with it
    # A replayed entry whose done journal had some of its records: the ends of the stretches
    # of records appended again (sorted). None: every record was appended, in one stretch.
    segment_ends: list[int] | None = None


class Worker:
    def __init__(
        self,
        settings: ProducerSettings,
        records: RingConsumer,
        reports: RingProducer,
        done_path: str | None = None,
        flight_path: str | None = None,
        commit_files: tuple[str, str] | None = None,
    ) -> None:
        """``done_path``: the records ring's done journal (``done_journal.journal_path``);
        None keeps no journal (a kill then replays what was done behind an in-flight entry).
        ``flight_path``: its flight journal (``flight_journal.flight_journal_path``), kept
        with a done journal when idempotence is on outside exactly-once mode; None keeps none
        (a kill then replays what was in flight under a new producer id).
        ``commit_files``: exactly-once mode's commit journal and marker file
        (``commit_journal``), kept with a done journal; None keeps none (a kill between the
        coordinator's commit and its answer then writes that transaction twice)."""
        self._settings = settings
        self._records = records
        self._reports = reports
        self._in_flight: InFlight | None = None
        self._resending: asyncio.Task | None = None  # the adoption's resend, while it runs
        idempotent = settings.enable_idempotence and not settings.transactional
        if done_path is not None and flight_path is not None and idempotent:
            self._in_flight = InFlight.open(flight_path, records)
        hook = None if self._in_flight is None else self._journal_written
        self._commit_marks: CommitMarks | None = None
        if done_path is not None and commit_files is not None and settings.transactional:
            self._commit_marks = CommitMarks.open(
                settings.transactional_id, *commit_files, records, self._done_runs
            )
        self._engine = ProducerEngine(
            settings,
            self._on_outcome,
            on_written=hook,
            commit_marks=self._commit_marks,
            on_answered=self._flush_if_scheduled,
        )
        self._window = AckWindow(records.cursor)
        self._journal: DoneJournal | None = None
        # Runs a predecessor journaled, by the end position of their entry: those records are
        # reported with their first outcome and never appended again.
        self._adopted: dict[int, list[DoneRun]] = {}
        self._adopted_last = 0  # the largest end position in _adopted
        if done_path is not None:
            self._journal, runs = DoneJournal.open(
                done_path,
                release_pos=records.cursor,
                ring_layout=LAYOUT_VERSION,
                entry_format=records.labels.format,
            )
            for run in runs:
                self._adopted.setdefault(run.end_pos, []).append(run)
            self._adopted_last = max(self._adopted, default=0)
            if runs:
                log.info("done journal %s: %d records of %d entries already have outcomes; "
                         "they are reported, not produced again", done_path,
                         sum(run.count for run in runs), len(self._adopted))  # fmt: skip
        self._entries: dict[int, _EntryState] = {}
        self._queues: dict[tuple[str, int], PartitionQueue] = {}  # engine.queue's, cached
        self._next_entry_id = 1
        # Outcomes wait here until the next report flush (once per loop turn).
        self._pending_runs: dict[int, list[ReportRun]] = defaultdict(list)
        self._pending_done: list[int] = []
        # (time.monotonic() the outcome came, its records) until its reports are written:
        # the stage trace's "answer read -> report written".
        self._outcome_times: list[tuple[float, int]] = []
        self._unsent: list[bytes] = []  # encoded report entries the reports ring had no room for
        self._flush_scheduled = False
        # Waits for the reports ring to make room for ``_unsent`` (then flushes again).
        self._room_wait: asyncio.Task | None = None
        self._stopping = False
        # While a batch lingers, the ring is read at its deadline, or once this much waits
        # (a quarter of the ring at most: ingest never blocks on a ring a sleeper holds).
        self._defer_bytes = max(1, min(settings.batch_size // 2, records.capacity // 4))
        # Resolved by the records ring's doorbell (a watch registered once in run) or stop().
        self._woken: asyncio.Future | None = None
        # Set by close(): records without an outcome now stay in the ring for the next daemon.
        self._keeping = False
        self.tally = DeliveryTally()  # per-topic counts and end-to-end latency, for metrics

    @property
    def engine(self) -> ProducerEngine:
        return self._engine

    async def run(self) -> None:
        """Read, produce and report until ``stop()``; then drain what was read."""
        await self._engine.start()
        if self._in_flight is not None and self._in_flight.adopted:
            await self._resend_adopted()
        if self._commit_marks is not None and self._commit_marks.adopted:
            await self._recover_commit()
        max_block_s = self._settings.max_block_ms / 1000
        loop = asyncio.get_running_loop()
        self._records.watch(loop, self._wake)
        try:
            while True:
                entries = self._records.read_entries(max_bytes=_READ_MAX_BYTES)
                if not entries:
                    if self._stopping:
                        break  # ingest has quiesced: the ring is dry for good
                    await self._wait_for_records(loop)
                    continue
                for end_pos, entry in entries:
                    await self._take(end_pos, entry, max_block_s)
        finally:
            self._records.unwatch()
        await self._engine.flush()
        self._flush_reports()

    def stop(self) -> None:
        """Read the ring dry and flush: ``run`` returns once everything read has an outcome."""
        self._stopping = True
        self._records.wake_watch()
        self._wake()

    async def close(self) -> None:
        """Stop now and keep the rest: records without an outcome stay in the ring.

        The engine is closed at once; whatever it had not delivered comes back as
        PRODUCER_CLOSED and is reported as kept, and ``run`` (if still going) reports the
        entries it has not taken as kept too. Their ring space is never released.
        """
        self._keeping = True
        self.stop()
        if self._resending is not None:
            self._resending.cancel()
        await self._engine.close(0.0)
        self._flush_reports()
        if self._journal is not None:  # no outcome comes after the engine closed
            self._journal.close()
            self._journal = None
        if self._in_flight is not None:
            self._in_flight.close()
            self._in_flight = None
        if self._commit_marks is not None:
            self._commit_marks.close()
            self._commit_marks = None

    async def _wait_for_records(self, loop: asyncio.AbstractEventLoop) -> None:
        # One future per sleep: the doorbell is watched for the life of run (no
        # add_reader/remove_reader, no task per wait: issue 18's finding 1).
        #
        # While a batch lingers, records that arrive cannot go before its linger deadline,
        # and at that deadline every queue's head rides along: so the worker sleeps through
        # the ring's entries until then (or until half a batch.size waits), one wake per
        # linger period instead of one per entry. The sender's timer for the same deadline
        # wakes its turn one hop later through the ready queue (Sender._on_timer), so the
        # worker reads first and what it reads joins that request.
        deadline = self._engine.linger_deadline()
        if deadline is not None and deadline - loop.time() < _LOOP_TICK_S:
            # The loop's timers have millisecond resolution and fire up to a tick early:
            # a deadline this close would cost a second wake-up of its own. The sender
            # takes the batch then; until then, entries wake the worker as they come.
            deadline = None
        min_bytes = 1 if deadline is None else self._defer_bytes
        if self._records.sleep_until_readable(min_bytes):
            return
        self._woken = woken = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, self._wake)
        try:
            await woken
        finally:
            self._woken = None
            if timer is not None:
                timer.cancel()
            self._records.wake_watch()  # cancelled (close): the watch must not stay armed

    def _wake(self) -> None:
        woken = self._woken
        if woken is not None and not woken.done():
            woken.set_result(None)

    # ---- batches in flight at a predecessor's kill ------------------------------------

    async def _resend_adopted(self) -> None:
        """Before reading anything: resend what the predecessor had in flight under its
        producer id (``in_flight``); the records the broker has now join the done journal's
        adopted runs, so the replay reports them instead of producing them again."""
        assert self._in_flight is not None
        await self._adopt_runs(self._in_flight.resend(self._engine, self._adopted))

    async def _recover_commit(self) -> None:
        """Before reading anything: if the predecessor's last commit happened (its marker is
        in Kafka), its records join the done journal's adopted runs (``commit_marks``)."""
        assert self._commit_marks is not None
        if await self._adopt_runs(self._commit_marks.recover(self._engine)):
            self._commit_marks.committed()  # the done journal has them now

    async def _adopt_runs(self, finding: Coroutine[Any, Any, list[DoneRun]]) -> bool:
        """Run one step of the adoption; the done-journal runs it finds join the adopted
        ones. False when the worker was closed meanwhile (that step's journal keeps what it
        knew for the next worker)."""
        assert self._journal is not None
        self._resending = asyncio.get_running_loop().create_task(finding)
        try:
            runs = await self._resending
        except asyncio.CancelledError:
            if not self._keeping:
                raise
            return False
        finally:
            self._resending = None
        for run in runs:
            self._journal.add(run)
            self._adopted.setdefault(run.end_pos, []).append(run)
        self._journal.commit()
        self._adopted_last = max(self._adopted, default=0)
        return True

    def _journal_written(self, batches) -> None:
        """The engine's hook before a Produce request is written: its batches go in flight."""
        entries = self._entries
        flights = []
        for batch in batches:
            tokens = batch.tokens
            first, last = tokens[0], tokens[-1]
            a, b = entries[first >> _INDEX_BITS], entries[last >> _INDEX_BITS]
            flights.append(FlightBatch(
                b.end_pos, b.seal, last & _INDEX_MASK, a.end_pos, a.seal, first & _INDEX_MASK,
                len(tokens), batch.partition, batch.producer_id, batch.base_sequence,
                self._in_flight.topic_crc(batch.topic), batch.producer_epoch,
            ))  # fmt: skip
        self._in_flight.journal(flights)

    # ---- the hot path ------------------------------------------------------------------

    async def _take(self, end_pos: int, payload: memoryview, max_block_s: float) -> None:
        entry = decode_records_entry(payload)
        entry_id = self._next_entry_id
        self._next_entry_id += 1
        self._entries[entry_id] = state = _EntryState(
            entry.conn_id,
            entry.base_seq,
            entry.partition,
            end_pos,
            entry.count,
            entry.received_ms,
            entry.count,
            entry.ack == AckLevel.KAFKA,
            None if entry.seq_offsets is None else bytes(entry.seq_offsets),
            seal=self._records.seal_of(end_pos, len(payload)),
        )
        self._window.track(end_pos)
        default_ts = entry.received_ms
        if not entry.records[0] & LAYOUT_HAS_TIMESTAMPS:  # every record gets received_ms
            state.assigned_ts = default_ts
        self._engine.accepted_at(entry.received_ms)
        if self._adopted:
            done = self._adopted_runs(end_pos, state.seal)
            if done:
                await self._take_replayed(entry_id, entry, done, max_block_s)
                return
        if self._keeping:
            self._keep(entry_id, 0, entry.count)
            return
        engine = self._engine
        queue = self._queues.get((entry.topic, entry.partition))
        if queue is None:  # the engine's queues live as long as it does
            queue = engine.queue(entry.topic, entry.partition)
            self._queues[entry.topic, entry.partition] = queue
        token = entry_id << _INDEX_BITS
        columns = packed_columns(entry.records, entry.count)
        if columns is not None:  # the common case: no headers (a Kafka client's timestamps)
            timestamps, key_lens, value_lens, data_start = columns
            args = (default_ts, entry.records, key_lens, value_lens, data_start, token, timestamps)
            while not engine.append_packed(queue, *args):
                if not await engine.wait_for_buffer(max_block_s):
                    log.warning("buffer.memory still full after max.block.ms; still waiting")
                if self._keeping:  # closed while waiting: the engine takes nothing more
                    self._keep(entry_id, 0, entry.count)
                    return
            self._count_in(entry)
            return
        append = engine.append
        for index, record in enumerate(iter_records(entry.records, entry.count)):
            timestamp = record.timestamp if record.timestamp is not None else default_ts
            while not append(queue, timestamp, record.key, record.value, record.headers, token):
                if not await engine.wait_for_buffer(max_block_s):
                    log.warning("buffer.memory still full after max.block.ms; still waiting")
                if self._keeping:
                    self._keep(entry_id, index, entry.count - index)
                    return
            token += 1
        self._count_in(entry)

    def _adopted_runs(self, end_pos: int, seal: int) -> list[DoneRun]:
        """The journaled runs of the entry ending at ``end_pos``, if they were written for
        this very entry (same seal); forgets the adopted runs once the reading is past them."""
        runs = self._adopted.pop(end_pos, [])
        if end_pos >= self._adopted_last:
            self._adopted.clear()
        if any(run.seal != seal for run in runs):
            log.warning("done journal: runs for ring position %d name another entry; its "
                        "records are produced again", end_pos)  # fmt: skip
            return []
        return runs

    async def _take_replayed(self, entry_id, entry, done: list[DoneRun], max_block_s) -> None:
        """An entry a predecessor took: the records its done journal has are reported with
        their first outcome (the client, a session, the Kafka listener may still wait for it)
        and not appended; the others are, one by one (the rare path)."""
        state = self._entries[entry_id]
        done.sort(key=lambda run: run.first)
        segments, at = [], 0  # stretches [start, end) without an outcome
        for run in done:
            if run.first > at:
                segments.append((at, run.first))
            at = max(at, run.first + run.count)
        if at < entry.count:
            segments.append((at, entry.count))
        state.segment_ends = [end for _, end in segments] if segments else None
        for run in done:  # may settle the entry: the last use of state for a done one
            self._report_recorded(entry_id, entry.topic, run)
        self._schedule_flush()
        if not segments:
            return
        self.tally.count_received(entry.topic, entry.partition,
                                  sum(b - a for a, b in segments), entry.received_ms)  # fmt: skip
        engine = self._engine
        queue = engine.queue(entry.topic, entry.partition)
        base = entry_id << _INDEX_BITS
        records = iter_records(entry.records, entry.count)
        for index, record in enumerate(records):
            if not any(a <= index < b for a, b in segments):
                continue
            timestamp = record.timestamp if record.timestamp is not None else entry.received_ms
            while self._keeping or not engine.append(
                queue, timestamp, record.key, record.value, record.headers, base | index
            ):
                if self._keeping:  # closed: the rest of the stretches stays in the ring
                    for a, b in segments:
                        if b > index:
                            self._keep(entry_id, max(a, index), b - max(a, index))
                    return
                if not await engine.wait_for_buffer(max_block_s):
                    log.warning("buffer.memory still full after max.block.ms; still waiting")

    def _report_recorded(self, entry_id: int, topic: str, run: DoneRun) -> None:
        """Report a journaled run's first outcome; it stays in the journal until released."""
        state = self._entries[entry_id]
        if state.reported:
            self._add_runs(
                state, run.first, run.count, 0, recorded_outcome(topic, state.partition, run)
            )
        self._settle(entry_id, state, run.count)

    def _count_in(self, entry) -> None:
        self.tally.count_received(entry.topic, entry.partition, entry.count, entry.received_ms)
        if entry.batched:  # its source lingered already (a Kafka client): no second linger
            self._engine.send_now(entry.topic, entry.partition)

    # ---- outcomes -> reports -----------------------------------------------------------

    def _entry_runs(self, tokens: list[int]) -> list[tuple[int, int, int, int]]:
        """A batch's records split by ring entry: (entry id, first index, count, offset in
        the batch) each."""
        runs = []
        start = 0
        total = len(tokens)
        entries = self._entries
        while start < total:
            first = tokens[start]
            entry_id = first >> _INDEX_BITS
            index = first & _INDEX_MASK
            # An entry's records are appended to its partition's batches back to back, so
            # within a batch they are consecutive tokens: the run ends where the batch or the
            # entry (or, replayed, the stretch of it appended again) does. O(runs).
            state = entries[entry_id]
            ends = state.segment_ends
            end = state.count if ends is None else ends[bisect_right(ends, index)]
            count = min(total - start, end - index)
            assert tokens[start + count - 1] == first + count - 1, "entry run broken"
            runs.append((entry_id, index, count, start))
            start += count
        return runs

    def _done_runs(self, outcome: BatchOutcome) -> list[DoneRun]:
        """The done-journal runs ``outcome`` would give (for the commit journal)."""
        runs = []
        for entry_id, index, count, start in self._entry_runs(outcome.tokens):
            state = self._entries[entry_id]
            runs.append(done_run_of(state.end_pos, state.seal, index, count, start, outcome))
        return runs

    def _on_outcome(self, outcome: BatchOutcome) -> None:
        for entry_id, index, count, start in self._entry_runs(outcome.tokens):
            self._report_run(entry_id, index, count, start, outcome)
        total = len(outcome.tokens)
        if self._journal is not None:
            self._journal.commit()  # the outcomes are on file before any report of them
        self._outcome_times.append((time.monotonic(), total))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_if_scheduled)

    def _flush_if_scheduled(self) -> None:
        """The reports of the outcomes gathered so far, if not flushed yet: at the end of
        each Produce answer (the engine's ``on_answered``: all of its batches are in, and
        ingest gets them without waiting for the rest of the loop turn), else from the
        loop's ready queue (outcomes that came another way: a kept entry, a commit)."""
        if self._flush_scheduled and self._room_wait is None:
            self._flush_reports()

    def _report_run(
        self, entry_id: int, index: int, count: int, offset_in_batch: int, outcome: BatchOutcome
    ) -> None:
        state = self._entries[entry_id]
        error = outcome.error
        if error is not None and self._keeping:
            self._keep(entry_id, index, count)
            return
        if self._journal is not None:
            self._journal.add(done_run_of(state.end_pos, state.seal, index, count,
                                          offset_in_batch, outcome))  # fmt: skip
        self.tally.count_done(outcome.topic, count, state.received_ms, error)
        if state.reported:
            self._add_runs(state, index, count, offset_in_batch, outcome)
        self._settle(entry_id, state, count)

    def _add_runs(
        self, state: _EntryState, index: int, count: int, offset_in_batch: int,
        outcome: BatchOutcome,
    ) -> None:  # fmt: skip
        """Queue the report runs of records ``index .. index + count`` of an entry."""
        runs = self._pending_runs[state.conn_id]
        if state.seq_offsets is None:
            first_seq = state.base_seq + index
            runs.append(run_of(first_seq, count, offset_in_batch, outcome, state.assigned_ts))
        else:
            for seq_offset, at, k in seq_runs(state.seq_offsets, index, count):
                offset = offset_in_batch + at - index
                first_seq = state.base_seq + seq_offset
                runs.append(run_of(first_seq, k, offset, outcome, state.assigned_ts))

    def _keep(self, entry_id: int, index: int, count: int) -> None:
        """Records ``index .. index + count`` of an entry stay in the ring: tell the client,
        if it waits for their Kafka outcome (ack KAFKA; ACCEPTED was already answered)."""
        state = self._entries[entry_id]
        state.kept = True
        if state.reported:
            self._pending_runs[state.conn_id].extend(
                kept_runs(state.base_seq, state.partition, state.seq_offsets, index, count)
            )
        self._settle(entry_id, state, count)
        self._schedule_flush()

    def _settle(self, entry_id: int, state: _EntryState, count: int) -> None:
        state.remaining -= count
        if state.remaining == 0:
            del self._entries[entry_id]
            if not state.kept:
                self._pending_done.append(state.end_pos)

    def _flush_reports(self) -> None:
        """Publish pending reports, then release the ring space of finished entries."""
        self._flush_scheduled = False
        unsent = self._unsent
        written_ns = time.monotonic_ns()
        for conn_id, runs in self._pending_runs.items():
            for chunk in chunks(runs):
                records = sum(run.count for run in chunk)
                frame = encode_reports(chunk)
                unsent.append(encode_report_entry(conn_id, records, frame, written_ns))
        self._pending_runs.clear()
        if unsent:
            del unsent[: self._reports.write_many(unsent)]
            if unsent:
                # The reports ring is full (ingest is behind): flush again once ingest has
                # made room (the ring's space wake-up); the entries stay unreleased until
                # their reports are out, and outcomes arriving meanwhile join this flush.
                if self._room_wait is None:
                    loop = asyncio.get_running_loop()
                    self._room_wait = loop.create_task(self._flush_when_room(len(unsent[0])))
                self._flush_scheduled = True
                return
        if self._outcome_times:
            self._trace_reports(written_ns / 1e9)
        if self._pending_done:
            release = self._window.done(self._pending_done)
            self._pending_done = []
            if release is not None:
                self._records.release(release)
                if self._journal is not None:  # after the release: its runs are dead now
                    self._journal.released(release)
                if self._in_flight is not None:
                    self._in_flight.released(release)

    def _trace_reports(self, written: float) -> None:
        observe = self.tally.stage_report.observe
        for came, records in self._outcome_times:
            observe(max(0.0, written - came), records)
        self._outcome_times.clear()

    async def _flush_when_room(self, nbytes: int) -> None:
        try:
            await self._reports.wait_writable(nbytes)
        finally:
            self._room_wait = None
        self._flush_reports()
