"""The daemon's ring files in ``rings.directory``: adopt what a previous daemon left, make the rest.

Owned by the supervisor and run once at start, before any child exists, so nothing else maps
these files while they are judged. For each worker index there is one records ring
(``<prefix>-records-<i>``, ingest -> worker) and one reports ring (``<prefix>-reports-<i>``,
worker -> ingest). What happens to the files found:

* **records ring of this very layout** (ring layout version, records-entry version, capacity,
  its index of the same worker count): *adopted in place*. ``recover`` cuts it at its first
  torn entry; its worker starts at ``release_pos`` and so reads every entry that was published
  and never released, before anything ingest writes after it.
* **records ring of the same layout versions but another size or worker count**: its sealed
  entries are *re-routed*, in ring order, into the ring of ``worker_for(topic, partition, W)``;
  the old file goes only once the new rings holding its entries are synced to the disk.
* **anything else** (another layout or entry version, a broken header, entries that do not fit
  the new rings): *moved aside*, never deleted, into ``<prefix>-aside-<UTC time>/`` with a
  ``README.txt`` saying why; the log and ``kpd status`` say so too.
* **done journals** (``<records ring>.done``, ``daemon.worker.done_journal``: which records of
  a ring's unreleased entries already had their outcome), **flight journals**
  (``<records ring>.flight``, ``daemon.worker.flight_journal``: its batches written to Kafka
  without an answer) and **commit journals and markers** (``.commit``, ``.marker``,
  ``daemon.worker.commit_journal``: a transaction commit's records and its marker) stay with
  their ring: adopted with it
  (its worker reads it), moved aside or re-routed with it, and removed where a ring is made
  anew, so a journal never outlives the ring positions it names. Re-routed entries get new
  positions: their done journal is dropped with the old file, and what it had is produced
  again (at-least-once, only when the worker count changed across a kill).
* **reports rings** carry reports for the previous daemon's client connections, which all
  ended with it: they are dropped and made new -- after the reports of protocol v2 sessions
  still in them are written to the sessions journal (``<prefix>-sessions.journal``, which
  outlives the daemon as the records rings do), so a session's next connection gets them.

The file names of a worker count W are the same as those of another count, so files to
re-route are first renamed into ``<prefix>-rerouting-<UTC time>/``; if the daemon dies while
re-routing, that directory stays and is reported like an aside one (its entries may then be
in the new rings too: at-least-once, never lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.ingest.dedupe import DedupeJournal
from daemon.ingest.kafka.listener import SOURCE_ID as KAFKA_LISTENER_ID
from daemon.ingest.kafka.listener import keep_unread_reports
from daemon.ingest.sessions import Sessions, is_session
from daemon.ownership import worker_for
from daemon.ring import (
    EntryTooLargeError,
    Ring,
    RingError,
    RingLabels,
    RingProducer,
    RingWakeups,
    entry_size,
    recover,
    sealed_entries,
)
from daemon.wire.ring_entry import (
    RECORDS_ENTRY_VERSION,
    decode_records_entry,
    decode_report_entry,
)
from daemon.worker.commit_journal import commit_journal_path, marker_path
from daemon.worker.done_journal import journal_path
from daemon.worker.flight_journal import flight_journal_path

__all__ = ["RingFiles", "kafka_producers_path", "prepare_ring_files", "sessions_path"]

log = logging.getLogger(__name__)

_LEFTOVER_DIRS = ("aside", "rerouting")


@dataclass
class RingFiles:
    """The ring paths a run uses and what adopting the previous run's files did."""

    directory: str
    prefix: str
    records: list[str]
    reports: list[str]
    adopted: list[dict] = field(default_factory=list)  # rings kept in place, with their backlog
    rerouted: list[dict] = field(default_factory=list)  # rings whose entries moved to new rings
    moved_aside: list[dict] = field(default_factory=list)  # this start: path and reason

    def status(self) -> dict:
        """The ``rings`` part of ``/status``: this start's adoption and every leftover
        directory (of this start or an earlier one) an operator still has to look at."""
        return {
            "directory": self.directory,
            "adopted": self.adopted,
            "rerouted": self.rerouted,
            "moved_aside": self.moved_aside,
            "leftovers": leftover_dirs(self.directory, self.prefix),
        }


