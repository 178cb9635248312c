"""The ``kpd`` command refuses a bad configuration before it starts anything.

Each case is a config that is valid but for one thing; both ``kpd check-config FILE`` and
``kpd run --config FILE`` must exit 78 (EX_CONFIG, sysexits.h) and name the YAML path of the
problem on stderr. Bad command-line flags exit 64 (EX_USAGE). The commands run as real
subprocesses, as an operator or systemd would run them; no broker is needed, because a bad
config must stop ``run`` before it touches the network, the socket or shared memory.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.daemon_harness import REPO

pytestmark = pytest.mark.timeout(120)

EX_USAGE = 64
EX_CONFIG = 78


def valid_config(tmp_path) -> dict:
    """A config `kpd check-config` accepts; each case breaks one thing in it."""
    return {
        "kafka": {"bootstrap.servers": "127.0.0.1:1"},  # never contacted
        "socket": {"path": str(tmp_path / "kpd.sock")},
        "rings": {"prefix": f"kpdcfg{os.getpid()}"},
        "metrics": {"enabled": False},
    }


def kpd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def both_commands(path) -> list[subprocess.CompletedProcess]:
    return [kpd("check-config", str(path)), kpd("run", "--config", str(path))]


def _set(section: str, key: str, value):
    def edit(config: dict) -> None:
        config.setdefault(section, {})[key] = value

    return edit


def _drop(section: str, key: str):
    return lambda config: config[section].pop(key)


# (case id, edit of the valid config, what stderr must say: the YAML path and the problem).
# The loader writes "path: message", or "path is ..." when the message reads as a sentence.
CASES = [
    ("missing-required", _drop("kafka", "bootstrap.servers"),
     "kafka.bootstrap.servers is required"),
    ("unknown-key", _set("kafka", "lingr.ms", 5),
     "kafka.lingr.ms: unknown key; did you mean kafka.linger.ms?"),
    ("unknown-section", lambda c: c.update(kafkaa={}), "kafkaa: unknown section"),
    ("nested-kafka-key", _set("kafka", "linger", {"ms": 5}),
     "kafka.linger: unknown key; Kafka keys are written flat"),
    ("bad-choice", _set("kafka", "acks", 2), "kafka.acks: must be one of"),
    ("bad-duration", _set("kafka", "linger.ms", "soon"), "kafka.linger.ms:"),
    ("negative-size", _set("kafka", "batch.size", -1), "kafka.batch.size:"),
    ("unsupported-kafka-key", _set("kafka", "transaction.two.phase.commit.enable", True),
     "kafka.transaction.two.phase.commit.enable is a Kafka producer setting kpd does not "
     "support"),
    ("ssl-key", _set("kafka", "ssl.keystore.location", "/k"),
     "kafka.ssl.keystore.location is a Kafka producer setting kpd does not support"),
    ("bad-bootstrap", _set("kafka", "bootstrap.servers", "no-port"), "kafka.bootstrap.servers:"),
    ("missing-ca-file",
     lambda c: c["kafka"].update({"security.protocol": "SSL", "ssl.ca.location": "/no/ca.pem"}),
     "kafka.ssl.ca.location /no/ca.pem: No such file or directory"),
    ("sasl-without-password",
     lambda c: c["kafka"].update({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                                  "sasl.username": "u"}),
     "kafka.sasl.password is required with sasl.mechanism PLAIN"),
    ("missing-password-file",
     lambda c: c["kafka"].update({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                                  "sasl.username": "u", "sasl.password": {"file": "/no/pw"}}),
     "kafka.sasl.password: cannot read secret file /no/pw"),
    ("socket-path-too-long", _set("socket", "path", "/tmp/" + "s" * 120), "socket.path:"),
    ("bad-socket-mode", _set("socket", "mode", "rwx"), "socket.mode:"),
    ("zero-workers", _set("workers", "count", 0), "workers.count:"),
    ("ring-not-multiple-of-8", _set("rings", "records_bytes", 65537), "rings.records_bytes:"),
    ("bad-ring-prefix", _set("rings", "prefix", "-x"), "rings.prefix:"),
    ("bad-metrics-listen", _set("metrics", "listen", "localhost"), "metrics.listen:"),
    ("bad-topic-pattern", _set("topics", "allow", ["ok", "a b"]), "topics.allow:"),
    ("zero-shutdown-timeout", _set("shutdown", "timeout", 0), "shutdown.timeout:"),
    ("bad-log-level", _set("log", "level", "loud"), "log.level: must be one of"),
    ("section-not-a-mapping", lambda c: c.update(workers=4), "workers: must be a mapping"),
    # Cross-field rules (docs/configuration.md), checked once every value is valid alone.
    ("ring-below-two-requests", _set("rings", "records_bytes", "1MiB"),
     "rings.records_bytes: must be at least 2 x kafka.max.request.size"),
    ("explicit-idempotence-with-acks-1",
     lambda c: c["kafka"].update({"enable.idempotence": True, "acks": 1}),
     "kafka.acks is 1 but kafka.enable.idempotence: true needs acks: all"),
    ("in-flight-above-5-with-idempotence",
     _set("kafka", "max.in.flight.requests.per.connection", 6),
     "kafka.max.in.flight.requests.per.connection: must be at most 5 with idempotence"),
    # Exactly-once mode: Java's rules, every conflict an error naming both keys.
    ("transactions-with-acks-1",
     lambda c: c["kafka"].update({"transactional.id": "t", "acks": 1}),
     "kafka.acks is 1 but kafka.transactional.id is set and idempotence needs acks: all"),
    ("transactions-without-idempotence",
     lambda c: c["kafka"].update({"transactional.id": "t", "enable.idempotence": False}),
     "kafka.enable.idempotence is false but kafka.transactional.id needs idempotence"),
    ("transactions-with-6-in-flight",
     lambda c: c["kafka"].update({"transactional.id": "t",
                                  "max.in.flight.requests.per.connection": 6}),
     "kafka.max.in.flight.requests.per.connection: must be at most 5 with "
     "kafka.transactional.id set"),
    ("transactions-with-retries-0",
     lambda c: c["kafka"].update({"transactional.id": "t", "retries": 0}),
     "kafka.retries is 0 but kafka.transactional.id is set"),
    ("transaction-larger-than-half-the-buffer",
     lambda c: c["kafka"].update({"transactional.id": "t", "transaction.max.bytes": "20MiB"}),
     "kafka.transaction.max.bytes: must be at most half of kafka.buffer.memory"),
    ("delivery-timeout-below-linger-plus-request",
     lambda c: c["kafka"].update({"delivery.timeout.ms": 1000, "request.timeout.ms": 5000}),
     "kafka.delivery.timeout.ms: must be >= kafka.linger.ms + kafka.request.timeout.ms"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_setting_names_its_yaml_path_and_exits_78(tmp_path, edit, message):
    config = valid_config(tmp_path)
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    for result in both_commands(path):
        assert result.returncode == EX_CONFIG, (result.args, result.stderr)
        assert message in result.stderr, result.stderr
        assert f"kpd: {path}: invalid configuration" in result.stderr
        assert result.stdout == ""  # nothing claims success
    assert not (tmp_path / "kpd.sock").exists()  # `run` stopped before serving anything


def test_every_invalid_setting_is_reported_at_once(tmp_path):
    config = valid_config(tmp_path)
    config["kafka"]["acks"] = "two"
    config["workers"] = {"count": -3}
    config["log"] = {"level": "loud"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    for result in both_commands(path):
        assert result.returncode == EX_CONFIG
        for yaml_path in ("kafka.acks:", "workers.count:", "log.level:"):
            assert yaml_path in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kafka:\n  bootstrap.servers: [127.0.0.1:1\n", "invalid YAML at line"),
        ("kafka:\n  acks: all\n  acks: 1\n", "found duplicate key 'acks'"),
        ("- kafka\n- socket\n", "the top level must be a mapping of sections"),
        ("kafka: !!python/object:os.system {}\n", "invalid YAML"),  # no object tags
    ],
    ids=["syntax", "duplicate-key", "top-level-list", "python-tag"],
)
def test_unparsable_yaml_exits_78_with_where_it_broke(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    for result in both_commands(path):
        assert result.returncode == EX_CONFIG, result.stderr
        assert message in result.stderr, result.stderr


def test_missing_config_file_exits_78(tmp_path):
    path = tmp_path / "absent.yaml"
    for result in both_commands(path):
        assert result.returncode == EX_CONFIG
        assert f"cannot read {path}" in result.stderr, result.stderr


def test_max_frame_bytes_below_the_protocol_minimum_is_a_config_error(tmp_path):
    config = valid_config(tmp_path)
    config["socket"]["max_frame_bytes"] = "2KiB"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = kpd("check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert "socket.max_frame_bytes:" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["run", "--config"],
        ["run", "--config", "x.yaml", "--frobnicate"],
        ["check-config", "a.yaml", "b.yaml"],
    ],
    ids=["no-command", "unknown-command", "config-without-value",
         "unknown-flag", "check-config-two-files"],
)  # fmt: skip
def test_bad_command_line_exits_64_with_usage(args):
    result = kpd(*args)
    assert result.returncode == EX_USAGE, (args, result.stderr)
    assert result.stderr.startswith("usage: kpd"), result.stderr
    assert "kpd: error:" in result.stderr


def test_valid_config_passes_check_config(tmp_path):
    # The baseline every case above breaks: without this, a case could fail for another reason.
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(valid_config(tmp_path)))
    result = kpd("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{path}: OK" in result.stdout
