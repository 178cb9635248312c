"""kpd's broker connections through TLS, mutual TLS and SASL, and their failures in words.

The brokers are tansu behind the test front (tests/brokers/secure_tansu.py, proven with
librdkafka in test_secure_brokers.py). Settings go through kpd's own config loader, so the
path from YAML keys to a logged-in connection is what is tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import producer_settings
from daemon.kafka import messages
from daemon.net.connection import BrokerConnection, ConnectionSettings
from daemon.net.errors import BrokerAuthError
from daemon.net.from_config import connection_settings
from daemon.net.oauth import OidcClientCredentials, TokenError
from tests.brokers.certs import CLIENT_KEY_PASSWORD, Pki, make_pki
from tests.brokers.oidc import TokenEndpoint
from tests.brokers.secure_front import SaslUsers
from tests.brokers.secure_tansu import PASSWORD, USER, SecureTansu

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sasl_ssl(tmp_path_factory, pki) -> Iterator[SecureTansu]:
    users = SaslUsers({USER: PASSWORD}, tokens={"static-token-1"}, accept_unsecured_jwt=True)
    with SecureTansu(tmp_path_factory.mktemp("tansu"), pki, tls=True, users=users) as broker:
        yield broker


def _kafka(broker: SecureTansu, **extra) -> dict:
    config = {"bootstrap.servers": broker.bootstrap, "security.protocol": broker.protocol}
    if broker.tls:
        config["ssl.ca.location"] = str(broker.pki.ca)
    return {**config, **extra}


def _open(kafka: dict) -> BrokerConnection:
    settings = producer_settings(kafka)
    host, port = settings.bootstrap_servers[0]
    connection = connection_settings(settings, client_id="kpd", carries_produce=False)
    return asyncio.run(_metadata_then_close(host, port, connection))


async def _metadata_then_close(host: str, port: int, settings: ConnectionSettings):
    conn = await BrokerConnection.open(host, port, settings)
    try:
        answer = await conn.request(messages.METADATA, {"topics": None})
        assert answer is not None and answer["brokers"], answer
        return conn
    finally:
        conn.close()


def _refused(kafka: dict) -> BrokerAuthError:
    with pytest.raises(BrokerAuthError) as info:
        _open(kafka)
    return info.value


USER_LOGIN = {"sasl.username": USER, "sasl.password": PASSWORD}


@pytest.mark.parametrize(
    ("mechanism", "credentials"),
    [
        ("PLAIN", USER_LOGIN),
        ("SCRAM-SHA-256", USER_LOGIN),
        ("SCRAM-SHA-512", USER_LOGIN),
        ("OAUTHBEARER", {"sasl.oauthbearer.token": "static-token-1"}),
        (
            "OAUTHBEARER",
            {
                "enable.sasl.oauthbearer.unsecure.jwt": True,
                "sasl.oauthbearer.config": "principal=kpd scope=produce",
            },
        ),
    ],
)
def test_kpd_logs_in_over_tls_with_each_mechanism(sasl_ssl, mechanism, credentials):
    logins = sasl_ssl.front.stats.logins
    _open(_kafka(sasl_ssl, **{"sasl.mechanism": mechanism}, **credentials))
    assert sasl_ssl.front.stats.logins == logins + 1


def test_a_wrong_password_is_an_authentication_failure_that_names_no_secret(sasl_ssl):
    error = _refused(
        _kafka(sasl_ssl, **{"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER,
                            "sasl.password": "not-the-password"})
    )  # fmt: skip
    assert error.reason == "sasl_authentication"
    assert sasl_ssl.bootstrap in str(error) and "SCRAM-SHA-512" in str(error)
    assert "not-the-password" not in str(error)


def test_an_unknown_token_is_refused(sasl_ssl):
    error = _refused(
        _kafka(sasl_ssl, **{"sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.token": "forged"})
    )
    assert error.reason == "sasl_authentication"
    assert "forged" not in str(error)


def test_a_mechanism_the_broker_does_not_offer_is_named(tmp_path: Path, pki):
    users = SaslUsers({USER: PASSWORD}, mechanisms=("PLAIN",))
    with SecureTansu(tmp_path, pki, users=users) as broker:
        error = _refused(_kafka(broker, **{"sasl.mechanism": "SCRAM-SHA-256"}, **USER_LOGIN))
    assert error.reason == "sasl_mechanism"
    assert "does not offer SASL mechanism SCRAM-SHA-256 (it offers: PLAIN)" in str(error)


def test_sasl_against_a_listener_without_sasl_says_so(tansu):
    kafka = {
        "bootstrap.servers": tansu.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        **USER_LOGIN,
    }
    # tansu without --authentication lists the SASL APIs but answers a login with an error.
    error = _refused(kafka)
    assert error.reason in ("sasl_mechanism", "sasl_authentication")
    assert tansu.bootstrap in str(error)


def test_an_untrusted_ca_is_a_certificate_failure(sasl_ssl, pki):
    error = _refused(
        _kafka(sasl_ssl, **{"ssl.ca.location": str(pki.other_ca), "sasl.mechanism": "PLAIN"},
               **USER_LOGIN)
    )  # fmt: skip
    assert error.reason == "tls_certificate"
    assert "not trusted" in str(error) and "ssl.ca.location" in str(error)


def test_a_certificate_for_another_host_is_a_hostname_failure(tmp_path: Path, pki):
    with SecureTansu(tmp_path, pki, tls=True, wrong_host=True) as broker:
        error = _refused(_kafka(broker))
        assert error.reason == "tls_hostname"
        assert "does not match the host name" in str(error)
        # The operator's way out, as in librdkafka: skip the name check, keep the chain check.
        _open(_kafka(broker, **{"ssl.endpoint.identification.algorithm": "none"}))


def test_mutual_tls_with_an_encrypted_client_key(tmp_path: Path, pki):
    with SecureTansu(tmp_path, pki, tls=True, mutual=True) as broker:
        _open(
            _kafka(
                broker,
                **{
                    "ssl.certificate.location": str(pki.client_cert),
                    "ssl.key.location": str(pki.client_key),
                    "ssl.key.password": CLIENT_KEY_PASSWORD,
                },
            )
        )
        error = _refused(_kafka(broker))
        assert error.reason == "tls_handshake"
        assert broker.bootstrap in str(error)


def test_reauthentication_keeps_requests_in_flight(tmp_path: Path, pki):
    """KIP-368: with a 1.5 s session, kpd logs in again on the same connection while requests
    keep flowing; the front closes any connection that sends a request after its session
    expired, so every answered request proves the session was renewed in time."""
    users = SaslUsers({USER: PASSWORD})
    with SecureTansu(tmp_path, pki, users=users, session_lifetime_ms=1500) as broker:
        settings = producer_settings(_kafka(broker, **{"sasl.mechanism": "SCRAM-SHA-256"},
                                            **USER_LOGIN))  # fmt: skip
        host, port = settings.bootstrap_servers[0]

        async def run() -> tuple[int, int]:
            conn = await BrokerConnection.open(
                host, port, connection_settings(settings, client_id="kpd", carries_produce=False)
            )
            answered = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0  # more than three session lifetimes
            try:
                while loop.time() < deadline:
                    # Five requests at a time, so re-authentication meets requests in flight.
                    futures = [conn.send(messages.METADATA, 1, {"topics": None}) for _ in range(5)]
                    for answer in await asyncio.gather(*futures):
                        assert answer["brokers"]
                        answered += 1
            finally:
                conn.close()
            return answered, conn.reauthentications

        answered, reauthentications = asyncio.run(run())
    assert reauthentications >= 2
    assert broker.front.stats.reauthentications >= 2
    assert broker.front.stats.closed_expired == 0
    assert answered > 0


def test_oidc_tokens_are_cached_and_fetched_again_before_they_expire():
    accepted: set[str] = set()
    now = [1000.0]
    with TokenEndpoint("kpd", "the-secret", accepted, lifetime_s=100) as idp:
        source = OidcClientCredentials(
            idp.url, "kpd", "the-secret", "s1", None, clock=lambda: now[0]
        )

        async def tokens() -> list[str]:
            first = await source.token()
            again = await source.token()
            now[0] += 79  # still before 80 % of the 100 s lifetime
            cached = await source.token()
            now[0] += 2  # past it
            fresh = await source.token()
            return [first, again, cached, fresh]

        first, again, cached, fresh = asyncio.run(tokens())
    assert first == again == cached != fresh
    assert idp.issued == [first, fresh] and idp.scopes == ["s1", "s1"]


def test_an_oidc_endpoint_refusing_the_client_names_the_endpoint_not_the_secret():
    with TokenEndpoint("kpd", "the-secret", set()) as idp:
        source = OidcClientCredentials(idp.url, "kpd", "wrong-secret", None, None)
        with pytest.raises(TokenError) as info:
            asyncio.run(source.token())
    assert idp.url in str(info.value) and "HTTP 401" in str(info.value)
    assert "wrong-secret" not in str(info.value)
