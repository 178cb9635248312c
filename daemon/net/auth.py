"""SASL login on a broker connection: SaslHandshake v1, then SaslAuthenticate rounds.

``SaslLogin`` holds what a login needs (mechanism name, user and password, or a token source
for OAUTHBEARER) and makes a fresh mechanism per login. ``authenticate`` runs the exchange
over a function that sends one request and returns its response, so the same code serves the
first login and a KIP-368 re-authentication, and returns the session lifetime the broker
granted (0: no limit).

Error codes (Kafka's Errors): UNSUPPORTED_SASL_MECHANISM 33, ILLEGAL_SASL_STATE 34,
SASL_AUTHENTICATION_FAILED 58.

Must not import: the producer engine, settings, processes.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.kafka import messages
from daemon.kafka.errors import ErrorCode
from daemon.net.errors import BrokerAuthError
from daemon.net.oauth import TokenError, TokenSource
from daemon.net.sasl import OAuthBearer, Plain, SaslError, SaslMechanism, Scram

__all__ = ["SaslLogin", "authenticate"]


Exchange = Callable[[messages.ApiSpec, int, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class SaslLogin:
    mechanism: str  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # a secret: never printed
    token_source: TokenSource | None = None  # OAUTHBEARER
    extensions: Mapping[str, str] = field(default_factory=dict)

    async def new_mechanism(self) -> SaslMechanism:
        if self.mechanism == "PLAIN":
            return Plain(self.username or "", self.password or "")
        if self.mechanism.startswith("SCRAM-"):
            # RFC 5802 §5.1: a nonce of printable characters but ","; urlsafe base64 is that.
            return Scram(
                self.mechanism, self.username or "", self.password or "", secrets.token_urlsafe(24)
            )
        assert self.token_source is not None, "OAUTHBEARER needs a token source"
        return OAuthBearer(await self.token_source.token(), self.extensions)


async def authenticate(
    address: str, login: SaslLogin, versions: Mapping[int, int], exchange: Exchange
) -> int:
    """Log in with ``login``; returns the session lifetime in ms (0 = none). Raises
    BrokerAuthError naming ``address`` and the cause."""
    if not {messages.SASL_HANDSHAKE.key, messages.SASL_AUTHENTICATE.key} <= versions.keys():
        raise BrokerAuthError(
            f"{address}: the broker offers no SASL (SaslHandshake v1 and SaslAuthenticate); is "
            "this a SASL listener?",
            "sasl_mechanism",
        )
    answer = await exchange(messages.SASL_HANDSHAKE, 1, {"mechanism": login.mechanism})
    if answer["error_code"] != ErrorCode.NONE:
        offered = ", ".join(answer["mechanisms"]) or "none"
        if answer["error_code"] == ErrorCode.UNSUPPORTED_SASL_MECHANISM:
            why = (
                f"the broker does not offer SASL mechanism {login.mechanism} (it offers: {offered})"
            )
        elif answer["error_code"] == ErrorCode.ILLEGAL_SASL_STATE:
            why = "the broker is in no state to start a SASL login (ILLEGAL_SASL_STATE)"
        else:
            why = f"SaslHandshake failed with error {answer['error_code']}"
        raise BrokerAuthError(f"{address}: {why}", "sasl_mechanism")
    try:
        mechanism = await login.new_mechanism()
    except TokenError as exc:
        raise BrokerAuthError(f"{address}: no OAUTHBEARER token: {exc}", "sasl_token") from None
    version = versions[messages.SASL_AUTHENTICATE.key]
    token: bytes | None = mechanism.first()
    lifetime_ms = 0
    while token is not None:
        answer = await exchange(messages.SASL_AUTHENTICATE, version, {"auth_bytes": token})
        if answer["error_code"] != ErrorCode.NONE:
            detail = answer.get("error_message") or f"error {answer['error_code']}"
            raise BrokerAuthError(
                f"{address}: SASL {login.mechanism} authentication failed: {detail}",
                "sasl_authentication",
            )
        lifetime_ms = answer.get("session_lifetime_ms", 0)
        try:
            token = mechanism.step(bytes(answer["auth_bytes"]))
        except SaslError as exc:
            raise BrokerAuthError(
                f"{address}: SASL {login.mechanism} authentication failed: {exc}",
                "sasl_authentication",
            ) from None
    return lifetime_ms
