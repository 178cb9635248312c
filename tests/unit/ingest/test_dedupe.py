"""The dedupe journal: windows of taken sequence ranges and outcomes, surviving a reload."""

from __future__ import annotations

import json
import os

from daemon.ingest import dedupe
from daemon.ingest.dedupe import COMPACT_FACTOR, DedupeJournal, Piece


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _journal(path, clock=None, window=1000, expiry=60.0) -> DedupeJournal:
    return DedupeJournal(str(path), window_records=window, idle_expiry_s=expiry,
                         clock=clock or Clock())  # fmt: skip


def test_a_lookup_gives_outcomes_with_their_distance_into_the_run_and_pending_gaps(tmp_path):
    journal = _journal(tmp_path / "j")
    journal.taken("s", 0, 10)
    journal.resolved("s", 0, 4, ["a"])
    journal.resolved("s", 6, 4, ["b"])
    assert journal.lookup("s", 2, 6) == [
        Piece(2, 2, ["a"], 2),
        Piece(4, 2, None, 0),
        Piece(6, 2, ["b"], 0),
    ]
    assert journal.lookup("s", 20, 5) == []  # never taken
    assert journal.window("s").pending == 2


def test_an_outcome_is_given_once(tmp_path):
    journal = _journal(tmp_path / "j")
    journal.taken("s", 0, 4)
    journal.resolved("s", 0, 4, ["first"])
    journal.resolved("s", 0, 4, ["second"])
    assert journal.lookup("s", 0, 4) == [Piece(0, 4, ["first"], 0)]


def test_the_windows_survive_a_reload_and_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "j"
    journal = _journal(path)
    journal.taken("s", 0, 5)
    journal.taken("s", 5, 5)
    journal.resolved("s", 0, 5, [1, 2])
    journal.forget_below("t", 3)  # a key never seen: nothing
    journal.close()
    with open(path, "a") as torn:
        torn.write('{"k":"s","o":[5,5')  # kill -9 in the middle of a write
    again = _journal(path)
    assert again.lookup("s", 0, 10) == [Piece(0, 5, [1, 2], 0), Piece(5, 5, None, 0)]
    assert again.window("s").next_seq == 10


def test_forget_below_drops_what_the_sender_no_longer_holds_and_the_key_stays_known(tmp_path):
    path = tmp_path / "j"
    journal = _journal(path)
    journal.taken("s", 0, 5)
    journal.resolved("s", 0, 5, ["x"])
    journal.forget_below("s", 5)
    assert journal.lookup("s", 0, 5) == []
    journal.close()
    again = _journal(path)  # compacted at load: the floor line keeps the empty window
    assert again.window("s") is not None and again.window("s").floor == 5


def test_idle_keys_expire_unless_live(tmp_path):
    clock = Clock()
    journal = _journal(tmp_path / "j", clock, expiry=60)
    journal.taken("old", 0, 1)
    journal.taken("busy", 0, 1)
    clock.now += 61
    assert journal.expire(lambda key: key == "busy") == ["old"]
    assert journal.window("old") is None and journal.window("busy") is not None
    journal.close()
    clock.now += 1
    assert _journal(tmp_path / "j", clock, expiry=60).window("busy") is None  # at load too


def test_resolved_history_is_bounded_by_the_window_pending_ranges_are_kept(tmp_path):
    journal = _journal(tmp_path / "j", window=10)
    journal.taken("s", 0, 5)  # stays pending
    for first in range(5, 50, 5):
        journal.taken("s", first, 5)
        journal.resolved("s", first, 5, ["ok"])
    firsts = [r.first for r in journal.window("s").ranges]
    assert firsts[0] == 0  # pending: kept however old
    journal.resolved("s", 0, 5, ["late"])
    journal.taken("s", 50, 5)
    firsts = [r.first for r in journal.window("s").ranges]
    assert firsts[-1] - firsts[0] < 10 + 5 and firsts[0] > 0


def test_the_file_is_rewritten_once_mostly_dead(tmp_path):
    path = tmp_path / "j"
    journal = _journal(path, window=5)
    for first in range(0, 5000, 1):
        journal.taken("s", first, 1)
        journal.resolved("s", first, 1, 0)
    lines = path.read_text().count("\n")
    assert lines <= COMPACT_FACTOR * 2 * 8 + 1000 + 10
    assert _journal(path, window=5).window("s").next_seq == 5000


def test_a_range_taken_with_its_outcome_is_one_line_and_comes_back_resolved(tmp_path):
    path = tmp_path / "j"
    journal = _journal(path)
    journal.taken("s", 0, 3, ["accepted"])
    assert journal.window("s").pending == 0
    journal.close()
    assert '"t":[0,3]' in path.read_text().splitlines()[-1]  # taken and outcome together
    assert _journal(path).lookup("s", 0, 3) == [Piece(0, 3, ["accepted"], 0)]


def test_a_tag_is_journaled_with_its_range_and_kept_by_a_compaction(tmp_path):
    # The Kafka listener tags a batch's range with its ring sequence number.
    journal = _journal(tmp_path / "j")
    journal.taken("k", 0, 5, tag=1_000)
    journal.taken("k", 5, 5, tag=1_005)
    journal.close()
    again = _journal(tmp_path / "j")  # loads, then compacts
    again.close()
    again = _journal(tmp_path / "j")
    assert [(key, r.first, r.tag) for key, r in again.ranges()] == [
        ("k", 0, 1_000),
        ("k", 5, 1_005),
    ]


