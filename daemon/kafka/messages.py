"""The Kafka APIs kpd speaks: one immutable ``ApiSpec`` per API, built from its schema (pure).

Each schema below transcribes apache/kafka
``clients/src/main/resources/common/message/<Name>Request.json`` / ``<Name>Response.json`` for
the versions kpd supports; field names are the JSON names, dict keys their snake_case. Version
differences live only here: callers hand every version the same dict shape.

Where a default deliberately differs from the JSON file, a comment says why.

Produce, the data path's message, is encoded and decoded by the straight-line codecs of
``produce_codec`` (same bytes, same dicts; the compiled schema stays their reference and their
fallback).

Imports only ``schema``, ``primitives`` and ``produce_codec``; headers, versions and the net
layer build on this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .primitives import ProtocolError, Reader
from .produce_codec import ProduceRequestCodec, ProduceResponseCodec
from .schema import (
    BOOL,
    BYTES,
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    UUID,
    Array,
    CompiledStruct,
    Field,
    Struct,
    compile_struct,
    parse_versions,
)

__all__ = [
    "ADD_OFFSETS_TO_TXN",
    "ADD_PARTITIONS_TO_TXN",
    "API_BY_KEY",
    "API_VERSIONS",
    "CREATE_TOPICS",
    "END_TXN",
    "FIND_COORDINATOR",
    "INIT_PRODUCER_ID",
    "LIST_OFFSETS",
    "METADATA",
    "OFFSET_FETCH",
    "PRODUCE",
    "SASL_AUTHENTICATE",
    "SASL_HANDSHAKE",
    "TXN_OFFSET_COMMIT",
    "ApiSpec",
]


@dataclass(frozen=True, eq=False)
class ApiSpec:
    """One Kafka API: its key, the versions kpd speaks, and a compiled codec per version."""

    key: int
    name: str
    min_version: int
    max_version: int
    first_flexible: int
    # ApiVersions only (KIP-511): its response always carries response header v0, even in
    # flexible versions, and a broker that does not know the requested version answers with a
    # v0 body (error UNSUPPORTED_VERSION plus the versions it does know). So the client can read
    # any answer to the first request it sends without knowing the broker yet. Kafka:
    # ApiMessageType.responseHeaderVersion and ApiVersionsResponse.parse's v0 fallback.
    api_versions_rules: bool
    request_schema: tuple[Field, ...] = field(repr=False)
    response_schema: tuple[Field, ...] = field(repr=False)
    _requests: tuple[CompiledStruct, ...] = field(repr=False)  # index: version - min_version
    _responses: tuple[CompiledStruct, ...] = field(repr=False)

    def is_flexible(self, version: int) -> bool:
        return version >= self.first_flexible

    def request_header_version(self, version: int) -> int:
        # Header v0 (no client id) is used only by ControlledShutdown v0, which kpd never sends.
        return 2 if self.is_flexible(version) else 1

    def response_header_version(self, version: int) -> int:
        if self.api_versions_rules:
            return 0
        return 1 if self.is_flexible(version) else 0

    def encode_request(self, version: int, body: dict) -> bytes:
        """The request body alone (no header, no size prefix)."""
        out: list = []
        self.write_request(version, body, out)
        return b"".join(out)

    def encode_response(self, version: int, body: dict) -> bytes:
        out: list = []
        self.write_response(version, body, out)
        return b"".join(out)

    def write_request(self, version: int, body: dict, out: list) -> None:
        """Append the encoded body's parts to ``out`` (records blobs appended, not copied)."""
        self._encode(self._requests, "Request", version, body, out)

    def write_response(self, version: int, body: dict, out: list) -> None:
        self._encode(self._responses, "Response", version, body, out)

    def decode_request(self, version: int, data, offset: int = 0) -> dict:
        """Decode a request body that runs from ``offset`` to the end of ``data``."""
        return self._decode(self._requests, "Request", version, data, offset, strict=True)

    def decode_response(self, version: int, data, offset: int = 0) -> dict:
        """Decode a response body that runs from ``offset`` to the end of ``data``."""
        try:
            return self._decode(self._responses, "Response", version, data, offset, strict=False)
        except ProtocolError as exc:
            if not self.api_versions_rules or version == self.min_version:
                raise
            try:  # a v0 body from a broker that does not know ``version`` (see above)
                return self._decode(
                    self._responses, "Response", self.min_version, data, offset, strict=False
                )
            except ProtocolError:
                raise exc from None

    def _codec(self, table, kind: str, version: int) -> CompiledStruct:
        if not self.min_version <= version <= self.max_version:
            raise ProtocolError(
                f"{self.name}{kind} v{version} is not supported "
                f"(kpd speaks v{self.min_version}-v{self.max_version})"
            )
        return table[version - self.min_version]

    def _encode(self, table, kind: str, version: int, body: dict, out: list) -> None:
        codec = self._codec(table, kind, version)
        try:
            codec.encode(body, out)
        except ProtocolError as exc:
            raise ProtocolError(f"cannot encode {self.name}{kind} v{version}: {exc}") from exc

    def _decode(self, table, kind: str, version: int, data, offset: int, *, strict: bool) -> dict:
        codec = self._codec(table, kind, version)
        try:
            reader = Reader(data, offset)
            body = codec.decode(reader)
        except ProtocolError as exc:
            raise ProtocolError(f"cannot decode {self.name}{kind} v{version}: {exc}") from None
        if reader.remaining and strict:
            # Leftover bytes in a request mean it was read with the wrong schema (wrong version
            # or API): better a clear error than a message that silently lost its tail.
            # Responses are read leniently, as librdkafka and the Java client do: a peer may
            # append bytes we do not know (librdkafka's mock cluster writes its final tagged
            # field section twice in flexible Metadata responses).
            raise ProtocolError(
                f"cannot decode {self.name}{kind} v{version}: {reader.remaining} bytes left over"
            )
        return body


