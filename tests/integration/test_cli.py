"""The ``kpd`` command as a user meets it: help with defaults and exit statuses, --config and
--socket alike on every subcommand, JSON-lines input, and a sentence (never a traceback)
for a user's mistake. Real subprocesses, captured output; a real daemon where one is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from daemon.cli import build_parser
from tests.brokers.ports import free_port
from tests.brokers.reader import CREATE_TIME, read_all
from tests.daemon_harness import REPO, KpdDaemon

pytestmark = pytest.mark.timeout(120)


def kpd(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO, input=stdin, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_every_subcommand_and_option_has_help_and_the_exit_statuses_are_listed():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"kpd {name} {action.option_strings or action.dest}: no help"
        options = {o for a in sub._actions for o in a.option_strings}
        assert "--config" in options, name
    shown = kpd("--help").stdout
    for code in ("64", "65", "69", "73", "75", "78"):
        assert f"\n  {code} " in shown, shown
    send_help = kpd("send", "--help").stdout
    assert "(default: 'kafka')" in send_help and "socket.path of the" in send_help


def test_a_missing_config_is_one_line_naming_the_file_once(tmp_path):
    missing = tmp_path / "absent.yaml"
    for result in (kpd("run", env={"KPD_CONFIG": str(missing)}), kpd("check-config", str(missing))):
        assert result.returncode == 78
        assert result.stderr == f"kpd: cannot read {missing}: No such file or directory\n"


def test_an_empty_or_illegal_topic_is_a_usage_error_not_a_traceback():
    for topic in ("", "a b", "x" * 250, ".."):
        result = kpd("send", "--socket", "/nonexistent", "--topic", topic, stdin="v\n")
        assert result.returncode == 64, result.stderr
        assert "is not a legal Kafka topic name" in result.stderr
        assert "Traceback" not in result.stderr


def test_status_of_a_stopped_daemon_says_it_is_not_running(tmp_path):
    config = tmp_path / "kpd.yaml"
    socket_path = tmp_path / "kpd.sock"
    port = free_port()
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap.servers": "127.0.0.1:1"},
                "socket": {"path": str(socket_path)},
                "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"},
            }
        )
    )
    message = (
        f"kpd: the daemon of {config} is not running (nothing answers on "
        f"http://127.0.0.1:{port}/status: Connection refused; no socket at {socket_path})\n"
    )
    for json_form in ([], ["--json"]):  # scripts get the same message and exit status
        result = kpd("status", *json_form, "--config", str(config))
        assert result.returncode == 69, json_form
        assert result.stderr == message
        assert result.stdout == ""


def test_send_jsonl_through_the_configs_socket_delivers_every_field(tansu, tmp_path):
    topic = "cli-jsonl"
    tansu.create_topic(topic, 3)
    lines = [
        {"key": "k1", "value": "v1", "headers": {"h": "x"}, "partition": 2, "timestamp": 1_000},
        {"value": "no key", "headers": [["dup", "a"], ["dup", None]]},
        {"key": "tombstone", "value": None, "partition": 0},
    ]
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1) as daemon:
        stdin = "\n".join(json.dumps(line) for line in lines) + "\n"
        # No --socket: it is the config's socket.path.
        sent = kpd("send", "--config", str(daemon.config_path), "--topic", topic,
                   "--format", "jsonl", stdin=stdin)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == f"sent 3 records to {topic}, 0 failed\n"
        bad = kpd("send", "--socket", daemon.socket_path, "--topic", topic, "--format", "jsonl",
                  stdin='{"value": "fine"}\n{"value": 7}\n{"value": "never read"}\n')  # fmt: skip
        assert bad.returncode == 65, bad.stderr
        assert "kpd: stdin line 2: value must be a string or null, not int" in bad.stderr
        assert "Traceback" not in bad.stderr
        assert daemon.stop() == 0
    records = {r.value: r for r in read_all(tansu.bootstrap, topic, 4, timeout_s=30)}
    first = records[b"v1"]
    assert (first.key, first.partition, first.headers) == (b"k1", 2, (("h", b"x"),))
    assert (first.timestamp, first.timestamp_type) == (1_000, CREATE_TIME)
    assert records[b"no key"].headers == (("dup", b"a"), ("dup", None))
    assert (records[None].key, records[None].partition) == (b"tombstone", 0)
    assert b"fine" in records and b"never read" not in records


def test_send_names_the_input_line_of_each_failure_and_where_jsonl_input_stopped(tansu, tmp_path):
    topic = "cli-failures"
    tansu.create_topic(topic, 1)
    small = {"socket": {"max_frame_bytes": 65536}, "kafka": {"max.request.size": 60000}}
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1, extra=small) as daemon:
        stdin = f"a\n{'x' * 70_000}\n\nb\n"  # line 2 fits no 64 KiB frame
        sent = kpd("send", "--config", str(daemon.config_path), "--topic", topic, stdin=stdin)
        assert sent.returncode == 1, sent.stderr
        assert sent.stdout == f"sent 2 records to {topic}, 1 failed, 1 empty lines skipped\n"
        (failure,) = sent.stderr.splitlines()
        assert failure.startswith("kpd: stdin line 2: record failed: RECORD_TOO_LARGE")
        assert "raise socket.max_frame_bytes" in failure

        accepted = kpd("send", "--config", str(daemon.config_path), "--topic", topic,
                       "--acks", "accepted", stdin="c\nd\n")  # fmt: skip
        assert accepted.stdout == f"accepted 2 records to {topic}, 0 failed\n"

        jsonl = tmp_path / "records.jsonl"
        jsonl.write_text('{"value": "e"}\nnot json\n{"value": "f"}\n{"value": "g"}\n')
        with jsonl.open("rb") as stdin_file:
            stopped = subprocess.run(
                [sys.executable, "-m", "daemon.cli", "send", "--config", str(daemon.config_path),
                 "--topic", topic, "--format", "jsonl"],
                cwd=REPO, stdin=stdin_file, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        assert stopped.returncode == 65
        assert stopped.stdout == f"sent 1 records to {topic}, 0 failed\n"
        assert stopped.stderr.startswith("kpd: stdin line 2: not JSON")
        assert stopped.stderr.endswith(
            "; input stopped there, lines 2 to 4 (3 lines) were not sent\n"
        )
        assert daemon.stop() == 0


def test_read_of_a_missing_topic_exits_66(tansu):
    result = kpd("read", "--bootstrap", tansu.bootstrap, "--topic", "no-such-topic-here",
                 "--timeout", "2")  # fmt: skip
    assert result.returncode == 66, result.stderr
    assert result.stderr == f"kpd: topic 'no-such-topic-here' not found on {tansu.bootstrap}\n"


def test_run_with_acks_2_says_the_quorum_ack_is_all(tmp_path):
    config = tmp_path / "kpd.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"bootstrap.servers": "127.0.0.1:1", "acks": 2}}))
    result = kpd("run", "--config", str(config))
    assert result.returncode == 78
    assert "kafka.acks: must be one of all, -1, 0, 1 (got 2); Kafka has no acks 2: the " \
           "replication quorum ack is all (-1)" in result.stderr  # fmt: skip
