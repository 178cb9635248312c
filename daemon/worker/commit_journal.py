"""The commit journal: in exactly-once mode, what the transaction being committed delivers,
written before its EndTxn(commit) so that the worker adopting the ring after a kill -9 can tell
whether those records are in Kafka already.

Why: a worker learns that its transaction committed from the EndTxn answer, and only then puts
the transaction's records in the done journal (``done_journal``) and reports them. Killed after
the coordinator committed and before that answer was handled, it left records in Kafka that
nothing on the host knew about; the next worker aborted what it took for an open transaction
and produced them again in a new one: twice in the committed log. So before EndTxn the worker
journals the outcomes the commit would give (the acknowledged batches' offsets), under a
fresh *token*, and puts that token in the transaction itself as a consumer-group offset
(``TransactionManager.commit_marker``: AddOffsetsToTxn + TxnOffsetCommit, as Kafka Connect's
exactly-once sources keep their source positions, KIP-618). Kafka commits or aborts the marker
with the records. The adopter reads the group's committed offset (``committed_marker``) after
its InitProducerId has fenced the dead worker's epoch: equal to the journal's token, the
journaled runs are done (reported with their offsets, never produced again); anything else,
the transaction was aborted and its records are produced again.

Two files beside the records ring:

* ``<ring>.commit``: a ``slot_journal.SlotJournal`` of ``CommitRun`` slots — a done-journal
  run (delivered) plus the token of the commit it belongs to (little-endian)::

      end_pos u64 | entry seal u32 | first u32 | count u32 | base_offset i64 | timestamp i64
      | token i64 | slot seal u32 (CRC32C of the 44 bytes before it)

* ``<ring>.marker``: where that commit's marker goes, as JSON ``{"token", "group", "topic",
  "partition"}``, replaced atomically (write + rename) *before* the runs are journaled. A run
  counts only with the token of the marker file, so runs staged for a commit whose marker file
  was never written (or replaced) are never taken for done.

Tokens are microseconds of the wall clock, above the marker file's last one: unique to one
commit, so an offset equal to the token can only be that commit's marker.

Written by the worker's event loop alone; read by the worker that adopts the ring once the
writer is dead. Imports neither the engine, nor the rings' ends, nor the process layer.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from typing import NamedTuple

from daemon.worker.done_journal import DoneRun
from daemon.worker.slot_journal import SlotFormat, SlotJournal

__all__ = [
    "COMMIT_FORMAT",
    "CommitJournal",
    "CommitRun",
    "MarkerNote",
    "commit_journal_path",
    "marker_path",
    "read_marker",
    "write_marker",
]

log = logging.getLogger(__name__)

# 1: the first commit journal. Bump it whenever the slot layout changes.
COMMIT_LAYOUT_VERSION = 1


class CommitRun(NamedTuple):
    """Records ``first .. first + count`` of the entry ending at ``end_pos`` (seal ``seal``)
    are delivered at ``base_offset`` (log-append time ``timestamp``, -1: create time) if the
    commit with marker ``token`` happened."""

    end_pos: int
    seal: int
    first: int
    count: int
    base_offset: int
    timestamp: int
    token: int

    def done(self) -> DoneRun:
        return DoneRun(self.end_pos, self.seal, self.first, self.count, 0, self.base_offset,
                       self.timestamp, 0, 0)  # fmt: skip


COMMIT_FORMAT = SlotFormat(
    "commit journal", b"KPDCMIT\0", COMMIT_LAYOUT_VERSION, struct.Struct("<QIIIqqq"), CommitRun
)


class MarkerNote(NamedTuple):
    """The marker of the commit under way: ``token`` as ``group``'s offset of
    (``topic``, ``partition``)."""

    token: int
    group: str
    topic: str
    partition: int


def commit_journal_path(records_ring_path: str) -> str:
    return records_ring_path + ".commit"


def marker_path(records_ring_path: str) -> str:
    return records_ring_path + ".marker"


def write_marker(path: str, note: MarkerNote) -> None:
    """Replace the marker file at once (a kill leaves the old one or the new one)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as out:
        json.dump(note._asdict(), out)
    os.replace(tmp, path)


def read_marker(path: str) -> MarkerNote | None:
    """The marker file's note; None when there is none or it cannot be read (logged)."""
    try:
        with open(path) as source:
            data = json.load(source)
        return MarkerNote(int(data["token"]), str(data["group"]), str(data["topic"]),
                          int(data["partition"]))  # fmt: skip
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("commit marker file %s unreadable (%s): its commit counts as aborted", path,
                    exc)  # fmt: skip
        return None


class CommitJournal(SlotJournal):
    """One records ring's commit journal (see the module docstring)."""

    FORMAT = COMMIT_FORMAT
