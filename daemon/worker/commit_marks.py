"""Exactly-once mode's commit markers, the worker's side: ``CommitMarks`` journals what each
commit delivers and names its marker (the engine calls it before EndTxn: txn_driver's
``CommitMarks``), and at adoption asks Kafka whether the commit a dead predecessor left
journaled happened. ``commit_journal`` says why and what is on file.

Owned by the worker's event loop. Imports the engine only for the adoption's question.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from daemon.producer.engine import ProducerEngine
from daemon.producer.outcomes import BatchOutcome
from daemon.ring import LAYOUT_VERSION, RingConsumer
from daemon.worker.commit_journal import (
    CommitJournal,
    CommitRun,
    MarkerNote,
    read_marker,
    write_marker,
)
from daemon.worker.done_journal import DoneRun

__all__ = ["CommitMarks"]

log = logging.getLogger(__name__)


class CommitMarks:
    """One records ring's commit journal and marker file, and what a predecessor left."""

    def __init__(
        self,
        group: str,
        journal: CommitJournal,
        marker_file: str,
        note: MarkerNote | None,
        adopted: list[CommitRun],
        runs_of: Callable[[BatchOutcome], list[DoneRun]],
    ) -> None:
        self.group = group  # the worker's transactional id: the same name, another resource
        self._journal = journal
        self._marker_file = marker_file
        self._note = note
        self._last_token = note.token if note is not None else 0
        self.adopted = adopted  # runs of the predecessor's last commit, until recovered
        self._runs_of = runs_of

    @classmethod
    def open(
        cls,
        group: str,
        journal_file: str,
        marker_file: str,
        records: RingConsumer,
        runs_of: Callable[[BatchOutcome], list[DoneRun]],
    ) -> CommitMarks:
        """``runs_of``: the done-journal runs an outcome gives (the worker's split of its
        records into ring entries)."""
        journal, found = CommitJournal.open(
            journal_file,
            release_pos=records.cursor,
            ring_layout=LAYOUT_VERSION,
            entry_format=records.labels.format,
        )
        note = read_marker(marker_file)
        adopted = [run for run in found if note is not None and run.token == note.token]
        if len(adopted) != len(found):  # staged for a marker never written or since replaced
            log.info("commit journal %s: %d runs of no current marker dropped (their commit "
                     "was never sent)", journal_file, len(found) - len(adopted))  # fmt: skip
        return cls(group, journal, marker_file, note, adopted, runs_of)

    # ---- the engine's side (txn_driver.CommitMarks) ---------------------------------------

    def committing(
        self, outcomes: list[BatchOutcome], partitions: Collection[tuple[str, int]]
    ) -> tuple[int, str, int]:
        """Before EndTxn: name the marker (a fresh token on one of the transaction's
        partitions), then journal the runs the commit delivers under it."""
        token = max(time.time_ns() // 1000, self._last_token + 1)
        self._last_token = token
        topic, partition = min(partitions)
        write_marker(self._marker_file, MarkerNote(token, self.group, topic, partition))
        journal = self._journal
        journal.clear()
        for outcome in outcomes:
            for run in self._runs_of(outcome):
                journal.add(CommitRun(run.end_pos, run.seal, run.first, run.count,
                                      run.base_offset, run.timestamp, token))  # fmt: skip
        journal.commit()
        return token, topic, partition

    def committed(self) -> None:
        """The commit's outcomes are in the done journal (or its transaction aborted): its
        runs are no longer needed."""
        self._journal.clear()

    def close(self) -> None:
        self._journal.close()

    # ---- adoption ---------------------------------------------------------------------------

    async def recover(self, engine: ProducerEngine) -> list[DoneRun]:
        """The done-journal runs of the predecessor's last commit if Kafka has its marker
        (asked once the engine's InitProducerId fenced the predecessor, so that commit is
        complete, or aborted), else none: its records are produced again."""
        runs, self.adopted = self.adopted, []
        note = self._note
        assert note is not None and runs
        offset = await engine.committed_marker(note.group, note.topic, note.partition)
        records = sum(run.count for run in runs)
        outcome = "committed" if offset == note.token else "aborted"
        engine.counters.commit_window_records[outcome] += records
        if offset != note.token:
            log.info("commit journal: the last commit before the restart (marker %d on %s-%d) "
                     "did not happen; its %d records go again", note.token, note.topic,
                     note.partition, records)  # fmt: skip
            return []
        log.warning("commit journal: the last commit before the restart happened although its "
                    "worker never heard so (marker %d found on %s-%d); its %d records are "
                    "reported, not produced again", note.token, note.topic, note.partition,
                    records)  # fmt: skip
        return [run.done() for run in runs]
