"""Errors raised by broker connections.

They say what the producer engine needs to decide: whether the request may have reached the
broker (so data may have been written) and whether the connection is gone.
"""

from __future__ import annotations

__all__ = ["BrokerConnectionError", "ConnectionClosedError", "RequestTimedOutError"]


class BrokerConnectionError(Exception):
    """The connection to a broker failed; every request in flight on it fails with this.

    ``request_sent`` is true when the request was written to the socket before the failure:
    the broker may have acted on it (for a produce request: POSSIBLY_PERSISTED).
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class ConnectionClosedError(BrokerConnectionError):
    """The connection was closed (by us, by the peer, or after a protocol violation)."""


class RequestTimedOutError(BrokerConnectionError):
    """No response within the request timeout; the connection is closed, like Java's client,
    because responses arrive in request order and a late one would desynchronise it."""