def _api(key, name, versions, flexible, request, response, *, api_versions_rules=False, fast=None):
    """``fast(version, flexible, request_codec, response_codec)``: hand-written codecs that
    replace the compiled ones (which they fall back on) at each version."""
    supported = parse_versions(versions)
    flexible_versions = parse_versions(flexible)
    # "none": no version is flexible, so the first flexible one lies past every version.
    first_flexible = flexible_versions.start if flexible_versions else supported.stop
    compiled = [
        tuple(compile_struct(fields, v, v >= first_flexible, name) for v in supported)
        for fields in (request, response)
    ]
    if fast is not None:
        pairs = [
            fast(v, v >= first_flexible, req, resp)
            for v, req, resp in zip(supported, *compiled, strict=True)
        ]
        compiled = [tuple(codec for codec, _ in pairs), tuple(codec for _, codec in pairs)]
    return ApiSpec(
        key=key,
        name=name,
        min_version=supported.start,
        max_version=supported.stop - 1,
        first_flexible=first_flexible,
        api_versions_rules=api_versions_rules,
        request_schema=request,
        response_schema=response,
        _requests=compiled[0],
        _responses=compiled[1],
    )


# Nested structs are named as in the JSON files and defined before the API that uses them.

# --- Produce (key 0): ProduceRequest.json / ProduceResponse.json --------------------------------
# v3 is RecordBatch v2's first version; flexible from v9; v10 adds KIP-951 leader hints (tagged);
# v11 only adds the TRANSACTION_ABORTABLE error code (KIP-890).

_PARTITION_PRODUCE_DATA = Struct(
    "PartitionProduceData",
    Field("Index", INT32),
    Field("Records", RECORDS, nullable="0+"),
)
_TOPIC_PRODUCE_DATA = Struct(
    "TopicProduceData",
    Field("Name", STRING),
    Field("PartitionData", Array(_PARTITION_PRODUCE_DATA)),
)
_BATCH_INDEX_AND_ERROR_MESSAGE = Struct(
    "BatchIndexAndErrorMessage",
    Field("BatchIndex", INT32),
    Field("BatchIndexErrorMessage", STRING, nullable="8+", default=None),
)
_LEADER_ID_AND_EPOCH = Struct(
    "LeaderIdAndEpoch",
    Field("LeaderId", INT32, default=-1),
    Field("LeaderEpoch", INT32, default=-1),
)
_PARTITION_PRODUCE_RESPONSE = Struct(
    "PartitionProduceResponse",
    Field("Index", INT32),
    Field("ErrorCode", INT16),
    Field("BaseOffset", INT64),
    Field("LogAppendTimeMs", INT64, "2+", default=-1),
    Field("LogStartOffset", INT64, "5+", default=-1),
    Field("RecordErrors", Array(_BATCH_INDEX_AND_ERROR_MESSAGE), "8+"),
    Field("ErrorMessage", STRING, "8+", nullable="8+", default=None),
    Field("CurrentLeader", _LEADER_ID_AND_EPOCH, "10+", tag=0),
)
_TOPIC_PRODUCE_RESPONSE = Struct(
    "TopicProduceResponse",
    Field("Name", STRING),
    Field("PartitionResponses", Array(_PARTITION_PRODUCE_RESPONSE)),
)
_NODE_ENDPOINT = Struct(
    "NodeEndpoint",
    Field("NodeId", INT32),
    Field("Host", STRING),
    Field("Port", INT32),
    Field("Rack", STRING, nullable="0+", default=None),
)

