"""What send() returns: ``RecordFuture``, a light future that reads its frame's outcomes.

Owns the future protocol of the client. A RecordFuture is two slots (its frame and its index
in the frame), so send() pays ~0.1 us for it instead of a ``concurrent.futures.Future`` (a
Condition each, ~0.6 us, plus ~0.7 us to resolve it under that Condition). It has the part of
the ``concurrent.futures.Future`` API a record needs — ``result(timeout)``,
``exception(timeout)``, ``done()``, ``cancelled()``, ``cancel()``, ``add_done_callback(fn)`` —
and is awaitable when it came from an AsyncProducer. A record cannot be cancelled once
queued (Kafka's producer has no such thing either): ``cancel()`` returns False.

Two twins of the future, chosen once with the accelerator (``kpd.accel``): the C type
``kpd._accel.RecordFuture`` when it is built, else ``RecordFuturePython`` below. Neither is
tracked by the cycle collector (the C type has no ``Py_TPFLAGS_HAVE_GC``): an app that keeps
a million futures does not make every collection walk them, nor does each send() count
towards the next one. Both are only the (frame, index) pair: what each method does is written
once, here, in ``OutcomeSource`` — the base of every object a future reads (a
``ProduceFrame``, or a refusal) — and both twins call it the same way, so they cannot
disagree. (A future with a done-callback pending is part of a reference cycle the collector
cannot see — frame -> callbacks -> future -> frame — until its record settles and the frame
drops the callback; a producer dropped without close() with such records pending keeps them.)

Waiting goes through the frame's ``Hub``, the adapter's single waiting mechanism for the whole
connection (one Condition for the sync Producer; the event loop for the AsyncProducer), not
one primitive per record.

Must not import sockets or threads, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from kpd.accel import native
from kpd.errors import DeliveryError

__all__ = [
    "Hub",
    "OutcomeSource",
    "RecordFuture",
    "RecordFuturePython",
    "refused",
    "run_callback",
]

_log = logging.getLogger("kpd.client")


class Hub(Protocol):
    """How the futures of one connection wait; provided by the adapter (sync, aio)."""

    lock: object  # a context manager guarding frame callbacks (and the session)

    def wait(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """Return once ``ready()`` holds or ``timeout`` passed (the caller re-checks)."""

    def waiter(self, frame):
        """An awaitable that completes when ``frame`` settles more records."""


class OutcomeSource:
    """What a record future reads: per record ``index``, ``settled``, ``outcome`` (its
    RecordMetadata or DeliveryError) and ``error``; ``hub`` and ``add_callback`` for waiting.
    ``all_delivered``: True once every record has its outcome and none failed (then done()
    and exception() answer without a call: most apps ask once their records are through).

    The ``future_*`` methods are the future protocol itself, per (source, index): each
    method of both RecordFuture twins is one call of them, after that shortcut.
    """

    __slots__ = ()
    all_delivered = False  # a class default; ProduceFrame keeps its own

    def settled(self, index: int) -> bool:
        raise NotImplementedError

    def outcome(self, index: int):
        raise NotImplementedError

    def error(self, index: int) -> DeliveryError | None:
        raise NotImplementedError

    def future_result(self, index: int, timeout: float | None):
        """RecordFuture.result: RecordMetadata; raises the DeliveryError, or TimeoutError."""
        self._future_wait(index, timeout)
        outcome = self.outcome(index)
        if isinstance(outcome, DeliveryError):
            raise outcome
        return outcome

    def future_exception(self, index: int, timeout: float | None) -> DeliveryError | None:
        """RecordFuture.exception: the DeliveryError, None if delivered; TimeoutError."""
        self._future_wait(index, timeout)
        return self.error(index)

    def future_add_done_callback(self, index: int, fn: Callable, future) -> None:
        """RecordFuture.add_done_callback: ``fn(future)`` now if settled (on this thread),
        else on the client's I/O thread (sync) or the event loop (asyncio)."""
        if not self.settled(index):
            with self.hub.lock:
                if not self.settled(index):
                    self.add_callback(index, fn, future)
                    return
        run_callback(fn, future)

    def future_await(self, index: int):
        """RecordFuture.__await__: a generator that ends with the record's result."""
        while not self.settled(index):
            yield from self.hub.waiter(self).__await__()
        return self.future_result(index, None)

    def _future_wait(self, index: int, timeout: float | None) -> None:
        if not self.settled(index):
            self.hub.wait(lambda: self.settled(index), timeout)
            if not self.settled(index):
                raise TimeoutError(f"record still without a result after {timeout} s")


class _Refused(OutcomeSource):
    """The frame of a future that failed in send() itself: settled from the start."""

    __slots__ = ("failure",)

    def __init__(self, failure: DeliveryError) -> None:
        self.failure = failure

    def outcome(self, index: int) -> DeliveryError:
        return self.failure

    def error(self, index: int) -> DeliveryError:
        return self.failure

    def settled(self, index: int) -> bool:
        return True


class RecordFuturePython:
    """The future of one record: RecordMetadata, or DeliveryError as its exception. The
    pure-Python twin of ``kpd._accel.RecordFuture`` (see the module docstring)."""

    __slots__ = ("_frame", "_index")

    def __init__(self, frame: OutcomeSource, index: int) -> None:
        self._frame = frame
        self._index = index

    def done(self) -> bool:
        frame = self._frame
        return frame.all_delivered or frame.settled(self._index)

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        """Always False: a queued record cannot be taken back."""
        return False

    def result(self, timeout: float | None = None):
        """The record's RecordMetadata; raises its DeliveryError, or TimeoutError."""
        return self._frame.future_result(self._index, timeout)

    def exception(self, timeout: float | None = None) -> DeliveryError | None:
        """The record's DeliveryError, None if it was delivered; TimeoutError if pending."""
        frame = self._frame
        if frame.all_delivered:
            return None
        return frame.future_exception(self._index, timeout)

    def add_done_callback(self, fn: Callable[[RecordFuturePython], object]) -> None:
        """Call ``fn(future)`` once the record has its outcome: now if it has (on this
        thread), else on the client's I/O thread (sync) or the event loop (asyncio)."""
        self._frame.future_add_done_callback(self._index, fn, self)

    def __await__(self):
        return self._frame.future_await(self._index)

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<RecordFuture {state}>"


RecordFuture = native.RecordFuture if native is not None else RecordFuturePython


def refused(error: DeliveryError) -> RecordFuture:
    """A future that failed before its record was queued."""
    return RecordFuture(_Refused(error), 0)


def run_callback(fn: Callable, future) -> None:
    # Like concurrent.futures: a failing callback is logged, it never breaks the client.
    try:
        fn(future)
    except Exception:
        _log.exception("exception calling the done-callback of %r", future)
