"""tansu behind a SecureFront: a broker that speaks TLS, mutual TLS and/or SASL.

``SecureTansu(log_dir, pki, tls=..., mutual=..., users=...)`` starts the front's listener,
a tansu that advertises it, and the front's forwarding; ``client_config()`` gives the
confluent-kafka settings that reach it (the independent client the tests prove the fixture
with and read records back through). Imports no kpd code.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokers.certs import CLIENT_KEY_PASSWORD, Pki
from tests.brokers.ports import LOOPBACK, free_port
from tests.brokers.secure_front import SaslUsers, SecureFront
from tests.brokers.tansu import TansuBroker

USER, PASSWORD = "kpd-user", "s3cret-Pa55,word="  # "," and "=" exercise SCRAM's escaping


def server_context(pki: Pki, *, mutual: bool = False, wrong_host: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if wrong_host:
        context.load_cert_chain(pki.wrong_host_cert, pki.wrong_host_key)
    else:
        context.load_cert_chain(pki.server_cert, pki.server_key)
    if mutual:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return context


class SecureTansu:
    def __init__(
        self,
        log_dir: Path,
        pki: Pki,
        *,
        tls: bool = False,
        mutual: bool = False,
        wrong_host: bool = False,
        users: SaslUsers | None = None,
        session_lifetime_ms: int = 0,
    ) -> None:
        self.pki = pki
        self.tls = tls
        self.mutual = mutual
        self.users = users
        context = server_context(pki, mutual=mutual, wrong_host=wrong_host) if tls else None
        self.front = SecureFront(tls=context, users=users, session_lifetime_ms=session_lifetime_ms)
        # The front serves before tansu starts, so tansu's own readiness check, which follows
        # Metadata to the advertised front, is answered at once instead of timing out.
        self._tansu_port = free_port()
        self.tansu = TansuBroker(
            log_dir, advertised_port=self.front.port, port_source=lambda: self._tansu_port
        )

    def __enter__(self) -> SecureTansu:
        self.front.start(f"{LOOPBACK}:{self._tansu_port}")
        try:
            self.tansu.start()
        except BaseException:
            self.front.stop()
            raise
        self.tansu.release_admin()  # topics are created through the front (create_topic)
        return self

    def __exit__(self, *exc: object) -> None:
        self.front.stop()
        self.tansu.stop()

    @property
    def bootstrap(self) -> str:
        return self.front.bootstrap

    @property
    def protocol(self) -> str:
        if self.users is None:
            return "SSL" if self.tls else "PLAINTEXT"
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    def client_config(self, mechanism: str = "PLAIN") -> dict[str, Any]:
        """librdkafka settings that log in to this broker (with the fixture's user)."""
        config: dict[str, Any] = {"security.protocol": self.protocol}
        if self.tls:
            config["ssl.ca.location"] = str(self.pki.ca)
        if self.mutual:
            config["ssl.certificate.location"] = str(self.pki.client_cert)
            config["ssl.key.location"] = str(self.pki.client_key)
            config["ssl.key.password"] = CLIENT_KEY_PASSWORD
        if self.users is not None:
            config["sasl.mechanism"] = mechanism
            if mechanism == "OAUTHBEARER":
                config["enable.sasl.oauthbearer.unsecure.jwt"] = True
                config["sasl.oauthbearer.config"] = "principal=reader"
            else:
                config["sasl.username"] = USER
                config["sasl.password"] = PASSWORD
        return config

    def create_topic(self, name: str, partitions: int = 1, timeout_s: float = 15.0) -> str:
        """Create ``name`` through the front with confluent-kafka's AdminClient."""
        mechanism = self.users.mechanisms[0] if self.users else "PLAIN"
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.client_config(mechanism)})
        futures = admin.create_topics([NewTopic(name, partitions, 1)], request_timeout=timeout_s)
        futures[name].result(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            found = admin.list_topics(name, timeout=timeout_s).topics.get(name)
            if found is not None and found.error is None and len(found.partitions) == partitions:
                return name
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {name} not ready: {found}")
            time.sleep(0.05)  # poll interval of a wait-for-condition loop
