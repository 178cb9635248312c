"""Acceptance test of issue "Speak Kafka": our batches, in our Produce requests, read back intact.

A batch from our writer (``BatchBuilder``), sent in our Produce request over ``BrokerConnection``
to tansu and to librdkafka's mock cluster, for every compression codec, with headers and null
keys/values, is read back by confluent-kafka (``tests.brokers.read_all``: librdkafka checks every
CRC and decodes every field) with every field equal: partition, offset (from our decoded Produce
response), key, value, headers, timestamp and timestamp type.

No producer engine is involved: the tests speak the protocol themselves — Metadata to find each
partition's leader, our own CreateTopics request on tansu (the mock cluster has no CreateTopics),
InitProducerId for an idempotent producer id, Produce at the negotiated version (tansu v11, mock
v10), at a forced v3, and with acks -1, 1 and 0.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from daemon.kafka import messages
from daemon.kafka.compression import CODEC_NAMES, GZIP, LZ4, NONE, SNAPPY, ZSTD
from daemon.kafka.records import BatchBuilder
from daemon.net.connection import BrokerConnection, ConnectionSettings
from tests.brokers import CREATE_TIME, ConsumedRecord, MockCluster, read_all, unique_topic_name
from tests.settings_for import settings_for

T0_MS = 1_700_000_000_000
CODECS = (NONE, GZIP, SNAPPY, LZ4, ZSTD)
ACKS_ALL, ACKS_LEADER, ACKS_NONE = -1, 1, 0
OLDEST_PRODUCE = 3  # the first Produce version that carries RecordBatch v2
# librdkafka's mock cluster (2.16) ends each flexible Metadata response (v9+) with one stray
# byte (an empty tagged-field section written twice); kpd reads responses leniently, so the
# negotiated version (above this last non-flexible one) must decode: see the test below.
MOCK_METADATA_MAX = 8
DEADLINE_S = 20.0

# RecordBatch v2 attributes (Kafka docs, implementation.html "Record Batch"): int16 at byte 21,
# bits 0-2 the codec. Read straight from the batch bytes to prove a codec was really applied.
ATTRIBUTES = struct.Struct(">h")
ATTRIBUTES_OFFSET = 21
CODEC_MASK = 0x07


@dataclass(frozen=True)
class Rec:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


def sample_records(tag: str, count: int = 6) -> list[Rec]:
    """Records covering the nullable corners: null key, null value, empty bytes, no headers,
    repeated header names and a null header value. The values repeat themselves so that every
    codec makes the batch smaller and is therefore really used (the writer keeps the smaller)."""
    corners = [
        lambda i: Rec(None, f"{tag}-value-{i}-".encode() * 20, (("trace", b"t" * 8),), T0_MS + i),
        lambda i: Rec(f"{tag}-key-{i}".encode(), None, (), T0_MS + i),
        lambda i: Rec(b"", b"", (("dup", b"1"), ("dup", b"2")), T0_MS + i),
        lambda i: Rec(f"k{i}".encode(), f"{tag}-v{i}-".encode() * 30, (("nil", None),), T0_MS + i),
        # An earlier timestamp inside the batch: a negative timestampDelta.
        lambda i: Rec(None, None, (("empty", b""),), T0_MS - 1_000 + i),
        lambda i: Rec(b"\x00\xff", bytes(range(256)), (), T0_MS + 10 * i),
    ]
    return [corners[i % len(corners)](i) for i in range(count)]


def build_batch(
    records: list[Rec], codec: int, producer_id: int = -1, epoch: int = -1, sequence: int = -1
) -> bytes:
    builder = BatchBuilder(compression=codec)
    for record in records:
        builder.append(record.timestamp, record.key, record.value, record.headers)
    batch = bytes(builder.build(producer_id, epoch, sequence))
    (attributes,) = ATTRIBUTES.unpack_from(batch, ATTRIBUTES_OFFSET)
    assert attributes & CODEC_MASK == codec, f"{CODEC_NAMES[codec]} was not applied"
    return batch


def expected(
    topic: str, partition: int, base_offset: int, records: list[Rec]
) -> list[ConsumedRecord]:
    """What the reader must return for ``records`` written at ``base_offset``: every field."""
    return [
        ConsumedRecord(
            topic=topic,
            partition=partition,
            offset=base_offset + index,
            key=record.key,
            value=record.value,
            headers=record.headers,
            timestamp=record.timestamp,
            timestamp_type=CREATE_TIME,  # producers write CreateTime; no broker rewrote it
        )
        for index, record in enumerate(records)
    ]


# ---- the wire client these tests are ------------------------------------------------------------


def settings() -> ConnectionSettings:
    return settings_for(ConnectionSettings, client_id="kpd-wire-test", request_timeout_s=10.0)


class Wire:
    """Connections to one cluster, opened as needed; owned by one test's event loop."""

    def __init__(self, bootstrap: str, metadata_max: int | None) -> None:
        host, port = bootstrap.split(",")[0].rsplit(":", 1)
        self._bootstrap = (host, int(port))
        self._metadata_max = metadata_max
        self._brokers: dict[int, tuple[str, int]] = {}
        self._connections: dict[int | None, BrokerConnection] = {}

    async def connection(self, node_id: int | None = None) -> BrokerConnection:
        """The connection to ``node_id`` (None: the bootstrap broker)."""
        conn = self._connections.get(node_id)
        if conn is None:
            host, port = self._bootstrap if node_id is None else self._brokers[node_id]
            conn = await BrokerConnection.open(host, port, settings())
            self._connections[node_id] = conn
        return conn

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()

    async def create_topic(self, topic: str, partitions: int) -> None:
        """Our own CreateTopics request (tansu)."""
        conn = await self.connection()
        creatable = {"name": topic, "num_partitions": partitions, "replication_factor": 1}
        response = await conn.request(
            messages.CREATE_TOPICS, {"topics": [creatable], "timeout_ms": 10_000}
        )
        assert response is not None
        (result,) = response["topics"]
        assert (result["name"], result["error_code"]) == (topic, 0), result

    async def leaders(self, topic: str, partitions: int) -> dict[int, int]:
        """partition -> leader node id, from Metadata, once every partition has a leader."""
        conn = await self.connection()
        version = conn.version_for(messages.METADATA)
        if self._metadata_max is not None:
            version = min(version, self._metadata_max)
        request = {"topics": [{"name": topic}], "allow_auto_topic_creation": False}
        deadline = time.monotonic() + DEADLINE_S
        while True:
            response = await conn.request(messages.METADATA, request, version=version)
            assert response is not None
            self._brokers = {b["node_id"]: (b["host"], b["port"]) for b in response["brokers"]}
            (found,) = response["topics"]
            leaders = {p["partition_index"]: p["leader_id"] for p in found["partitions"]}
            if (
                found["error_code"] == 0
                and len(leaders) == partitions
                and min(leaders.values()) >= 0
            ):
                return leaders
            assert time.monotonic() < deadline, f"no leader for every partition: {found}"
            await asyncio.sleep(0.05)  # poll interval of a wait-for-condition loop

    async def init_producer_id(self) -> tuple[int, int]:
        conn = await self.connection()
        response = await conn.request(
            messages.INIT_PRODUCER_ID, {"transactional_id": None, "transaction_timeout_ms": 60_000}
        )
        assert response is not None and response["error_code"] == 0, response
        return response["producer_id"], response["producer_epoch"]

    async def produce(
        self,
        topic: str,
        batches: dict[int, bytes],
        leaders: dict[int, int],
        *,
        acks: int = ACKS_ALL,
        version: int | None = None,
    ) -> dict[int, int]:
        """One Produce request per leader; partition -> base offset (empty for acks=0)."""
        by_leader: dict[int, dict[int, bytes]] = {}
        for partition, batch in batches.items():
            by_leader.setdefault(leaders[partition], {})[partition] = batch
        offsets: dict[int, int] = {}
        for node_id, owned in by_leader.items():
            conn = await self.connection(node_id)
            data = [{"index": p, "records": batch} for p, batch in owned.items()]
            body = {
                "acks": acks,
                "timeout_ms": 10_000,
                "topic_data": [{"name": topic, "partition_data": data}],
            }
            response = await conn.request(
                messages.PRODUCE, body, version=version, expect_response=acks != ACKS_NONE
            )
            if response is not None:
                offsets.update(base_offsets(topic, response))
        return offsets


