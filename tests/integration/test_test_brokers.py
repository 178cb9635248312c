"""The test brokers and the verification reader do what the other tests rely on.

Records are written with confluent-kafka (not kpd) so these tests check the harness alone:
tansu and the mock cluster store what a real client sends, read_all returns it field by field
and fails loudly on too few or too many records, the key partitioning reference matches
Kafka's published murmur2 vectors, and every fault-injection helper demonstrably changes what
the brokers do.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import crc32c
import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from tests.brokers import (
    CREATE_TIME,
    ApiKey,
    MockCluster,
    TansuBroker,
    partition_for_key_librdkafka,
    read_all,
    unique_topic_name,
)
from tests.brokers.mock_cluster import missing_symbols
from tests.brokers.ports import free_port
from tests.brokers.tansu import TansuStartError

# Kafka error codes (Kafka protocol guide, "Error Codes").
NOT_ENOUGH_REPLICAS = 19
TOPIC_AUTHORIZATION_FAILED = 29

T0_MS = 1_700_000_000_000

# (partition, key, value, headers, timestamp_ms): nulls and empty bytes on purpose.
RECORDS = [
    (0, b"k0", b"v0", [("h1", b"a")], T0_MS),
    (0, b"k1", b"", [], T0_MS + 1),
    (1, None, b"v2", [("h1", b"b"), ("h2", b"")], T0_MS + 2),
    (2, b"k3", None, [("dup", b"1"), ("dup", b"2")], T0_MS + 3),
    (2, b"", b"v4", [], T0_MS + 4),
]


def produce(
    bootstrap: str, topic: str, records: list, **config: object
) -> list[tuple[KafkaError | None, int, int]]:
    """Produce with a fresh confluent-kafka producer; see send()."""
    producer = Producer({"bootstrap.servers": bootstrap, **config})
    try:
        return send(producer, topic, records)
    finally:
        producer.close()


def send(producer: Producer, topic: str, records: list) -> list[tuple[KafkaError | None, int, int]]:
    """Produce and flush; return (error, partition, offset) per record, in order."""
    reports: list[tuple[KafkaError | None, int, int] | None] = [None] * len(records)

    def report_for(index: int) -> Callable:
        def on_delivery(err: KafkaError | None, msg) -> None:
            reports[index] = (err, msg.partition(), msg.offset())

        return on_delivery

    for index, (partition, key, value, headers, timestamp) in enumerate(records):
        producer.produce(
            topic,
            key=key,
            value=value,
            partition=partition,
            headers=headers,
            timestamp=timestamp,
            on_delivery=report_for(index),
        )
    assert producer.flush(30) == 0, "confluent-kafka did not finish delivering within 30 s"
    return [r for r in reports if r is not None]


def one_record(partition: int = 0, value: bytes = b"v") -> list:
    return [(partition, b"k", value, [], T0_MS)]


def assert_records_match(consumed: list, topic: str, records: list) -> None:
    """Consumed records carry every produced field, offsets 0.. in order per partition."""
    got = [(r.topic, r.partition, r.key, r.value, list(r.headers), r.timestamp) for r in consumed]
    want = [(topic, p, k, v, h, ts) for p, k, v, h, ts in records]
    assert got == want
    assert {r.timestamp_type for r in consumed} == {CREATE_TIME}
    for partition in {r.partition for r in consumed}:
        offsets = [r.offset for r in consumed if r.partition == partition]
        assert offsets == list(range(len(offsets)))


def advertised_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    """Ask the first bootstrap broker for ApiVersions v0 over a raw socket."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    request = struct.pack(
        ">hhih",
        ApiKey.API_VERSIONS,  # request_api_key
        0,  # request_api_version
        7,  # correlation_id
        -1,  # client_id: null string
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", recv_exactly(sock, 4))
        response = recv_exactly(sock, size)
    correlation_id, error_code, count = struct.unpack_from(">ihi", response)
    assert (correlation_id, error_code) == (7, 0)
    entries = [struct.unpack_from(">hhh", response, 10 + 6 * i) for i in range(count)]
    return {key: (low, high) for key, low, high in entries}


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "broker closed the connection mid-response"
        data += chunk
    return data


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in metadata.topics[topic].partitions.values()}