def test_a_withdrawn_pending_range_is_no_longer_taken_also_after_a_reload(tmp_path):
    journal = _journal(tmp_path / "j")
    journal.taken("k", 0, 5)
    journal.taken("k", 5, 5)
    journal.resolved("k", 0, 5, ["ok"])
    journal.withdraw("k", 0, 5)  # resolved: stays
    journal.withdraw("k", 5, 5)  # pending: goes
    assert journal.lookup("k", 0, 10) == [Piece(0, 5, ["ok"], 0)]
    assert journal.window("k").pending == 0
    journal.close()
    assert _journal(tmp_path / "j").lookup("k", 0, 10) == [Piece(0, 5, ["ok"], 0)]


def test_sync_fd_names_the_file_once_per_batch_of_written_lines(tmp_path):
    journal = _journal(tmp_path / "j")
    assert journal.sync_fd() is None  # nothing written since the load's rewrite
    journal.taken("k", 0, 1)
    fd = journal.sync_fd()
    assert os.path.samefile(f"/proc/self/fd/{fd}", tmp_path / "j")
    os.close(fd)
    assert journal.sync_fd() is None


def _some_changes(journal: DedupeJournal) -> None:
    for first in range(0, 60, 6):
        journal.taken("s", first, 6)
        journal.taken("p/0", first, 3, outcome=[0, "ok"])
        journal.resolved("s", first, 4, [0, 1, first])
        journal.resolved("s", first + 4, 2, [1, 'x\n"y'])
    journal.forget_below("s", 30)


def test_changes_batched_reach_the_file_in_one_write_with_the_same_lines(tmp_path, monkeypatch):
    import daemon.ingest.dedupe as dedupe

    plain, batched = _journal(tmp_path / "plain"), _journal(tmp_path / "batched")
    _some_changes(plain)
    writes = []
    real_write = dedupe.os.write
    monkeypatch.setattr(dedupe.os, "write", lambda fd, data: writes.append(data) or
                        real_write(fd, data))  # fmt: skip
    with batched.batched():
        with batched.batched():  # nested: the outer block writes
            _some_changes(batched)
        assert writes == []  # nothing before the block ends
    assert len(writes) == 1
    assert (tmp_path / "batched").read_text() == (tmp_path / "plain").read_text()
    again = _journal(tmp_path / "batched")
    assert again.lookup("s", 30, 30) == plain.lookup("s", 30, 30)
    assert again.lookup("p/0", 0, 60) == plain.lookup("p/0", 0, 60)


def test_changes_held_reach_the_file_at_flush_in_one_write(tmp_path, monkeypatch):
    # hold/flush: batched across callbacks (the Kafka listener's loop turn); a block inside
    # waits for the flush.
    plain, held = _journal(tmp_path / "plain"), _journal(tmp_path / "held")
    _some_changes(plain)
    writes = []
    real_write = dedupe.os.write
    monkeypatch.setattr(dedupe.os, "write", lambda fd, data: writes.append(data) or
                        real_write(fd, data))  # fmt: skip
    with held.batched():
        held.hold()  # begun inside a block: the block's end does not write
    with held.batched():
        _some_changes(held)
    assert writes == []
    held.flush()
    assert len(writes) == 1
    assert (tmp_path / "held").read_text() == (tmp_path / "plain").read_text()
    held.taken("s", 100, 1)  # after flush: written at once again
    assert len(writes) == 2
    held.hold()
    held.taken("s", 101, 1)
    held.close()  # writes what is held
    assert len(writes) == 3


def test_the_live_line_count_is_what_a_rewrite_writes(tmp_path):
    path = tmp_path / "j"
    journal = _journal(path, window=20)
    _some_changes(journal)
    journal.taken("t", 0, 5)
    journal.drop("t")
    journal.compact()
    assert journal._live_lines() == path.read_text().count("\n")
    assert _journal(path, window=20)._live_lines() == journal._live_lines()


def test_taken_many_and_resolved_many_write_what_one_call_per_range_writes(tmp_path):
    """The bulk forms of a frame batch's taken ranges and a report's runs: the same lines,
    the same windows, the same bound (a window of 10 resolved records), the same runs left
    for the owner to take as unknown."""
    outcome = [2, 1, 40, -1, 0, 0, 0, ""]
    ranges = [(0, 3), (3, 4), (7, 5), (12, 2), (14, 6)]
    runs = [(0, 3, outcome), (3, 4, outcome), (7, 5, outcome), (30, 2, outcome), (14, 6, 0)]
    one, many = _journal(tmp_path / "one", window=10), _journal(tmp_path / "many", window=10)
    for first, count in ranges:
        one.taken("s", first, count)
    many.taken_many("s", ranges)
    short = [(first, count, outcome) for first, count, outcome in runs
             if one.resolved("s", first, count, outcome) < count]  # fmt: skip
    assert many.resolved_many("s", runs) == short == [(30, 2, outcome)]
    assert many.resolved_many("unknown", runs) == runs
    assert many.window("s") == one.window("s")
    assert [r.first for r in many.window("s").ranges] == [12, 14]  # bounded alike
    one.close()
    many.close()
    assert (tmp_path / "one").read_text() == (tmp_path / "many").read_text()


def test_the_hot_lines_values_are_written_as_the_json_encoder_writes_them():
    # _json writes ints and lists of ints (with or without a closing "") itself.
    values = [0, -1, 2**63, [], [""], [0, -1, 1_700_000_000_123], [3, 41, ""], [1, "", 2],
              [True, 1], ["a", ""], {"k": [1, 2]}, "x", [1.5, 2]]  # fmt: skip
    for value in values:
        assert dedupe._json(value) == json.dumps(value, separators=(",", ":")), value
