"""Wake-ups between the two ends of a ring: eventfd doorbells and the sleep protocol.

This module owns the eventfds and the rule for sleeping on them; it knows nothing of ring
layout or of Kafka, and it must not import multiprocessing, uvloop, signal or
prometheus_client.

Who owns what. The supervisor creates one ``RingWakeups`` (two eventfds) per ring, keeps it
open for the daemon's lifetime and hands the descriptors to each child it starts with
``subprocess.Popen(..., pass_fds=wakeups.fds())`` (the child gets the numbers on its command
line and calls ``RingWakeups.from_fds``). The fds are created ``EFD_CLOEXEC`` so a child only
inherits the ones it was given, and ``EFD_NONBLOCK`` so a read never blocks: waiting is done by
``poll`` or by the event loop, never by a blocking read. A replacement child gets the same
eventfds as the one it replaces, so the surviving side needs no reconnection.

The sleep protocol (one sleeper per doorbell, the ring's single consumer or producer)::

    sleeper                               waker
    1. ready()? -> done                   1. store index (publish / release)
    2. store my wake_at flag              2. load the sleeper's wake_at flag
    3. ready()? -> clear flag, done       3. flag set and index reaches it -> ring the bell
    4. poll(doorbell, backstop timeout)
    5. back to 3

The waker only makes a syscall when the sleeper announced itself, so a busy pipeline makes
none. The lost wake-up race (sleeper's step 3 misses the index, waker's step 2 misses the
flag) needs a store->load fence on both sides, which Python cannot emit; x86-64 itself may
satisfy the sleeper's step-3 load before its step-2 store leaves the store buffer. So the poll
has a backstop timeout (100 ms by default): a lost wake-up costs at most that much latency,
never a hang. An idle process wakes ten times a second to look, which is not spinning.
``Sleeper.missed_wakeups`` counts the times the backstop, not the bell, found work.

An event loop that sleeps on a doorbell again and again (a worker on its records ring, ingest on
each reports ring) uses a ``Watch`` instead: the loop watches the eventfd for the life of the
process (one ``add_reader``), and each sleep is steps 1-3 above with no future, task, timer or
``epoll_ctl`` (``Watch.arm``); the bell calls the sleeper's callback directly. The backstop is
needed only where the race is real: with the C accelerator the shared words are C11 seq_cst
atomics (``ordering``), whose single total order makes one side see the other, so a ``Watch``
there has no timer at all; on the pure-Python path it keeps one timer per sleep.
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_BACKSTOP_S", "EventFd", "RingWakeups", "Sleeper", "WaitHooks", "Watch"]

DEFAULT_BACKSTOP_S = 0.1

# What an endpoint gives its Sleeper: (ready, announce, retract); see Sleeper.
WaitHooks = tuple[Callable[[], bool], Callable[[], None], Callable[[], None]]


class EventFd:
    """One non-blocking eventfd used as a doorbell. Owns the descriptor it was given."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()  # poll, not select: fds above 1023 are common in ingest
        self._poll.register(fd, select.POLLIN)

    @classmethod
    def create(cls) -> EventFd:
        return cls(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))

    def fileno(self) -> int:
        return self._fd

    def ring(self) -> None:
        os.eventfd_write(self._fd, 1)

    def drain(self) -> bool:
        """Reset the counter; True if the bell had rung since the last drain."""
        try:
            return os.eventfd_read(self._fd) > 0
        except BlockingIOError:
            return False

    def wait(self, timeout: float | None) -> bool:
        """Block until rung or ``timeout`` seconds pass; True if rung. Consumes the ring."""
        # Round up: rounding a 0.4 ms budget down to 0 would turn the wait into a spin.
        ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
        return bool(self._poll.poll(ms)) and self.drain()

    async def wait_async(self, timeout: float | None, loop: asyncio.AbstractEventLoop) -> bool:
        """``wait`` for an event loop: the loop polls the fd, nothing blocks."""
        if self.drain():
            return True
        done = loop.create_future()

        def settle(rung: bool) -> None:
            if not done.done():
                done.set_result(rung)

        loop.add_reader(self._fd, settle, True)
        timer = None if timeout is None else loop.call_later(timeout, settle, False)
        try:
            return await done and self.drain()
        finally:
            loop.remove_reader(self._fd)
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        if self._fd >= 0:
            self._poll.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class RingWakeups:
    """The two doorbells of one ring, named by what their ringing means."""

    data: EventFd  # rung by the producer after publishing; the consumer sleeps on it
    space: EventFd  # rung by the consumer after releasing; the producer sleeps on it

    @classmethod
    def create(cls) -> RingWakeups:
        return cls(EventFd.create(), EventFd.create())

    @classmethod
    def from_fds(cls, data_fd: int, space_fd: int) -> RingWakeups:
        """Adopt descriptors inherited from the supervisor (see the module docstring)."""
        return cls(EventFd(data_fd), EventFd(space_fd))

    def fds(self) -> tuple[int, int]:
        """``(data_fd, space_fd)``: pass both to ``Popen(pass_fds=...)`` and the command line."""
        return self.data.fileno(), self.space.fileno()

    def close(self) -> None:
        self.data.close()
        self.space.close()


