"""When the client tries to reach kpd again, and when records stop waiting for it (pure).

Owns the reconnect state machine both producers share: connected, or disconnected since some
time with the next attempt due at another. Delays grow exponentially from
``reconnect_backoff_ms`` to ``reconnect_backoff_max_ms`` with +-20 % jitter — the names,
defaults and jitter of Kafka's own producer (``reconnect.backoff.ms`` = 50,
``reconnect.backoff.max.ms`` = 1000, ``CommonClientConfigs.RECONNECT_BACKOFF_JITTER`` 0.2) —
so the apps of a host do not all knock at the same instant when kpd comes back. A successful
handshake resets the delay. Records that wait for a connection longer than ``max.block.ms``
fail (``expired``), like records Kafka's producer cannot place within ``max.block.ms``.

Time is passed in (``now``: the adapter's monotonic clock), so tests drive it by hand. No I/O,
no threads, no asyncio.
"""

from __future__ import annotations

import random

__all__ = ["JITTER", "Reconnector", "connect_hint", "unreachable"]

JITTER = 0.2  # each delay is drawn from [d * 0.8, d * 1.2], like Kafka's ExponentialBackoff


def connect_hint(path: str) -> str:
    """What to check when kpd cannot be reached, naming the socket."""
    return f"is kpd running? socket: {path}"


def unreachable(path: str, exc: OSError) -> OSError:
    """``exc`` from connecting to ``path``, re-raised as the same OSError subclass (callers
    catching FileNotFoundError or ConnectionRefusedError still do) with a message that names
    the socket and says what to check."""
    if getattr(exc, "code", None) is not None:  # KpdConnectionError: kpd itself answered
        return exc
    detail = exc.strerror or str(exc) or type(exc).__name__
    return type(exc)(exc.errno, f"cannot connect to kpd: {detail}; {connect_hint(path)}")


class Reconnector:
    """Connected, or disconnected since ``since`` with the next attempt at ``attempt_at``.

    ``connected`` starts True: the producers connect once in their constructor (or start())
    and report every later loss with ``lost``.
    """

    def __init__(
        self,
        backoff_s: float,
        backoff_max_s: float,
        max_block_s: float,
        rng: random.Random | None = None,
    ) -> None:
        if backoff_s <= 0 or backoff_max_s < backoff_s:
            raise ValueError(
                "reconnect_backoff_ms must be > 0 and <= reconnect_backoff_max_ms, "
                f"not {backoff_s * 1000} and {backoff_max_s * 1000}"
            )
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._max_block_s = max_block_s
        self._rng = rng or random.Random()
        self.connected = True
        self.since = 0.0  # when the current outage began (meaningful while not connected)
        self.attempt_at = 0.0  # when the next attempt is due
        self.attempts = 0  # failed attempts in this outage
        self.last_error = ""  # why the connection or the last attempt failed

    def lost(self, now: float, reason: str) -> None:
        """The connection ended: the first attempt is due at once (a restarted kpd is often
        back already, and a refused attempt costs microseconds)."""
        if self.connected:
            self.connected = False
            self.since = now
            self.attempts = 0
            self.attempt_at = now
        self.last_error = reason

    def failed(self, now: float, reason: str) -> float:
        """An attempt failed; returns when the next one is due."""
        self.attempts += 1
        self.last_error = reason
        self.attempt_at = now + self.delay(self.attempts)
        return self.attempt_at

    def delay(self, attempts: int) -> float:
        """The wait after ``attempts`` failed attempts: backoff * 2^(attempts-1), capped at the
        max, then jittered."""
        exponent = min(attempts - 1, 30)  # 2^30 x 1 ms is already far past any cap
        base = min(self._backoff_s * (1 << exponent), self._backoff_max_s)
        return base * self._rng.uniform(1 - JITTER, 1 + JITTER)

    def succeeded(self) -> None:
        self.connected = True
        self.attempts = 0
        self.last_error = ""

    def due_in(self, now: float) -> float:
        """Seconds until the next attempt (0 if it is due)."""
        return max(self.attempt_at - now, 0.0)

    def expires_at(self) -> float:
        """When records stop waiting for this outage to end (max.block.ms after it began):
        the queued ones fail then, and a send() after it fails at once."""
        return self.since + self._max_block_s

    def expired(self, now: float) -> bool:
        return not self.connected and now >= self.expires_at()

    def outage_message(self, path: str, now: float) -> str:
        """Why records fail after waiting: how long, the last error, what to check."""
        hint = connect_hint(path)
        last = self.last_error if hint in self.last_error else f"{self.last_error}; {hint}"
        return (
            f"no connection to kpd for {now - self.since:.1f} s (max.block.ms "
            f"{self._max_block_s * 1000:.0f}); last error: {last}"
        )
