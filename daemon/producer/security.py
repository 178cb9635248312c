"""From the ``kafka:`` security settings to what broker connections take: a TLS context and a
SASL login.

Built once per process (a worker's engine, the ingest process) and shared by all of its
connections, so the CA file is read once and an OIDC token is fetched once for them all. Here,
and only here, the configuration's secrets are revealed, into objects that never print them.
"""

from __future__ import annotations

import ssl

from daemon.net.auth import SaslLogin
from daemon.net.oauth import OidcClientCredentials, StaticToken, TokenSource, UnsecuredJwt
from daemon.net.tls import TlsSettings, client_context
from daemon.settings.model import ProducerSettings
from daemon.settings.secret import Secret

__all__ = ["sasl_login", "tls_context"]


def _reveal(secret: Secret | None) -> str | None:
    return None if secret is None else secret.reveal()


def tls_context(settings: ProducerSettings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL, else None; raises TlsConfigError on bad files."""
    if not settings.uses_tls:
        return None
    return client_context(_tls_settings(settings))


def _tls_settings(settings: ProducerSettings) -> TlsSettings:
    return TlsSettings(
        ca_location=settings.ssl_ca_location,
        certificate_location=settings.ssl_certificate_location,
        key_location=settings.ssl_key_location,
        key_password=_reveal(settings.ssl_key_password),
        check_hostname=settings.ssl_endpoint_identification_algorithm == "https",
    )


def sasl_login(settings: ProducerSettings) -> SaslLogin | None:
    """The SASL login for SASL_PLAINTEXT and SASL_SSL, else None."""
    if not settings.uses_sasl or settings.sasl_mechanism is None:
        return None
    if settings.sasl_mechanism != "OAUTHBEARER":
        return SaslLogin(
            settings.sasl_mechanism, settings.sasl_username, _reveal(settings.sasl_password)
        )
    return SaslLogin(
        "OAUTHBEARER",
        token_source=_token_source(settings),
        extensions=dict(settings.sasl_oauthbearer_extensions),
    )


def _token_source(settings: ProducerSettings) -> TokenSource:
    if settings.sasl_oauthbearer_method == "oidc":
        assert settings.sasl_oauthbearer_token_endpoint_url is not None
        # The token endpoint is verified with the same CA settings as the brokers.
        context = client_context(
            TlsSettings(ca_location=settings.ssl_ca_location, check_hostname=True)
        )
        return OidcClientCredentials(
            settings.sasl_oauthbearer_token_endpoint_url,
            settings.sasl_oauthbearer_client_id or "",
            _reveal(settings.sasl_oauthbearer_client_secret) or "",
            settings.sasl_oauthbearer_scope,
            context,
        )
    if settings.sasl_oauthbearer_token is not None:
        return StaticToken(settings.sasl_oauthbearer_token.reveal())
    config = dict(settings.sasl_oauthbearer_config)
    return UnsecuredJwt(
        config["principal"], config.get("scope"), float(config.get("lifeSeconds", 3600))
    )