class Sleeper:
    """Runs the sleep protocol for one ring endpoint on its own doorbell.

    The endpoint supplies three callables: ``ready`` (a fresh look at the shared index),
    ``announce`` (store its wake_at flag) and ``retract`` (clear it). Counters are plain
    attributes for the process layer to export.
    """

    def __init__(self, bell: EventFd, backstop_s: float = DEFAULT_BACKSTOP_S) -> None:
        if backstop_s <= 0:
            raise ValueError("the backstop timeout must be positive: it bounds a lost wake-up")
        self._bell = bell
        self._backstop = backstop_s
        self.sleeps = 0  # polls that actually blocked
        self.missed_wakeups = 0  # backstop timeouts that found the condition already true

    def block(
        self,
        ready: Callable[[], bool],
        announce: Callable[[], None],
        retract: Callable[[], None],
        timeout: float | None,
    ) -> bool:
        """Block until ``ready()``; False if ``timeout`` seconds passed first."""
        if ready():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        announce()
        try:
            while not ready():
                budget = self._budget(deadline)
                if budget <= 0:
                    return False
                self.sleeps += 1
                rung = self._bell.wait(budget)
                self._note(rung, ready)
            return True
        finally:
            retract()

    async def block_async(
        self,
        ready: Callable[[], bool],
        announce: Callable[[], None],
        retract: Callable[[], None],
        timeout: float | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> bool:
        """``block`` for asyncio: awaits the doorbell through ``loop.add_reader``."""
        if ready():
            return True
        loop = loop or asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        announce()
        try:
            while not ready():
                budget = self._budget(deadline, loop.time())
                if budget <= 0:
                    return False
                self.sleeps += 1
                rung = await self._bell.wait_async(budget, loop)
                self._note(rung, ready)
            return True
        finally:
            retract()

    def _budget(self, deadline: float | None, now: float | None = None) -> float:
        if deadline is None:
            return self._backstop
        if now is None:
            now = time.monotonic()
        return min(self._backstop, deadline - now)

    def _note(self, rung: bool, ready: Callable[[], bool]) -> None:
        if not rung and ready():
            self.missed_wakeups += 1


class Watch:
    """One doorbell watched by an event loop for the life of the process.

    ``arm(hooks)`` runs the sleep protocol's steps 1-3 without blocking: True when the
    condition already holds (go on at once), False when the caller is now asleep and
    ``on_ready`` will be called once, from the loop, when the bell rings and the condition
    holds. ``backstop_s`` None: no timer (the lost wake-up race is closed, see the module
    docstring); else a timer per sleep that looks again. Counters as ``Sleeper``'s.
    """

    def __init__(
        self,
        bell: EventFd,
        loop: asyncio.AbstractEventLoop,
        on_ready: Callable[[], None],
        backstop_s: float | None,
    ) -> None:
        if backstop_s is not None and backstop_s <= 0:
            raise ValueError("the backstop timeout must be positive: it bounds a lost wake-up")
        self._bell = bell
        self._loop = loop
        self._on_ready = on_ready
        self._backstop = backstop_s
        self._hooks: WaitHooks | None = None  # set while asleep
        self._timer: asyncio.TimerHandle | None = None
        self._fd = bell.fileno()
        self.sleeps = 0
        self.missed_wakeups = 0
        loop.add_reader(self._fd, self._rung)

    @property
    def asleep(self) -> bool:
        return self._hooks is not None

    def arm(self, hooks: WaitHooks) -> bool:
        """Sleep until ``ready()`` unless it already holds (True: nothing armed)."""
        ready, announce, retract = hooks
        if self._hooks is not None:
            raise RuntimeError("a Watch has one sleeper: it is already armed")
        if ready():
            return True
        announce()
        if ready():
            retract()
            return True
        self._hooks = hooks
        self.sleeps += 1
        if self._backstop is not None:
            self._timer = self._loop.call_later(self._backstop, self._look)
        return False

    def disarm(self) -> None:
        """Stop sleeping without a callback (the caller woke for another reason)."""
        hooks = self._hooks
        if hooks is not None:
            self._hooks = None
            hooks[2]()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.disarm()
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1

    def _rung(self) -> None:
        self._bell.drain()
        hooks = self._hooks
        if hooks is not None and hooks[0]():
            self._fire()

    def _look(self) -> None:
        self._timer = None
        hooks = self._hooks
        if hooks is None:
            return
        if hooks[0]():
            self.missed_wakeups += 1
            self._fire()
        else:
            self._timer = self._loop.call_later(self._backstop, self._look)

    def _fire(self) -> None:
        self.disarm()
        self._on_ready()
