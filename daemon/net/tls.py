"""TLS for broker connections: the client context from librdkafka-style settings, and what a
TLS failure means in words.

One ``ssl.SSLContext`` is built per process from ``TlsSettings`` and shared by its connections
(uvloop's transport takes it in ``create_connection(ssl=...)``). TLS 1.2 is the minimum, as
librdkafka's and Java's defaults; certificates are verified against ``ssl.ca.location`` or the
system store, and the host name is checked unless ``ssl.endpoint.identification.algorithm`` is
``none``.

Must not import: the producer engine, settings, processes.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from daemon.net.errors import BrokerAuthError

__all__ = ["TlsConfigError", "TlsSettings", "classify_tls_error", "client_context"]

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH_CODES = (62, 64)


class TlsConfigError(Exception):
    """A TLS file cannot be used (missing, unreadable, wrong passphrase, not PEM)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_location: str | None = None  # None: the system trust store
    certificate_location: str | None = None
    key_location: str | None = None
    key_password: str | None = field(default=None, repr=False)  # a secret: never printed
    check_hostname: bool = True


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The client context for ``settings``; raises TlsConfigError naming the setting at fault."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        if settings.ca_location is None:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context.load_verify_locations(cafile=settings.ca_location)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"ssl.ca.location {settings.ca_location}: {_why(exc)}") from None
    if settings.certificate_location is not None:
        try:
            context.load_cert_chain(
                settings.certificate_location, settings.key_location, settings.key_password
            )
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"ssl.certificate.location {settings.certificate_location} / ssl.key.location "
                f"{settings.key_location}: {_why(exc)}"
            ) from None
    return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM file or wrong ssl.key.password ({exc.reason or exc})"
    return getattr(exc, "strerror", None) or str(exc)


def classify_tls_error(address: str, exc: BaseException) -> BrokerAuthError:
    """A BrokerAuthError saying in words why TLS to ``address`` failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        if exc.verify_code in _NAME_MISMATCH_CODES or "mismatch" in detail.lower():
            return BrokerAuthError(
                f"{address}: TLS: the broker's certificate does not match the host name "
                f"({detail}); connect by a name the certificate lists, or set "
                "ssl.endpoint.identification.algorithm: none",
                "tls_hostname",
            )
        return BrokerAuthError(
            f"{address}: TLS: the broker's certificate is not trusted ({detail}); check "
            "ssl.ca.location",
            "tls_certificate",
        )
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    hint = ""
    if "CERTIFICATE_REQUIRED" in str(reason).upper() or "BAD_CERTIFICATE" in str(reason).upper():
        hint = "; the broker wants a client certificate it trusts (ssl.certificate.location)"
    elif "WRONG_VERSION_NUMBER" in str(reason).upper():
        hint = "; is this a TLS listener?"
    return BrokerAuthError(f"{address}: TLS handshake failed: {reason}{hint}", "tls_handshake")
