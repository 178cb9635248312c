"""The kpd daemon, run as a subprocess, delivers through TLS and SASL and says plainly when it
cannot.

Brokers: tansu behind the test front (TLS terminator and SASL server side, proven with
librdkafka in test_secure_brokers.py), and tansu's own ``--authentication`` (every login
fails) for the real broker's refusal. Records are counted with confluent-kafka's consumer
through the same front. Secrets are checked to appear nowhere in the daemon's output, its
/status or its errors.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.net.errors import AUTH_FAILURE_REASONS
from kpd import DeliveryError, Producer
from tests.brokers import TansuBroker, read_all, unique_topic_name
from tests.brokers.certs import CLIENT_KEY_PASSWORD, Pki, make_pki
from tests.brokers.oidc import TokenEndpoint
from tests.brokers.ports import free_port
from tests.brokers.secure_front import SaslUsers
from tests.brokers.secure_tansu import PASSWORD, USER, SecureTansu, server_context
from tests.daemon_harness import REPO, KpdDaemon, wait_for

pytestmark = pytest.mark.timeout(180)

CLIENT_ID, CLIENT_SECRET = "kpd-oidc-client", "oidc-Client-Secret-42"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = samples.get(name, 0.0) + float(value)
    return samples


def _total(port: int, name: str, label: str = "") -> float:
    """The sum of ``name``'s samples (over its labels) that carry ``label``."""
    return sum(
        value
        for sample, value in _scrape(port).items()
        if sample.startswith(name + "{") and label in sample
    )


def _status_text(config_path: Path) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--config", str(config_path)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def _deliver(
    broker: SecureTansu,
    tmp_path: Path,
    kafka: dict,
    *,
    mechanism: str = "PLAIN",
    env: dict | None = None,
    count: int = 2000,
    secrets: tuple[str, ...] = (),
) -> None:
    """Run kpd with ``kafka`` settings against ``broker``; every record must arrive once."""
    topic = broker.create_topic(unique_topic_name(f"secure-{broker.protocol}"), 2)
    port = free_port()
    extra = {"kafka": kafka, "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
    daemon = KpdDaemon(tmp_path, broker.bootstrap, workers=1, extra=extra)
    daemon.start(env=env)
    try:
        with Producer(daemon.socket_path, acks="kafka") as producer:
            futures = [producer.send(topic, b"v%d" % i, key=b"k%d" % i) for i in range(count)]
            producer.flush(timeout=60)
        assert all(f.result().offset >= 0 for f in futures)
        status = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read()
        config_text = daemon.config_path.read_text()
    finally:
        daemon.__exit__(None, None, None)
    records = read_all(broker.bootstrap, topic, count, config=broker.client_config(mechanism))
    assert sorted(r.value for r in records) == sorted(b"v%d" % i for i in range(count))
    for secret in secrets:
        assert secret not in daemon.log_tail(10**7), "a secret reached the daemon's log"
        assert secret.encode() not in status, "a secret reached /status"
        assert secret not in config_text  # the test gave it by file or credential


def test_kpd_delivers_over_tls(tmp_path, pki):
    with SecureTansu(tmp_path / "b", pki, tls=True) as broker:
        kafka = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca)}
        _deliver(broker, tmp_path, kafka)


def test_kpd_delivers_over_mutual_tls_with_a_key_passphrase_from_a_file(tmp_path, pki):
    (tmp_path / "key-pass").write_text(CLIENT_KEY_PASSWORD + "\n")
    with SecureTansu(tmp_path / "b", pki, tls=True, mutual=True) as broker:
        kafka = {
            "security.protocol": "SSL",
            "ssl.ca.location": str(pki.ca),
            "ssl.certificate.location": str(pki.client_cert),
            "ssl.key.location": str(pki.client_key),
            "ssl.key.password": {"file": str(tmp_path / "key-pass")},
        }
        _deliver(broker, tmp_path, kafka, secrets=(CLIENT_KEY_PASSWORD,))


def test_kpd_delivers_over_sasl_plaintext_with_plain(tmp_path, pki):
    users = SaslUsers({USER: PASSWORD})
    with SecureTansu(tmp_path / "b", pki, users=users) as broker:
        kafka = {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": USER,
            "sasl.password": {"file": str(_secret_file(tmp_path))},
        }
        _deliver(broker, tmp_path, kafka, secrets=(PASSWORD,))
        assert broker.front.stats.logins >= 2  # a worker and ingest logged in


def _secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(PASSWORD)
    return path


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kpd_delivers_over_sasl_ssl_with_scram_and_a_systemd_credential(tmp_path, pki, mechanism):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "kafka-password").write_text(PASSWORD)
    users = SaslUsers({USER: PASSWORD})
    with SecureTansu(tmp_path / "b", pki, tls=True, users=users) as broker:
        kafka = {"security.protocol": "SASL_SSL", "ssl.ca.location": str(pki.ca),
                 "sasl.mechanism": mechanism, "sasl.username": USER,
                 "sasl.password": {"credential": "kafka-password"}}  # fmt: skip
        _deliver(broker, tmp_path, kafka, env={"CREDENTIALS_DIRECTORY": str(credentials)},
                 secrets=(PASSWORD,))  # fmt: skip
        assert mechanism in broker.front.stats.mechanisms


