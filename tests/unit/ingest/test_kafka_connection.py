"""One Kafka client's connection to the listener: pipelined requests handled in
``data_received`` in order, answered in request order whichever outcome arrives first.

Real rings and ingest server (``test_connection``'s rig), requests encoded by kpd's Kafka codec
as a client writes them, answers decoded from what the connection wrote.
"""

from __future__ import annotations

import asyncio
import struct

from daemon.ingest.kafka.connection import KafkaConnection
from daemon.kafka.errors import ErrorCode
from daemon.kafka.headers import decode_response, encode_request
from daemon.kafka.messages import API_VERSIONS, PRODUCE
from daemon.ownership import worker_for
from daemon.producer.counters import STAGE_BOUNDS, LatencyHistogram
from tests.unit.ingest.test_connection import TOPIC, RecordingTransport
from tests.unit.ingest.test_kafka_listener import (  # noqa: F401 (rig: a fixture)
    PRODUCE_VERSION,
    _batch,
    _listener,
    _report,
    rig,
)


def _produce(correlation_id: int, partition: int, acks: int = -1) -> bytes:
    body = {"transactional_id": None, "acks": acks, "timeout_ms": 5000,
            "topic_data": [{"name": TOPIC, "partition_data": [
                {"index": partition, "records": _batch([b"r%d" % correlation_id])}]}]}  # fmt: skip
    return encode_request(PRODUCE, PRODUCE_VERSION, correlation_id, "test", body)


def _answers(transport: RecordingTransport) -> list[tuple[int, dict]]:
    """(correlation id, body) of each answer written, in order."""
    data, answers, at = bytes(transport.written), [], 0
    while at < len(data):
        (size,) = struct.unpack_from(">i", data, at)
        payload = data[at + 4 : at + 4 + size]
        api = PRODUCE if len(answers) < 3 else API_VERSIONS
        version = PRODUCE_VERSION if api is PRODUCE else 0
        answers.append(decode_response(api, version, payload))
        at += 4 + size
    return answers


def test_pipelined_requests_are_answered_in_request_order_whichever_outcome_comes_first(rig):  # noqa: F811
    partitions = [0, 1, 2]

    async def scenario():
        listener = _listener(rig)
        listener.produce_time = LatencyHistogram(STAGE_BOUNDS)
        conn = KafkaConnection(listener)
        transport = RecordingTransport()
        conn.connection_made(transport)
        api_versions = encode_request(API_VERSIONS, 0, 4, "test", {})
        # Three Produce requests and an ApiVersions, in one read: handled at once, in order.
        conn.data_received(b"".join(_produce(i + 1, p) for i, p in enumerate(partitions))
                           + api_versions)  # fmt: skip
        await asyncio.sleep(0)  # published (and answered) at the loop turn's end
        entries = sorted((entry for _, entry in rig.entries()), key=lambda e: e.base_seq)
        assert [e.partition for e in entries] == partitions  # admitted in request order
        assert transport.written == b""  # every answer waits for the first one's outcome
        written = []
        for order, offset in ((2, 30), (0, 10), (1, 20)):  # the outcomes, out of order
            entry = entries[order]
            worker = worker_for(TOPIC, entry.partition, len(rig.worker_ends))
            _report(rig, worker, entry.base_seq, 1, offset)
            rig.server._forward_once(rig.server._reports[worker])
            await asyncio.sleep(0)  # the outcome's callback runs on the loop
            await asyncio.sleep(0)
            written.append([cid for cid, _ in _answers(transport)])
        return written, _answers(transport), listener.connections, listener.stats()

    written, answers, connections, stats = asyncio.run(scenario())
    assert written == [[], [1], [1, 2, 3, 4]]
    # kpd_kafka_produce_seconds: each Produce answer timed from its request, ApiVersions not.
    assert stats.produce_time.count == 3
    assert 0 < stats.produce_time.total < 5.0
    offsets = [body["responses"][0]["partition_responses"][0]["base_offset"]
               for _, body in answers[:3]]  # fmt: skip
    assert offsets == [10, 20, 30]
    assert all(body["responses"][0]["partition_responses"][0]["error_code"] == ErrorCode.NONE
               for _, body in answers[:3])  # fmt: skip
    assert answers[3][1]["error_code"] == ErrorCode.NONE
    assert len(connections) == 1