PRODUCE = _api(
    key=0,
    name="Produce",
    versions="3-11",
    flexible="9+",
    request=(
        Field("TransactionalId", STRING, "3+", nullable="3+", default=None),
        Field("Acks", INT16),
        Field("TimeoutMs", INT32),
        Field("TopicData", Array(_TOPIC_PRODUCE_DATA)),
    ),
    response=(
        Field("Responses", Array(_TOPIC_PRODUCE_RESPONSE)),
        Field("ThrottleTimeMs", INT32, "1+"),
        Field("NodeEndpoints", Array(_NODE_ENDPOINT), "10+", tag=0),
    ),
    fast=lambda version, flexible, request, response: (
        ProduceRequestCodec(request, flexible),
        ProduceResponseCodec(response, version, flexible),
    ),
)

# --- Metadata (key 3): MetadataRequest.json / MetadataResponse.json -----------------------------
# From v1 a null topic array means "all topics" and an empty one "no topics". v10 adds topic ids;
# from v12 a response topic's name may be null (looked up by id).

_METADATA_REQUEST_TOPIC = Struct(
    "MetadataRequestTopic",
    Field("TopicId", UUID, "10+"),
    Field("Name", STRING, nullable="10+"),
)
_METADATA_RESPONSE_BROKER = Struct(
    "MetadataResponseBroker",
    Field("NodeId", INT32),
    Field("Host", STRING),
    Field("Port", INT32),
    Field("Rack", STRING, "1+", nullable="1+", default=None),
)
_METADATA_RESPONSE_PARTITION = Struct(
    "MetadataResponsePartition",
    Field("ErrorCode", INT16),
    Field("PartitionIndex", INT32),
    Field("LeaderId", INT32),
    Field("LeaderEpoch", INT32, "7+", default=-1),
    Field("ReplicaNodes", Array(INT32)),
    Field("IsrNodes", Array(INT32)),
    Field("OfflineReplicas", Array(INT32), "5+"),
)
_METADATA_RESPONSE_TOPIC = Struct(
    "MetadataResponseTopic",
    Field("ErrorCode", INT16),
    Field("Name", STRING, nullable="12+"),
    Field("TopicId", UUID, "10+"),
    Field("IsInternal", BOOL, "1+"),
    Field("Partitions", Array(_METADATA_RESPONSE_PARTITION)),
    Field("TopicAuthorizedOperations", INT32, "8+", default=-(2**31)),
)

METADATA = _api(
    key=3,
    name="Metadata",
    versions="1-12",
    flexible="9+",
    request=(
        Field("Topics", Array(_METADATA_REQUEST_TOPIC), nullable="1+"),
        Field("AllowAutoTopicCreation", BOOL, "4+", default=True),
        Field("IncludeClusterAuthorizedOperations", BOOL, "8-10"),
        Field("IncludeTopicAuthorizedOperations", BOOL, "8+"),
    ),
    response=(
        Field("ThrottleTimeMs", INT32, "3+"),
        Field("Brokers", Array(_METADATA_RESPONSE_BROKER)),
        Field("ClusterId", STRING, "2+", nullable="2+", default=None),
        Field("ControllerId", INT32, "1+", default=-1),
        Field("Topics", Array(_METADATA_RESPONSE_TOPIC)),
        Field("ClusterAuthorizedOperations", INT32, "8-10", default=-(2**31)),
    ),
)

# --- ApiVersions (key 18): ApiVersionsRequest.json / ApiVersionsResponse.json -------------------
# The response's feature fields are tagged (KIP-584); kpd decodes them but does not act on them.

