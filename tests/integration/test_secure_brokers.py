"""The TLS and SASL test brokers work, proven with confluent-kafka (librdkafka) alone.

Each mode of tests/brokers/secure_tansu.py is used by librdkafka to produce records and read
them back, and refuses a client that does not log in, so the kpd tests against these fixtures
measure kpd and not the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from tests.brokers import read_all, unique_topic_name
from tests.brokers.certs import Pki, make_pki
from tests.brokers.secure_front import SaslUsers
from tests.brokers.secure_tansu import PASSWORD, USER, SecureTansu

ALL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sasl_ssl(tmp_path_factory, pki) -> Iterator[SecureTansu]:
    users = SaslUsers({USER: PASSWORD}, accept_unsecured_jwt=True)
    with SecureTansu(tmp_path_factory.mktemp("tansu"), pki, tls=True, users=users) as broker:
        yield broker


def _produce_and_read(broker: SecureTansu, mechanism: str = "PLAIN", count: int = 20) -> None:
    topic = broker.create_topic(unique_topic_name(f"proof-{mechanism}"))
    config = broker.client_config(mechanism)
    producer = Producer({"bootstrap.servers": broker.bootstrap, **config})
    for i in range(count):
        producer.produce(topic, value=f"v{i}".encode())
    assert producer.flush(20) == 0
    records = read_all(broker.bootstrap, topic, count, config=config)
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(count))


@pytest.mark.parametrize("mechanism", ALL_MECHANISMS)
def test_librdkafka_logs_in_through_the_sasl_front_with_each_mechanism(sasl_ssl, mechanism):
    before = sasl_ssl.front.stats.logins
    _produce_and_read(sasl_ssl, mechanism)
    assert mechanism in sasl_ssl.front.stats.mechanisms
    assert sasl_ssl.front.stats.logins > before


def test_the_sasl_front_refuses_a_wrong_password(sasl_ssl):
    config = {**sasl_ssl.client_config("SCRAM-SHA-256"), "sasl.password": "wrong"}
    admin = AdminClient({"bootstrap.servers": sasl_ssl.bootstrap, **config})
    failed = sasl_ssl.front.stats.failed_logins
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    assert sasl_ssl.front.stats.failed_logins > failed


def test_librdkafka_connects_through_the_mutual_tls_terminator(tmp_path: Path, pki):
    with SecureTansu(tmp_path, pki, tls=True, mutual=True) as broker:
        _produce_and_read(broker)
        without_cert = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca)}
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, **without_cert})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=3)