def test_acks_0_requests_get_no_answer_and_the_next_answer_is_not_held_by_them(rig):  # noqa: F811
    # acks=1 is kpd's ack level accepted: answered once its entry is published.
    async def scenario():
        listener = _listener(rig)
        conn = KafkaConnection(listener)
        transport = RecordingTransport()
        conn.connection_made(transport)
        conn.data_received(_produce(1, 0, acks=0) + _produce(2, 1, acks=1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return transport, len(rig.entries()), listener.records

    transport, entries, records = asyncio.run(scenario())
    data = bytes(transport.written)
    (size,) = struct.unpack_from(">i", data, 0)
    assert len(data) == 4 + size  # one answer: the acks=1 request's
    correlation_id, body = decode_response(PRODUCE, PRODUCE_VERSION, data[4:])
    assert correlation_id == 2
    assert body["responses"][0]["partition_responses"][0]["error_code"] == ErrorCode.NONE
    assert (entries, records) == (2, 2)


class _AbortingTransport(RecordingTransport):
    def abort(self) -> None:
        self.closed = True


def _correlation_ids(data: bytes) -> list[int]:
    ids, at = [], 0
    while at < len(data):
        size, correlation_id = struct.unpack_from(">ii", data, at)
        ids.append(correlation_id)
        at += 4 + size
    return ids


def test_requests_cut_anywhere_across_reads_are_handled_whole_and_in_order(rig):  # noqa: F811
    # Requests are views of the reads; one spread over reads is joined once it is whole.
    stream = (_produce(1, 0, acks=1) + _produce(2, 1, acks=1)
              + encode_request(API_VERSIONS, 0, 3, "test", {}))  # fmt: skip

    async def scenario():
        listener = _listener(rig)
        answered = {}
        for piece in (1, 3, 4, 5, 61, len(stream) - 1, len(stream)):
            conn = KafkaConnection(listener)
            transport = _AbortingTransport()
            conn.connection_made(transport)
            for at in range(0, len(stream), piece):
                conn.data_received(stream[at : at + piece])
                await asyncio.sleep(0)
            answered[piece] = _correlation_ids(bytes(transport.written))
            conn.connection_lost(None)  # socket.max_connections is 4
        return answered, listener.records

    answered, records = asyncio.run(scenario())
    assert all(ids == [1, 2, 3] for ids in answered.values()), answered
    assert records == 2 * len(answered)


def test_a_request_over_the_size_limit_closes_the_connection_unanswered(rig):  # noqa: F811
    async def scenario():
        listener = _listener(rig)
        conn = KafkaConnection(listener)
        transport = _AbortingTransport()
        conn.connection_made(transport)
        too_big = listener.settings.max_request_bytes + 1
        conn.data_received(_produce(1, 0, acks=1) + struct.pack(">i", too_big) + b"\0" * 10)
        await asyncio.sleep(0)
        return transport, conn.closed, listener.records

    transport, closed, records = asyncio.run(scenario())
    assert transport.closed and closed
    assert transport.written == b"" and records == 0  # nothing of the read is handled


def test_an_answer_is_written_as_soon_as_its_report_was_forwarded(rig):  # noqa: F811
    # Latency at 100k records/s (issue 20): the answer leaves once the worker's report was
    # forwarded, not after whatever else the loop turn runs (the turn's end, scheduled when
    # the report came, finds nothing left to write).
    partition = 1
    worker = worker_for(TOPIC, partition, len(rig.worker_ends))

    async def scenario():
        listener = _listener(rig)
        conn = KafkaConnection(listener)
        transport = RecordingTransport()
        conn.connection_made(transport)
        conn.data_received(_produce(1, partition))
        await asyncio.sleep(0)  # published at the loop turn's end
        ((_, entry),) = rig.entries()
        _report(rig, worker, entry.base_seq, 1, 42)
        rig.server._forward_once(rig.server._reports[worker])
        answered_at_once = _answers(transport)  # no await: still inside the forwarding
        await asyncio.sleep(0)  # the turn's end
        await asyncio.sleep(0)
        return answered_at_once, _answers(transport)

    answered_at_once, answered = asyncio.run(scenario())
    assert [cid for cid, _ in answered_at_once] == [1]
    assert answered_at_once[0][1]["responses"][0]["partition_responses"][0]["base_offset"] == 42
    assert answered == answered_at_once  # nothing written twice