def base_offsets(topic: str, response: dict) -> dict[int, int]:
    (answer,) = response["responses"]
    assert answer["name"] == topic
    offsets = {}
    for partition in answer["partition_responses"]:
        assert partition["error_code"] == 0, partition
        offsets[partition["index"]] = partition["base_offset"]
    return offsets


@dataclass
class Cluster:
    """One broker under test: tansu or the mock cluster."""

    bootstrap: str
    mock: MockCluster | None  # None: tansu, which takes our CreateTopics
    produce_version: int  # what negotiation must pick: part of the acceptance criteria

    def wire(self) -> Wire:
        return Wire(self.bootstrap, None)  # every cluster at its negotiated Metadata version

    async def create_topic(self, wire: Wire, topic: str, partitions: int) -> None:
        if self.mock is None:
            await wire.create_topic(topic, partitions)
        else:
            self.mock.create_topic(topic, partitions, replication=3)


@pytest.fixture(params=["tansu", "mock_cluster"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    if request.param == "tansu":
        return Cluster(request.getfixturevalue("tansu").bootstrap, None, produce_version=11)
    mock = request.getfixturevalue("mock_cluster")
    return Cluster(mock.bootstrap, mock, produce_version=10)


@asynccontextmanager
async def connected(cluster: Cluster) -> AsyncIterator[Wire]:
    wire = cluster.wire()
    try:
        async with asyncio.timeout(DEADLINE_S):
            yield wire
    finally:
        wire.close()


# ---- the acceptance tests ------------------------------------------------------------------------


def test_idempotent_batches_of_every_codec_read_back_with_every_field_equal(
    cluster: Cluster,
) -> None:
    """Per codec one partition; two idempotent batches each: sequence 0 at the negotiated
    Produce version, then sequence n at the oldest version kpd speaks (v3)."""
    topic = unique_topic_name("wire-codecs")
    first = {codec: sample_records(f"{CODEC_NAMES[codec]}-a") for codec in CODECS}
    second = {codec: sample_records(f"{CODEC_NAMES[codec]}-b", 4) for codec in CODECS}

    async def produce() -> tuple[dict[int, int], dict[int, int]]:
        async with connected(cluster) as wire:
            await cluster.create_topic(wire, topic, len(CODECS))
            leaders = await wire.leaders(topic, len(CODECS))
            producer_id, epoch = await wire.init_producer_id()
            assert producer_id >= 0
            for node_id in set(leaders.values()):
                conn = await wire.connection(node_id)
                assert conn.version_for(messages.PRODUCE) == cluster.produce_version
            opening = {
                codec: build_batch(first[codec], codec, producer_id, epoch, sequence=0)
                for codec in CODECS
            }
            following = {  # each partition's sequence goes on from the first batch
                codec: build_batch(second[codec], codec, producer_id, epoch, len(first[codec]))
                for codec in CODECS
            }
            return (
                await wire.produce(topic, opening, leaders),
                await wire.produce(topic, following, leaders, version=OLDEST_PRODUCE),
            )

    opening_offsets, following_offsets = asyncio.run(produce())
    want = []
    for codec in CODECS:  # the partition is the codec id
        assert opening_offsets[codec] == 0  # a fresh partition's first batch
        assert following_offsets[codec] == len(first[codec])
        want += expected(topic, codec, opening_offsets[codec], first[codec])
        want += expected(topic, codec, following_offsets[codec], second[codec])
    assert read_all(cluster.bootstrap, topic, expected=len(want)) == want


@pytest.mark.parametrize("version", [None, OLDEST_PRODUCE], ids=["negotiated", "v3"])
def test_acks_leader_and_acks_none_batches_read_back_with_every_field_equal(
    cluster: Cluster, version: int | None
) -> None:
    """acks=1 gets offsets from the response; acks=0 gets no response, and its records must
    still land, at offsets 0.. of their fresh partition. acks=0 is sent first, so the acks=1
    answer on the same connection also proves the connection stayed in step after it."""
    topic = unique_topic_name("wire-acks")
    # partition -> (acks, codec, records). Plain batches (no producer id): like Java, kpd is
    # idempotent only with acks=all.
    plan = {
        0: (ACKS_NONE, LZ4, sample_records("acks0", 5)),
        1: (ACKS_LEADER, ZSTD, sample_records("acks1", 7)),
    }

    async def produce() -> dict[int, int]:
        async with connected(cluster) as wire:
            await cluster.create_topic(wire, topic, len(plan))
            leaders = await wire.leaders(topic, len(plan))
            if cluster.mock is not None:  # both partitions on one broker: one shared connection
                for partition in plan:
                    cluster.mock.set_partition_leader(topic, partition, leaders[0])
                leaders = await wire.leaders(topic, len(plan))
            assert leaders[0] == leaders[1]
            offsets = {}
            for partition, (acks, codec, records) in plan.items():
                batch = {partition: build_batch(records, codec)}
                sent = await wire.produce(topic, batch, leaders, acks=acks, version=version)
                offsets.update(sent)
            return offsets

    offsets = asyncio.run(produce())
    assert offsets == {1: 0}  # no answer for acks=0; the acks=1 batch opens its partition
    want = expected(topic, 0, 0, plan[0][2]) + expected(topic, 1, offsets[1], plan[1][2])
    assert read_all(cluster.bootstrap, topic, expected=len(want)) == want


def test_mock_cluster_metadata_at_the_negotiated_version_decodes(mock_cluster: MockCluster) -> None:
    async def metadata() -> None:
        host, port = mock_cluster.bootstrap.split(",")[0].rsplit(":", 1)
        conn = await BrokerConnection.open(host, int(port), settings())
        try:
            assert conn.version_for(messages.METADATA) > MOCK_METADATA_MAX
            await conn.request(
                messages.METADATA, {"topics": [], "allow_auto_topic_creation": False}
            )
        finally:
            conn.close()

    asyncio.run(metadata())
