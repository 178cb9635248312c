"""What send() returns: ``RecordFuture``, a light future that reads its frame's outcomes.

Owns the future protocol of the client. A RecordFuture is two slots (its frame and its index
in the frame), so send() pays ~0.1 us for it instead of a ``concurrent.futures.Future`` (a
Condition each, ~0.6 us, plus ~0.7 us to resolve it under that Condition). It has the part of
the ``concurrent.futures.Future`` API a record needs — ``result(timeout)``,
``exception(timeout)``, ``done()``, ``cancelled()``, ``cancel()``, ``add_done_callback(fn)`` —
and is awaitable when it came from an AsyncProducer. A record cannot be cancelled once
queued (Kafka's producer has no such thing either): ``cancel()`` returns False.

Waiting goes through the frame's ``Hub``, the adapter's single waiting mechanism for the whole
connection (one Condition for the sync Producer; the event loop for the AsyncProducer), not
one primitive per record.

Must not import sockets or threads, nor kpd's engines (producer, net, ring, process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from kpd.errors import DeliveryError

__all__ = ["Hub", "RecordFuture", "refused", "run_callback"]

_log = logging.getLogger("kpd.client")


class Hub(Protocol):
    """How the futures of one connection wait; provided by the adapter (sync, aio)."""

    lock: object  # a context manager guarding frame callbacks (and the session)

    def wait(self, ready: Callable[[], bool], timeout: float | None) -> None:
        """Return once ``ready()`` holds or ``timeout`` passed (the caller re-checks)."""

    def waiter(self, frame):
        """An awaitable that completes when ``frame`` settles more records."""


class _Refused:
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


class RecordFuture:
    """The future of one record: RecordMetadata, or DeliveryError as its exception."""

    __slots__ = ("_frame", "_index")

    def __init__(self, frame, index: int) -> None:
        self._frame = frame
        self._index = index

    def done(self) -> bool:
        return self._frame.settled(self._index)

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        """Always False: a queued record cannot be taken back."""
        return False

    def result(self, timeout: float | None = None):
        """The record's RecordMetadata; raises its DeliveryError, or TimeoutError."""
        outcome = self._outcome(timeout)
        if isinstance(outcome, DeliveryError):
            raise outcome
        return outcome

    def exception(self, timeout: float | None = None) -> DeliveryError | None:
        """The record's DeliveryError, None if it was delivered; TimeoutError if pending."""
        self._wait(timeout)
        return self._frame.error(self._index)

    def add_done_callback(self, fn: Callable[[RecordFuture], object]) -> None:
        """Call ``fn(future)`` once the record has its outcome: now if it has (on this
        thread), else on the client's I/O thread (sync) or the event loop (asyncio)."""
        frame, index = self._frame, self._index
        if not frame.settled(index):
            with frame.hub.lock:
                if not frame.settled(index):
                    frame.add_callback(index, (fn, self))
                    return
        run_callback(fn, self)

    def _outcome(self, timeout: float | None):
        self._wait(timeout)
        return self._frame.outcome(self._index)

    def _wait(self, timeout: float | None) -> None:
        frame, index = self._frame, self._index
        if not frame.settled(index):
            frame.hub.wait(lambda: frame.settled(index), timeout)
            if not frame.settled(index):
                raise TimeoutError(f"record still without a result after {timeout} s")

    def __await__(self):
        frame, index = self._frame, self._index
        while not frame.settled(index):
            yield from frame.hub.waiter(frame).__await__()
        return self.result()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<RecordFuture {state}>"


def refused(error: DeliveryError) -> RecordFuture:
    """A future that failed before its record was queued."""
    return RecordFuture(_Refused(error), 0)


def run_callback(fn: Callable, future: RecordFuture) -> None:
    # Like concurrent.futures: a failing callback is logged, it never breaks the client.
    try:
        fn(future)
    except Exception:
        _log.exception("exception calling the done-callback of %r", future)