def test_kpd_delivers_over_sasl_ssl_with_oauthbearer_oidc(tmp_path, pki):
    users = SaslUsers({}, mechanisms=("OAUTHBEARER",), accept_unsecured_jwt=True)
    with (
        SecureTansu(tmp_path / "b", pki, tls=True, users=users) as broker,
        TokenEndpoint(CLIENT_ID, CLIENT_SECRET, users.tokens, tls=server_context(pki)) as idp,
    ):
        kafka = {
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(pki.ca),  # verifies the token endpoint too
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.token.endpoint.url": idp.url,
            "sasl.oauthbearer.client.id": CLIENT_ID,
            "sasl.oauthbearer.client.secret": CLIENT_SECRET,
            "sasl.oauthbearer.scope": "kafka.produce",
        }
        _deliver(broker, tmp_path, kafka, mechanism="OAUTHBEARER")
        assert idp.issued and idp.refused == 0
        assert set(idp.scopes) == {"kafka.produce"}
        log = (tmp_path / "kpd.log").read_text()
        assert CLIENT_SECRET not in log and not any(token in log for token in idp.issued)


def test_reauthentication_under_load_loses_and_duplicates_nothing(tmp_path, pki):
    """Sessions of 1.5 s: while records flow for several lifetimes kpd logs in again on its
    open connections (KIP-368); the front would close a connection used after its session
    ended, and the reader counts every record exactly once."""
    users = SaslUsers({USER: PASSWORD})
    with SecureTansu(tmp_path / "b", pki, users=users, session_lifetime_ms=1500) as broker:
        topic = broker.create_topic(unique_topic_name("reauth"), 2)
        port = free_port()
        kafka = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                 "sasl.username": USER, "sasl.password": PASSWORD}  # fmt: skip
        extra = {"kafka": kafka, "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
        sent = 0
        with KpdDaemon(tmp_path, broker.bootstrap, workers=1, extra=extra) as daemon:
            with Producer(daemon.socket_path, acks="kafka") as producer:
                futures = []
                # Keep records flowing until the front has seen several re-authentications.
                while broker.front.stats.reauthentications < 4:
                    futures += [producer.send(topic, b"r%d" % (sent + i)) for i in range(200)]
                    sent += 200
                    producer.flush(timeout=30)
                    assert sent < 2_000_000, "no re-authentication seen"
            assert all(f.result().offset >= 0 for f in futures)
            wait_for(lambda: _total(port, "kpd_broker_reauthentications_total"), 10,
                     "the re-authentication metric")  # fmt: skip
            assert _total(port, "kpd_records_failed_total") == 0
        assert broker.front.stats.closed_expired == 0
        records = read_all(broker.bootstrap, topic, sent, config=broker.client_config("PLAIN"))
        assert len({r.value for r in records}) == sent


# ---- failures, said plainly ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, pki) -> Iterator[SecureTansu]:
    users = SaslUsers({USER: PASSWORD}, mechanisms=("PLAIN", "SCRAM-SHA-256"))
    with SecureTansu(tmp_path_factory.mktemp("b"), pki, tls=True, users=users) as broker:
        yield broker


@pytest.fixture(scope="module")
def wrong_host_broker(tmp_path_factory, pki) -> Iterator[SecureTansu]:
    with SecureTansu(tmp_path_factory.mktemp("b"), pki, tls=True, wrong_host=True) as broker:
        yield broker


@pytest.fixture(scope="module")
def authenticating_tansu(tmp_path_factory) -> Iterator[TansuBroker]:
    with TansuBroker(tmp_path_factory.mktemp("auth"), authentication=True) as broker:
        yield broker


SCRAM_SSL = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
             "sasl.username": USER, "sasl.password": PASSWORD}  # fmt: skip


def _failure_case(case: str, pki: Pki, brokers: dict) -> tuple[str, dict, str, str]:
    """(bootstrap, kafka settings, metric reason, words the error must contain)."""
    sasl = {**SCRAM_SSL, "ssl.ca.location": str(pki.ca)}
    if case == "bad-ca":
        return (
            brokers["tls"].bootstrap,
            {**sasl, "ssl.ca.location": str(pki.other_ca)},
            "tls_certificate",
            "TLS: the broker's certificate is not trusted",
        )
    if case == "hostname-mismatch":
        return (
            brokers["wrong_host"].bootstrap,
            {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca)},
            "tls_hostname",
            "does not match the host name",
        )
    if case == "wrong-password":
        return (
            brokers["tls"].bootstrap,
            {**sasl, "sasl.password": "Wrong-Pa55"},
            "sasl_authentication",
            "SASL SCRAM-SHA-256 authentication failed",
        )
    if case == "unsupported-mechanism":
        return (
            brokers["tls"].bootstrap,
            {**sasl, "sasl.mechanism": "SCRAM-SHA-512"},
            "sasl_mechanism",
            "does not offer SASL mechanism SCRAM-SHA-512",
        )
    assert case == "real-broker-refuses"
    return (brokers["auth"].bootstrap, {**SCRAM_SSL, "security.protocol": "SASL_PLAINTEXT"},
            "sasl_authentication", "SASL SCRAM-SHA-256 authentication failed")  # fmt: skip


