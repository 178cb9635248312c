"""The client side of kpd's SASL mechanisms, sans-IO: tokens in, tokens out.

A mechanism is a small state machine. ``first()`` gives the client's initial token; each
server token goes to ``step(token)``, which returns the next client token, or None once the
exchange is complete and verified. Any problem raises ``SaslError`` whose text never holds a
secret. The connection (``daemon.net.auth``) carries the tokens in SaslAuthenticate requests.

- PLAIN (RFC 4616): ``authzid NUL authcid NUL passwd``; Kafka uses an empty authzid.
- SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677), without channel binding (``n,,``) as
  Kafka's ScramSaslClient. The password is used as its UTF-8 bytes without SASLprep, as Kafka
  does (ScramFormatter.normalize), so a broker and kpd derive the same keys.
- OAUTHBEARER (RFC 7628): ``n,,^Aauth=Bearer <token>^A[key=value^A]...^A``; a broker that
  refuses the token answers with a JSON error, to which RFC 7628 §3.2.3 has the client reply
  a single ^A (Kafka then fails the SaslAuthenticate with the error).

Pure: no I/O, no clock; the SCRAM nonce is passed in (tests use the RFC's).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "MECHANISMS",
    "OAuthBearer",
    "Plain",
    "SaslError",
    "SaslMechanism",
    "Scram",
]

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

# Kafka's ScramMechanism.minIterations: fewer is refused as a downgrade by a hostile server.
SCRAM_MIN_ITERATIONS = 4096
_GS2_HEADER = "n,,"  # no channel binding, no authorization identity
_SEP = "\x01"  # RFC 7628's kvsep


class SaslError(Exception):
    """The SASL exchange failed; the message says why and names no secret."""


class SaslMechanism:
    """What a connection needs of a mechanism (see the module docstring)."""

    name: str

    def first(self) -> bytes:
        raise NotImplementedError

    def step(self, token: bytes) -> bytes | None:
        raise NotImplementedError


class Plain(SaslMechanism):
    name = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password

    def first(self) -> bytes:
        return f"\0{self._username}\0{self._password}".encode()

    def step(self, token: bytes) -> bytes | None:
        # Kafka answers a good PLAIN login with an empty token; anything else is not PLAIN.
        if token:
            raise SaslError("PLAIN: unexpected data from the broker after the login")
        return None


@dataclass(frozen=True)
class _ScramHash:
    mechanism: str
    name: str  # hashlib's


_SCRAM_HASHES = {
    "SCRAM-SHA-1": _ScramHash("SCRAM-SHA-1", "sha1"),  # RFC 5802's vectors; not Kafka's
    "SCRAM-SHA-256": _ScramHash("SCRAM-SHA-256", "sha256"),
    "SCRAM-SHA-512": _ScramHash("SCRAM-SHA-512", "sha512"),
}


def _saslname(username: str) -> str:
    # RFC 5802 §5.1: "=" and "," in a username are escaped as =3D and =2C.
    return username.replace("=", "=3D").replace(",", "=2C")


def _scram_attributes(message: str) -> dict[str, str]:
    attributes = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise SaslError("SCRAM: malformed message from the broker")
        attributes.setdefault(key, value)
    return attributes


class Scram(SaslMechanism):
    """SCRAM-SHA-256 or SCRAM-SHA-512 (and SCRAM-SHA-1 for RFC 5802's vectors)."""

    def __init__(self, mechanism: str, username: str, password: str, nonce: str) -> None:
        if mechanism not in _SCRAM_HASHES:
            raise SaslError(f"unknown SCRAM mechanism {mechanism}")
        self.name = mechanism
        self._hash = _SCRAM_HASHES[mechanism].name
        self._password = password
        self._nonce = nonce
        self._client_first_bare = f"n={_saslname(username)},r={nonce}"
        self._server_signature: bytes | None = None
        self._done = False

    def first(self) -> bytes:
        return (_GS2_HEADER + self._client_first_bare).encode()

    def step(self, token: bytes) -> bytes | None:
        if self._done:
            raise SaslError("SCRAM: the broker sent data after the exchange completed")
        try:
            message = token.decode()
        except UnicodeDecodeError:
            raise SaslError("SCRAM: the broker sent a message that is not UTF-8") from None
        if self._server_signature is None:
            return self._client_final(message).encode()
        self._verify_server_final(message)
        self._done = True
        return None

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self._hash).digest()

    def _client_final(self, server_first: str) -> str:
        attributes = _scram_attributes(server_first)
        if "e" in attributes:
            raise SaslError(f"SCRAM: the broker refused the login: {attributes['e']}")
        try:
            nonce, salt_b64, iterations_text = attributes["r"], attributes["s"], attributes["i"]
            salt = base64.b64decode(salt_b64, validate=True)
            iterations = int(iterations_text)
        except (KeyError, ValueError):
            raise SaslError("SCRAM: malformed server-first message") from None
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise SaslError("SCRAM: the broker's nonce does not extend kpd's")
        if iterations < SCRAM_MIN_ITERATIONS:
            raise SaslError(
                f"SCRAM: the broker asks for {iterations} iterations, fewer than the "
                f"minimum {SCRAM_MIN_ITERATIONS}"
            )
        salted = hashlib.pbkdf2_hmac(self._hash, self._password.encode(), salt, iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self._hash, client_key).digest()
        channel_binding = base64.b64encode(_GS2_HEADER.encode()).decode()  # "biws"
        without_proof = f"c={channel_binding},r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = self._hmac(salted, b"Server Key")
        self._server_signature = self._hmac(server_key, auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def _verify_server_final(self, server_final: str) -> None:
        attributes = _scram_attributes(server_final)
        if "e" in attributes:
            raise SaslError(f"SCRAM: the broker refused the login: {attributes['e']}")
        try:
            signature = base64.b64decode(attributes["v"], validate=True)
        except (KeyError, ValueError):
            raise SaslError("SCRAM: malformed server-final message") from None
        assert self._server_signature is not None
        if not hmac.compare_digest(signature, self._server_signature):
            raise SaslError("SCRAM: the broker's signature is wrong (it does not know the user)")


class OAuthBearer(SaslMechanism):
    """OAUTHBEARER with a token obtained elsewhere (OIDC, static or unsecured)."""

    name = "OAUTHBEARER"

    def __init__(self, token: str, extensions: Mapping[str, str] | None = None) -> None:
        self._token = token
        self._extensions = dict(extensions or {})
        self._refused = False

    def first(self) -> bytes:
        parts = [f"auth=Bearer {self._token}"]
        # RFC 7628 §3.1: key is ALPHA+, value is printable; Kafka reserves "auth".
        parts += [f"{key}={value}" for key, value in sorted(self._extensions.items())]
        return (_GS2_HEADER + _SEP + _SEP.join(parts) + _SEP + _SEP).encode()

    def step(self, token: bytes) -> bytes | None:
        if not token:
            return None
        if self._refused:
            raise SaslError("OAUTHBEARER: unexpected data from the broker")
        self._refused = True
        raise SaslError(f"OAUTHBEARER: the broker refused the token: {_oauth_error(token)}")


def _oauth_error(token: bytes) -> str:
    # RFC 7628 §3.2.2: {"status": "invalid_token", "scope": ..., "openid-configuration": ...}
    try:
        status = json.loads(token).get("status", "unknown")
    except (ValueError, AttributeError):
        status = "unreadable error"
    return str(status)[:100]