def leftover_dirs(directory: str, prefix: str) -> list[str]:
    """Directories of moved-aside or half re-routed rings, oldest first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    wanted = tuple(f"{prefix}-{kind}-" for kind in _LEFTOVER_DIRS)
    return sorted(
        os.path.join(directory, n)
        for n in names
        if n.startswith(wanted) and os.path.isdir(os.path.join(directory, n))
    )


def prepare_ring_files(
    directory: str,
    prefix: str,
    workers: int,
    records_bytes: int,
    reports_bytes: int,
    clock: Callable[[], float] = time.time,
) -> RingFiles:
    """Adopt, re-route or move aside the files found, create the missing ones; see the module
    docstring. Raises OSError when the directory cannot be used."""
    os.makedirs(directory, mode=0o750, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    files = RingFiles(
        directory,
        prefix,
        [os.path.join(directory, f"{prefix}-records-{i}") for i in range(workers)],
        [os.path.join(directory, f"{prefix}-reports-{i}") for i in range(workers)],
    )
    for path in leftover_dirs(directory, prefix):
        log.warning("ring files left aside by an earlier start, not produced: %s", path)
    found = _ring_files(directory, prefix)
    for path in found["reports"]:
        _keep_unread_reports(path, directory, prefix)
        Ring.unlink(path)  # reports for connections that ended with the previous daemon
    to_reroute: list[Ring] = []
    aside: list[tuple[str, str]] = []
    adopted: dict[int, Ring] = {}
    for index, path in found["records"]:
        verdict = _judge(path, index, workers, records_bytes)
        if isinstance(verdict, str):
            aside.append((path, verdict))
        elif verdict[1]:
            adopted[index] = verdict[0]
        else:
            to_reroute.append(verdict[0])
    try:
        for ring in adopted.values():
            files.adopted.append(_adoption_note(ring))
        # Out of the way first: a fresh ring is about to take the name of each of these.
        _move_aside(files, stamp, aside)
        if to_reroute:
            unfit = _reroute(files, to_reroute, adopted, workers, records_bytes, stamp)
            _move_aside(files, stamp, unfit)
        for index, path in enumerate(files.records):
            if index not in adopted:
                # A done or flight journal names entries of the ring it was written beside:
                # never one of a ring made anew (or holding re-routed entries at new positions).
                _unlink(journal_path(path))
                _unlink(flight_journal_path(path))
                _unlink(commit_journal_path(path))
                _unlink(marker_path(path))
            if index not in adopted and not os.path.exists(path):
                labels = RingLabels(RECORDS_ENTRY_VERSION, index, workers)
                Ring.create(path, records_bytes, labels).close()
        for path in files.reports:
            Ring.create(path, reports_bytes, RingLabels(0, 0, workers), replace=True).close()
    finally:
        for ring in adopted.values():
            ring.close()
    return files


def sessions_path(directory: str, prefix: str) -> str:
    """The protocol v2 sessions journal (``daemon.ingest.sessions``) beside the ring files."""
    return os.path.join(directory, f"{prefix}-sessions.journal")


def kafka_producers_path(directory: str, prefix: str) -> str:
    """The Kafka listener's dedupe journal (``daemon.ingest.kafka.producers``)."""
    return os.path.join(directory, f"{prefix}-kafka-producers.jsonl")


def _keep_unread_reports(reports_ring: str, directory: str, prefix: str) -> None:
    """Journal the unread reports in a previous daemon's reports ring of v2 sessions and of
    the Kafka listener: their records were released from the records rings, so no worker
    will report them again, and a resend after this start is answered from the journals."""
    try:
        ring = Ring.attach(reports_ring)
    except (RingError, OSError, ValueError):
        return
    try:
        recover(ring)
        decoded = map(decode_report_entry, sealed_entries(ring))
        entries = [(conn_id, bytes(frame)) for conn_id, _, _, frame in decoded]
    except (RingError, ValueError):
        entries = []
    finally:
        ring.close()
    owed = [(conn_id, frame) for conn_id, frame in entries if is_session(conn_id)]
    if owed:
        _journal(sessions_path(directory, prefix), lambda journal: _keep_session_reports(
            journal, owed))  # fmt: skip
        log.info("kept %d reports of protocol v2 sessions from %s", len(owed), reports_ring)
    listener = [frame for conn_id, frame in entries if conn_id == KAFKA_LISTENER_ID]
    if listener:
        _journal(kafka_producers_path(directory, prefix),
                 lambda journal: keep_unread_reports(journal, listener))  # fmt: skip
        log.info("kept %d reports of the Kafka listener from %s", len(listener), reports_ring)


