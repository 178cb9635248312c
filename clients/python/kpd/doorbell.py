"""The sync Producer's doorbell: how send() wakes an I/O thread sleeping in select().

Owns one file descriptor the I/O thread's selector watches: an eventfd on Linux (one syscall
to ring, one to drain, whatever the number of rings), a non-blocking pipe elsewhere. The
Producer rings it only when the I/O thread is asleep with nothing to write (its ``_io_idle``
flag), so a busy I/O thread costs send() no syscall at all.

Must not import threads, sockets or anything of kpd.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["Doorbell"]


class Doorbell:
    """A wake-up fd: ``ring()`` makes it readable, ``drain()`` makes it unreadable again."""

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._write_fd = self.fd
        else:  # not Linux: a pipe, drained up to 64 rings at a time
            self.fd, self._write_fd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._write_fd, False)

    def ring(self) -> None:
        # A full pipe already wakes the reader: a ring lost to EAGAIN is not lost.
        with contextlib.suppress(BlockingIOError):
            if self._write_fd == self.fd:
                os.eventfd_write(self.fd, 1)
            else:
                os.write(self._write_fd, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            if self._write_fd == self.fd:
                os.eventfd_read(self.fd)  # reads and zeroes the counter, however many rings
            else:
                os.read(self.fd, 64)

    def close(self) -> None:
        os.close(self.fd)
        if self._write_fd != self.fd:
            os.close(self._write_fd)
