"""A producer batch's bytes once sent: a new producer identity restamps a copy, never the
bytes a transport may still hold from the earlier request."""

from __future__ import annotations

import struct

from daemon.kafka.records import BatchBuilder
from daemon.producer.batch import ProducerBatch

# RecordBatch v2 (Kafka docs/implementation.html): producerId int64, producerEpoch int16 and
# baseSequence int32 start after baseOffset 8, batchLength 4, partitionLeaderEpoch 4, magic 1,
# crc 4, attributes 2, lastOffsetDelta 4, baseTimestamp 8 and maxTimestamp 8 bytes.
PRODUCER_FIELDS = struct.Struct(">qhi")
AT = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8


def test_a_restamped_batch_leaves_the_bytes_sent_before_unchanged():
    builder = BatchBuilder()
    builder.append(1_700_000_000_000, b"k", b"v")
    batch = ProducerBatch("t", 0, builder, created=0.0)
    sent = batch.build(1000, 0, 5)
    again = batch.build(1000, 0, 5)  # the same identity: the same bytes, no copy
    assert again is sent
    bumped = batch.build(2000, 0, 0)  # an epoch bump (KIP-360) re-stamps
    assert bumped is not sent
    assert PRODUCER_FIELDS.unpack_from(sent, AT) == (1000, 0, 5)
    assert PRODUCER_FIELDS.unpack_from(bumped, AT) == (2000, 0, 0)
    assert bumped[AT + PRODUCER_FIELDS.size :] == sent[AT + PRODUCER_FIELDS.size :]
