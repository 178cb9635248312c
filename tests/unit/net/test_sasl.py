"""The SASL client mechanisms against published vectors and hand-built frames.

SCRAM: RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256) example exchanges, user
"user", password "pencil". OAUTHBEARER: RFC 7628 §3.1's client response layout, built here
byte by byte. Expected values never come from the code under test.
"""

from __future__ import annotations

import base64
import json

import pytest
import scramp

from daemon.net.oauth import unsecured_jwt
from daemon.net.sasl import OAuthBearer, Plain, SaslError, Scram

RFC5802 = {
    "mechanism": "SCRAM-SHA-1",
    "nonce": "fyko+d2lbbFgONRv9qkxdawL",
    "server_first": "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "client_final": "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
    "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "server_final": "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
}
RFC7677 = {
    "mechanism": "SCRAM-SHA-256",
    "nonce": "rOprNGfwEbeRWgbNEkqO",
    "server_first": "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "client_final": "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "server_final": "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}


@pytest.mark.parametrize("vector", [RFC5802, RFC7677], ids=["rfc5802", "rfc7677"])
def test_scram_reproduces_the_rfc_example_exchange(vector):
    client = Scram(vector["mechanism"], "user", "pencil", vector["nonce"])
    assert client.first() == f"n,,n=user,r={vector['nonce']}".encode()
    assert client.step(vector["server_first"].encode()) == vector["client_final"].encode()
    assert client.step(vector["server_final"].encode()) is None


def test_scram_refuses_a_server_that_does_not_know_the_password():
    client = Scram("SCRAM-SHA-256", "user", "pencil", RFC7677["nonce"])
    client.step(RFC7677["server_first"].encode())
    forged = "v=" + base64.b64encode(b"\0" * 32).decode()
    with pytest.raises(SaslError, match="signature is wrong"):
        client.step(forged.encode())


def test_scram_refuses_a_nonce_that_does_not_extend_its_own():
    client = Scram("SCRAM-SHA-256", "user", "pencil", "abc")
    with pytest.raises(SaslError, match="nonce"):
        client.step(b"r=xyz123,s=QSXCR+Q6sek8bf92,i=4096")


def test_scram_refuses_fewer_iterations_than_kafkas_minimum():
    client = Scram("SCRAM-SHA-512", "user", "pencil", "abc")
    with pytest.raises(SaslError, match="iterations"):
        client.step(b"r=abc123,s=QSXCR+Q6sek8bf92,i=1000")


def test_scram_reports_a_server_error_attribute():
    client = Scram("SCRAM-SHA-256", "user", "pencil", "abc")
    with pytest.raises(SaslError, match="unknown-user"):
        client.step(b"e=unknown-user")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_logs_in_to_an_independent_server(mechanism):
    """scramp's server side, with a user name that needs RFC 5802's =2C / =3D escaping."""
    username, password = "a,b=c", "pässword"
    server_mechanism = scramp.ScramMechanism(mechanism)
    info = server_mechanism.make_auth_info(password, iteration_count=4096)
    seen = []

    def auth_fn(name):
        seen.append(name)
        return info

    server = server_mechanism.make_server(auth_fn)
    client = Scram(mechanism, username, password, "clientnonce123")
    server.set_client_first(client.first().decode())
    final = client.step(server.get_server_first().encode())
    server.set_client_final(final.decode())
    assert client.step(server.get_server_final().encode()) is None
    assert seen == [username]


def test_plain_sends_empty_authzid_user_and_password():
    assert Plain("alice", "pw").first() == b"\x00alice\x00pw"
    assert Plain("alice", "pw").step(b"") is None


def test_oauthbearer_frames_the_token_and_extensions_as_rfc7628():
    client = OAuthBearer("tok.en.", {"logicalCluster": "lkc-1", "a": "b"})
    expected = b"n,," + b"\x01" + b"auth=Bearer tok.en." + b"\x01"
    expected += b"a=b\x01" + b"logicalCluster=lkc-1\x01" + b"\x01"
    assert client.first() == expected
    assert client.step(b"") is None


def test_oauthbearer_reports_the_brokers_json_error_without_the_token():
    client = OAuthBearer("secret-token")
    with pytest.raises(SaslError) as info:
        client.step(json.dumps({"status": "invalid_token"}).encode())
    assert "invalid_token" in str(info.value)
    assert "secret-token" not in str(info.value)


def test_unsecured_jwt_is_alg_none_with_sub_iat_exp_and_empty_signature():
    token = unsecured_jwt("kpd", "produce", now_s=1000.0, lifetime_s=60)
    header, payload, signature = token.split(".")
    assert signature == ""

    def decode(part):
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    assert decode(header) == {"alg": "none"}
    assert decode(payload) == {"sub": "kpd", "iat": 1000, "exp": 1060, "scope": "produce"}
