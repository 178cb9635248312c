"""OAUTHBEARER tokens: where they come from and when to get a new one.

Three sources, as librdkafka offers them:

- ``StaticToken``: a token given in the configuration (``sasl.oauthbearer.token``).
- ``UnsecuredJwt``: an unsigned JWT (``alg: none``) for development brokers that accept them
  (librdkafka's ``enable.sasl.oauthbearer.unsecure.jwt`` with ``sasl.oauthbearer.config``).
- ``OidcClientCredentials``: the OAuth 2 client-credentials grant (KIP-768) against the
  token endpoint, with the client id and secret in HTTP basic auth; the token is cached and
  fetched again once 80 % of its lifetime has passed, so re-authentication (KIP-368) always
  presents a fresh one.

The HTTP request runs in a thread (urllib is blocking) so the event loop keeps serving.

Must not import: the producer engine, settings, processes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["OidcClientCredentials", "StaticToken", "TokenError", "TokenSource", "UnsecuredJwt"]

_REFRESH_AT = 0.8  # of a token's lifetime, as Java's sasl.login.refresh.window.factor
_DEFAULT_LIFETIME_S = 3600.0
_MAX_RESPONSE_BYTES = 1024 * 1024


class TokenError(Exception):
    """No token could be obtained; the message names the endpoint, never a secret."""


class TokenSource:
    async def token(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class StaticToken(TokenSource):
    value: str = field(repr=False)

    async def token(self) -> str:
        return self.value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsecured_jwt(principal: str, scope: str | None, now_s: float, lifetime_s: float) -> str:
    """An unsigned JWT (RFC 7515 ``alg: none``): header.payload. with an empty signature."""
    claims: dict[str, object] = {
        "sub": principal,
        "iat": int(now_s),
        "exp": int(now_s + lifetime_s),
    }
    if scope:
        claims["scope"] = scope
    header = _b64url(json.dumps({"alg": "none"}).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}."


@dataclass(frozen=True)
class UnsecuredJwt(TokenSource):
    principal: str
    scope: str | None = None
    lifetime_s: float = _DEFAULT_LIFETIME_S
    clock: Callable[[], float] = time.time

    async def token(self) -> str:
        return unsecured_jwt(self.principal, self.scope, self.clock(), self.lifetime_s)


class OidcClientCredentials(TokenSource):
    """The client-credentials grant against ``url``; owned by one event loop."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        scope: str | None,
        context: ssl.SSLContext | None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 30.0,
    ) -> None:
        self._url = url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._context = context
        self._clock = clock
        self._timeout_s = timeout_s
        self._cached: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()  # one fetch at a time; the others take its token

    def __repr__(self) -> str:
        return f"OidcClientCredentials({self._url!r}, client_id={self._client_id!r})"

    async def token(self) -> str:
        async with self._lock:
            if self._cached is None or self._clock() >= self._refresh_at:
                started = self._clock()
                token, lifetime_s = await asyncio.to_thread(self._fetch)
                self._cached = token
                self._refresh_at = started + lifetime_s * _REFRESH_AT
            return self._cached

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        # RFC 6749 §2.3.1: id and secret form-urlencoded, then HTTP basic auth.
        user = urllib.parse.quote(self._client_id, safe="")
        password = urllib.parse.quote(self._client_secret, safe="")
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            self._url,
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(
                request, timeout=self._timeout_s, context=self._context
            ) as response:
                body = response.read(_MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            raise TokenError(f"token endpoint {self._url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", exc)
            raise TokenError(f"token endpoint {self._url} unreachable: {why}") from None
        try:
            answer = json.loads(body)
            token = answer["access_token"]
            lifetime_s = float(answer.get("expires_in", _DEFAULT_LIFETIME_S))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TokenError(f"token endpoint {self._url} sent no access_token") from None
        if not isinstance(token, str) or not token:
            raise TokenError(f"token endpoint {self._url} sent an empty access_token")
        return token, max(1.0, lifetime_s)
