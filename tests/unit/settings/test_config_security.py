"""The TLS and SASL settings: librdkafka's names, secrets from files and systemd credentials,
the rules that tie them together, and secrets that never print."""

from __future__ import annotations

import pytest

from daemon.config import ConfigError, parse_config, producer_settings
from daemon.settings.secret import Secret

BOOT = "127.0.0.1:9092"
SCRAM = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "svc",
}


def _kafka(**kafka) -> dict:
    return {"bootstrap.servers": BOOT, **kafka}


def _error(kafka: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        producer_settings(_kafka(**kafka))
    return info.value


def test_a_password_from_a_file_loses_its_trailing_newline(tmp_path):
    (tmp_path / "pw").write_text("hunter2\n")
    settings = producer_settings(
        _kafka(**SCRAM, **{"sasl.password": {"file": str(tmp_path / "pw")}})
    )
    assert settings.sasl_password.reveal() == "hunter2"


def test_a_password_from_a_systemd_credential(tmp_path, monkeypatch):
    (tmp_path / "kafka-password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = producer_settings(
        _kafka(**SCRAM, **{"sasl.password": {"credential": "kafka-password"}})
    )
    assert settings.sasl_password.reveal() == "from-systemd"


def test_a_credential_without_systemd_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    error = _error({**SCRAM, "sasl.password": {"credential": "kafka-password"}})
    assert error.path == "kafka.sasl.password"
    assert "LoadCredential=" in str(error)


def test_a_missing_secret_file_is_named(tmp_path):
    error = _error({**SCRAM, "sasl.password": {"file": str(tmp_path / "absent")}})
    assert error.path == "kafka.sasl.password"
    assert "cannot read secret file" in str(error) and "absent" in str(error)


def test_secrets_never_print_in_settings_or_errors():
    settings = producer_settings(_kafka(**SCRAM, **{"sasl.password": "hunter2"}))
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert repr(settings.sasl_password) == "Secret(<inline>)"
    error = _error({**SCRAM, "sasl.password": ["hunter2"]})
    assert "hunter2" not in str(error)


def test_sasl_mechanisms_is_librdkafkas_alias_but_not_both():
    without = {k: v for k, v in SCRAM.items() if k != "sasl.mechanism"}
    settings = producer_settings(
        _kafka(**without, **{"sasl.mechanisms": "plain", "sasl.password": "x"})
    )
    assert settings.sasl_mechanism == "PLAIN"
    error = _error({**SCRAM, "sasl.mechanisms": "PLAIN", "sasl.password": "x"})
    assert error.path == "kafka.sasl.mechanisms" and "alias" in str(error)


@pytest.mark.parametrize(
    ("kafka", "path"),
    [
        ({"security.protocol": "SASL_SSL"}, "kafka.sasl.mechanism"),
        ({**SCRAM}, "kafka.sasl.password"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
         "kafka.sasl.oauthbearer.token"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
          "sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.client.id": "c",
          "sasl.oauthbearer.client.secret": "s"}, "kafka.sasl.oauthbearer.token.endpoint.url"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
          "enable.sasl.oauthbearer.unsecure.jwt": True}, "kafka.sasl.oauthbearer.config"),
        ({"security.protocol": "SSL", "ssl.certificate.location": "/c.pem"},
         "kafka.ssl.key.location"),
    ],
)  # fmt: skip
def test_each_mechanism_needs_its_credentials(kafka, path):
    assert _error(kafka).path == path


def test_security_settings_the_protocol_does_not_use_are_a_warning():
    config = parse_config({"kafka": _kafka(**{"ssl.ca.location": "/ca.pem", "sasl.username": "u"})})
    assert any("ignored: kafka.security.protocol is PLAINTEXT" in w for w in config.warnings)


def test_java_keystores_and_jaas_point_at_the_pem_and_sasl_settings():
    assert "ssl.ca.location" in str(_error({"ssl.truststore.location": "/t.jks"}))
    assert "sasl.username" in str(_error({"sasl.jaas.config": "x required;"}))


def test_secret_equality_compares_values_not_sources():
    assert Secret("a", "file /x") == Secret("a")
    assert Secret("a") != Secret("b")