_API_VERSION = Struct(
    "ApiVersion",
    Field("ApiKey", INT16),
    Field("MinVersion", INT16),
    Field("MaxVersion", INT16),
)
_SUPPORTED_FEATURE_KEY = Struct(
    "SupportedFeatureKey",
    Field("Name", STRING),
    Field("MinVersion", INT16),
    Field("MaxVersion", INT16),
)
_FINALIZED_FEATURE_KEY = Struct(
    "FinalizedFeatureKey",
    Field("Name", STRING),
    Field("MaxVersionLevel", INT16),
    Field("MinVersionLevel", INT16),
)

API_VERSIONS = _api(
    key=18,
    name="ApiVersions",
    versions="0-3",
    flexible="3+",
    request=(
        Field("ClientSoftwareName", STRING, "3+"),
        Field("ClientSoftwareVersion", STRING, "3+"),
    ),
    response=(
        Field("ErrorCode", INT16),
        Field("ApiKeys", Array(_API_VERSION)),
        Field("ThrottleTimeMs", INT32, "1+"),
        Field("SupportedFeatures", Array(_SUPPORTED_FEATURE_KEY), "3+", tag=0),
        Field("FinalizedFeaturesEpoch", INT64, "3+", default=-1, tag=1),
        Field("FinalizedFeatures", Array(_FINALIZED_FEATURE_KEY), "3+", tag=2),
        Field("ZkMigrationReady", BOOL, "3+", tag=3),
    ),
    api_versions_rules=True,
)

# --- InitProducerId (key 22): InitProducerIdRequest.json / InitProducerIdResponse.json ----------
# v3 adds ProducerId/ProducerEpoch so a producer can bump its epoch instead of resetting (KIP-360).

INIT_PRODUCER_ID = _api(
    key=22,
    name="InitProducerId",
    versions="0-4",
    flexible="2+",
    request=(
        # The JSON leaves the default at "", which a broker rejects as INVALID_REQUEST; an
        # omitted id must mean "not transactional", which is null.
        Field("TransactionalId", STRING, nullable="0+", default=None),
        Field("TransactionTimeoutMs", INT32),
        Field("ProducerId", INT64, "3+", default=-1),
        Field("ProducerEpoch", INT16, "3+", default=-1),
    ),
    response=(
        Field("ThrottleTimeMs", INT32),
        Field("ErrorCode", INT16),
        Field("ProducerId", INT64, default=-1),
        Field("ProducerEpoch", INT16),
    ),
)

# --- FindCoordinator (key 10): FindCoordinatorRequest.json / FindCoordinatorResponse.json -------
# v4 batches keys (KIP-699): Key and the single-coordinator response fields end at v3.

_COORDINATOR = Struct(
    "Coordinator",
    Field("Key", STRING),
    Field("NodeId", INT32),
    Field("Host", STRING),
    Field("Port", INT32),
    Field("ErrorCode", INT16),
    Field("ErrorMessage", STRING, nullable="0+"),
)

FIND_COORDINATOR = _api(
    key=10,
    name="FindCoordinator",
    versions="0-4",
    flexible="3+",
    request=(
        Field("Key", STRING, "0-3"),
        Field("KeyType", INT8, "1+"),  # 0 = group, 1 = transaction
        Field("CoordinatorKeys", Array(STRING), "4+"),
    ),
    response=(
        Field("ThrottleTimeMs", INT32, "1+"),
        Field("ErrorCode", INT16, "0-3"),
        Field("ErrorMessage", STRING, "1-3", nullable="1-3"),
        Field("NodeId", INT32, "0-3"),
        Field("Host", STRING, "0-3"),
        Field("Port", INT32, "0-3"),
        Field("Coordinators", Array(_COORDINATOR), "4+"),
    ),
)

# The transaction coordinator's requests all begin with the producer they are for, and the
# simple ones answer with a throttle time and an error code only.
_TXN_PRODUCER = (
    Field("TransactionalId", STRING),
    Field("ProducerId", INT64),
    Field("ProducerEpoch", INT16),
)
_THROTTLE_AND_ERROR = (
    Field("ThrottleTimeMs", INT32),
    Field("ErrorCode", INT16),
)

