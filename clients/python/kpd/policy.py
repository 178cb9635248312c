"""What both producers decide the same way, as steps their shells call (sans-IO).

Owns the client's two waiting policies, so the sync and asyncio shells only do the waiting:

* ``reconnect_step`` — while kpd is away, one decision: stop (the producer ended, or it is
  closing with nothing left to send), fail the queued records (kpd has been unreachable for
  max.block.ms), wait (until the next attempt is due, or the records' deadline, whichever is
  first), or attempt a handshake now. The shell calls it again after each wait or failure.
* ``MetadataWait`` — send()/send_bulk() of keyed records whose topic has no partition count
  yet: wait for kpd's METADATA answer up to max.block.ms, as Java's send() waits for
  metadata, then queue them — so they leave partitioned, never with -1.

Pure: time is passed in. Must not import sockets, threads or asyncio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from kpd.common import Completions
from kpd.errors import CONNECTION_LOST, DeliveryError
from kpd.protocol import Persistence
from kpd.reconnect import Reconnector
from kpd.session import ProducerSession
from kpd.topics import AwaitingMetadata

__all__ = [
    "ATTEMPT",
    "FAIL_QUEUED",
    "STOP",
    "WAIT",
    "MetadataWait",
    "ReconnectStep",
    "reconnect_step",
    "unreachable_error",
]

STOP = "stop"  # nothing left to do: the shell's reconnect loop ends
FAIL_QUEUED = "fail queued"  # the queued records failed (``done``): decide again
WAIT = "wait"  # sleep ``wait`` seconds (or until close()/flush() interrupts), then decide again
ATTEMPT = "attempt"  # try a handshake now


class ReconnectStep(NamedTuple):
    action: str
    wait: float = 0.0
    done: Completions | None = None  # records this step settled: the shell publishes them


def reconnect_step(
    session: ProducerSession, link: Reconnector, path: str, now: float
) -> ReconnectStep:
    """The next thing a disconnected producer does (see the module docstring)."""
    if session.ended or (session.closing and not session.pending):
        done = None if session.ended else session.connection_lost("closed while disconnected")
        return ReconnectStep(STOP, 0.0, done)
    if session.pending and link.expired(now):
        message = link.outage_message(path, now)
        return ReconnectStep(FAIL_QUEUED, 0.0, session.fail_queued(CONNECTION_LOST, message))
    wait = link.due_in(now)
    if wait <= 0:
        return ReconnectStep(ATTEMPT)
    if session.pending:
        wait = min(wait, max(link.expires_at() - now, 0))
    return ReconnectStep(WAIT, wait)


def unreachable_error(link: Reconnector, path: str, now: float) -> DeliveryError:
    """A record refused because kpd has been unreachable for max.block.ms."""
    return DeliveryError(
        CONNECTION_LOST, 0, Persistence.NOT_PERSISTED, link.outage_message(path, now)
    )


class MetadataWait:
    """Queue keyed records once their topic's partition count is known (or refuse them).

    ``attempt()`` queues them and returns their future (it raises AwaitingMetadata while the
    count is unknown, DeliveryError if they are refused); ``refuse(error)`` makes the failed
    future. The shell waits until ``ready()`` (or its producer closed, or ``remaining(now)``
    ran out: then ``timed_out()``), and calls ``retry(closed)`` until it returns a future.
    """

    def __init__(
        self,
        session: ProducerSession,
        topic: str,
        attempt: Callable[[], object],
        refuse: Callable[[DeliveryError], object],
        max_block_s: float,
        now: float,
    ) -> None:
        self._session = session
        self._topic = topic
        self._attempt = attempt
        self._refuse = refuse
        self._max_block_s = max_block_s
        self._deadline = now + max_block_s

    def ready(self) -> bool:
        return self._session.placement_ready(self._topic)

    def remaining(self, now: float) -> float:
        return max(self._deadline - now, 0.0)

    def timed_out(self):
        """max.block.ms passed without a count: the records' failed future."""
        error = self._session.metadata_timed_out(self._topic, self._max_block_s * 1000)
        return self._refuse(error)

    def retry(self, closed: bool):
        """Try to queue the records again: their future, or None to wait on."""
        try:
            return self._attempt()
        except DeliveryError as exc:
            return self._refuse(exc)
        except AwaitingMetadata:
            if closed:
                return self._refuse(
                    DeliveryError(
                        CONNECTION_LOST,
                        0,
                        Persistence.NOT_PERSISTED,
                        "the producer closed while the record waited for its topic's "
                        "partition count",
                    )
                )
            return None
