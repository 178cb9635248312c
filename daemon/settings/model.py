"""The frozen settings objects kpd's parts receive once the configuration is loaded.

Field names are the ``attr`` column of the schema (``daemon.settings.schema``); a test checks
the two agree. Fields have no defaults on purpose: defaults live in the schema only, so build
these through ``daemon.config`` (``parse_config``, ``load_config``, ``producer_settings``).

Pure data: imports only the stdlib and ``daemon.settings.secret``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from daemon.settings.secret import Secret

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**_FROZEN)
class ProducerSettings:
    """The ``kafka:`` section: what each worker's producer engine runs with.

    Names follow Kafka's keys with dots as underscores; ms values are ints in milliseconds,
    sizes ints in bytes.
    """

    bootstrap_servers: tuple[tuple[str, int], ...]  # () = `embedded`: see embedded_broker
    client_id: str
    acks: int  # -1 (all), 0 or 1, as in ProduceRequest.acks
    batch_size: int
    linger_ms: int
    buffer_memory: int
    max_block_ms: int
    retries: int
    retry_backoff_ms: int
    retry_backoff_max_ms: int
    request_timeout_ms: int
    delivery_timeout_ms: int
    max_in_flight: int
    enable_idempotence: bool
    transactional_id: str | None  # None: not transactional
    transaction_timeout_ms: int
    transaction_interval_ms: int  # kpd: commit this often
    transaction_max_bytes: int  # kpd: commit early at this many bytes
    compression: str  # codec name: none, gzip, snappy, lz4, zstd
    compression_gzip_level: int
    compression_lz4_level: int
    compression_zstd_level: int
    max_request_size: int
    metadata_max_age_ms: int
    partitioner: str  # default or round_robin
    partitioner_ignore_keys: bool
    connections_max_idle_ms: int
    reconnect_backoff_ms: int
    reconnect_backoff_max_ms: int
    socket_connection_setup_timeout_ms: int
    socket_connection_setup_timeout_max_ms: int
    security_protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    ssl_ca_location: str | None  # None = the system trust store
    ssl_certificate_location: str | None
    ssl_key_location: str | None
    ssl_key_password: Secret | None
    ssl_endpoint_identification_algorithm: str  # https or none
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: Secret | None
    sasl_oauthbearer_method: str  # default or oidc
    sasl_oauthbearer_token_endpoint_url: str | None
    sasl_oauthbearer_client_id: str | None
    sasl_oauthbearer_client_secret: Secret | None
    sasl_oauthbearer_scope: str | None
    sasl_oauthbearer_extensions: tuple[tuple[str, str], ...]
    sasl_oauthbearer_token: Secret | None
    sasl_oauthbearer_unsecure_jwt: bool
    sasl_oauthbearer_config: tuple[tuple[str, str], ...]

    @property
    def embedded_broker(self) -> bool:
        """True when ``bootstrap.servers: embedded``: start a local development broker."""
        return not self.bootstrap_servers

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def transactional(self) -> bool:
        return self.transactional_id is not None

    @property
    def compression_level(self) -> int | None:
        """The configured level of the chosen codec (None for none and snappy)."""
        return {
            "gzip": self.compression_gzip_level,
            "lz4": self.compression_lz4_level,
            "zstd": self.compression_zstd_level,
        }.get(self.compression)


@dataclass(**_FROZEN)
class LinesSocketSettings:
    """``socket.lines``: the plain-text listener (one newline-terminated line, one record)."""

    path: str
    topic: str
    key_separator: str | None  # None: every record is keyless
    mode: int
    group: str | int | None
    max_line_bytes: int


@dataclass(**_FROZEN)
class SocketSettings:
    path: str
    mode: int
    group: str | int | None
    max_frame_bytes: int
    max_connections: int
    session_expiry_s: float  # protocol v2: an idle session is forgotten after this
    session_window_records: int  # protocol v2: resolved history kept per session
    lines: LinesSocketSettings | None  # None: no plain-text listener
    kafka: tuple[str, int] | None  # None: no Kafka-protocol listener
    kafka_producer_expiry_s: float  # the listener's producer.id.expiration.ms


@dataclass(**_FROZEN)
class WorkerSettings:
    count: int  # `auto` is already resolved to the usable CPU count
    cpu_affinity: bool


@dataclass(**_FROZEN)
class RingSettings:
    memory: int  # rings.memory: the budget records_bytes and reports_bytes come from
    records_bytes: int  # per worker; finalize derives it from memory unless written
    reports_bytes: int
    prefix: str
    directory: str
    fsync: str | int  # "never", "always" or an interval in ms


@dataclass(**_FROZEN)
class MetricsSettings:
    enabled: bool
    listen: tuple[str, int]


@dataclass(**_FROZEN)
class TopicSettings:
    allow: tuple[str, ...]
    auto_create: bool

    def allows(self, topic: str) -> bool:
        """Whether ``topic`` matches one of the allowed names or glob patterns."""
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.allow)


@dataclass(**_FROZEN)
class ShutdownSettings:
    timeout_s: float


@dataclass(**_FROZEN)
class SupervisorSettings:
    heartbeat_timeout_s: float


@dataclass(**_FROZEN)
class LogSettings:
    level: str
    format: str


@dataclass(**_FROZEN)
class DaemonConfig:
    """Everything the supervisor needs; ``warnings`` are for it to log once at start."""

    producer: ProducerSettings
    socket: SocketSettings
    workers: WorkerSettings
    rings: RingSettings
    metrics: MetricsSettings
    topics: TopicSettings
    shutdown: ShutdownSettings
    supervisor: SupervisorSettings
    log: LogSettings
    warnings: tuple[str, ...]
    source: str