# --- AddPartitionsToTxn (key 24) -----------------------------------------------------------------
# v0-v3 are the client versions. Kafka 3.6 renamed their fields (V3AndBelowTopics, ...) when it
# added the broker-only batched v4; kpd keeps the names of the v0-v3 schema it actually speaks
# (AddPartitionsToTxnRequest.json / AddPartitionsToTxnResponse.json as of Kafka 3.5).

_ADD_PARTITIONS_TO_TXN_TOPIC = Struct(
    "AddPartitionsToTxnTopic",
    Field("Name", STRING),
    Field("Partitions", Array(INT32)),
)
_ADD_PARTITIONS_TO_TXN_PARTITION_RESULT = Struct(
    "AddPartitionsToTxnPartitionResult",
    Field("PartitionIndex", INT32),
    Field("ErrorCode", INT16),
)
_ADD_PARTITIONS_TO_TXN_TOPIC_RESULT = Struct(
    "AddPartitionsToTxnTopicResult",
    Field("Name", STRING),
    Field("Results", Array(_ADD_PARTITIONS_TO_TXN_PARTITION_RESULT)),
)

ADD_PARTITIONS_TO_TXN = _api(
    key=24,
    name="AddPartitionsToTxn",
    versions="0-3",
    flexible="3+",
    request=(
        *_TXN_PRODUCER,
        Field("Topics", Array(_ADD_PARTITIONS_TO_TXN_TOPIC)),
    ),
    response=(
        Field("ThrottleTimeMs", INT32),
        Field("Results", Array(_ADD_PARTITIONS_TO_TXN_TOPIC_RESULT)),
    ),
)

# --- EndTxn (key 26): EndTxnRequest.json / EndTxnResponse.json ----------------------------------

END_TXN = _api(
    key=26,
    name="EndTxn",
    versions="0-3",
    flexible="3+",
    request=(
        *_TXN_PRODUCER,
        Field("Committed", BOOL),
    ),
    response=_THROTTLE_AND_ERROR,
)

# --- AddOffsetsToTxn (key 25): AddOffsetsToTxnRequest.json / AddOffsetsToTxnResponse.json -------
# Adds a consumer group's offsets partition to the open transaction, so that a TxnOffsetCommit
# for the group commits (or aborts) with it. v4 only adds TRANSACTION_ABORTABLE (KIP-890).

ADD_OFFSETS_TO_TXN = _api(
    key=25,
    name="AddOffsetsToTxn",
    versions="0-3",
    flexible="3+",
    request=(
        *_TXN_PRODUCER,
        Field("GroupId", STRING),
    ),
    response=_THROTTLE_AND_ERROR,
)

# --- TxnOffsetCommit (key 28): TxnOffsetCommitRequest.json / TxnOffsetCommitResponse.json -------
# Sent to the group's coordinator; v3 adds the consumer's generation and member ids, which a
# producer committing for a group it is no member of leaves at their defaults.

_TXN_OFFSET_COMMIT_PARTITION = Struct(
    "TxnOffsetCommitRequestPartition",
    Field("PartitionIndex", INT32),
    Field("CommittedOffset", INT64),
    Field("CommittedLeaderEpoch", INT32, "2+", default=-1),
    Field("CommittedMetadata", STRING, nullable="0+", default=None),
)
_TXN_OFFSET_COMMIT_TOPIC = Struct(
    "TxnOffsetCommitRequestTopic",
    Field("Name", STRING),
    Field("Partitions", Array(_TXN_OFFSET_COMMIT_PARTITION)),
)
_TXN_OFFSET_COMMIT_PARTITION_RESULT = Struct(
    "TxnOffsetCommitResponsePartition",
    Field("PartitionIndex", INT32),
    Field("ErrorCode", INT16),
)
_TXN_OFFSET_COMMIT_TOPIC_RESULT = Struct(
    "TxnOffsetCommitResponseTopic",
    Field("Name", STRING),
    Field("Partitions", Array(_TXN_OFFSET_COMMIT_PARTITION_RESULT)),
)

TXN_OFFSET_COMMIT = _api(
    key=28,
    name="TxnOffsetCommit",
    versions="0-3",
    flexible="3+",
    request=(
        Field("TransactionalId", STRING),
        Field("GroupId", STRING),
        Field("ProducerId", INT64),
        Field("ProducerEpoch", INT16),
        Field("GenerationId", INT32, "3+", default=-1),
        Field("MemberId", STRING, "3+", default=""),
        Field("GroupInstanceId", STRING, "3+", nullable="3+", default=None),
        Field("Topics", Array(_TXN_OFFSET_COMMIT_TOPIC)),
    ),
    response=(
        Field("ThrottleTimeMs", INT32),
        Field("Topics", Array(_TXN_OFFSET_COMMIT_TOPIC_RESULT)),
    ),
)