def record_batch_v2(key: bytes, value: bytes, timestamp_ms: int, *, crc_xor: int = 0) -> bytes:
    """A one-record RecordBatch v2 built by hand (Kafka docs, implementation.html, 5.3.1).

    Key, value and record stay under 64 bytes, so every zigzag varint is the single byte 2*n.
    `crc_xor` flips CRC bits to make a batch that a CRC-checking reader must reject.
    """
    record_body = (
        b"\x00"  # attributes: unused, 0
        + b"\x00"  # timestampDelta: varint 0
        + b"\x00"  # offsetDelta: varint 0
        + bytes([2 * len(key)])  # keyLength: zigzag varint
        + key
        + bytes([2 * len(value)])  # valueLength: zigzag varint
        + value
        + b"\x00"  # headers count: varint 0
    )
    assert len(record_body) < 64
    crc_covered = (
        struct.pack(
            ">hiqqqhii",
            0,  # attributes: no compression, CreateTime, not transactional
            0,  # lastOffsetDelta
            timestamp_ms,  # baseTimestamp
            timestamp_ms,  # maxTimestamp
            -1,  # producerId: none
            -1,  # producerEpoch: none
            -1,  # baseSequence: none
            1,  # records count
        )
        + bytes([2 * len(record_body)])  # record length: zigzag varint
        + record_body
    )
    # CRC-32C (Castagnoli) covers everything from attributes to the end of the batch.
    crc = crc32c.crc32c(crc_covered) ^ crc_xor
    after_length = (
        struct.pack(
            ">ibI",
            0,  # partitionLeaderEpoch
            2,  # magic
            crc,
        )
        + crc_covered
    )
    return struct.pack(">qi", 0, len(after_length)) + after_length  # baseOffset, batchLength