def _keep_session_reports(journal: DedupeJournal, owed: list[tuple[int, bytes]]) -> None:
    sessions = Sessions(journal)
    for conn_id, frame in owed:
        sessions.report(conn_id, memoryview(frame))


def _journal(path: str, keep: Callable[[DedupeJournal], object]) -> None:
    journal = DedupeJournal(path, window_records=2**62, idle_expiry_s=float("inf"))
    try:
        keep(journal)
    finally:
        journal.close()


def _ring_files(directory: str, prefix: str) -> dict[str, list]:
    pattern = re.compile(rf"{re.escape(prefix)}-(records|reports)-(\d+)")
    found: dict[str, list] = {"records": [], "reports": []}
    for name in sorted(os.listdir(directory)):
        match = pattern.fullmatch(name)
        path = os.path.join(directory, name)
        if match is None or not os.path.isfile(path):
            continue
        if match[1] == "records":
            found["records"].append((int(match[2]), path))
        else:
            found["reports"].append(path)
    found["records"].sort()
    return found


def _judge(path: str, index: int, workers: int, capacity: int) -> tuple[Ring, bool] | str:
    """``(ring, adopt in place?)`` for a records ring this build can read, else the reason
    it cannot (the file then goes aside). A readable ring has been cut at its torn tail."""
    try:
        ring = Ring.attach(path)
    except (RingError, OSError, ValueError) as exc:
        return f"not a ring this build reads: {exc}"
    labels = ring.labels
    if labels.format != RECORDS_ENTRY_VERSION:
        ring.close()
        return (
            f"records entries of version {labels.format}; this build reads version "
            f"{RECORDS_ENTRY_VERSION}"
        )
    try:
        found = recover(ring)
    except RingError as exc:
        ring.close()
        return str(exc)
    if found.problem:
        log.warning(
            "ring %s: dropped a torn tail of %d bytes (%s); the %d entries before it are kept",
            path,
            found.dropped_bytes,
            found.problem,
            found.entries,
        )
    in_place = labels == RingLabels(RECORDS_ENTRY_VERSION, index, workers) and (
        ring.capacity == capacity
    )
    return ring, in_place


def _adoption_note(ring: Ring) -> dict:
    used = ring.write_pos - ring.release_pos
    if used:
        log.info("adopted ring %s: %d bytes of records to produce first", ring.path, used)
    return {"ring": ring.name, "bytes": used}


def _reroute(
    files: RingFiles,
    sources: list[Ring],
    adopted: dict[int, Ring],
    workers: int,
    capacity: int,
    stamp: str,
) -> list[tuple[str, str]]:
    """Copy the sources' entries into the rings of this run by ``worker_for``; when they do
    not fit, copy nothing and return them all (path and reason) to be moved aside."""
    plans = [_plan(ring, workers) for ring in sources]
    targets: dict[int, Ring] = dict(adopted)
    # Rename first: the new rings take the same names. The mappings stay valid.
    holding = os.path.join(files.directory, f"{files.prefix}-rerouting-{stamp}")
    os.makedirs(holding, exist_ok=True)
    for ring in sources:
        os.rename(ring.path, os.path.join(holding, ring.name))
        _rename_journals(ring.path, os.path.join(holding, ring.name))
    for index, path in enumerate(files.records):
        if index not in targets:
            labels = RingLabels(RECORDS_ENTRY_VERSION, index, workers)
            targets[index] = Ring.create(path, capacity, labels, replace=True)
    fits = _fits(plans, targets)
    try:
        if fits:
            _copy_entries(plans, targets)
            for index in {t for plan in plans for t, _ in plan}:
                targets[index].sync()  # before the only other copy goes
    finally:
        counts = [len(plan) for plan in plans]
        plans.clear()  # the payload views pin the sources' mappings
        for index, ring in targets.items():
            if index not in adopted:
                ring.close()
        for ring in sources:
            ring.close()
    if not fits:
        return [
            (os.path.join(holding, ring.name), "its entries do not fit the new rings")
            for ring in sources
        ]
    for ring, count in zip(sources, counts, strict=True):
        note = {"ring": ring.name, "entries": count, "workers": ring.labels.count}
        files.rerouted.append(note)
        log.warning(
            "re-routed %d entries of ring %s (written for %d workers, %d bytes) into the rings "
            "of %d workers",
            count,
            ring.name,
            ring.labels.count,
            ring.capacity,
            workers,
        )
    for name in os.listdir(holding):
        os.unlink(os.path.join(holding, name))
    os.rmdir(holding)
    return []


