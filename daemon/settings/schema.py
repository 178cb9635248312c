"""The one table of kpd settings: YAML path, value type, default and a one-line doc.

Everything about a setting is data in ``SETTINGS``; the loader, the reference doc and the
example config are all derived from it, so adding a setting is one row here plus one field in
``daemon.settings.model``. Defaults are written as a user would write them in YAML and pass
through the same value type as user input, so a default can never bypass its validator.

Kafka names and defaults follow the Java producer (``ProducerConfig``, ``CommonClientConfigs``
and ``CompressionType`` in apache/kafka ``clients/``). Keys of the Java producer that kpd does
not implement are listed in ``UNSUPPORTED_KAFKA`` with the reason, so a copied Java config gets
an explanation instead of "unknown key".

Pure data: imports only the stdlib and ``daemon.settings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.settings import model
from daemon.settings.values import (
    INT64_MAX,
    REQUIRED,
    Bool,
    Choice,
    DurationMs,
    DurationS,
    FileMode,
    FsyncPolicy,
    HostPort,
    Int,
    KeyValues,
    OptionalBlock,
    OptionalGroup,
    OptionalHostPort,
    OptionalName,
    OptionalPath,
    OptionalSecret,
    OptionalSize,
    OptionalText,
    ServerList,
    Size,
    SubSetting,
    Text,
    TopicPatterns,
    WorkerCount,
)


@dataclass(frozen=True)
class Setting:
    section: str
    key: str  # as written in YAML under its section; Kafka keys keep their dots
    attr: str  # field of the section's dataclass
    kind: Any  # a value type from daemon.settings.values
    default: Any  # raw YAML value, or REQUIRED
    doc: str
    example: Any = None  # shown in the example config instead of a REQUIRED default

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"


@dataclass(frozen=True)
class Section:
    name: str
    cls: type
    doc: str


SECTIONS: tuple[Section, ...] = (
    Section("kafka", model.ProducerSettings,
            "Kafka's own producer settings, with Kafka's names and defaults."),
    Section("socket", model.SocketSettings, "The UNIX socket applications connect to."),
    Section("workers", model.WorkerSettings, "The producer worker processes."),
    Section("rings", model.RingSettings,
            "Memory-mapped ring files between ingest and each worker: the daemon's only "
            "buffer, kept across restarts."),
    Section("metrics", model.MetricsSettings, "The Prometheus endpoint of the supervisor."),
    Section("topics", model.TopicSettings, "Which topics clients may produce to."),
    Section("shutdown", model.ShutdownSettings, "The bounded drain on SIGTERM."),
    Section("supervisor", model.SupervisorSettings,
            "How the supervisor watches its child processes (ingest and the workers)."),
    Section("log", model.LogSettings, "The daemon's own logs (stderr, so journald keeps them)."),
)

_MS = DurationMs()
_MS_INT = DurationMs(high=2**31 - 1)  # Kafka declares these as Type.INT
# daemon.ring.region takes capacities that are multiples of 8, up to 4 GiB.
_RING_SIZE = Size(64 * 1024, 2**32, multiple_of=8)


def _kafka(key: str, kind: Any, default: Any, doc: str, attr: str = "", **extra: Any) -> Setting:
    return Setting("kafka", key, attr or key.replace(".", "_"), kind, default, doc, **extra)


def _daemon(path: str, kind: Any, default: Any, doc: str, attr: str = "") -> Setting:
    section, key = path.split(".", 1)
    return Setting(section, key, attr or key, kind, default, doc)


# TLS and SASL, with librdkafka's names (file paths, not Java keystores): a confluent-kafka
# user's settings carry over. Secrets take a string, {file: PATH} or {credential: NAME}.
_PATH = OptionalPath("a PEM file path")
SECURITY_SETTINGS: tuple[Setting, ...] = (
    _kafka("ssl.ca.location", _PATH, None,
           "CA certificates (PEM) to verify brokers with; null = the system trust store. Also "
           "used for the OIDC token endpoint."),
    _kafka("ssl.certificate.location", _PATH, None,
           "Client certificate (PEM, chain allowed) for mutual TLS; needs ssl.key.location."),
    _kafka("ssl.key.location", _PATH, None, "Private key (PEM) of ssl.certificate.location."),
    _kafka("ssl.key.password", OptionalSecret(), None,
           "Passphrase of an encrypted ssl.key.location."),
    _kafka("ssl.endpoint.identification.algorithm",
           Choice({"https": "https", "none": "none"}, case_sensitive=False), "https",
           "https: the broker's certificate must name the host kpd connects to; none: skip "
           "that check (the chain is still verified)."),
    _kafka("sasl.mechanism",
           Choice({m: m for m in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")},
                  case_sensitive=False, nullable=True), None,
           "SASL mechanism for SASL_PLAINTEXT/SASL_SSL (required there); librdkafka's "
           "`sasl.mechanisms` is accepted as an alias."),
    _kafka("sasl.username", OptionalText(255, "a user name"), None,
           "User for PLAIN and SCRAM-SHA-*."),
    _kafka("sasl.password", OptionalSecret(), None, "Password for PLAIN and SCRAM-SHA-*."),
    _kafka("sasl.oauthbearer.method",
           Choice({"default": "default", "oidc": "oidc"}, case_sensitive=False), "default",
           "OAUTHBEARER token source: oidc = OIDC client credentials (KIP-768) from "
           "sasl.oauthbearer.token.endpoint.url; default = sasl.oauthbearer.token, or an "
           "unsecured JWT with enable.sasl.oauthbearer.unsecure.jwt (development only)."),
    _kafka("sasl.oauthbearer.token.endpoint.url",
           OptionalText(2048, "an https:// or http:// URL"), None,
           "OIDC token endpoint (method oidc)."),
    _kafka("sasl.oauthbearer.client.id", OptionalText(1024, "a client id"), None,
           "OIDC client id (method oidc)."),
    _kafka("sasl.oauthbearer.client.secret", OptionalSecret(), None,
           "OIDC client secret (method oidc)."),
    _kafka("sasl.oauthbearer.scope", OptionalText(1024, "a scope"), None,
           "OIDC scope to request (method oidc); null requests none."),
    _kafka("sasl.oauthbearer.extensions", KeyValues(), None,
           "SASL extensions sent with the token (RFC 7628), e.g. logicalCluster=lkc-1."),
    _kafka("sasl.oauthbearer.token", OptionalSecret(), None,
           "kpd only: a fixed bearer token (method default), read when the config is loaded; "
           "for tokens that expire use method oidc."),
    _kafka("enable.sasl.oauthbearer.unsecure.jwt", Bool(), False,
           "Method default without a token: log in with an unsigned JWT built from "
           "sasl.oauthbearer.config. Development brokers only.",
           attr="sasl_oauthbearer_unsecure_jwt"),
    _kafka("sasl.oauthbearer.config", KeyValues(), None,
           "For the unsecured JWT: principal=NAME (required), scope=..., lifeSeconds=3600, "
           "as librdkafka; written with spaces or commas between pairs."),
)

KAFKA_SETTINGS: tuple[Setting, ...] = (
    _kafka("bootstrap.servers", ServerList(), REQUIRED,
           "Brokers to fetch cluster metadata from first; `embedded` starts a local "
           "development broker (needs the `embedded` extra).",
           example="broker1:9092,broker2:9092"),
    _kafka("client.id", Text(r"[A-Za-z0-9._ -]*", 255, "a client id of [A-Za-z0-9._ -]"), "kpd",
           "Sent with every request for broker logs and quotas (Kafka's default is empty; "
           "kpd's is `kpd`)."),
    _kafka("acks", Choice({"all": -1, "-1": -1, "0": 0, "1": 1},
                          hint="Kafka has no acks 2: the replication quorum ack is all (-1)"),
           "all",
           "Acknowledgements the leader needs before a write counts: 0 none, 1 leader only, "
           "all (= -1) every in-sync replica."),
    _kafka("batch.size", Size(0), 262144,
           "Upper bound in bytes of one partition's batch; 0 sends every record alone. kpd's "
           "default is 256 KiB, not Kafka's 16 KiB: a daemon carries many apps' records, and "
           "per-batch work dominates kpd's workers and the broker (with 1 KiB records, 16 KiB "
           "batches cost kpd 2x and the broker 2x the CPU per record of 256 KiB ones; "
           "docs/performance.md). linger.ms still bounds the wait at low rates."),
    _kafka("linger.ms", DurationMs(), 5,
           "How long a partition's batch may wait for more records before it is sent, "
           "counted from ingest's acceptance of its first record."),
    _kafka("buffer.memory", Size(0, INT64_MAX), 33554432,
           "Per worker: bytes of records the engine may hold in open and in-flight batches; "
           "past it the worker stops reading its ring, which then fills."),
    _kafka("max.block.ms", _MS, 60000,
           "How long ingest holds a client's records while its worker's ring is full before "
           "answering them BUFFER_FULL (kpd has no separate ingest setting for this)."),
    _kafka("retries", Int(0), 2147483647,
           "Retries of a batch that failed with a retriable error; delivery.timeout.ms bounds "
           "them in time."),
    _kafka("retry.backoff.ms", _MS, 100, "First wait before retrying a failed request."),
    _kafka("retry.backoff.max.ms", _MS, 1000,
           "Cap of the exponential retry backoff (with jitter)."),
    _kafka("request.timeout.ms", _MS_INT, 30000,
           "How long to wait for a broker's response before the request counts as failed."),
    _kafka("delivery.timeout.ms", _MS_INT, 120000,
           "Upper bound from accepting a record to reporting its success or failure, retries "
           "included; must be >= linger.ms + request.timeout.ms."),
    _kafka("max.in.flight.requests.per.connection", Int(1), 5,
           "Unacknowledged requests per broker connection; at most 5 with idempotence.",
           attr="max_in_flight"),
    _kafka("enable.idempotence", Bool(), True,
           "Producer ids and sequence numbers so retries write no duplicates and keep order; "
           "needs acks=all, retries > 0, max.in.flight <= 5."),
    # Kafka allows any string; kpd appends "-<workers>-<index>" per worker, and a plain
    # character set keeps the ids readable in logs, file names and broker tools.
    _kafka("transactional.id",
           OptionalName(Text(r"[A-Za-z0-9._-]+", 200, "1-200 of [A-Za-z0-9._-]")), None,
           "Turns on exactly-once mode: each worker writes in transactions under its own id "
           "`<transactional.id>-<workers.count>-<index>`; needs idempotence, acks=all and "
           "max.in.flight <= 5. Null: no transactions."),
    _kafka("transaction.timeout.ms", _MS_INT, 60000,
           "How long the coordinator lets a transaction stay open before it aborts it; at most "
           "the broker's transaction.max.timeout.ms. After an outage longer than this, kpd "
           "replays the aborted transaction under a bumped epoch (KIP-588)."),
    _kafka("transaction.interval.ms", _MS_INT, 100,
           "kpd only, exactly-once mode: commit the open transaction this often. Records are "
           "reported at ack level `kafka` only once committed, so this adds about half of it, "
           "plus one EndTxn round trip, to their latency; a larger value means fewer, larger "
           "transactions."),
    _kafka("transaction.max.bytes", Size(1024), "8MiB",
           "kpd only, exactly-once mode: commit early once a transaction holds this many bytes "
           "of batches; at most half of buffer.memory, which holds them until the commit."),
    _kafka("compression.type",
           Choice({name: name for name in ("none", "gzip", "snappy", "lz4", "zstd")}), "none",
           "Codec for whole record batches.", attr="compression"),
    # Levels and ranges are Kafka's CompressionType: gzip 1..9 or -1 (zlib's default, 6),
    # lz4 1..17 (lz4-java), zstd -131072..22 (ZSTD_minCLevel..ZSTD_MAX_CLEVEL).
    _kafka("compression.gzip.level", Int(1, 9, also=(-1,)), -1,
           "gzip level when compression.type is gzip; -1 is zlib's default (6)."),
    _kafka("compression.lz4.level", Int(1, 17), 9,
           "lz4 level when compression.type is lz4."),
    _kafka("compression.zstd.level", Int(-131072, 22), 3,
           "zstd level when compression.type is zstd."),
    _kafka("max.request.size", Size(0), 1048576,
           "Largest produce request kpd sends with several batches in it; one batch (or "
           "record) larger than this still goes, alone in its request, and the broker's "
           "message.max.bytes decides (docs/protocol.md section 6, Record size)."),
    _kafka("metadata.max.age.ms", _MS, 300000,
           "Refresh cluster metadata at least this often, even without errors."),
    _kafka("partitioner",
           Choice({"default": "default", "round_robin": "round_robin"}), "default",
           "kpd's partitioner.class: default = murmur2 of the key as in Java, sticky when "
           "keyless; round_robin = every record to the next partition, key or not."),
    _kafka("partitioner.ignore.keys", Bool(), False,
           "Partition keyed records as if keyless (the default partitioner only)."),
    _kafka("connections.max.idle.ms", _MS, 540000,
           "Close a broker connection idle for this long."),
    _kafka("reconnect.backoff.ms", _MS, 50, "First wait before reconnecting to a broker."),
    _kafka("reconnect.backoff.max.ms", _MS, 1000,
           "Cap of the exponential reconnect backoff (with jitter)."),
    _kafka("socket.connection.setup.timeout.ms", _MS, 10000,
           "First timeout for a TCP connection to a broker to be established."),
    _kafka("socket.connection.setup.timeout.max.ms", _MS, 30000,
           "Cap of the exponentially growing connection setup timeout."),
    _kafka("security.protocol",
           Choice({p: p for p in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")},
                  case_sensitive=False),
           "PLAINTEXT",
           "How to talk to brokers: SSL = TLS, SASL_* = authenticate with sasl.mechanism "
           "(SASL_SSL over TLS)."),
    *SECURITY_SETTINGS,
)

# sun_path holds 108 bytes including the NUL (unix(7)).
_SOCKET_PATH = Text(r"\S.*", 107, "a path of at most 107 bytes")

# The plain-text listener (daemon.ingest.lines): each newline-terminated line is one record.
_LINES_SOCKET = OptionalBlock(
    (
        SubSetting("path", _SOCKET_PATH, REQUIRED,
                   "its UNIX socket; relative to the working directory like socket.path"),
        SubSetting("topic", Text(r"(?!\.\.?$)[a-zA-Z0-9._-]{1,249}", 249, "a topic name"),
                   REQUIRED, "the topic every line goes to"),
        SubSetting("key_separator", OptionalText(16, "1-16 bytes", min_len=1), None,
                   "a line `KEY<sep>VALUE` is keyed at the first separator (a line without "
                   "one is keyless); null: every line is a keyless value"),
        SubSetting("mode", FileMode(), "0660", "permission bits of the socket file"),
        SubSetting("group", OptionalGroup(), None, "group owning the socket file"),
        SubSetting("max_line_bytes", Size(1, 2**31 - 1), "512KiB",
                   "a longer line is skipped whole and counted in "
                   "kpd_ingest_lines_too_long_total"),
    ),
    model.LinesSocketSettings,
    "a mapping",
)

DAEMON_SETTINGS: tuple[Setting, ...] = (
    _daemon("socket.path", _SOCKET_PATH,
            "/run/kpd/kpd.sock",
            "UNIX socket path; a relative path is relative to the daemon's working directory."),
    _daemon("socket.mode", FileMode(), "0660", "Permission bits of the socket file."),
    _daemon("socket.group", OptionalGroup(), None,
            "Group owning the socket file (name or gid); null keeps the daemon's group."),
    # The kpd protocol's floor for a server's max frame (MIN_MAX_FRAME_BYTES, protocol.md).
    _daemon("socket.max_frame_bytes", Size(65536), "1088KiB",
            "Largest kpd-protocol frame a client may send: one max.request.size of records "
            "plus room for frame headers."),
    _daemon("socket.max_connections", Int(1, 65536), 1024,
            "Client connections served at once; more are refused."),
    _daemon("socket.session_expiry", DurationS(1), "900s",
            "Protocol version 2: how long kpd remembers a session (its records taken and "
            "their outcomes, in <rings.directory>/<rings.prefix>-sessions.journal) after its "
            "last connection ended; a client reconnecting later starts a new session.",
            attr="session_expiry_s"),
    _daemon("socket.session_window", Int(1000, 2**31 - 1), 1000000,
            "Protocol version 2: records of resolved history each session keeps for "
            "recognising resends (records still waiting for their outcome are kept anyway).",
            attr="session_window_records"),
    _daemon("socket.lines", _LINES_SOCKET, None,
            "A plain-text listener for programs that cannot link a kpd client (shell "
            "scripts, log shippers): every newline-terminated line written to its socket is "
            "one record (ack level `accepted`). See docs/operations.md, \"Sending plain "
            "lines\"."),
    _daemon("socket.kafka", OptionalHostPort(), None,
            "A Kafka-protocol listener (TCP) through which any unmodified Kafka client "
            "produces: `bootstrap.servers` set to this address. Off unless set; serves "
            "socket.max_connections connections and requests up to socket.max_frame_bytes. "
            "A non-loopback address is allowed but warned about: anyone who can reach it "
            "can produce. See docs/operations.md, \"Any Kafka client\"."),
    _daemon("socket.kafka_producer_expiry", DurationS(60, 30 * 86_400), "24h",
            "The Kafka listener's producer.id.expiration.ms (Kafka's default, one day): an "
            "idempotent producer id idle this long is forgotten with its kept batches (in "
            "<rings.directory>/<rings.prefix>-kafka-producers.jsonl); its next batch gets "
            "UNKNOWN_PRODUCER_ID and the client asks for a new id.",
            attr="kafka_producer_expiry_s"),
    _daemon("workers.count", WorkerCount(), "auto",
            "Worker processes; `auto` = one fewer than the CPUs this process may run on, at "
            "least 1 (ingest, on the path of every record, keeps a CPU of its own)."),
    _daemon("workers.cpu_affinity", Bool(), False,
            "Pin worker i to the i-th usable CPU (wrapping around)."),
    _daemon("rings.memory", Size(2 * 1024 * 1024, 2**40), "64MiB",
            "All ring files together, every worker's records and reports rings: one budget, "
            "as Java's buffer.memory is one number per producer, so kpd's memory does not "
            "grow with workers.count (the rings' pages become resident as they wrap). Each "
            "worker gets rings.memory / workers.count, 8/9 of it for its records ring and 1/9 "
            "for its reports ring (each at least 64KiB)."),
    _daemon("rings.records_bytes", OptionalSize(_RING_SIZE), None,
            "Size of each worker's record ring (ingest to worker); null: its share of "
            "rings.memory."),
    _daemon("rings.reports_bytes", OptionalSize(_RING_SIZE), None,
            "Size of each worker's delivery-report ring (worker to ingest); null: its share "
            "of rings.memory."),
    _daemon("rings.prefix", Text(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,31}", 32,
                                 "1-32 of [A-Za-z0-9_-], not starting with -"), "kpd",
            "Prefix of the ring file names; two daemons sharing a directory need different "
            "ones."),
    _daemon("rings.directory", Text(r"\S.*", 4000, "a directory path"), "/var/lib/kpd",
            "State directory holding the ring files; they outlive the daemon, and the next "
            "start produces what they still hold. A relative path is relative to the daemon's "
            "working directory. systemd's StateDirectory=kpd is /var/lib/kpd."),
    _daemon("rings.fsync", FsyncPolicy(), "never",
            "When ring files are synced to the disk: never (the kernel writes them back; "
            "accepted records survive any crash of kpd, not a power loss), an interval such "
            "as 100ms (a power loss loses at most that much), or always (every publish is on "
            "the disk before clients hear ACCEPTED)."),
    _daemon("metrics.enabled", Bool(), True, "Serve Prometheus metrics."),
    _daemon("metrics.listen", HostPort(allow_port_zero=True), "127.0.0.1:9464",
            "Address of the /metrics endpoint; port 0 picks a free port."),
    _daemon("topics.allow", TopicPatterns(), ["*"],
            "Topic names or globs (* and ?) clients may produce to; others are refused."),
    _daemon("topics.auto_create", Bool(), True,
            "Ask the cluster to create a topic that does not exist when a record names it (the "
            "broker does only with auto.create.topics.enable). With false, or when the cluster "
            "does not create it, the record fails at once with UNKNOWN_TOPIC."),
    _daemon("shutdown.timeout", DurationS(0.001), "30s",
            "On SIGTERM, how long to drain buffered records to Kafka before exiting anyway.",
            attr="timeout_s"),
    _daemon("supervisor.heartbeat_timeout", DurationS(0.5), "30s",
            "A child process (ingest or a worker) whose event loop has not beaten for this "
            "long is hung (a deadlock, an endless loop, SIGSTOP): the supervisor logs it, has "
            "it dump its stack to the log, kills it and starts another, which produces what "
            "its ring still holds. The systemd watchdog is fed only while every child beats: "
            "keep WatchdogSec= above this.",
            attr="heartbeat_timeout_s"),
    _daemon("log.level", Choice({n: n for n in ("debug", "info", "warning", "error")}), "info",
            "Least severe level logged."),
    _daemon("log.format", Choice({"text": "text", "json": "json"}), "text",
            "text: one human line per event; json: one JSON object per line."),
)

SETTINGS: tuple[Setting, ...] = KAFKA_SETTINGS + DAEMON_SETTINGS

_NOT_YET = "not supported yet"
_NO_PLUGINS = "kpd runs no plug-in code"
_METRICS = "kpd serves Prometheus metrics instead (see the metrics section)"
_ADAPTIVE = "kpd's sticky partitioner is uniform; adaptive partitioning is not supported yet"

# Java producer keys kpd rejects on purpose, with the reason the error message gives.
UNSUPPORTED_KAFKA: dict[str, str] = {
    "key.serializer": "records reach kpd as bytes; serializers run in the client",
    "value.serializer": "records reach kpd as bytes; serializers run in the client",
    "interceptor.classes": _NO_PLUGINS,
    "partitioner.class": _NO_PLUGINS + "; choose kafka.partitioner instead",
    "config.providers": _NO_PLUGINS,
    "security.providers": _NO_PLUGINS,
    "sasl.jaas.config": "Java JAAS is not read; give sasl.username and sasl.password",
    "sasl.client.callback.handler.class": _NO_PLUGINS,
    "sasl.login.callback.handler.class": _NO_PLUGINS,
    "metric.reporters": _METRICS,
    "metrics.sample.window.ms": _METRICS,
    "metrics.num.samples": _METRICS,
    "metrics.recording.level": _METRICS,
    "enable.metrics.push": _METRICS,
    "partitioner.adaptive.partitioning.enable": _ADAPTIVE,
    "partitioner.availability.timeout.ms": _ADAPTIVE,
    "transaction.two.phase.commit.enable": "kpd commits its own transactions (KIP-939 is "
    "for an external transaction manager)",
    "client.dns.lookup": _NOT_YET,
    "send.buffer.bytes": _NOT_YET + "; kpd uses the system's socket buffer sizes",
    "receive.buffer.bytes": _NOT_YET + "; kpd uses the system's socket buffer sizes",
    "metadata.max.idle.ms": _NOT_YET,
    "metadata.recovery.strategy": _NOT_YET,
    "metadata.recovery.rebootstrap.trigger.ms": _NOT_YET,
}

UNSUPPORTED_KAFKA_PREFIXES: dict[str, str] = {
    "ssl.keystore.": "Java keystores are not read; give PEM files with ssl.certificate.location "
    "and ssl.key.location",
    "ssl.truststore.": "Java truststores are not read; give a PEM file with ssl.ca.location",
    "sasl.kerberos.": "GSSAPI (Kerberos) is not supported; use PLAIN, SCRAM or OAUTHBEARER",
    "sasl.login.": "kpd logs in by itself; sasl.mechanism and the sasl.* credentials choose how",
    "sasl.oauthbearer.jwks.": "a client does not validate tokens; that is the broker's job",
    "ssl.": "not supported; kpd's TLS settings are ssl.ca.location, ssl.certificate.location, "
    "ssl.key.location, ssl.key.password and ssl.endpoint.identification.algorithm",
    "sasl.": "not supported; see the sasl.* settings in docs/configuration.md",
}

# librdkafka spellings accepted for a kpd key (the two may not both be written).
KAFKA_ALIASES: dict[str, str] = {"sasl.mechanisms": "sasl.mechanism"}


def unsupported_reason(key: str) -> str | None:
    """Why the Kafka producer key ``key`` is rejected, or None if it is not a rejected key."""
    if key in UNSUPPORTED_KAFKA:
        return UNSUPPORTED_KAFKA[key]
    for prefix, reason in UNSUPPORTED_KAFKA_PREFIXES.items():
        if key.startswith(prefix):
            return reason
    return None
