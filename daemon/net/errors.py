"""Errors raised by broker connections.

They say what the producer engine needs to decide: whether the request may have reached the
broker (so data may have been written) and whether the connection is gone.
"""

from __future__ import annotations

__all__ = [
    "AUTH_FAILURE_REASONS",
    "BrokerAuthError",
    "BrokerConnectionError",
    "ConnectionClosedError",
    "RequestTimedOutError",
]


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


class BrokerAuthError(BrokerConnectionError):
    """TLS or SASL refused the connection: retrying at once will not help.

    ``reason`` is a short label for metrics (``AUTH_FAILURE_REASONS``); the message names the
    broker and the cause in words an operator can act on, and never holds a secret.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, request_sent=False)
        self.reason = reason


# Labels of BrokerAuthError.reason, the ``reason`` of kpd_broker_auth_failures_total.
AUTH_FAILURE_REASONS = (
    "tls_certificate",  # the broker's chain does not verify against ssl.ca.location
    "tls_hostname",  # the certificate does not name the host kpd connected to
    "tls_handshake",  # any other TLS failure (protocol, client certificate refused, ...)
    "sasl_mechanism",  # the broker does not offer sasl.mechanism, or speaks no SASL
    "sasl_authentication",  # the broker refused the credentials
    "sasl_token",  # no OAUTHBEARER token could be obtained (OIDC endpoint failed)
)
