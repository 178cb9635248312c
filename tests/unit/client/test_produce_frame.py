"""A client frame's outcome store (``kpd.batch.ProduceFrame``): each record keeps the
outcome of the FIRST report run that covered it, whatever order runs come in and however they
overlap (protocol section 7), and finding it takes O(1) per record.

The expected outcome of every record comes from a reference model written here (scan the runs
in arrival order, first cover wins), never from the code under test.
"""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from kpd.common import Completions
from kpd.errors import DeliveryError, RecordMetadata
from kpd.produce_frame import PENDING, REPORTED, ProduceFrame
from kpd.protocol import KpdErrorCode, Persistence, ReportRun, Status

BASE_SEQ = 1000


class _Hub:
    lock = threading.Lock()


def _sealed(count: int) -> ProduceFrame:
    frame = ProduceFrame("t", 2, 0, 0.0, _Hub())
    frame.keys.extend([b"k"] * count)
    frame.values.extend([b"v"] * count)
    frame.seal(b"\x00\x01t", BASE_SEQ)
    return frame


def _run(number: int, lo: int, hi: int, failed: bool) -> ReportRun:
    """Run ``number`` covering frame records lo..hi-1; its offsets/message tell it apart."""
    if failed:
        return ReportRun(
            BASE_SEQ + lo,
            hi - lo,
            Status.FAILED,
            error=KpdErrorCode.DELIVERY_TIMEOUT,
            persistence=Persistence.POSSIBLY_PERSISTED,
            message=f"run {number}",
        )
    return ReportRun(BASE_SEQ + lo, hi - lo, Status.DELIVERED, 2, 10_000 * number, 7)


def _expected(runs: list[tuple[int, int, bool]], count: int) -> list:
    """The reference model: per record, the first run (in arrival order) that covers it."""
    expected: list = [None] * count
    for number, (lo, hi, failed) in enumerate(runs, 1):
        for index in range(lo, hi):
            if expected[index] is None:
                expected[index] = (
                    ("failed", f"run {number}")
                    if failed
                    else RecordMetadata("t", 2, 10_000 * number + index - lo, 7)
                )
    return expected


def _observed(outcome) -> object:
    if outcome is PENDING:
        return None
    if isinstance(outcome, DeliveryError):
        return ("failed", outcome.message)
    return outcome


@st.composite
def _runs(draw):
    count = draw(st.integers(1, 40))
    spans = st.tuples(st.integers(0, count - 1), st.integers(1, count), st.booleans())
    runs = [
        (lo, min(lo + width, count), failed)
        for lo, width, failed in draw(st.lists(spans, min_size=1, max_size=12))
    ]
    return count, runs


@settings(max_examples=300, deadline=None)
@given(_runs())
def test_each_record_keeps_the_first_run_that_covered_it(case):
    count, runs = case
    frame = _sealed(count)
    settled_now = 0
    for number, (lo, hi, failed) in enumerate(runs, 1):
        settled_now += frame.settle(lo, hi, REPORTED, _run(number, lo, hi, failed), Completions())
    expected = _expected(runs, count)
    assert [_observed(frame.outcome(i)) for i in range(count)] == expected
    assert [frame.settled(i) for i in range(count)] == [e is not None for e in expected]
    assert [frame.error(i) is not None for i in range(count) if expected[i] is not None] == [
        not isinstance(e, RecordMetadata) for e in expected if e is not None
    ]
    assert settled_now == sum(e is not None for e in expected)
    assert frame.remaining == count - settled_now
    for lo in range(count):
        assert frame.range_settled(lo, count) == all(e is not None for e in expected[lo:])


def test_a_frame_split_into_one_run_per_record_in_reverse_order():
    # The shape that made lookups O(records x runs): ingest's slow path reported ~1 run per
    # record. Every record still finds its own run.
    count = 512
    frame = _sealed(count)
    runs = [(i, i + 1, i % 7 == 0) for i in reversed(range(count))]
    for number, (lo, hi, failed) in enumerate(runs, 1):
        frame.settle(lo, hi, REPORTED, _run(number, lo, hi, failed), Completions())
    assert [_observed(frame.outcome(i)) for i in range(count)] == _expected(runs, count)
    assert frame.remaining == 0


def test_watchers_fire_once_their_whole_range_has_settled():
    frame = _sealed(10)
    fired = []
    frame.watch(2, 6, fired.append, "a")
    frame.watch(0, 10, fired.append, "b")
    done = Completions()
    frame.settle(4, 10, REPORTED, _run(1, 4, 10, False), done)
    assert done.callbacks == []
    frame.settle(0, 3, REPORTED, _run(2, 0, 3, True), done)
    assert done.callbacks == []  # record 3 is still pending
    frame.settle(3, 4, REPORTED, _run(3, 3, 4, False), done)
    assert list(done.pairs()) == [(fired.append, "a"), (fired.append, "b")]
    assert frame.watchers == []
