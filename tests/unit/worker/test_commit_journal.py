"""Exactly-once mode's commit journal and marker file (daemon/worker/commit_journal.py) and the
worker's side of commit markers (daemon/worker/commit_marks.py): what is on file before an
EndTxn, what a successor takes for done, and only when Kafka has the commit's marker."""

from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace

from crc32c import crc32c

from daemon.producer.counters import ProducerCounters
from daemon.producer.outcomes import BatchOutcome
from daemon.ring import LAYOUT_VERSION
from daemon.worker.commit_journal import (
    COMMIT_FORMAT,
    CommitJournal,
    CommitRun,
    MarkerNote,
    commit_journal_path,
    marker_path,
    read_marker,
    write_marker,
)
from daemon.worker.commit_marks import CommitMarks
from daemon.worker.done_journal import DoneRun

ENTRY_FORMAT = 2


def _records(cursor: int = 0):
    """What CommitMarks reads of the records ring: its release point and entry format."""
    return SimpleNamespace(cursor=cursor, labels=SimpleNamespace(format=ENTRY_FORMAT))


def _runs_of(outcome: BatchOutcome) -> list[DoneRun]:
    """Stands in for the worker's split: one run per token, entry end = 100 * token."""
    return [DoneRun(100 * t, 7, 0, 1, 0, outcome.base_offset + i, outcome.timestamp, 0, 0)
            for i, t in enumerate(outcome.tokens)]  # fmt: skip


def _open(ring: str) -> CommitMarks:
    return CommitMarks.open("tx-1-0", commit_journal_path(ring), marker_path(ring), _records(),
                            _runs_of)  # fmt: skip


def test_a_slot_is_a_delivered_run_and_its_token_little_endian_then_the_crc32c():
    run = CommitRun(4096, 0xCAFEF00D, 3, 25, 77, -1, 1_765_000_000_000_000)
    body = struct.pack("<QIIIqqq", 4096, 0xCAFEF00D, 3, 25, 77, -1, 1_765_000_000_000_000)
    assert COMMIT_FORMAT.encode(run) == body + struct.pack("<I", crc32c(body))
    assert COMMIT_FORMAT.decode(COMMIT_FORMAT.encode(run)) == run
    assert run.done() == DoneRun(4096, 0xCAFEF00D, 3, 25, 0, 77, -1, 0, 0)


def test_the_marker_file_round_trips_and_a_bad_one_counts_as_none(tmp_path):
    path = str(tmp_path / "r.marker")
    assert read_marker(path) is None
    note = MarkerNote(123, "tx-1-0", "events", 4)
    write_marker(path, note)
    assert read_marker(path) == note
    (tmp_path / "r.marker").write_text('{"token": 1}')
    assert read_marker(path) is None


def test_committing_names_the_marker_before_it_journals_the_runs_under_its_token(tmp_path):
    ring = str(tmp_path / "records-0")
    write_marker(marker_path(ring), MarkerNote(2**62, "tx-1-0", "old", 0))  # a clock far ahead
    marks = _open(ring)
    outcomes = [BatchOutcome("b", 1, [1, 2], 40, -1, None), BatchOutcome("a", 5, [3], 9, -1, None)]

    token, topic, partition = marks.committing(outcomes, {("b", 1), ("a", 5)})

    assert token == 2**62 + 1  # above the last token on file, whatever the clock says
    assert (topic, partition) == ("a", 5)  # the least of the transaction's partitions
    assert read_marker(marker_path(ring)) == MarkerNote(token, "tx-1-0", "a", 5)
    marks.close()
    journal, runs = CommitJournal.open(
        commit_journal_path(ring), release_pos=0, ring_layout=LAYOUT_VERSION,
        entry_format=ENTRY_FORMAT,
    )  # fmt: skip
    journal.close()
    assert runs == [CommitRun(100, 7, 0, 1, 40, -1, token), CommitRun(200, 7, 0, 1, 41, -1, token),
                    CommitRun(300, 7, 0, 1, 9, -1, token)]  # fmt: skip


class _Engine:
    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.asked: list = []
        self.counters = ProducerCounters()

    async def committed_marker(self, group: str, topic: str, partition: int) -> int:
        self.asked.append((group, topic, partition))
        return self.offset


def _left_by_a_killed_worker(ring: str) -> int:
    marks = _open(ring)
    token, _, _ = marks.committing([BatchOutcome("t", 2, [1, 2], 500, 99, None)], {("t", 2)})
    marks.close()  # killed: committed() never ran
    return token


def test_the_successor_takes_the_runs_for_done_when_kafka_has_the_marker(tmp_path):
    ring = str(tmp_path / "records-0")
    token = _left_by_a_killed_worker(ring)
    marks = _open(ring)
    engine = _Engine(token)

    runs = asyncio.run(marks.recover(engine))

    assert engine.asked == [("tx-1-0", "t", 2)]
    assert engine.counters.commit_window_records == {"committed": 2}  # kpd_commit_window_...
    assert runs == [
        DoneRun(100, 7, 0, 1, 0, 500, 99, 0, 0),
        DoneRun(200, 7, 0, 1, 0, 501, 99, 0, 0),
    ]
    marks.committed()
    marks.close()
    assert not _open(ring).adopted  # cleared once the done journal has them


def test_the_successor_produces_them_again_when_the_marker_is_not_the_commits(tmp_path):
    ring = str(tmp_path / "records-0")
    token = _left_by_a_killed_worker(ring)
    marks = _open(ring)

    engine = _Engine(token - 1)  # an older commit's marker
    assert asyncio.run(marks.recover(engine)) == []
    assert engine.counters.commit_window_records == {"aborted": 2}
    marks.close()


def test_runs_of_a_marker_never_written_are_not_adopted(tmp_path):
    ring = str(tmp_path / "records-0")
    token = _left_by_a_killed_worker(ring)
    # As if killed after the next commit's marker file and before its runs: the runs on file
    # are of a marker that is no longer the file's.
    write_marker(marker_path(ring), MarkerNote(token + 1, "tx-1-0", "t", 2))
    assert _open(ring).adopted == []
    (tmp_path / "records-0.marker").unlink()
    assert _open(ring).adopted == []
