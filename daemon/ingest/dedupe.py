"""Dedupe windows: which sequence numbers of a sender kpd took into a ring, and their outcomes,
kept in a journal beside the ring files so a resend is recognised after a kill -9.

One ``DedupeJournal`` holds a window per *key* (a string naming a sender: a kpd protocol v2
session, or a Kafka idempotent producer's partition). A window is the ordered list of
*taken* ranges ``[first, first + count)`` of that key's sequence numbers and, per range, the
outcome runs known so far (``(first, count, outcome)``, the outcome an opaque JSON value the
owner chooses). The owner asks:

* ``taken(key, first, count)`` -- after the records are published to a ring and before the
  sender hears an answer: the journal line is written first, so a crash in between leaves
  "taken" on disk and a resend is answered, never taken twice. (A crash between the ring
  publish and this write is the one window left: the record may then be taken twice.)
* ``resolved(key, first, count, outcome)`` -- an outcome, when it is known; written before
  the outcome is passed on, so a report is never owed and forgotten.
* ``lookup(key, first, count)`` -- a resend: the known outcome pieces of that range (each a
  ``Piece``: its first sequence number, its count, the outcome and ``delta``, its distance
  from the start of the outcome's run) and the sub-ranges still pending.
* ``forget_below(key, seq)`` -- the sender holds nothing below ``seq``: the window drops it.
* ``withdraw(key, first, count)`` -- a pending range that was never produced (failed
  NOT_PERSISTED): it is no longer taken, so a resend of it is new.

A range may carry a ``tag`` (any JSON value, journaled with it): the owner's own name for it,
such as the Kafka listener's ring sequence number, by which its worker's report comes back.

Bounds: a window keeps at most ``window_records`` sequence numbers of *resolved* history (the
oldest resolved ranges go first; pending ranges stay until resolved: the rings bound them);
a key nobody touched for ``idle_expiry_s`` is dropped (``expire``; also at load).

Durability: an append-only file of JSON lines. A torn last line (kill -9 mid-write) is
ignored on load; at load, and whenever the file has grown to ``COMPACT_FACTOR`` times its
live content, it is rewritten compacted (temporary file + rename). Page-cache writes survive
any crash of kpd's processes, as the ring files do. A power loss is ``rings.fsync``'s domain:
the owner of the rings' syncs (``ring_sync.RingSync``) syncs the journal with them (``sync``),
so what a client was told is on the disk as its ring entries are; with ``durable`` a
compaction syncs its new file before the rename.

Owned by one event loop; no locks. Pure apart from its file; must not import ingest, the
rings or the protocol codecs.
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["COMPACT_FACTOR", "DedupeJournal", "Piece", "TakenRange", "Window"]

COMPACT_FACTOR = 4  # rewrite once the file holds this many times its live lines (and > 1000)
_COMPACT_MIN_LINES = 1000


_Run = tuple[int, int, Any]  # (first, count, outcome): one outcome of a sender's records


class Piece(NamedTuple):
    """Part of a looked-up range: ``outcome`` None while pending."""

    first: int
    count: int
    outcome: Any
    delta: int  # first - the first sequence number of the outcome's run


@dataclass(slots=True)
class TakenRange:
    first: int
    count: int
    runs: list[tuple[int, int, Any]] = field(default_factory=list)
    resolved: int = 0  # records of the range with an outcome
    tag: Any = None  # the owner's name for the range (module docstring)

    @property
    def end(self) -> int:
        return self.first + self.count


@dataclass(slots=True)
class Window:
    """One key's taken ranges (disjoint, contiguous or not: the owner decides), kept sorted
    by first sequence number so that a lookup is a binary search, never a scan."""

    ranges: list[TakenRange] = field(default_factory=list)
    firsts: list[int] = field(default_factory=list)  # ranges[i].first, for bisect
    floor: int = 0  # the owner said nothing below this is needed (``forget_below``)
    touched: float = 0.0  # clock() of the last taken/resolved/forget/touch
    pending: int = 0  # records taken without an outcome yet
    lines: int = 0  # journal lines its ranges and runs take when compacted (kept, not counted)

    @property
    def next_seq(self) -> int | None:
        """One past the newest taken sequence number; None for an empty window."""
        return self.ranges[-1].end if self.ranges else None

    def add(self, taken: TakenRange) -> None:
        firsts, first = self.firsts, taken.first
        if not firsts or first >= firsts[-1]:  # the common case: a sender's next range
            firsts.append(first)
            self.ranges.append(taken)
        else:
            index = bisect_right(firsts, first)
            firsts.insert(index, first)
            self.ranges.insert(index, taken)
        self.pending += taken.count - taken.resolved
        self.lines += 1 + len(taken.runs)

    def overlapping(self, first: int, end: int) -> Iterator[TakenRange]:
        ranges = self.ranges
        index = max(bisect_right(self.firsts, first) - 1, 0)
        while index < len(ranges) and ranges[index].first < end:
            if ranges[index].end > first:
                yield ranges[index]
            index += 1

    def drop_front(self, n: int) -> None:
        dropped = self.ranges[:n]
        self.pending -= sum(r.count - r.resolved for r in dropped)
        self.lines -= n + sum(len(r.runs) for r in dropped)
        del self.ranges[:n]
        del self.firsts[:n]

    def remove(self, index: int) -> None:
        taken = self.ranges.pop(index)
        del self.firsts[index]
        self.pending -= taken.count - taken.resolved
        self.lines -= 1 + len(taken.runs)

    def drop_below(self, seq: int) -> None:
        n = 0
        while n < len(self.ranges) and self.ranges[n].end <= seq:
            n += 1
        self.drop_front(n)


class DedupeJournal:
    """Windows by key, persisted to ``path`` (None: memory only, for tests)."""

    def __init__(
        self,
        path: str | None,
        *,
        window_records: int,
        idle_expiry_s: float,
        clock: Callable[[], float] = time.time,
        durable: bool = False,
    ) -> None:
        self.path = path
        self.durable = durable  # rings.fsync is not "never": compactions sync their file
        self.dirty = False  # lines written since the last ``sync``
        self.window_records = window_records
        self.idle_expiry_s = idle_expiry_s
        self._clock = clock
        self.windows: dict[str, Window] = {}
        self._fd: int | None = None
        self._lines = 0  # lines in the file since its last rewrite
        self._key_json: dict[str, str] = {}  # key -> its JSON string, for the hot lines
        self._batched: list[str] | None = None  # lines held by ``batched`` for one write
        self._holding = False  # ``hold``: the lines wait for ``flush``, not a block's end
        if path is not None:
            self._load(path)
            horizon = clock() - idle_expiry_s
            for key in [k for k, w in self.windows.items() if w.touched < horizon]:
                del self.windows[key]  # expired while kpd was down: the rewrite drops them
            self.compact()

    # ---- queries -------------------------------------------------------------------------

    def window(self, key: str) -> Window | None:
        return self.windows.get(key)

    def lookup(self, key: str, first: int, count: int) -> list[Piece]:
        """The pieces of ``[first, first + count)`` the window knows, in sequence order: the
        resolved ones with their outcome, the pending ones with None. Sequence numbers the
        window does not hold (forgotten, never taken) are left out."""
        window = self.windows.get(key)
        if window is None:
            return []
        end = first + count
        pieces: list[Piece] = []
        for taken in window.overlapping(first, end):
            lo, hi = max(first, taken.first), min(end, taken.end)
            cursor = lo
            for run_first, run_count, outcome in sorted(taken.runs, key=lambda run: run[0]):
                a, b = max(lo, run_first), min(hi, run_first + run_count)
                if a >= b:
                    continue
                if a > cursor:
                    pieces.append(Piece(cursor, a - cursor, None, 0))
                pieces.append(Piece(a, b - a, outcome, a - run_first))
                cursor = b
            if cursor < hi:
                pieces.append(Piece(cursor, hi - cursor, None, 0))
        return pieces

    # ---- changes (each written to the journal before it returns) ---------------------------

    def touch(self, key: str) -> Window:
        """The key's window, made if new (and journaled, so it is known after a restart);
        its idle clock restarts."""
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = Window()
            self._write({"k": key, "f": 0})
        window.touched = self._clock()
        return window

    def taken(self, key: str, first: int, count: int, outcome: Any = None,
              tag: Any = None) -> None:  # fmt: skip
        """``outcome`` (not None): known already; journaled in the same line, so that no
        crash can leave the range taken without it."""
        # One clock reading serves the idle clock and the line; _bound only when it would
        # drop something (taken_many is the per-frame path of the sessions).
        window = self.windows.get(key)
        if window is None:
            window = self.touch(key)
        now = self._clock()
        window.touched = now
        window.add(TakenRange(first, count, tag=tag))
        tagged = "" if tag is None else f',"g":{_json(tag)}'
        key_json = self._key_json.get(key) or self._key(key)
        if outcome is None:
            line = f'{{"k":{key_json},"t":[{first},{count}]{tagged},"ms":{int(now * 1000)}}}\n'
        else:
            self._apply(window, first, count, outcome)
            line = (
                f'{{"k":{key_json},"t":[{first},{count}]{tagged},'
                f'"o":[{first},{count},{_json(outcome)}],"ms":{int(now * 1000)}}}\n'
            )
        self._emit(line)
        if self._over_window(window):
            self._bound(window)

    def resolved(self, key: str, first: int, count: int, outcome: Any) -> int:
        """An outcome of ``[first, first + count)`` (a run may span several taken ranges; an
        outcome for sequence numbers not pending in the window is ignored). Returns how many
        of them it resolved."""
        window = self.windows.get(key)
        if window is None:
            return 0
        applied = self._apply(window, first, count, outcome)
        if applied:
            now = window.touched = self._clock()
            key_json = self._key_json.get(key) or self._key(key)
            self._emit(
                f'{{"k":{key_json},"o":[{first},{count},{_json(outcome)}],'
                f'"ms":{int(now * 1000)}}}\n'
            )
            if self._over_window(window):
                self._bound(window)
        return applied

    def taken_many(self, key: str, ranges: list[tuple[int, int]]) -> None:
        """``taken(key, first, count)`` (no outcome, no tag) of each ``(first, count)`` in
        ``ranges``, in order: the frames of one sender journaled together, with one clock
        reading and one bound check for all of them (the same state and lines)."""
        window = self.windows.get(key)
        if window is None:
            window = self.touch(key)
        now = self._clock()
        window.touched = now
        ms = int(now * 1000)
        key_json = self._key_json.get(key) or self._key(key)
        add = window.add
        lines = []
        for first, count in ranges:
            add(TakenRange(first, count))
            lines.append(f'{{"k":{key_json},"t":[{first},{count}],"ms":{ms}}}\n')
        self._emit_lines(lines)
        if self._over_window(window):
            self._bound(window)

    def resolved_many(self, key: str, runs: list[_Run]) -> list[_Run]:
        """``resolved`` of each ``(first, count, outcome)`` in ``runs`` (one report's), with
        one clock reading and one bound check for all; returns the runs it did not resolve
        in full (the owner's to take as unknown, as when ``resolved`` returns less)."""
        window = self.windows.get(key)
        if window is None:
            return runs
        apply = self._apply
        lines, short = [], []
        ms = None
        for first, count, outcome in runs:
            applied = apply(window, first, count, outcome)
            if applied:
                if ms is None:
                    now = window.touched = self._clock()
                    ms = int(now * 1000)
                    key_json = self._key_json.get(key) or self._key(key)
                lines.append(f'{{"k":{key_json},"o":[{first},{count},{_json(outcome)}],'
                             f'"ms":{ms}}}\n')  # fmt: skip
            if applied < count:
                short.append((first, count, outcome))
        if lines:
            self._emit_lines(lines)
            if self._over_window(window):
                self._bound(window)
        return short

    def forget_below(self, key: str, seq: int) -> None:
        window = self.windows.get(key)
        if window is None or seq <= window.floor:
            return
        window.floor = seq
        window.drop_below(seq)
        self._write({"k": key, "f": seq})

    def withdraw(self, key: str, first: int, count: int) -> None:
        """The pending ranges within ``[first, first + count)`` are no longer taken."""
        window = self.windows.get(key)
        if window is not None and _withdraw(window, first, first + count):
            self._write({"k": key, "w": [first, count]})

    def drop(self, key: str) -> None:
        if self.windows.pop(key, None) is not None:
            self._key_json.pop(key, None)
            self._write({"k": key, "x": 1})

    def expire(self, live: Callable[[str], bool] = lambda key: False) -> list[str]:
        """Drop windows idle for longer than ``idle_expiry_s`` (unless ``live(key)``)."""
        horizon = self._clock() - self.idle_expiry_s
        gone = [k for k, w in self.windows.items() if w.touched < horizon and not live(k)]
        for key in gone:
            self.drop(key)
        return gone

    def batched(self) -> _Batch:
        """Changes made inside reach the file in one write at the end: for a caller that
        journals several changes before it answers anyone (a frame's runs, a publish's
        entries) — still before the answer, at a syscall per batch instead of per line.
        Nested, the outer one writes."""
        return _Batch(self)

    def hold(self) -> None:
        """Hold the lines written from now on until ``flush``: ``batched`` across callbacks,
        for an owner that writes once per event-loop turn (the Kafka listener: a turn's
        requests and reports, one write before any of their answers). ``batched`` blocks
        inside are nested in it."""
        self._holding = True
        if self._batched is None:
            self._batched = []

    def flush(self) -> None:
        """Write the lines held since ``hold`` (one write) and stop holding."""
        self.write_held()
        self._batched = None
        self._holding = False

    def write_held(self) -> None:
        """Write the lines held so far now, and go on holding: a write-ahead point inside a
        held turn or a ``batched`` block (the Kafka listener's taken lines, written before
        the ring publish that lets a worker produce their batches)."""
        held = self._batched
        if held:
            self._batched = []
            self._append("".join(held), len(held))

    # ---- the file --------------------------------------------------------------------------

    def ranges(self) -> Iterator[tuple[str, TakenRange]]:
        """Every taken range with its key (the owner rebuilding its index of tags)."""
        for key, window in self.windows.items():
            for taken in window.ranges:
                yield key, taken

    def sync_fd(self) -> int | None:
        """A duplicate of the file's descriptor for the caller to ``fdatasync`` (in a thread,
        beside the ring files' syncs: ``ring_sync.RingSync``) and close; None when no line was
        written since the last call. Lines written after this call are the next sync's."""
        if self._fd is None or not self.dirty:
            return None
        self.dirty = False
        return os.dup(self._fd)

    def compact(self) -> None:
        """Rewrite the file with only the live state (temporary file + rename)."""
        if self.path is None:
            return
        tmp = self.path + ".tmp"
        lines = 0
        with open(tmp, "w", encoding="utf-8") as out:
            for key, window in self.windows.items():
                # The floor line first: it keeps a window without ranges (and its idle clock).
                out.write(_line({"k": key, "f": window.floor, "ms": int(window.touched * 1000)}))
                lines += 1
                for taken in window.ranges:
                    line: dict = {"k": key, "t": [taken.first, taken.count]}
                    if taken.tag is not None:
                        line["g"] = taken.tag
                    out.write(_line(line))
                    lines += 1
                    for run in taken.runs:
                        out.write(_line({"k": key, "o": list(run)}))
                        lines += 1
            if self.durable:  # the rename must not reach the disk before the lines
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._lines = lines

    def close(self) -> None:
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None

    def _live_lines(self) -> int:
        return sum(1 + w.lines for w in self.windows.values())

    def _key(self, key: str) -> str:
        text = self._key_json.get(key)
        if text is None:
            text = self._key_json[key] = json.dumps(key)
        return text

    def _ms(self) -> int:
        return int(self._clock() * 1000)

    def _write(self, record: dict) -> None:
        record["ms"] = self._ms()
        self._emit(_line(record))

    def _emit_lines(self, lines: list[str]) -> None:
        if self.path is None:
            return
        if self._batched is not None:
            self._batched.extend(lines)
        else:
            self._append("".join(lines), len(lines))

    def _emit(self, line: str) -> None:
        if self.path is None:
            return
        if self._batched is not None:
            self._batched.append(line)
        else:
            self._append(line, 1)

    def _append(self, text: str, lines: int) -> None:
        os.write(self._fd, text.encode())
        self.dirty = True
        before, self._lines = self._lines, self._lines + lines
        # Checked once per _COMPACT_MIN_LINES lines written: the live count is per window.
        if before // _COMPACT_MIN_LINES != self._lines // _COMPACT_MIN_LINES and (
            self._lines > COMPACT_FACTOR * self._live_lines()
        ):
            self.compact()

    def _load(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as source:
                text = source.read()
        except FileNotFoundError:
            return
        for raw in text.split("\n"):
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # the torn last line of a kill -9 (or an empty one)
            self._replay(record)

    def _replay(self, record: dict) -> None:
        key = record.get("k")
        if not isinstance(key, str):
            return
        if "x" in record:
            self.windows.pop(key, None)
            return
        window = self.windows.setdefault(key, Window())
        window.touched = max(window.touched, record.get("ms", 0) / 1000)
        if "t" in record:
            first, count = record["t"]
            window.add(TakenRange(first, count, tag=record.get("g")))
        if "o" in record:  # alone, or with its "t" in the same line
            first, count, outcome = record["o"]
            self._apply(window, first, count, outcome)
        elif "f" in record:
            window.floor = max(window.floor, record["f"])
            window.drop_below(window.floor)
        elif "w" in record:
            first, count = record["w"]
            _withdraw(window, first, first + count)

    @staticmethod
    def _apply(window: Window, first: int, count: int, outcome: Any) -> int:
        end, applied = first + count, 0
        # The common case first: the run lies within one taken range that has no outcome
        # yet (a worker reports a ring entry's records together).
        index = bisect_right(window.firsts, first) - 1
        if index >= 0:
            taken = window.ranges[index]
            if end <= taken.first + taken.count and not taken.runs:
                taken.runs.append((first, count, outcome))
                window.lines += 1
                taken.resolved += count
                window.pending -= count
                return count
        for taken in window.overlapping(first, end):
            lo, hi = max(first, taken.first), min(end, taken.end)
            if any(lo < r[0] + r[1] and r[0] < hi for r in taken.runs):
                continue  # already resolved: an outcome is given once
            taken.runs.append((lo, hi - lo, outcome))
            window.lines += 1
            taken.resolved += hi - lo
            window.pending -= hi - lo
            applied += hi - lo
        return applied

    def _over_window(self, window: Window) -> bool:
        """Whether ``_bound`` would drop anything (its loop's first test, without a call)."""
        ranges = window.ranges
        return (
            len(ranges) > 1
            and ranges[-1].first + ranges[-1].count - ranges[0].first > self.window_records
            and ranges[0].resolved == ranges[0].count
        )

    def _bound(self, window: Window) -> None:
        """Drop the oldest fully resolved ranges beyond ``window_records`` of history."""
        ranges, n = window.ranges, 0
        newest = ranges[-1].end if ranges else 0
        while (
            n < len(ranges) - 1
            and newest - ranges[n].first > self.window_records
            and ranges[n].resolved == ranges[n].count
        ):
            n += 1
        if n:
            window.drop_front(n)


class _Batch:
    """``DedupeJournal.batched``: holds the lines written inside for one write at the end
    (a class, not a generator context manager: it runs once per frame and per report)."""

    __slots__ = ("_journal", "_outer")

    def __init__(self, journal: DedupeJournal) -> None:
        self._journal = journal
        self._outer = journal._batched is None  # nested: the outer one writes

    def __enter__(self) -> None:
        if self._outer:
            self._journal._batched = []

    def __exit__(self, *exc_info: object) -> None:
        if self._outer and not self._journal._holding:  # else ``flush`` writes them
            journal = self._journal
            batch, journal._batched = journal._batched, None
            if batch:
                journal._append("".join(batch), len(batch))


def _withdraw(window: Window, first: int, end: int) -> bool:
    """Remove the window's pending ranges lying within ``[first, end)``; whether any."""
    gone = [
        i for i, taken in enumerate(window.ranges)
        if first <= taken.first and taken.end <= end and not taken.resolved
    ]  # fmt: skip
    for index in reversed(gone):
        window.remove(index)
    return bool(gone)


# One encoder: json.dumps with separators builds a new JSONEncoder per call.
_json_encode = json.JSONEncoder(separators=(",", ":")).encode
_INTS = frozenset({int})


def _json(value: Any) -> str:
    """``value`` as compact JSON. The values of the hot lines are written directly: the same
    text as the encoder gives, without the encoder's two Python calls and its per-call setup —
    an int (a Kafka batch's ring sequence tag), a list of ints (its outcome), and a list of
    ints closed by an empty string (a kpd session's outcome, in every line a report writes)."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is list and value:
        if value[-1] == "" and len(value) > 1:
            head = value[:-1]
            if _INTS.issuperset(map(type, head)):
                return "[" + ",".join(map(str, head)) + ',""]'
        elif _INTS.issuperset(map(type, value)):
            return "[" + ",".join(map(str, value)) + "]"
    return _json_encode(value)


def _line(record: dict) -> str:
    return _json(record) + "\n"