def _plan(ring: Ring, workers: int) -> list[tuple[int, memoryview]]:
    """``(target worker, entry payload)`` of each sealed entry, in ring order."""
    plan = []
    for payload in sealed_entries(ring):
        entry = decode_records_entry(payload)
        plan.append((worker_for(entry.topic, entry.partition, workers), payload))
    return plan


def _fits(plans: list[list[tuple[int, memoryview]]], targets: dict[int, Ring]) -> bool:
    need: dict[int, int] = {}
    largest: dict[int, int] = {}
    for plan in plans:
        for target, payload in plan:
            need[target] = need.get(target, 0) + entry_size(len(payload))
            largest[target] = max(largest.get(target, 0), entry_size(len(payload)))
    for target, nbytes in need.items():
        ring = targets[target]
        free = ring.capacity - (ring.write_pos - ring.release_pos)
        # One wrap-around may skip fewer bytes than the entry that follows it.
        if nbytes + largest[target] > free:
            return False
    return True


def _copy_entries(plans: list[list[tuple[int, memoryview]]], targets: dict[int, Ring]) -> None:
    wakeups = RingWakeups.create()  # no consumer exists yet: nobody is ever rung
    try:
        producers = {i: RingProducer(ring, wakeups) for i, ring in targets.items()}
        for plan in plans:
            for target, payload in plan:
                if not producers[target].write(payload):
                    raise EntryTooLargeError(f"re-routed entry does not fit ring {target}")
        for producer in producers.values():
            producer.publish()
        del producers
    finally:
        wakeups.close()


# The files kept beside a records ring, each naming positions of that ring only, and what a
# reader of an aside directory's README should know of each.
_JOURNALS_BESIDE = (
    (journal_path, "the records of that ring that had an outcome (delivered or failed) when "
     "kpd stopped (daemon/worker/done_journal.py)"),
    (flight_journal_path, "its batches written to Kafka and not answered yet when kpd "
     "stopped: in flight (daemon/worker/flight_journal.py)"),
    (commit_journal_path, "the records its last transaction commit delivers, with their "
     "offsets (daemon/worker/commit_journal.py)"),
    (marker_path, "the marker of that commit: the consumer-group offset saying whether it "
     "committed (daemon/worker/commit_journal.py)"),
)  # fmt: skip


def _rename_journals(ring_path: str, new_ring_path: str) -> list[tuple[str, str]]:
    """Move the journals kept beside a records ring along with it; the (new path, what it
    is) of each one that existed."""
    moved = []
    for path_of, what in _JOURNALS_BESIDE:
        with contextlib.suppress(FileNotFoundError):
            os.rename(path_of(ring_path), path_of(new_ring_path))
            moved.append((path_of(new_ring_path), what))
    return moved


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _move_aside(files: RingFiles, stamp: str, aside: list[tuple[str, str]]) -> None:
    """Move ``(path, reason)`` files into this start's aside directory, with a README."""
    if not aside:
        return
    target = Path(files.directory) / f"{files.prefix}-aside-{stamp}"
    target.mkdir(exist_ok=True)
    readme = target / "README.txt"
    lines = (
        []
        if readme.exists()
        else [
            "kpd could not adopt these ring files at its start and left them here untouched.",
            "They may hold accepted records that were never produced to Kafka.",
            "",
        ]
    )
    for path, reason in aside:
        os.rename(path, target / os.path.basename(path))
        lines.append(f"{os.path.basename(path)}: {reason}")
        for journal, what in _rename_journals(path, str(target / os.path.basename(path))):
            lines.append(f"{os.path.basename(journal)}: {what}")
        log.warning("ring file %s moved aside to %s: %s", path, target, reason)
    with readme.open("a") as out:
        out.write("\n".join(lines) + "\n")
    files.moved_aside.append(
        {"path": str(target), "files": [(os.path.basename(p), r) for p, r in aside]}
    )
    # Whatever re-routing left in its holding directory is empty now.
    for leftover in Path(files.directory).glob(f"{files.prefix}-rerouting-{stamp}"):
        if not any(leftover.iterdir()):
            leftover.rmdir()
