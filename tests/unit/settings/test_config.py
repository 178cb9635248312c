"""Tests of the configuration schema, loader, finalize rules and generated reference.

Expected defaults are written out here from Kafka's ProducerConfig / CommonClientConfigs /
CompressionType, not read back from the schema under test.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from daemon.config import (
    ConfigError,
    DaemonConfig,
    load_config,
    main,
    parse_config,
    producer_settings,
    render_example,
    render_markdown,
)
from daemon.settings.model import LinesSocketSettings
from daemon.settings.schema import SECTIONS, SETTINGS
from daemon.settings.values import auto_worker_count

REPO = Path(__file__).resolve().parents[3]
BOOT = "broker:9092"


def _config(**sections: dict) -> DaemonConfig:
    data = {"kafka": {"bootstrap.servers": BOOT}}
    for name, body in sections.items():
        data.setdefault(name, {}).update(body)
    return parse_config(data)


def _error(**sections: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _config(**sections)
    return info.value


# --- defaults --------------------------------------------------------------------------------

# Java producer defaults (apache/kafka ProducerConfig, CommonClientConfigs, CompressionType).
KAFKA_DEFAULTS = {
    "acks": -1,  # "all"
    "linger_ms": 5,  # 5 since Kafka 4.0
    "buffer_memory": 32 * 1024 * 1024,
    "max_block_ms": 60_000,
    "retries": 2**31 - 1,
    "retry_backoff_ms": 100,
    "retry_backoff_max_ms": 1000,
    "request_timeout_ms": 30_000,
    "delivery_timeout_ms": 120_000,
    "max_in_flight": 5,
    "enable_idempotence": True,
    "compression": "none",
    "compression_gzip_level": -1,  # Deflater.DEFAULT_COMPRESSION
    "compression_lz4_level": 9,
    "compression_zstd_level": 3,  # ZSTD_CLEVEL_DEFAULT
    "max_request_size": 1024 * 1024,
    "metadata_max_age_ms": 5 * 60 * 1000,
    "partitioner_ignore_keys": False,
    "connections_max_idle_ms": 9 * 60 * 1000,
    "reconnect_backoff_ms": 50,
    "reconnect_backoff_max_ms": 1000,
    "socket_connection_setup_timeout_ms": 10_000,
    "socket_connection_setup_timeout_max_ms": 30_000,
    "security_protocol": "PLAINTEXT",
}


# Where kpd's default deliberately differs from Java's, with the reason in the setting's doc.
DAEMON_DEFAULTS = {
    "batch_size": (256 * 1024, 16384),  # per-batch work dominates a daemon (performance.md)
}


def test_kafka_defaults_equal_the_java_producer_defaults():
    settings = producer_settings(bootstrap_servers=BOOT)
    actual = {name: getattr(settings, name) for name in KAFKA_DEFAULTS}
    assert actual == KAFKA_DEFAULTS


def test_daemon_defaults_that_differ_from_java_say_so_in_the_reference():
    settings = producer_settings(bootstrap_servers=BOOT)
    doc = render_markdown()
    for name, (ours, java) in DAEMON_DEFAULTS.items():
        assert getattr(settings, name) == ours
        line = next(row for row in doc.splitlines() if f"`{name.replace('_', '.')}`" in row)
        assert "not Kafka's" in line and str(ours) in line, line
        assert java != ours


def test_kpd_specific_kafka_defaults():
    settings = producer_settings(bootstrap_servers=BOOT)
    assert settings.partitioner == "default"
    assert settings.client_id == "kpd"
    assert settings.compression_level is None


def test_daemon_section_defaults():
    config = _config()
    assert config.socket.path == "/run/kpd/kpd.sock"
    assert config.socket.mode == 0o660
    assert config.socket.group is None
    assert config.socket.max_frame_bytes == 1024 * 1024 + 64 * 1024
    # One 64 MiB budget split over the workers: 8/9 records ring, 1/9 reports ring each.
    share = 64 * 1024 * 1024 // config.workers.count
    assert config.rings.memory == 64 * 1024 * 1024
    assert config.rings.reports_bytes == share // 9 // 8 * 8
    assert config.rings.records_bytes == (share - share // 9) // 8 * 8
    assert config.rings.prefix == "kpd"
    assert config.metrics.enabled is True
    assert config.metrics.listen == ("127.0.0.1", 9464)
    assert config.topics.allow == ("*",)
    assert config.shutdown.timeout_s == 30.0
    assert (config.log.level, config.log.format) == ("info", "text")
    assert config.workers.cpu_affinity is False
    assert config.warnings == ()


def test_workers_count_auto_leaves_ingest_a_cpu_of_its_own():
    assert _config().workers.count == max(1, len(os.sched_getaffinity(0)) - 1)
    assert _config(workers={"count": 3}).workers.count == 3
    assert [auto_worker_count(cpus) for cpus in (1, 2, 4, 64)] == [1, 1, 3, 63]


def test_every_schema_attr_is_a_field_of_its_section_dataclass():
    for section in SECTIONS:
        attrs = {s.attr for s in SETTINGS if s.section == section.name}
        fields = {f.name for f in dataclasses.fields(section.cls)}
        assert attrs == fields, section.name


def test_settings_are_frozen():
    config = _config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.producer.linger_ms = 0  # type: ignore[misc]


# --- value parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("all", -1),
        (-1, -1),
        ("-1", -1),
        (0, 0),
        ("0", 0),
        (1, 1),
        ("1", 1),
    ],
)
def test_acks_accepts_kafka_spellings(raw, expected):
    assert (
        producer_settings(bootstrap_servers=BOOT, acks=raw, enable_idempotence=False).acks
        == expected
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (16384, 16384),
        ("16384", 16384),
        ("16KiB", 16 * 1024),
        ("16 KiB", 16 * 1024),
        ("1.5KiB", 1536),
        ("1MiB", 1024 * 1024),
        ("1mib", 1024 * 1024),
        ("100KB", 100_000),
        ("1MB", 1_000_000),
        ("7B", 7),
    ],
)
def test_sizes_take_bytes_or_human_units(raw, expected):
    assert producer_settings(bootstrap_servers=BOOT, batch_size=raw).batch_size == expected


@pytest.mark.parametrize("raw", ["1.1B", "12 parsecs", "MiB", "", True, 1.5, "-1KiB"])
def test_bad_sizes_are_rejected_with_their_path(raw):
    with pytest.raises(ConfigError) as info:
        producer_settings(bootstrap_servers=BOOT, batch_size=raw)
    assert info.value.path == "kafka.batch.size"


@pytest.mark.parametrize(
    ("raw", "expected_ms"),
    [
        (250, 250),
        ("250", 250),
        ("500ms", 500),
        ("5s", 5000),
        ("0.5s", 500),
        ("2m", 120_000),
        ("1h", 3_600_000),
    ],
)
def test_kafka_durations_are_milliseconds_or_human_units(raw, expected_ms):
    assert producer_settings(bootstrap_servers=BOOT, linger_ms=raw).linger_ms == expected_ms


@pytest.mark.parametrize("raw", ["0.5ms", "soon", "5 days", -1])
def test_bad_kafka_durations_are_rejected(raw):
    with pytest.raises(ConfigError) as info:
        producer_settings(bootstrap_servers=BOOT, linger_ms=raw)
    assert info.value.path == "kafka.linger.ms"


@pytest.mark.parametrize(
    ("raw", "expected_s"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("45", 45.0),
    ],
)
def test_daemon_durations_are_seconds_or_human_units(raw, expected_s):
    assert _config(shutdown={"timeout": raw}).shutdown.timeout_s == expected_s


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("h1:9092", (("h1", 9092),)),
        ("h1:9092, h2:9093", (("h1", 9092), ("h2", 9093))),
        (["h1:9092", "h2:9093"], (("h1", 9092), ("h2", 9093))),
        ("[::1]:9092", (("::1", 9092),)),
        ([("127.0.0.1", 9092)], (("127.0.0.1", 9092),)),
        ("embedded", ()),
    ],
)
def test_bootstrap_servers_take_lists_comma_strings_and_embedded(raw, expected):
    settings = producer_settings(bootstrap_servers=raw)
    assert settings.bootstrap_servers == expected
    assert settings.embedded_broker is (expected == ())


@pytest.mark.parametrize(("raw", "expected"), [("0660", 0o660), ("0o600", 0o600), (0o640, 0o640)])
def test_socket_mode_takes_octal_strings_and_ints(raw, expected):
    assert _config(socket={"mode": raw}).socket.mode == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("never", "never"),
        ("always", "always"),
        (100, 100),
        ("100ms", 100),
        ("1s", 1000),
    ],
)
def test_rings_fsync_takes_never_always_or_an_interval_in_ms(raw, expected):
    assert _config(rings={"fsync": raw}).rings.fsync == expected


def test_unquoted_yaml_octal_mode_reads_as_octal(tmp_path):
    path = tmp_path / "kpd.yaml"
    path.write_text(f"kafka:\n  bootstrap.servers: {BOOT}\nsocket:\n  mode: 0660\n")
    assert load_config(path).socket.mode == 0o660


def test_compression_level_follows_the_chosen_codec():
    settings = producer_settings(
        bootstrap_servers=BOOT, compression="zstd", compression_zstd_level=7
    )
    assert (settings.compression, settings.compression_level) == ("zstd", 7)


def test_topic_allow_list_matches_names_and_globs():
    topics = _config(topics={"allow": ["orders.*", "audit"]}).topics
    assert topics.allows("orders.eu")
    assert topics.allows("audit")
    assert not topics.allows("auditing")
    assert not topics.allows("payments")


# --- invalid values name their YAML path -----------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "raw", "fragment"),
    [
        ("kafka", "acks", 2, "must be one of all, -1, 0, 1"),
        ("kafka", "acks", True, "must be one of"),
        ("kafka", "batch.size", -1, "must be between 0 and"),
        ("kafka", "compression.type", "brotli", "must be one of none, gzip, snappy, lz4, zstd"),
        ("kafka", "compression.gzip.level", 0, "must be between 1 and 9"),
        ("kafka", "compression.gzip.level", 10, "must be between 1 and 9"),
        ("kafka", "compression.lz4.level", 18, "must be between 1 and 17"),
        ("kafka", "compression.zstd.level", 23, "must be between -131072 and 22"),
        ("kafka", "compression.zstd.level", -131073, "must be between -131072 and 22"),
        ("kafka", "enable.idempotence", "maybe", "must be true or false"),
        ("kafka", "max.in.flight.requests.per.connection", 0, "must be between 1 and"),
        ("kafka", "retries", -1, "must be between 0 and"),
        ("kafka", "request.timeout.ms", 2**31, "must be between 0 and 2147483647"),
        ("kafka", "bootstrap.servers", "broker", "must be host:port"),
        ("kafka", "bootstrap.servers", "broker:0", "port must be between 1 and 65535"),
        ("kafka", "bootstrap.servers", "broker:70000", "port must be between 1 and 65535"),
        ("kafka", "bootstrap.servers", [], "at least one"),
        ("kafka", "bootstrap.servers", "a:1,a:1", "must not repeat"),
        ("kafka", "partitioner", "sticky", "must be one of default, round_robin"),
        ("kafka", "security.protocol", "TLS", "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT"),
        ("socket", "mode", 660, "at most 0777"),
        ("socket", "mode", "rw-rw----", "octal mode"),
        ("socket", "path", "/tmp/" + "x" * 103, "at most 107 bytes"),
        ("socket", "group", "bad group", "group name"),
        ("socket", "max_connections", 0, "must be between 1 and 65536"),
        ("workers", "count", 0, "must be between 1 and 1024"),
        ("workers", "count", "many", "positive integer or 'auto'"),
        ("rings", "records_bytes", "32KiB", "must be between 65536"),
        ("rings", "prefix", "a/b", "[A-Za-z0-9_-]"),
        ("rings", "prefix", "-kpd", "not starting with -"),
        ("rings", "reports_bytes", 65537, "multiple of 8"),
        ("rings", "reports_bytes", "5GiB", "must be between 65536 and 4294967296"),
        ("rings", "fsync", "sometimes", "must be never, always or an interval"),
        ("rings", "fsync", 0, "must be never, always or an interval"),
        ("rings", "fsync", "2h", "must be never, always or an interval"),
        ("metrics", "listen", "localhost", "must be host:port"),
        ("metrics", "enabled", "yes please", "must be true or false"),
        ("topics", "allow", ["bad topic"], "topic names or patterns"),
        ("topics", "allow", [], "non-empty list"),
        ("shutdown", "timeout", "forever", "duration"),
        ("shutdown", "timeout", 0, "must be between 0.001"),
        ("log", "level", "verbose", "must be one of debug, info, warning, error"),
        ("log", "format", "xml", "must be one of text, json"),
    ],
)
def test_each_invalid_value_is_reported_with_its_yaml_path(section, key, raw, fragment):
    error = _error(**{section: {key: raw}})
    assert error.path == f"{section}.{key}"
    assert str(error).startswith(f"{section}.{key}: ")
    assert fragment in error.message


def test_every_error_in_the_file_is_reported_at_once():
    error = _error(
        kafka={"acks": 7, "linger.ms": "soon"}, socket={"mode": 999}, log={"colour": "blue"}
    )
    paths = [path for path, _ in error.errors]
    assert paths == ["kafka.acks", "kafka.linger.ms", "socket.mode", "log.colour"]
    assert len(str(error).splitlines()) == 4


def test_missing_bootstrap_servers_is_required():
    with pytest.raises(ConfigError) as info:
        parse_config({"kafka": {"acks": 1}})
    assert str(info.value) == "kafka.bootstrap.servers is required"
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap\.servers is required"):
        producer_settings()


def test_empty_document_reports_the_missing_bootstrap_servers():
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap\.servers is required"):
        parse_config(None)


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["kafka"])  # type: ignore[arg-type]


def test_a_section_must_be_a_mapping():
    error = parse_error({"kafka": {"bootstrap.servers": BOOT}, "socket": "/run/kpd.sock"})
    assert str(error) == "socket: must be a mapping of settings (got '/run/kpd.sock')"


# --- unknown and unsupported keys ------------------------------------------------------------


def test_unknown_kafka_key_names_its_path_and_suggests_the_close_one():
    error = _error(kafka={"lingr.ms": 5})
    assert str(error) == "kafka.lingr.ms: unknown key; did you mean kafka.linger.ms?"


def test_unknown_daemon_key_names_its_path():
    error = _error(socket={"colour": "blue"})
    assert str(error) == "socket.colour: unknown key"


def test_unknown_section_is_an_error():
    error = parse_error({"kafka": {"bootstrap.servers": BOOT}, "kafak": {}})
    assert str(error) == "kafak: unknown section; did you mean kafka?"


def test_nested_kafka_keys_are_pointed_at_the_flat_spelling():
    error = _error(kafka={"batch": {"size": 1}})
    assert error.path == "kafka.batch"
    assert "written flat, e.g. 'batch.size: ...'" in error.message


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("key.serializer", "serializers run in the client"),
        ("interceptor.classes", "plug-in code"),
        ("partitioner.class", "choose kafka.partitioner instead"),
        ("transaction.two.phase.commit.enable", "kpd commits its own transactions"),
        ("ssl.truststore.location", "give a PEM file with ssl.ca.location"),
        ("sasl.kerberos.service.name", "GSSAPI (Kerberos) is not supported"),
        ("sasl.jaas.config", "give sasl.username and sasl.password"),
        ("metric.reporters", "Prometheus"),
    ],
)
def test_unsupported_kafka_keys_say_why(key, why):
    error = _error(kafka={key: "x"})
    assert error.path == f"kafka.{key}"
    assert str(error).startswith(f"kafka.{key} is a Kafka producer setting kpd does not support: ")
    assert why in str(error)


def test_unsupported_kafka_names_are_only_special_under_kafka():
    error = _error(socket={"key.serializer": "x"})
    assert error.message.startswith("unknown key")


def parse_error(data: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value


# --- finalize: idempotence -------------------------------------------------------------------


def test_explicit_idempotence_with_acks_1_is_an_error():
    error = _error(kafka={"enable.idempotence": True, "acks": 1})
    assert error.path == "kafka.acks"
    assert "enable.idempotence: true needs acks: all" in str(error)


def test_explicit_idempotence_with_zero_retries_is_an_error():
    error = _error(kafka={"enable.idempotence": "true", "retries": 0})
    assert error.path == "kafka.retries"


@pytest.mark.parametrize("acks", [0, 1])
def test_default_idempotence_with_acks_below_all_is_turned_off_with_a_warning(acks):
    config = _config(kafka={"acks": acks})
    assert config.producer.enable_idempotence is False
    assert config.producer.acks == acks
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith("kafka.enable.idempotence turned off because kafka.acks")


def test_default_idempotence_with_zero_retries_is_turned_off_with_a_warning():
    config = _config(kafka={"retries": 0})
    assert config.producer.enable_idempotence is False
    assert "kafka.retries is 0" in config.warnings[0]


def test_idempotence_off_explicitly_allows_acks_1_without_warning():
    config = _config(kafka={"enable.idempotence": False, "acks": 1})
    assert (config.producer.enable_idempotence, config.producer.acks) == (False, 1)
    assert config.warnings == ()


def test_more_than_5_in_flight_is_an_error_even_with_default_idempotence():
    error = _error(kafka={"max.in.flight.requests.per.connection": 6})
    assert error.path == "kafka.max.in.flight.requests.per.connection"
    assert "at most 5 with idempotence" in error.message


def test_more_than_5_in_flight_is_fine_without_idempotence():
    config = _config(kafka={"max.in.flight.requests.per.connection": 6, "acks": 1})
    assert config.producer.max_in_flight == 6
    assert config.producer.enable_idempotence is False


# --- finalize: timeouts and backoffs ---------------------------------------------------------


def test_explicit_delivery_timeout_below_linger_plus_request_timeout_is_an_error():
    error = _error(kafka={"delivery.timeout.ms": 30_004})  # defaults: 5 + 30000
    assert error.path == "kafka.delivery.timeout.ms"
    assert "= 30005 (got 30004)" in error.message


def test_explicit_delivery_timeout_equal_to_linger_plus_request_timeout_is_accepted():
    config = _config(kafka={"delivery.timeout.ms": 30_005})
    assert config.producer.delivery_timeout_ms == 30_005


def test_default_delivery_timeout_is_raised_to_cover_linger_and_request_timeout():
    config = _config(kafka={"request.timeout.ms": 200_000, "linger.ms": 100})
    assert config.producer.delivery_timeout_ms == 200_100
    assert "kafka.delivery.timeout.ms raised" in config.warnings[0]


def test_retry_backoff_above_its_cap_becomes_static_at_the_cap():
    config = _config(kafka={"retry.backoff.ms": 5000})
    assert (config.producer.retry_backoff_ms, config.producer.retry_backoff_max_ms) == (1000, 1000)
    assert "kafka.retry.backoff.ms (5000) is above" in config.warnings[0]


def test_reconnect_backoff_alone_makes_the_reconnect_backoff_static():
    config = _config(kafka={"reconnect.backoff.ms": 2000})
    assert config.producer.reconnect_backoff_max_ms == 2000
    assert config.producer.reconnect_backoff_ms == 2000
    assert len(config.warnings) == 1


def test_reconnect_backoff_with_its_cap_keeps_exponential_backoff():
    config = _config(kafka={"reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 5000})
    assert (config.producer.reconnect_backoff_ms, config.producer.reconnect_backoff_max_ms) == (
        100,
        5000,
    )
    assert config.warnings == ()


def test_ring_smaller_than_the_largest_request_is_an_error():
    error = _error(rings={"records_bytes": "2047KiB"})
    assert error.path == "rings.records_bytes"
    assert "2 x kafka.max.request.size = 2097152 (got 2096128)" in error.message
    assert _config(rings={"records_bytes": "2MiB"}).rings.records_bytes == 2 * 1024 * 1024


def test_producer_settings_alone_skip_rules_about_other_sections():
    settings = producer_settings(bootstrap_servers=BOOT, max_request_size="128MiB")
    assert settings.max_request_size == 128 * 1024 * 1024


# --- producer_settings -----------------------------------------------------------------------


def test_producer_settings_merges_a_kafka_mapping_with_overrides():
    settings = producer_settings(
        {"linger.ms": 50, "acks": "1"}, bootstrap_servers=BOOT, linger_ms=0
    )
    assert (settings.linger_ms, settings.acks) == (0, 1)
    assert settings.enable_idempotence is False  # acks=1 left idempotence at its default


def test_producer_settings_overrides_are_validated():
    with pytest.raises(ConfigError) as info:
        producer_settings(bootstrap_servers=BOOT, acks=3)
    assert info.value.path == "kafka.acks"


def test_producer_settings_rejects_unknown_attribute_names():
    with pytest.raises(TypeError, match="lingerms"):
        producer_settings(bootstrap_servers=BOOT, lingerms=5)


# --- YAML files ------------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("kafka:\n  bootstrap.servers: b:9092\n  acks: [1\nsocket: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML at line ")
    assert info.value.path == ""


def test_yaml_indentation_error_points_at_the_bad_line(tmp_path):
    path = tmp_path / "indent.yaml"
    path.write_text("kafka:\n  bootstrap.servers: b:9092\n   acks: 1\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 3, column \d+"):
        load_config(path)


def test_duplicate_yaml_key_is_an_error_with_its_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("kafka:\n  bootstrap.servers: b:9092\n  linger.ms: 5\n  linger.ms: 50\n")
    with pytest.raises(ConfigError, match=r"line 4, column 3: found duplicate key 'linger.ms'"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_load_config_records_its_source(tmp_path):
    path = tmp_path / "kpd.yaml"
    path.write_text(f"kafka:\n  bootstrap.servers: {BOOT}\n")
    assert load_config(path).source == str(path)


# --- generated documents and shipped configs -------------------------------------------------


def test_configuration_doc_is_current():
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render_markdown(), (
        "docs/configuration.md is stale: python -m daemon.config --markdown > docs/configuration.md"
    )


def test_example_config_is_current():
    committed = (REPO / "config" / "kpd.example.yaml").read_text()
    assert committed == render_example(), (
        "config/kpd.example.yaml is stale: python -m daemon.config --example > "
        "config/kpd.example.yaml"
    )


def test_doc_lists_every_setting_and_every_rejected_key():
    doc = render_markdown()
    for setting in SETTINGS:
        assert f"| `{setting.key}` |" in doc
    assert "| `key.serializer` |" in doc
    assert "| `ssl.keystore.*` |" in doc


def test_example_config_sets_every_key_and_loads_to_the_defaults():
    path = REPO / "config" / "kpd.example.yaml"
    raw = yaml.safe_load(path.read_text())
    written = {f"{section}.{key}" for section, body in raw.items() for key in body}
    assert written == {s.path for s in SETTINGS}
    example = load_config(path)
    defaults = parse_config({"kafka": {"bootstrap.servers": "broker1:9092,broker2:9092"}})
    assert example.warnings == ()
    assert dataclasses.replace(example, source="x") == dataclasses.replace(defaults, source="x")


def test_dev_config_loads_with_an_embedded_broker_and_an_unprivileged_socket():
    config = load_config(REPO / "config" / "dev.yaml")
    assert config.producer.embedded_broker
    assert not config.socket.path.startswith("/run")
    assert config.workers.count == 2
    assert config.metrics.listen == ("127.0.0.1", 9464)
    assert config.rings.records_bytes < 64 * 1024 * 1024
    assert config.warnings == ()


def test_main_prints_the_markdown_and_rejects_unknown_flags(capsys):
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown()
    assert main(["--html"]) == 2


# --- exactly-once mode -----------------------------------------------------------------------


def test_transactional_id_turns_on_exactly_once_with_java_defaults():
    producer = _config(kafka={"transactional.id": "orders-eos"}).producer
    assert producer.transactional and producer.transactional_id == "orders-eos"
    assert (producer.enable_idempotence, producer.acks, producer.max_in_flight) == (True, -1, 5)
    assert producer.transaction_timeout_ms == 60000  # Java's default
    assert (producer.transaction_interval_ms, producer.transaction_max_bytes) == (100, 8 << 20)


def test_without_transactional_id_there_are_no_transactions():
    assert not _config().producer.transactional


@pytest.mark.parametrize(
    ("edit", "path", "other"),
    [
        ({"acks": 1}, "kafka.acks", "kafka.transactional.id"),
        ({"acks": 0}, "kafka.acks", "kafka.transactional.id"),
        ({"enable.idempotence": False}, "kafka.enable.idempotence", "kafka.transactional.id"),
        ({"retries": 0}, "kafka.retries", "kafka.transactional.id"),
        (
            {"max.in.flight.requests.per.connection": 6},
            "kafka.max.in.flight.requests.per.connection",
            "kafka.transactional.id",
        ),
        ({"transaction.max.bytes": "17MiB"}, "kafka.transaction.max.bytes", "kafka.buffer.memory"),
        (
            {"transaction.interval.ms": 60000},
            "kafka.transaction.interval.ms",
            "kafka.transaction.timeout.ms",
        ),
    ],
)
def test_exactly_once_conflicts_are_errors_naming_both_keys(edit, path, other):
    # Without a transactional id, acks: 1 only turns idempotence off with a warning; with one,
    # Java refuses the config ("Cannot set a transactional.id without also enabling
    # idempotence"), and so does kpd.
    error = _error(kafka={"transactional.id": "t", **edit})
    assert error.path == path
    assert other in str(error)


def test_default_transaction_size_shrinks_to_half_a_small_buffer_with_a_warning():
    config = _config(kafka={"transactional.id": "t", "buffer.memory": "4MiB"})
    assert config.producer.transaction_max_bytes == 2 << 20
    assert any("transaction.max.bytes" in warning for warning in config.warnings)


@pytest.mark.parametrize("bad", ["", "has space", "x" * 201, 5])
def test_transactional_id_must_be_a_plain_name(bad):
    assert _error(kafka={"transactional.id": bad}).path == "kafka.transactional.id"


# --- socket.lines: one setting whose value is a small block of keys -------------------------


def test_socket_lines_is_off_by_default_and_takes_its_keys_with_defaults():
    assert _config().socket.lines is None
    lines = _config(socket={"lines": {"path": "l.sock", "topic": "logs", "key_separator": "\t"}})
    assert lines.socket.lines == LinesSocketSettings(
        path="l.sock", topic="logs", key_separator="\t", mode=0o660, group=None,
        max_line_bytes=512 * 1024,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ("l.sock", "socket.lines: must be a mapping of path, topic"),
        ({"topic": "logs"}, "socket.lines: path is required"),
        ({"path": "l.sock", "topic": "a b"}, "socket.lines: topic: must be a topic name"),
        ({"path": "l.sock", "topic": "t", "key_separator": ""}, "key_separator: must be 1-16"),
        ({"path": "l.sock", "topic": "t", "sep": ","}, "unknown key 'sep' (known: path, topic"),
        ({"path": "l.sock", "topic": "t", "max_line_bytes": "2MiB"},
         "max_line_bytes must be at most kafka.max.request.size - 1KiB = 1047552"),
        ({"path": "kpd.sock", "topic": "t"}, "path must differ from socket.path"),
    ],
)  # fmt: skip
def test_socket_lines_errors_name_the_key(lines, fragment):
    error = _error(socket={"path": "kpd.sock", "lines": lines})
    assert fragment in str(error)


def test_socket_lines_topic_must_be_allowed():
    error = _error(socket={"lines": {"path": "l.sock", "topic": "logs"}}, topics={"allow": ["x"]})
    assert "socket.lines: topic 'logs' is not in topics.allow" in str(error)


def test_rings_share_one_budget_whatever_the_worker_count():
    for workers in (1, 2, 16):
        rings = _config(workers={"count": workers}).rings
        total = workers * (rings.records_bytes + rings.reports_bytes)
        assert 64 * 1024 * 1024 - 16 * workers <= total <= 64 * 1024 * 1024, workers
        assert rings.records_bytes % 8 == 0 and rings.reports_bytes % 8 == 0
    written = _config(rings={"records_bytes": "2MiB"}, workers={"count": 4}).rings
    assert written.records_bytes == 2 * 1024 * 1024  # a written size wins
    assert written.reports_bytes == 64 * 1024 * 1024 // 4 // 9 // 8 * 8


def test_a_budget_too_small_for_the_workers_names_rings_memory():
    error = _error(rings={"memory": "16MiB"}, workers={"count": 16})
    assert error.path == "rings.memory"
    assert str(error).startswith(
        "rings.memory: gives each of 16 workers a records ring of 932064 bytes, below "
        "2 x kafka.max.request.size = 2097152: raise it to at least 37748736"
    )
