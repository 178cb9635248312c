"""Settings objects for tests, built the way production builds them: from the schema's
defaults through the validated configuration, then the test's overrides.

    settings_for(ConnectionSettings, request_timeout_s=0.2)
    settings_for(ReconnectPolicy, kafka={"reconnect.backoff.ms": 10})
    settings_for(ProducerSettings, linger_ms=0)
    settings_for(IngestSettings, socket_path="/tmp/kpd.sock")

``kafka=`` (and ``config=`` for whole sections: ``{"socket": {...}}``) change the configuration
the object is derived from, exactly as a YAML file would; keyword overrides then replace fields
of the finished object. So no unit test runs with a value production never uses unless it
says so by name. A settings class missing from ``BUILDERS`` is a ``TypeError``: add the one
production function that builds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from daemon.config import DaemonConfig, ProducerSettings, parse_config
from daemon.ingest.kafka.listener import KafkaListenerSettings
from daemon.ingest.server import IngestSettings
from daemon.net.connection import ConnectionSettings
from daemon.net.from_config import connection_settings, reconnect_policy
from daemon.net.pool import ReconnectPolicy
from daemon.process.child import ingest_settings, kafka_listener_settings

__all__ = ["BUILDERS", "default_config", "settings_for"]

T = TypeVar("T")

# Where production's connections point; tests that talk to a broker override it.
_BOOTSTRAP = "127.0.0.1:9092"

# settings class -> the production function that builds it from a validated configuration.
BUILDERS: dict[type, Callable[[DaemonConfig], Any]] = {
    DaemonConfig: lambda config: config,
    ProducerSettings: lambda config: config.producer,
    ConnectionSettings: lambda config: connection_settings(
        config.producer, client_id=config.producer.client_id, carries_produce=False
    ),
    ReconnectPolicy: lambda config: reconnect_policy(config.producer),
    IngestSettings: ingest_settings,
    KafkaListenerSettings: kafka_listener_settings,
}


def default_config(
    kafka: dict[str, Any] | None = None, config: dict[str, Any] | None = None
) -> DaemonConfig:
    """The validated configuration of an otherwise empty file, plus these YAML keys."""
    sections = {name: dict(body) for name, body in (config or {}).items()}
    sections["kafka"] = {"bootstrap.servers": _BOOTSTRAP, **sections.get("kafka", {}),
                         **(kafka or {})}  # fmt: skip
    return parse_config(sections, source="settings_for()")


def settings_for(
    cls: type[T],
    *,
    kafka: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    **overrides: Any,
) -> T:
    """A ``cls`` built by production's builder from the default configuration (changed by
    ``kafka`` / ``config`` YAML keys), with ``overrides`` replacing fields afterwards."""
    try:
        build = BUILDERS[cls]
    except KeyError:
        raise TypeError(f"settings_for() has no builder for {cls.__name__}") from None
    built = build(default_config(kafka, config))
    return dataclasses.replace(built, **overrides) if overrides else built