# --- OffsetFetch (key 9): OffsetFetchRequest.json / OffsetFetchResponse.json --------------------
# kpd speaks v1-v7 (one group per request): v2 lets Topics be null (every partition the group
# has offsets for), v7 adds RequireStable (KIP-447: a partition with a transactional commit
# still pending answers UNSTABLE_OFFSET_COMMIT instead of the old offset). v8 batches groups.

_OFFSET_FETCH_TOPIC = Struct(
    "OffsetFetchRequestTopic",
    Field("Name", STRING),
    Field("PartitionIndexes", Array(INT32)),
)
_OFFSET_FETCH_PARTITION_RESULT = Struct(
    "OffsetFetchResponsePartition",
    Field("PartitionIndex", INT32),
    Field("CommittedOffset", INT64),
    Field("CommittedLeaderEpoch", INT32, "5+", default=-1),
    Field("Metadata", STRING, nullable="0+"),
    Field("ErrorCode", INT16),
)
_OFFSET_FETCH_TOPIC_RESULT = Struct(
    "OffsetFetchResponseTopic",
    Field("Name", STRING),
    Field("Partitions", Array(_OFFSET_FETCH_PARTITION_RESULT)),
)

OFFSET_FETCH = _api(
    key=9,
    name="OffsetFetch",
    versions="1-7",
    flexible="6+",
    request=(
        Field("GroupId", STRING),
        Field("Topics", Array(_OFFSET_FETCH_TOPIC), nullable="2+", default=None),
        Field("RequireStable", BOOL, "7+", default=False),
    ),
    response=(
        Field("ThrottleTimeMs", INT32, "3+"),
        # Not nullable in the JSON; tansu 0.6 answers null for a group without offsets.
        Field("Topics", Array(_OFFSET_FETCH_TOPIC_RESULT), nullable="0+", default=None),
        Field("ErrorCode", INT16, "2+"),
    ),
)

# --- CreateTopics (key 19): CreateTopicsRequest.json / CreateTopicsResponse.json ----------------
# v4 lets NumPartitions/ReplicationFactor be -1 for the broker defaults (KIP-464); v5 returns the
# topic's configs (KIP-525); v7 its topic id.

_CREATABLE_REPLICA_ASSIGNMENT = Struct(
    "CreatableReplicaAssignment",
    Field("PartitionIndex", INT32),
    Field("BrokerIds", Array(INT32)),
)
_CREATABLE_TOPIC_CONFIG = Struct(
    "CreatableTopicConfig",
    Field("Name", STRING),
    Field("Value", STRING, nullable="0+"),
)
_CREATABLE_TOPIC = Struct(
    "CreatableTopic",
    Field("Name", STRING),
    Field("NumPartitions", INT32),
    Field("ReplicationFactor", INT16),
    Field("Assignments", Array(_CREATABLE_REPLICA_ASSIGNMENT)),
    Field("Configs", Array(_CREATABLE_TOPIC_CONFIG)),
)
_CREATABLE_TOPIC_CONFIGS = Struct(
    "CreatableTopicConfigs",
    Field("Name", STRING),
    Field("Value", STRING, nullable="0+"),
    Field("ReadOnly", BOOL),
    Field("ConfigSource", INT8, default=-1),
    Field("IsSensitive", BOOL),
)
_CREATABLE_TOPIC_RESULT = Struct(
    "CreatableTopicResult",
    Field("Name", STRING),
    Field("TopicId", UUID, "7+"),
    Field("ErrorCode", INT16),
    Field("ErrorMessage", STRING, "1+", nullable="0+"),
    Field("TopicConfigErrorCode", INT16, "5+", tag=0),
    Field("NumPartitions", INT32, "5+", default=-1),
    Field("ReplicationFactor", INT16, "5+", default=-1),
    Field("Configs", Array(_CREATABLE_TOPIC_CONFIGS), "5+", nullable="5+"),
)

