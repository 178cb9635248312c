"""Rebuilding, from the ring entries a dead worker left, exactly the batches its flight journal
says it wrote without an answer: the same records, the same batch boundaries, stamped with the
same producer id, epoch and base sequence (``flight_journal``). Pure: no I/O.

A batch named by a flight slot holds, in ring order, the records of its topic and partition
from its first record to its last, less those the done journal already had when it was built.
Those runs are still in the done journal (a run stays until its entry is released), so the same
walk finds the same records; the slot's record count checks it. A slot whose records all have
an outcome now (its answer came before the kill) needs nothing; one that cannot be rebuilt
(an entry it names is not in the ring with that seal, or the count differs) is left to the
ordinary replay under the new producer id, as a record possibly written twice.

Must not import the engine or the process layer.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from daemon.producer.outcomes import BatchOutcome
from daemon.producer.resend import ResendBatch, ResendResult, Verdict
from daemon.wire.ring_entry import RecordsEntry
from daemon.worker.done_journal import DoneRun
from daemon.worker.flight_journal import FlightBatch, latest_batches, topic_crc
from daemon.worker.reports import done_run_of
from kpd.protocol.records import iter_records

__all__ = ["Piece", "Rebuilt", "TakenEntry", "done_runs", "rebuild"]

log = logging.getLogger(__name__)


class TakenEntry(NamedTuple):
    """An unreleased ring entry, decoded: where it ends, its seal, its contents."""

    end_pos: int
    seal: int
    entry: RecordsEntry


class Piece(NamedTuple):
    """Records ``first .. first + count`` of the entry ending at ``end_pos`` (seal ``seal``)."""

    end_pos: int
    seal: int
    first: int
    count: int


@dataclass(frozen=True, slots=True)
class Rebuilt:
    flight: FlightBatch
    pieces: list[Piece]  # in the batch's record order
    batch: ResendBatch


def rebuild(
    flights: list[FlightBatch],
    entries: list[TakenEntry],
    done: Mapping[int, list[DoneRun]],
    build: Callable[[list[tuple], FlightBatch], bytes],
) -> tuple[list[Rebuilt], list[FlightBatch]]:
    """``(batches to resend, in ring order, hence sequence order per partition; slots that
    cannot be rebuilt)`` of the latest flight slots. ``entries`` in ring order; ``done``: the
    done journal's runs by entry end position; ``build``: the stamped batch of ``(timestamp,
    key, value, headers)`` records under a slot's identity (``resend.stamped_batch``)."""
    ends = [taken.end_pos for taken in entries]
    rebuilt: list[Rebuilt] = []
    broken: list[FlightBatch] = []
    for flight in latest_batches(flights):
        pieces = _pieces(flight, entries, ends, done)
        if pieces is None:
            broken.append(flight)
        elif pieces:  # empty: every record has its outcome already
            payload = build(_records(pieces, entries, ends), flight)
            topic = entries[bisect_left(ends, flight.first_end)].entry.topic
            batch = ResendBatch(topic, flight.partition, payload, flight.count)
            rebuilt.append(Rebuilt(flight, pieces, batch))
    return rebuilt, broken


def _pieces(
    flight: FlightBatch, entries: list[TakenEntry], ends: list[int],
    done: Mapping[int, list[DoneRun]],
) -> list[Piece] | None:  # fmt: skip
    """The batch's records as pieces; [] when all have outcomes; None when it cannot be
    rebuilt from these entries."""
    lo, hi = bisect_left(ends, flight.first_end), bisect_left(ends, flight.last_end)
    if hi >= len(entries) or ends[lo] != flight.first_end or ends[hi] != flight.last_end:
        return None
    if entries[lo].seal != flight.first_seal or entries[hi].seal != flight.last_seal:
        return None
    topic = entries[lo].entry.topic
    if topic_crc(topic) != flight.topic_crc:
        return None
    pieces: list[Piece] = []
    had_outcome = 0
    for at in range(lo, hi + 1):
        end_pos, seal, entry = entries[at]
        if entry.topic != topic or entry.partition != flight.partition:
            continue
        first = flight.first_index if at == lo else 0
        last = flight.last_index if at == hi else entry.count - 1
        runs = [run for run in done.get(end_pos, ()) if run.seal == seal]
        for a, b in _without(first, last + 1, runs):
            pieces.append(Piece(end_pos, seal, a, b - a))
        had_outcome += sum(
            max(0, min(run.first + run.count, last + 1) - max(run.first, first)) for run in runs
        )
    count = sum(piece.count for piece in pieces)
    if count == 0 and had_outcome:
        return []
    if count != flight.count:
        log.warning("flight journal: a batch of %d records of partition %d holds %d now "
                    "(%d have outcomes); it is produced again under the new producer id",
                    flight.count, flight.partition, count, had_outcome)  # fmt: skip
        return None
    return pieces


def _without(start: int, end: int, runs: list[DoneRun]) -> list[tuple[int, int]]:
    """The stretches of ``[start, end)`` no run covers."""
    stretches, at = [], start
    for run in sorted(runs, key=lambda run: run.first):
        if run.first > at:
            stretches.append((at, min(run.first, end)))
        at = max(at, run.first + run.count)
        if at >= end:
            break
    if at < end:
        stretches.append((at, end))
    return [(a, b) for a, b in stretches if a < b]


def _records(pieces: list[Piece], entries: list[TakenEntry], ends: list[int]) -> list[tuple]:
    """The pieces' records as ``(timestamp, key, value, headers)``, in batch order."""
    records = []
    for piece in pieces:
        entry = entries[bisect_left(ends, piece.end_pos)].entry
        stop = piece.first + piece.count
        for index, record in enumerate(iter_records(entry.records, entry.count)):
            if index >= stop:
                break
            if index >= piece.first:
                timestamp = entry.received_ms if record.timestamp is None else record.timestamp
                records.append((timestamp, record.key, record.value, record.headers))
    return records


def done_runs(rebuilt: Rebuilt, result: ResendResult) -> list[DoneRun]:
    """The done-journal runs of a resent batch the broker has now (appended or a duplicate);
    [] when it fell back (``Verdict.FORGOTTEN``)."""
    if result.verdict is Verdict.FORGOTTEN:
        return []
    flight = rebuilt.flight
    outcome = BatchOutcome(rebuilt.batch.topic, flight.partition, [], result.base_offset,
                           result.timestamp, None)  # fmt: skip
    runs, offset = [], 0
    for piece in rebuilt.pieces:
        runs.append(done_run_of(piece.end_pos, piece.seal, piece.first, piece.count, offset,
                                outcome))  # fmt: skip
        offset += piece.count
    return runs
