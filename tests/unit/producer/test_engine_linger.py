"""Linger counts from ingest's acceptance of a record, not from its append (issue 18): a
record that waited in a ring does not linger twice, and no batch lingers less than zero or
more than linger.ms."""

from __future__ import annotations

import asyncio
import time

import pytest

from daemon.config import producer_settings
from daemon.producer.engine import ProducerEngine

LINGER_S = 0.05


def _engine_appending(waited_s: float) -> float:
    """Append one record accepted ``waited_s`` ago; the seconds until its batch is due."""

    async def scenario() -> float:
        settings = producer_settings(bootstrap_servers="127.0.0.1:9",
                                     linger_ms=int(LINGER_S * 1000))  # fmt: skip
        engine = ProducerEngine(settings, lambda outcome: None)
        engine._loop = asyncio.get_running_loop()  # what start() sets; no broker needed
        queue = engine.queue("t", 0)
        engine.accepted_at(int((time.time() - waited_s) * 1000))
        assert engine.append(queue, 0, b"k", b"v", (), 1)
        return engine._accumulator.next_ready_in(engine._loop.time())

    return asyncio.run(scenario())


def test_a_record_that_waited_in_a_ring_lingers_only_the_rest():
    assert _engine_appending(0.03) == pytest.approx(LINGER_S - 0.03, abs=0.005)


def test_a_record_that_waited_longer_than_linger_is_due_at_once_not_before():
    assert _engine_appending(10.0) == 0.0


def test_a_record_stamped_in_the_future_lingers_the_whole_linger():
    # A wall clock stepped back between acceptance and append: never a longer linger.
    assert _engine_appending(-5.0) == pytest.approx(LINGER_S, abs=0.005)


def _linger_deadline_in(retry_in_s: float | None) -> tuple[float | None, float | None]:
    """(seconds until linger_deadline() before any append, after one append whose batch
    retries ``retry_in_s`` from now when set)."""

    async def scenario():
        settings = producer_settings(bootstrap_servers="127.0.0.1:9",
                                     linger_ms=int(LINGER_S * 1000))  # fmt: skip
        engine = ProducerEngine(settings, lambda outcome: None)
        loop = engine._loop = asyncio.get_running_loop()
        empty = engine.linger_deadline()
        queue = engine.queue("t", 0)
        engine.accepted_at(int(time.time() * 1000))
        assert engine.append(queue, 0, b"k", b"v", (), 1)
        if retry_in_s is not None:
            queue.batches[0].retry_at = loop.time() + retry_in_s
        deadline = engine.linger_deadline()
        return empty, None if deadline is None else deadline - loop.time()

    return asyncio.run(scenario())


def test_the_worker_may_defer_its_ring_until_the_lingering_batch_is_due():
    empty, deadline_in = _linger_deadline_in(None)
    assert empty is None  # nothing lingers: read each entry as it comes
    assert deadline_in == pytest.approx(LINGER_S, abs=0.005)


def test_a_head_in_retry_backoff_defers_the_ring_no_longer_than_linger():
    # A record accepted now is due linger.ms from now, before a 10 s retry backoff ends.
    _, deadline_in = _linger_deadline_in(10.0)
    assert deadline_in == pytest.approx(LINGER_S, abs=0.005)