def produce_raw_v3(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """Send one Produce v3 request (acks=1) over a raw socket; return the partition's error."""
    name = topic.encode()
    request = (
        struct.pack(">hhih", ApiKey.PRODUCE, 3, 11, -1)  # api key, version, correlation, client
        + struct.pack(">hhi", -1, 1, 10_000)  # transactional_id null, acks, timeout_ms
        + struct.pack(">ih", 1, len(name))  # one topic, its name
        + name
        + struct.pack(">iii", 1, partition, len(batch))  # one partition, index, records size
        + batch
    )
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", recv_exactly(sock, 4))
        response = recv_exactly(sock, size)
    # correlation_id, topic count, topic name, partition count, partition index, error_code
    correlation_id, _, name_size = struct.unpack_from(">iih", response)
    assert correlation_id == 11
    partition_index, error_code = struct.unpack_from(">ih", response, 10 + name_size + 4)
    assert partition_index == partition
    return error_code


# -- tansu ---------------------------------------------------------------------------------


def test_tansu_round_trips_keys_values_headers_timestamps_and_partitions(tansu, topic_factory):
    topic = topic_factory(tansu, partitions=3)

    reports = produce(tansu.bootstrap, topic, RECORDS)

    assert [err for err, _, _ in reports] == [None] * len(RECORDS)
    assert_records_match(read_all(tansu.bootstrap, topic, len(RECORDS)), topic, RECORDS)


def test_read_all_names_what_it_found_when_too_few_records_arrive(tansu, topic_factory):
    topic = topic_factory(tansu, partitions=2)
    produce(tansu.bootstrap, topic, one_record(0) + one_record(1))

    with pytest.raises(AssertionError, match=r"timed out .* read 2 of 3 expected"):
        read_all(tansu.bootstrap, topic, expected=3, timeout_s=1.5)


def test_read_all_rejects_extra_records_so_duplicates_are_caught(tansu, topic_factory):
    topic = topic_factory(tansu)
    produce(tansu.bootstrap, topic, one_record() * 3)

    with pytest.raises(AssertionError, match="more records than expected: read 3 of 2"):
        read_all(tansu.bootstrap, topic, expected=2)
    assert len(read_all(tansu.bootstrap, topic, expected=2, exact=False)) == 3


def test_read_all_fails_on_a_stored_batch_whose_crc_is_wrong(tansu, topic_factory):
    good, bad = topic_factory(tansu), topic_factory(tansu)
    assert produce_raw_v3(tansu.bootstrap, good, 0, record_batch_v2(b"k", b"v", T0_MS)) == 0
    # tansu stores the batch without checking its CRC, so only the reader can catch it.
    assert (
        produce_raw_v3(tansu.bootstrap, bad, 0, record_batch_v2(b"k", b"v", T0_MS, crc_xor=1)) == 0
    )

    [record] = read_all(tansu.bootstrap, good, 1)
    assert (record.key, record.value, record.timestamp) == (b"k", b"v", T0_MS)
    with pytest.raises(AssertionError, match="failed CRC32C check"):
        read_all(tansu.bootstrap, bad, 1, timeout_s=5)


def test_read_all_of_an_empty_topic_returns_once_every_partition_is_at_its_end(
    tansu, topic_factory
):
    topic = topic_factory(tansu, partitions=3)

    assert read_all(tansu.bootstrap, topic, expected=0) == []


def test_read_all_fails_clearly_for_a_topic_that_does_not_exist(tansu):
    with pytest.raises(AssertionError, match="not readable"):
        read_all(tansu.bootstrap, unique_topic_name("absent"), expected=1, timeout_s=1)


def test_tansu_advertises_the_produce_versions_kpd_needs(tansu):
    versions = advertised_versions(tansu.bootstrap)

    assert versions[ApiKey.PRODUCE] == (0, 11)
    assert versions[ApiKey.INIT_PRODUCER_ID][1] >= 4


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_tansu_retries_on_a_fresh_port_when_its_port_is_taken_and_stop_ends_it(
    tmp_path: Path, taken_port: int
):
    offered = iter([taken_port, free_port()])
    broker = TansuBroker(tmp_path, port_source=lambda: next(offered))

    with broker:
        pid = broker.pid
        assert broker.bootstrap != f"127.0.0.1:{taken_port}"
        assert broker.metadata().brokers  # answers on the second port
    assert not broker.running
    assert not Path(f"/proc/{pid}").exists()
    assert "Address in use" in broker.log_path.read_text()


def test_tansu_gives_up_after_its_attempts_and_says_why(tmp_path: Path, taken_port: int):
    broker = TansuBroker(tmp_path, start_attempts=2, port_source=lambda: taken_port)

    with pytest.raises(TansuStartError, match=r"attempt 1 on port \d+: .*\n.*attempt 2 on"):
        broker.start()
    assert not broker.running


# -- librdkafka mock cluster ---------------------------------------------------------------


def test_bundled_librdkafka_exports_every_mock_function_the_harness_calls():
    assert missing_symbols() == []


def test_mock_cluster_round_trips_records_with_a_leader_on_each_broker(
    mock_cluster: MockCluster, topic_factory
):
    topic = topic_factory(mock_cluster, partitions=3)
    for partition, broker_id in enumerate(mock_cluster.broker_ids):
        mock_cluster.set_partition_leader(topic, partition, broker_id)

    produce(mock_cluster.bootstrap, topic, RECORDS)

    assert leaders(mock_cluster.bootstrap, topic) == {0: 1, 1: 2, 2: 3}
    assert_records_match(read_all(mock_cluster.bootstrap, topic, len(RECORDS)), topic, RECORDS)


def test_mock_cluster_advertises_its_versions_and_set_api_version_narrows_them(
    mock_cluster: MockCluster,
):
    assert advertised_versions(mock_cluster.bootstrap)[ApiKey.PRODUCE] == (0, 10)

    mock_cluster.set_api_version(ApiKey.PRODUCE, 3, 7)

    assert advertised_versions(mock_cluster.bootstrap)[ApiKey.PRODUCE] == (3, 7)


def test_producer_follows_a_leader_moved_by_the_mock(mock_cluster: MockCluster, topic_factory):
    topic = topic_factory(mock_cluster)
    mock_cluster.set_partition_leader(topic, 0, 1)
    mock_cluster.start_request_tracking()
    # No periodic refresh: the producer can only learn of the move from the old leader's
    # NOT_LEADER_OR_FOLLOWER answer.
    producer = Producer(
        {"bootstrap.servers": mock_cluster.bootstrap, "topic.metadata.refresh.interval.ms": -1}
    )
    try:
        before = send(producer, topic, one_record(value=b"before"))
        mock_cluster.set_partition_leader(topic, 0, 2)
        after = send(producer, topic, one_record(value=b"after"))
    finally:
        producer.close()

    assert [before[0][0], after[0][0]] == [None, None]
    produce_brokers = [r.broker_id for r in mock_cluster.requests(ApiKey.PRODUCE)]
    # Accepted by 1; refused by 1 after the move (maybe more than once while the producer's
    # metadata catches up); finally accepted by 2.
    assert produce_brokers[:2] == [1, 1]
    assert produce_brokers[-1] == 2
    assert leaders(mock_cluster.bootstrap, topic) == {0: 2}
    assert [r.value for r in read_all(mock_cluster.bootstrap, topic, 2)] == [b"before", b"after"]


def test_pushed_retriable_errors_fail_that_many_requests_then_delivery_succeeds(
    mock_cluster: MockCluster, topic_factory
):
    topic = topic_factory(mock_cluster)
    mock_cluster.push_request_errors(ApiKey.PRODUCE, NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS)
    mock_cluster.start_request_tracking()

    reports = produce(mock_cluster.bootstrap, topic, one_record(), **{"retry.backoff.ms": 10})

    assert reports[0][0] is None
    assert len(mock_cluster.requests(ApiKey.PRODUCE)) == 3  # two refused, one accepted
    assert len(read_all(mock_cluster.bootstrap, topic, 1)) == 1


def test_pushed_error_code_reaches_the_delivery_report_verbatim(
    mock_cluster: MockCluster, topic_factory
):
    topic = topic_factory(mock_cluster)
    mock_cluster.push_request_errors(ApiKey.PRODUCE, TOPIC_AUTHORIZATION_FAILED)

    reports = produce(mock_cluster.bootstrap, topic, one_record())

    assert reports[0][0].code() == TOPIC_AUTHORIZATION_FAILED
    assert read_all(mock_cluster.bootstrap, topic, 0) == []


def test_cleared_request_errors_are_never_returned(mock_cluster: MockCluster, topic_factory):
    topic = topic_factory(mock_cluster)
    mock_cluster.push_request_errors(ApiKey.PRODUCE, TOPIC_AUTHORIZATION_FAILED)

    mock_cluster.clear_request_errors(ApiKey.PRODUCE)
    reports = produce(mock_cluster.bootstrap, topic, one_record())

    assert reports[0][0] is None


def test_broker_errors_with_rtt_are_consumed_in_order_and_delay_the_answer(
    mock_cluster: MockCluster, topic_factory
):
    topic = topic_factory(mock_cluster)
    mock_cluster.set_partition_leader(topic, 0, 3)
    mock_cluster.push_broker_request_errors(3, ApiKey.PRODUCE, (NOT_ENOUGH_REPLICAS, 0), (0, 400))
    assert mock_cluster.broker_error_stack_count(3, ApiKey.PRODUCE) == 2
    mock_cluster.start_request_tracking()

    started = time.monotonic()
    reports = produce(mock_cluster.bootstrap, topic, one_record(), **{"retry.backoff.ms": 10})

    assert reports[0][0] is None
    assert time.monotonic() - started >= 0.4  # a lower bound: the answer was held 400 ms
    assert mock_cluster.broker_error_stack_count(3, ApiKey.PRODUCE) == 0
    assert [r.broker_id for r in mock_cluster.requests(ApiKey.PRODUCE)] == [3, 3]  # refused, ok


def test_set_rtt_holds_every_answer_of_that_broker(mock_cluster: MockCluster, topic_factory):
    topic = topic_factory(mock_cluster)
    mock_cluster.set_partition_leader(topic, 0, 2)
    mock_cluster.set_rtt(2, 300)

    started = time.monotonic()
    reports = produce(mock_cluster.bootstrap, topic, one_record())

    assert reports[0][0] is None
    assert time.monotonic() - started >= 0.3


def test_downed_leader_times_records_out_and_brought_up_takes_them_again(
    mock_cluster: MockCluster, topic_factory
):
    topic = topic_factory(mock_cluster)
    mock_cluster.set_partition_leader(topic, 0, 1)
    producer = Producer(
        {
            "bootstrap.servers": mock_cluster.bootstrap,
            "message.timeout.ms": 1000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 100,
        }
    )
    try:
        send(producer, topic, one_record(value=b"warm-up"))
        mock_cluster.broker_down(1)
        while_down = send(producer, topic, one_record(value=b"lost"))
        mock_cluster.broker_up(1)
    finally:
        producer.close()
    # A fresh producer with a generous timeout: the old one's 1 s budget can run out while
    # librdkafka is still backing off from the refused connects (seen under a loaded machine).
    fresh = Producer({"bootstrap.servers": mock_cluster.bootstrap, "message.timeout.ms": 30000})
    try:
        after_up = send(fresh, topic, one_record(value=b"kept"))
    finally:
        fresh.close()

    assert while_down[0][0].code() == KafkaError._MSG_TIMED_OUT
    assert after_up[0][0] is None
    values = [r.value for r in read_all(mock_cluster.bootstrap, topic, 2)]
    assert values == [b"warm-up", b"kept"]


def test_closed_mock_cluster_refuses_further_calls():
    cluster = MockCluster(brokers=1)
    cluster.close()
    cluster.close()  # idempotent

    with pytest.raises(RuntimeError, match="closed"):
        cluster.create_topic("t")


# -- the partitioning reference and topic names ---------------------------------------------

# Kafka's own murmur2 vectors (apache/kafka clients/src/test/java/org/apache/kafka/common/
# utils/UtilsTest.java, testMurmur2): key bytes -> Utils.murmur2 as a signed 32-bit int.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [7, 64])
def test_partition_reference_matches_the_java_producer_on_kafkas_murmur2_vectors(partitions):
    keys = list(JAVA_MURMUR2)
    # Java's BuiltInPartitioner.partitionForKey: toPositive(murmur2(key)) % numPartitions,
    # where toPositive masks the sign bit (& 0x7fffffff) rather than taking abs().
    want = [(JAVA_MURMUR2[key] & 0x7FFFFFFF) % partitions for key in keys]

    assert partition_for_key_librdkafka(keys, partitions) == want


def test_unique_topic_name_is_a_legal_distinct_kafka_topic_name():
    first = unique_topic_name("test_thing[param/1 x]")
    second = unique_topic_name("test_thing[param/1 x]")

    assert first != second
    assert re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", first)
    assert first.startswith("test-thing-param-1-x-")