def _assert_said_plainly(daemon: KpdDaemon, port: int, reason: str, words: str) -> None:
    """One log line per process and cause, the metric with its reason, a `kpd status` line,
    attempts that back off, the daemon still running, and no secret anywhere."""
    assert reason in AUTH_FAILURE_REASONS  # the documented label values
    metric, label = "kpd_broker_auth_failures_total", f'reason="{reason}"'
    counted = wait_for(lambda: _total(port, metric, label), 15, f"{metric} {label}")
    status = _status_text(daemon.config_path)
    assert "CANNOT CONNECT" in status and words in status, status
    assert daemon.process.poll() is None  # the daemon keeps running
    log = daemon.log_tail(10**7)
    # One line per process and broker (naming both), not one per attempt.
    said = [
        line.split(" kpd[", 1)[1].split(": ", 1)[0]  # "worker0] WARNING broker -1"
        for line in log.splitlines()
        if words in line and "WARNING broker" in line
    ]
    assert said and len(said) == len(set(said)), log
    # reconnect.backoff.max.ms = 1 s allows a handful of attempts in the few seconds a case
    # runs; a reconnect loop without backoff would make hundreds.
    assert counted <= 30, f"{counted} attempts: reconnects do not back off"
    raw_status = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read()
    for secret in (PASSWORD, "Wrong-Pa55"):
        assert secret not in log and secret not in status and secret.encode() not in raw_status


_FAST_FAILURE = {"request.timeout.ms": 1000, "delivery.timeout.ms": 2500, "max.block.ms": 2500,
                 "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000}  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["bad-ca", "hostname-mismatch", "wrong-password", "unsupported-mechanism",
     "real-broker-refuses"],
)  # fmt: skip
def test_each_failure_is_said_plainly_and_fails_records_not_persisted(
    tmp_path, pki, tls_broker, wrong_host_broker, authenticating_tansu, case
):
    brokers = {"tls": tls_broker, "wrong_host": wrong_host_broker, "auth": authenticating_tansu}
    bootstrap, kafka, reason, words = _failure_case(case, pki, brokers)
    port = free_port()
    extra = {"kafka": {**kafka, **_FAST_FAILURE},
             "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}  # fmt: skip
    with KpdDaemon(tmp_path, bootstrap, workers=1, extra=extra) as daemon:
        with Producer(daemon.socket_path, acks="kafka") as producer:
            # A topic ingest has never seen: it waits max.block.ms for metadata that cannot
            # come, then fails the record, naming the cause (as Java's send() would).
            future = producer.send("never-delivered", b"x")
            with pytest.raises(DeliveryError) as failed:
                future.result(timeout=30)
        assert failed.value.persistence.name == "NOT_PERSISTED", failed.value
        assert words in str(failed.value), failed.value
        _assert_said_plainly(daemon, port, reason, words)


def test_a_rotated_password_fails_queued_records_after_delivery_timeout(tmp_path, pki):
    """The daemon delivers, then the broker's password changes under it and every connection
    is cut: records for a topic kpd knows wait in the worker and fail after
    delivery.timeout.ms as NOT_PERSISTED, saying that authentication failed."""
    users = SaslUsers({USER: PASSWORD}, mechanisms=("SCRAM-SHA-256",))
    with SecureTansu(tmp_path / "b", pki, tls=True, users=users) as broker:
        topic = broker.create_topic(unique_topic_name("rotated"), 1)
        port = free_port()
        kafka = {**SCRAM_SSL, "ssl.ca.location": str(pki.ca), **_FAST_FAILURE}
        extra = {"kafka": kafka, "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}}
        with KpdDaemon(tmp_path, broker.bootstrap, workers=1, extra=extra) as daemon:
            with Producer(daemon.socket_path, acks="kafka") as producer:
                assert producer.send(topic, b"before").result(timeout=30).offset >= 0
                users.passwords[USER] = "rotated-by-the-operator"
                broker.front.drop_connections()
                future = producer.send(topic, b"after")
                with pytest.raises(DeliveryError) as failed:
                    future.result(timeout=30)
            error = failed.value
            assert error.persistence.name == "NOT_PERSISTED", error
            assert "DELIVERY_TIMEOUT" in repr(error) or "expiring" in str(error), error
            assert "SASL SCRAM-SHA-256 authentication failed" in str(error), error
            _assert_said_plainly(
                daemon, port, "sasl_authentication", "SASL SCRAM-SHA-256 authentication failed"
            )
        assert [r.value for r in read_all(broker.bootstrap, topic, 1,
                config={**broker.client_config("PLAIN"), "sasl.mechanism": "SCRAM-SHA-256",
                        "sasl.password": "rotated-by-the-operator"})] == [b"before"]  # fmt: skip
