"""The sync Producer's write side: frames taken from the session and not yet written.

Owns ``Outbound``: the current connection's socket as far as writing goes, the frames taken
from the session whose bytes are not all on it yet (``pending``, oldest first), and when the
last write ended. Two threads write through it, never at once and always in the session's
order (frames must reach kpd in the order they were sealed: protocol §6):

* the app's thread, in send(), when the connection is idle — nothing pending, the I/O thread
  asleep — writes the frames it just sealed itself, under the Producer's lock (Nagle without
  the delay, without waking anyone: one non-blocking ``sendmsg``, no thread hand-over);
* the I/O thread writes whatever is pending, outside the lock (so send() goes on meanwhile):
  what a caller's write left over (EAGAIN, a partial write), and what coalesced while a write
  was in flight.

A caller writes only while ``pending`` is empty, and the I/O thread writes only what is in
``pending`` (which stays non-empty until its write returned and was consumed under the
lock), so the two never overlap. Everything here is guarded by the Producer's lock, except
``write()`` by the I/O thread, which reads the head of ``pending`` that nobody else touches.

Must not import threads, asyncio or kpd's engines.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from kpd.common import Outgoing

__all__ = ["COALESCE_AFTER_WRITE_S", "Outbound"]

_MAX_IOV = 512  # buffers per sendmsg(); Linux allows IOV_MAX = 1024

# A caller writes its own frame only when the last write ended at least this long ago. Records
# closer together than that (a burst, a tight loop) coalesce through the I/O thread instead:
# a write per record would cost a syscall each (~3-8 us with the seal), while the I/O thread,
# once woken (~30-60 us), writes every frame that gathered meanwhile in one syscall.
COALESCE_AFTER_WRITE_S = 50e-6


class Outbound:
    """See the module docstring. ``sock`` is None while there is no connection to write on."""

    def __init__(self) -> None:
        self.sock = None  # the connection's socket (non-blocking), None between connections
        self.pending: deque[list] = deque()  # [memoryview left to write, end_seq, buffered]
        self.wrote_at = float("-inf")  # time.monotonic() when the last write returned

    def attach(self, sock) -> None:
        """A connection begins: what was pending on the last one is the session's to resend
        (its resend window keeps every frame until it is known written)."""
        self.sock = sock
        self.pending.clear()

    def detach(self) -> None:
        """The connection is over: nobody writes until the next ``attach``."""
        self.sock = None
        self.pending.clear()

    def queue(self, frames: list[Outgoing]) -> None:
        pending = self.pending
        for out in frames:
            pending.append([memoryview(out.data), out.end_seq, out.buffered])

    def write(self) -> int:
        """Write as much of ``pending`` as the socket takes, in one syscall; returns the bytes
        written (0 when the socket is full). Raises OSError when the connection broke."""
        try:
            return self.sock.sendmsg([entry[0] for entry in islice(self.pending, _MAX_IOV)])
        except (BlockingIOError, InterruptedError):
            return 0

    def consume(self, written: int, now: float) -> tuple[int, int]:
        """Drop the ``written`` bytes from ``pending``; returns (end_seq of the last PRODUCE
        frame now completely written or -1, their buffered bytes) for ``session.sent``."""
        pending = self.pending
        self.wrote_at = now
        sent_end, sent_bytes = -1, 0
        while pending and written >= len(pending[0][0]):
            entry = pending.popleft()
            written -= len(entry[0])
            sent_end, sent_bytes = max(sent_end, entry[1]), sent_bytes + entry[2]
        if written:
            pending[0][0] = pending[0][0][written:]
        return sent_end, sent_bytes
