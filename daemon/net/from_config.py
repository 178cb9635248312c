"""From the validated ``kafka:`` settings to what broker connections take: the one place a
``ConnectionSettings``, a pool's ``ReconnectPolicy``, a TLS context and a SASL login are built.

Every process that talks to brokers builds its connections here, from the same
``ProducerSettings``: a worker's engine (its pool and its transaction channel), the ingest
process (its metadata pool) and the supervisor (fencing an old exactly-once layout). So
``request.timeout.ms``, ``max.in.flight.requests.per.connection``, the reconnect and setup
timeouts and the security settings mean the same on every connection kpd opens.

The TLS context and SASL login are built once per call and shared by all connections of the
settings object returned, so the CA file is read once and an OIDC token is fetched once for
them all. Here, and only here, the configuration's secrets are revealed, into objects that
never print them.

Imports the settings model (pure data) and the rest of ``daemon.net``; must not import the
producer engine, ingest or processes.
"""

from __future__ import annotations

import ssl

from daemon.net.auth import SaslLogin
from daemon.net.connection import ConnectionSettings
from daemon.net.oauth import OidcClientCredentials, StaticToken, TokenSource, UnsecuredJwt
from daemon.net.pool import ReconnectPolicy
from daemon.net.tls import TlsSettings, client_context
from daemon.settings.model import ProducerSettings
from daemon.settings.secret import Secret

__all__ = ["connection_settings", "reconnect_policy", "sasl_login", "tls_context"]

# The broker applies request.timeout.ms to a Produce request's ack wait itself (the request's
# timeout field); a connection that carries Produce waits this much longer, so that the
# broker's own answer (REQUEST_TIMED_OUT, with what it knows) wins when both are due.
_ACK_WAIT_MARGIN_S = 1.0


def connection_settings(
    settings: ProducerSettings, *, client_id: str, carries_produce: bool
) -> ConnectionSettings:
    """The settings of every broker connection kpd opens.

    ``client_id`` is the id the brokers see (a worker's, ingest's, the supervisor's);
    ``carries_produce`` adds the ack-wait margin to the request timeout.
    """
    margin = _ACK_WAIT_MARGIN_S if carries_produce else 0.0
    return ConnectionSettings(
        client_id=client_id,
        request_timeout_s=settings.request_timeout_ms / 1000 + margin,
        connect_timeout_s=settings.socket_connection_setup_timeout_ms / 1000,
        max_in_flight=settings.max_in_flight,
        ssl_context=tls_context(settings),
        sasl=sasl_login(settings),
    )


def reconnect_policy(settings: ProducerSettings) -> ReconnectPolicy:
    """A connection pool's policy from Kafka's reconnect, setup and idle settings. The first
    setup timeout is the connection settings' (``connect_timeout_s``); this holds its cap."""
    return ReconnectPolicy(
        backoff_s=settings.reconnect_backoff_ms / 1000,
        backoff_max_s=settings.reconnect_backoff_max_ms / 1000,
        setup_timeout_max_s=settings.socket_connection_setup_timeout_max_ms / 1000,
        max_idle_s=settings.connections_max_idle_ms / 1000,
    )


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