CREATE_TOPICS = _api(
    key=19,
    name="CreateTopics",
    versions="0-7",
    flexible="5+",
    request=(
        Field("Topics", Array(_CREATABLE_TOPIC)),
        Field("timeoutMs", INT32, default=60000),
        Field("validateOnly", BOOL, "1+"),
    ),
    response=(
        Field("ThrottleTimeMs", INT32, "2+"),
        Field("Topics", Array(_CREATABLE_TOPIC_RESULT)),
    ),
)

# --- ListOffsets (key 2): ListOffsetsRequest.json / ListOffsetsResponse.json --------------------
# v1 is the first single-offset version; v7 allows MAX_TIMESTAMP (-3, KIP-734).

_LIST_OFFSETS_PARTITION = Struct(
    "ListOffsetsPartition",
    Field("PartitionIndex", INT32),
    Field("CurrentLeaderEpoch", INT32, "4+", default=-1),
    Field("Timestamp", INT64),  # -1 latest, -2 earliest, -3 max timestamp
)
_LIST_OFFSETS_TOPIC = Struct(
    "ListOffsetsTopic",
    Field("Name", STRING),
    Field("Partitions", Array(_LIST_OFFSETS_PARTITION)),
)
_LIST_OFFSETS_PARTITION_RESPONSE = Struct(
    "ListOffsetsPartitionResponse",
    Field("PartitionIndex", INT32),
    Field("ErrorCode", INT16),
    Field("Timestamp", INT64, "1+", default=-1),
    Field("Offset", INT64, "1+", default=-1),
    Field("LeaderEpoch", INT32, "4+", default=-1),
)
_LIST_OFFSETS_TOPIC_RESPONSE = Struct(
    "ListOffsetsTopicResponse",
    Field("Name", STRING),
    Field("Partitions", Array(_LIST_OFFSETS_PARTITION_RESPONSE)),
)

LIST_OFFSETS = _api(
    key=2,
    name="ListOffsets",
    versions="1-7",
    flexible="6+",
    request=(
        # The JSON default is 0 (broker 0); a client sends -1 (Java CONSUMER_REPLICA_ID).
        Field("ReplicaId", INT32, default=-1),
        Field("IsolationLevel", INT8, "2+"),
        Field("Topics", Array(_LIST_OFFSETS_TOPIC)),
    ),
    response=(
        Field("ThrottleTimeMs", INT32, "2+"),
        Field("Topics", Array(_LIST_OFFSETS_TOPIC_RESPONSE)),
    ),
)

# --- SaslHandshake (key 17): SaslHandshakeRequest.json / SaslHandshakeResponse.json -------------
# v1 means "the SASL tokens follow as SaslAuthenticate requests" (KIP-152) instead of v0's raw
# length-prefixed tokens, which kpd never sends. Never flexible (KAFKA-9577).

SASL_HANDSHAKE = _api(
    key=17,
    name="SaslHandshake",
    versions="1",
    flexible="none",
    request=(Field("Mechanism", STRING),),
    response=(
        Field("ErrorCode", INT16),
        Field("Mechanisms", Array(STRING)),
    ),
)

# --- SaslAuthenticate (key 36): SaslAuthenticateRequest.json / SaslAuthenticateResponse.json ----
# v1 adds SessionLifetimeMs (KIP-368: the client must re-authenticate before it runs out);
# v2 is the first flexible version.

SASL_AUTHENTICATE = _api(
    key=36,
    name="SaslAuthenticate",
    versions="0-2",
    flexible="2+",
    request=(Field("AuthBytes", BYTES),),
    response=(
        Field("ErrorCode", INT16),
        Field("ErrorMessage", STRING, nullable="0+"),
        Field("AuthBytes", BYTES),
        Field("SessionLifetimeMs", INT64, "1+"),
    ),
)


API_BY_KEY: Mapping[int, ApiSpec] = MappingProxyType(
    {
        api.key: api
        for api in (
            PRODUCE,
            METADATA,
            API_VERSIONS,
            INIT_PRODUCER_ID,
            FIND_COORDINATOR,
            ADD_PARTITIONS_TO_TXN,
            END_TXN,
            ADD_OFFSETS_TO_TXN,
            TXN_OFFSET_COMMIT,
            OFFSET_FETCH,
            CREATE_TOPICS,
            LIST_OFFSETS,
            SASL_HANDSHAKE,
            SASL_AUTHENTICATE,
        )
    }
)
