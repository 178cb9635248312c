"""The client's resend window: PRODUCE frames that must go out again on the next connection.

Owns what survives a reconnect of the frames themselves (the records' futures are
``inflight``'s): the frames sealed but not yet written (``unwritten``, oldest first: a suffix
of the sealed frames, since frames are written in order), the written frames that may have to
go out again (``recent``), where a draining kpd's refusal began (``resend_from``), and the
renumbering of what is resent. Futures, flush() and InFlight keep one numbering for the
producer's life; on the wire a record is ``seq - origin``.

* Protocol version 1: sequence numbers restart at 0 on every connection (``renumber``); of
  the written frames only the newest are kept (``WINDOW_BYTES``), in case a draining kpd
  refuses them.
* Version 2 (``keep_unreported``): the session's numbering continues across connections and
  every written frame is kept until all its records have a report; after a reconnect kpd
  knew the session, every one of them is sent again (``requeue_unreported``): kpd answers
  what it took with its outcome and takes the rest.

Pure: no I/O, no clock. Not thread-safe: the session's adapter serialises.
Must not import sockets, threads or asyncio.
"""

from __future__ import annotations

from collections import deque

from kpd.common import Outgoing
from kpd.protocol import Persistence, ReportRun
from kpd.protocol.produce import with_base_seq

__all__ = ["WINDOW_BYTES", "ResendWindow"]

# Written frames kept (their bytes) in case kpd answers them SHUTTING_DOWN while draining for a
# restart: those are sent again on the next connection instead of failing. Only the newest
# frames matter (kpd refuses what arrives after it began to drain), so the window is bounded.
WINDOW_BYTES = 16 * 1024 * 1024


class ResendWindow:
    def __init__(self) -> None:
        self.unwritten: deque[Outgoing] = deque()  # sealed, not yet confirmed written
        # Written PRODUCE frames, newest last, while they may still be refused by a draining
        # kpd (see WINDOW_BYTES); trimmed from the left.
        self._recent: deque[Outgoing] = deque()
        self._recent_bytes = 0
        # Set once kpd answered a whole frame SHUTTING_DOWN / NOT_PERSISTED: it is draining for
        # a restart and accepts nothing more on this connection. Frames from resend_from on
        # (all written after kpd began to drain, hence refused or never read) are sent again
        # on the next connection; nothing more is written on this one.
        self.draining = False
        self.resend_from: int | None = None
        # The producer-wide sequence number of this connection's record 0; 0 until the first
        # reconnect.
        self.origin = 0
        self.keep_unreported = False  # protocol v2: keep written frames until reported

    def sealed(self, out: Outgoing) -> None:
        self.unwritten.append(out)

    def written(self, end_seq: int) -> None:
        """Every frame up to ``end_seq`` was written: keep the newest while kpd may refuse them."""
        unwritten, recent = self.unwritten, self._recent
        while unwritten and unwritten[0].end_seq <= end_seq:
            out = unwritten.popleft()
            recent.append(out)
            self._recent_bytes += len(out.data)
        if self.keep_unreported:
            while recent and recent[0].frame.remaining <= 0:
                self._recent_bytes -= len(recent.popleft().data)
            return
        keep_from = self.resend_from
        while recent and (keep_from is None or recent[0].frame.base_seq < keep_from):
            if recent[0].frame.remaining and self._recent_bytes <= WINDOW_BYTES:
                break
            self._recent_bytes -= len(recent.popleft().data)

    def hold(self, run: ReportRun) -> bool:
        """A draining kpd refused a frame (protocol section 9: a whole frame, partition -1,
        NOT_PERSISTED): stop writing here, and keep the frame for the next connection if its
        bytes are still at hand (True: the run settles nothing)."""
        if run.partition != -1 or run.persistence is not Persistence.NOT_PERSISTED:
            return False  # a worker's SHUTTING_DOWN: records it had taken
        self.draining = True
        for out in reversed(self._recent):  # the refused frames are the newest written
            frame = out.frame
            if frame.base_seq < run.first_seq:
                break
            if frame.base_seq == run.first_seq:
                if frame.count != run.count or frame.remaining != frame.count:
                    return False
                if self.resend_from is None or run.first_seq < self.resend_from:
                    self.resend_from = run.first_seq
                return True
        return False

    def connection_ended(self) -> tuple[int | None, int]:
        """The connection is over: frames a draining kpd refused join the unwritten ones.
        Returns (the sequence number they start at or None, their bytes)."""
        self.draining = False
        resend_from, again_bytes = self.resend_from, 0
        if resend_from is not None:
            # Everything written from there on reached a kpd that no longer accepted records.
            again = [out for out in self._recent if out.frame.base_seq >= resend_from]
            self.unwritten.extendleft(reversed(again))
            again_bytes = sum(len(out.data) for out in again)
            self.resend_from = None
        self._recent.clear()
        self._recent_bytes = 0
        return resend_from, again_bytes

    def requeue_unreported(self) -> int:
        """Version 2, kpd knew the session: every written frame with a record still without
        a report goes out again, before the unwritten ones, in the order sealed; numbering
        unchanged. Returns their bytes."""
        self.draining, self.resend_from = False, None
        again = [out for out in self._recent if out.frame.remaining > 0]
        self.unwritten.extendleft(reversed(again))
        self._recent.clear()
        self._recent_bytes = 0
        return sum(len(out.data) for out in again)

    def renumber(self, next_seq: int, start: int = 0) -> deque[Outgoing]:
        """A new connection: the unwritten frames renumbered from ``start`` (0 for version 1,
        WELCOME's resume_seq for a version 2 session kpd did not know) in the order they were
        sealed (so per partition, in send() order); returns them, to be written first."""
        unwritten = self.unwritten
        self.origin = (unwritten[0].frame.base_seq if unwritten else next_seq) - start
        origin = self.origin
        self.unwritten = deque(
            out._replace(data=with_base_seq(out.data, out.frame.base_seq - origin))
            for out in unwritten
        )
        return self.unwritten

    def too_large(self, max_frame: int) -> bool:
        return any(len(out.data) > max_frame for out in self.unwritten)

    def clear(self) -> None:
        """The unwritten frames will never be written (their records failed)."""
        self.unwritten.clear()
