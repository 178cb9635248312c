"""RecordBatch v2: golden bytes built field by field, round trips, restamp, split, corruption."""

from __future__ import annotations

import random
import struct

import pytest
from crc32c import crc32c

from daemon.kafka.compression import GZIP, LZ4, NONE, SNAPPY, ZSTD
from daemon.kafka.records import (
    HEADER_SIZE,
    BatchBuilder,
    CorruptBatchError,
    Record,
    batch_base_sequence,
    batch_record_count,
    decode_batches,
    increment_sequence,
    restamp,
)

T0 = 1_700_000_000_000
ALL_CODECS = [NONE, GZIP, SNAPPY, LZ4, ZSTD]


def golden_two_record_batch(base_offset: int = 0) -> bytes:
    """The batch of ``build_golden()``, written field by field from the Kafka docs."""
    record0 = (
        b"\x00"  # attributes (unused)
        + b"\x00"  # timestampDelta 0 (zigzag 0)
        + b"\x00"  # offsetDelta 0
        + b"\x04"  # keyLength 2 (zigzag 4)
        + b"k1"
        + b"\x04"  # valueLength 2
        + b"v1"
        + b"\x02"  # headerCount 1 (zigzag 2)
        + b"\x02"  # headerKeyLength 1
        + b"h"
        + b"\x02"  # headerValueLength 1
        + b"x"
    )
    record1 = (
        b"\x00"  # attributes
        + b"\x0a"  # timestampDelta 5 (zigzag 10)
        + b"\x02"  # offsetDelta 1 (zigzag 2)
        + b"\x01"  # keyLength -1: null key (zigzag 1)
        + b"\x0a"  # valueLength 5
        + b"hello"
        + b"\x00"  # headerCount 0
    )
    assert (len(record0), len(record1)) == (14, 11)
    records = b"\x1c" + record0 + b"\x16" + record1  # length varints 14, 11 (zigzag 28, 22)
    after_crc = (
        struct.pack(">h", 0)  # attributes: no compression, CreateTime, not transactional
        + struct.pack(">i", 1)  # lastOffsetDelta
        + struct.pack(">q", T0)  # baseTimestamp
        + struct.pack(">q", T0 + 5)  # maxTimestamp
        + struct.pack(">q", 1000)  # producerId
        + struct.pack(">h", 2)  # producerEpoch
        + struct.pack(">i", 7)  # baseSequence
        + struct.pack(">i", 2)  # recordCount
        + records
    )
    batch_length = 4 + 1 + 4 + len(after_crc)  # partitionLeaderEpoch + magic + crc + rest
    return (
        struct.pack(">q", base_offset)  # baseOffset
        + struct.pack(">i", batch_length)  # batchLength
        + struct.pack(">i", -1)  # partitionLeaderEpoch: producers send -1
        + struct.pack(">b", 2)  # magic
        + struct.pack(">I", crc32c(after_crc))  # CRC-32C of attributes..end
        + after_crc
    )


def build_golden() -> bytearray:
    builder = BatchBuilder()
    builder.append(T0, b"k1", b"v1", [("h", b"x")])
    builder.append(T0 + 5, None, b"hello")
    return builder.build(producer_id=1000, producer_epoch=2, base_sequence=7)


def stored_crc_is_valid(batch: bytes | bytearray) -> bool:
    return struct.unpack_from(">I", batch, 17)[0] == crc32c(bytes(batch[21:]))


def test_crc32c_is_castagnoli_with_the_published_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_builder_output_equals_the_field_by_field_golden_batch() -> None:
    assert bytes(build_golden()) == golden_two_record_batch()


def test_decoding_the_golden_batch_returns_every_field() -> None:
    [batch] = decode_batches(golden_two_record_batch())
    assert batch.base_offset == 0
    assert batch.partition_leader_epoch == -1
    assert batch.magic == 2
    assert batch.crc == struct.unpack_from(">I", golden_two_record_batch(), 17)[0]
    assert batch.attributes == 0
    assert batch.compression == NONE
    assert batch.timestamp_type == 0
    assert batch.is_transactional is False
    assert batch.is_control is False
    assert batch.last_offset_delta == 1
    assert batch.base_timestamp == T0
    assert batch.max_timestamp == T0 + 5
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (1000, 2, 7)
    assert batch.records == [
        Record(offset=0, timestamp=T0, key=b"k1", value=b"v1", headers=(("h", b"x"),)),
        Record(offset=1, timestamp=T0 + 5, key=None, value=b"hello", headers=()),
    ]


def test_crc_does_not_cover_base_offset_so_broker_assigned_offsets_decode() -> None:
    data = golden_two_record_batch(base_offset=100)
    [batch] = decode_batches(data)
    assert [r.offset for r in batch.records] == [100, 101]


def test_decode_reads_consecutive_batches() -> None:
    data = golden_two_record_batch(0) + golden_two_record_batch(2)
    offsets = [r.offset for b in decode_batches(data) for r in b.records]
    assert offsets == [0, 1, 2, 3]


def test_header_peeks_read_count_and_sequence() -> None:
    batch = build_golden()
    assert batch_record_count(batch) == 2
    assert batch_base_sequence(batch) == 7


def test_size_in_bytes_and_append_return_values_are_exact_when_uncompressed() -> None:
    builder = BatchBuilder()
    added = [builder.append(T0 + i, b"key", b"value" * i) for i in range(50)]
    size = builder.size_in_bytes
    assert size == 61 + sum(added)
    assert len(builder.build()) == size


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_every_codec_round_trips_and_names_itself_in_attributes(codec: int) -> None:
    builder = BatchBuilder(compression=codec)
    expected = []
    for i in range(200):
        key = None if i % 3 == 0 else f"key-{i % 7}".encode()
        value = b"payload " * (i % 5) if i % 11 else None
        headers = (("trace", f"{i}".encode()), ("empty", None)) if i % 2 else ()
        builder.append(T0 + i, key, value, headers)
        expected.append(Record(i, T0 + i, key, value, tuple(headers)))
    data = builder.build(42, 0, 0)
    assert stored_crc_is_valid(data)
    [batch] = decode_batches(data)
    assert batch.compression == codec  # repetitive data: every codec shrinks it
    assert batch.attributes & 0x07 == codec
    assert batch.records == expected


def test_compression_is_skipped_when_it_does_not_shrink_the_records() -> None:
    noise = random.Random(1).randbytes(5000)
    plain, packed = BatchBuilder(NONE), BatchBuilder(GZIP)
    for builder in (plain, packed):
        builder.append(T0, None, noise)
    packed_bytes = packed.build()
    [batch] = decode_batches(packed_bytes)
    assert batch.compression == NONE  # attributes name the codec actually used
    assert packed_bytes == plain.build()
    assert batch.records[0].value == noise


def test_lz4_batch_has_independent_blocks() -> None:
    builder = BatchBuilder(compression=LZ4)
    for _ in range(100):
        builder.append(T0, b"k", b"lz4 " * 100)
    data = builder.build()
    records = data[61:]
    assert records[:4] == b"\x04\x22\x4d\x18"  # LZ4 frame magic
    assert records[4] & 0x20  # FLG block-independence bit (Kafka rejects linked blocks)


def test_null_key_and_value_and_headers_round_trip() -> None:
    builder = BatchBuilder()
    builder.append(T0, None, None, [("ключ", None), ("k", b""), ("", b"\x00\xff")])
    builder.append(T0, b"", b"")
    [batch] = decode_batches(builder.build())
    assert batch.records[0].key is None and batch.records[0].value is None
    assert batch.records[0].headers == (("ключ", None), ("k", b""), ("", b"\x00\xff"))
    assert (batch.records[1].key, batch.records[1].value) == (b"", b"")


def test_large_keys_values_and_offset_deltas_take_the_slow_path_correctly() -> None:
    big = random.Random(2).randbytes(1 << 20)
    builder = BatchBuilder(compression=ZSTD)
    builder.append(T0, b"K" * 20_000, big)
    for _ in range(20_000):  # offsetDelta past the 16384-entry varint table
        builder.append(T0 + 100_000, b"k", b"v")  # timestampDelta past the table too
    builder.append(T0 - 5, None, b"late")  # negative timestampDelta
    [batch] = decode_batches(builder.build())
    assert batch.records[0].key == b"K" * 20_000 and batch.records[0].value == big
    assert batch.records[20_000] == Record(20_000, T0 + 100_000, b"k", b"v", ())
    assert batch.records[-1] == Record(20_001, T0 - 5, None, b"late", ())
    assert (batch.base_timestamp, batch.max_timestamp) == (T0, T0 + 100_000)
    assert batch.last_offset_delta == 20_001


def test_timestamps_track_first_and_max() -> None:
    builder = BatchBuilder()
    assert builder.first_timestamp is None
    for ts in (T0 + 10, T0 + 30, T0 + 20):
        builder.append(ts, None, b"v")
    assert (builder.first_timestamp, builder.max_timestamp) == (T0 + 10, T0 + 30)


def test_transactional_builder_sets_the_attribute_bit() -> None:
    builder = BatchBuilder(transactional=True)
    builder.append(T0, None, b"v")
    data = builder.build(5, 1, 0)
    assert struct.unpack_from(">h", data, 21)[0] == 0x10
    assert decode_batches(data)[0].is_transactional is True


def test_building_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchBuilder().build()


def test_a_built_builder_refuses_more_records_and_a_second_build() -> None:
    builder = BatchBuilder()
    builder.append(T0, None, b"v")
    builder.build()
    with pytest.raises(RuntimeError):
        builder.build()
    with pytest.raises(TypeError):
        builder.append(T0, None, b"v")


@pytest.mark.parametrize("codec", [NONE, ZSTD])
def test_restamp_changes_only_the_producer_fields_and_the_crc(codec: int) -> None:
    builder = BatchBuilder(compression=codec)
    for i in range(100):
        builder.append(T0 + i, b"key", b"value value value")
    before = bytes(builder.build(producer_id=1000, producer_epoch=2, base_sequence=7))
    after = bytearray(before)
    restamp(after, producer_id=1001, producer_epoch=0, base_sequence=0)
    # Unchanged: baseOffset..magic, attributes..maxTimestamp, recordCount and the records.
    assert after[:17] == before[:17]
    assert after[21:43] == before[21:43]
    assert after[57:] == before[57:]
    assert struct.unpack_from(">qhi", after, 43) == (1001, 0, 0)
    assert stored_crc_is_valid(after)
    assert after[17:21] != before[17:21]
    [batch] = decode_batches(after)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (1001, 0, 0)


def test_a_corrupted_record_byte_fails_the_crc() -> None:
    data = bytearray(golden_two_record_batch())
    data[-1] ^= 0x01
    with pytest.raises(CorruptBatchError, match="CRC"):
        decode_batches(data)


def test_a_corrupted_stored_crc_fails() -> None:
    data = bytearray(golden_two_record_batch())
    data[17] ^= 0x80
    with pytest.raises(CorruptBatchError, match="CRC"):
        decode_batches(data)


def test_truncated_batches_raise() -> None:
    data = golden_two_record_batch()
    for cut in (10, 60, len(data) - 1):
        with pytest.raises(CorruptBatchError):
            decode_batches(data[:cut])


def test_other_magic_is_refused() -> None:
    data = bytearray(golden_two_record_batch())
    data[16] = 1
    with pytest.raises(CorruptBatchError, match="magic"):
        decode_batches(data)


def test_record_count_that_disagrees_with_the_records_raises() -> None:
    data = bytearray(golden_two_record_batch())
    struct.pack_into(">i", data, 57, 3)  # claims 3 records, holds 2
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))  # with a valid CRC
    with pytest.raises(CorruptBatchError):
        decode_batches(data)


def test_sequence_numbers_wrap_to_zero_after_int32_max_like_java() -> None:
    # Java DefaultRecordBatch.incrementSequence.
    assert increment_sequence(5, 3) == 8
    assert increment_sequence(2**31 - 1, 1) == 0
    assert increment_sequence(2**31 - 2, 5) == 3


def _packed(records):
    """Packed records: key lengths, value lengths, then the bytes back to back."""
    key_lens = [(-1 if k is None else len(k)) for k, _ in records]
    value_lens = [(-1 if v is None else len(v)) for _, v in records]
    data = b"".join((k or b"") + (v or b"") for k, v in records)
    return key_lens, value_lens, memoryview(data)


def test_append_packed_writes_the_same_bytes_as_append_record_by_record():
    records = [
        (b"k1", b"v" * 100),
        (None, b"null key"),
        (b"null value", None),
        (None, None),
        (b"", b""),
        (b"big", b"x" * 20000),  # a length past the varint table: the slow path
        (b"k7", b"after the big one"),
    ]
    one_by_one = BatchBuilder()
    for key, value in records:
        one_by_one.append(1_700_000_000_123, key, value)
    key_lens, value_lens, data = _packed(records)
    columns = BatchBuilder()
    end, pos, added = columns.append_packed(
        1_700_000_000_123, data, key_lens, value_lens, 0, 0, 1 << 30
    )
    assert (end, pos) == (len(records), len(data))
    assert added == one_by_one.size_in_bytes - HEADER_SIZE
    assert columns.build(7, 1, 0) == one_by_one.build(7, 1, 0)


def test_append_packed_stops_at_max_size_and_continues_where_it_stopped():
    records = [(b"key%d" % i, b"v" * 50) for i in range(10)]
    key_lens, value_lens, data = _packed(records)
    first = BatchBuilder()
    end, pos, _ = first.append_packed(5, data, key_lens, value_lens, 0, 0, HEADER_SIZE + 130)
    assert 1 < end < 10 and first.size_in_bytes >= HEADER_SIZE + 130
    second = BatchBuilder()
    assert second.append_packed(5, data, key_lens, value_lens, end, pos, 1 << 30)[:2] == (
        10,
        len(data),
    )
    decoded = decode_batches(first.build()) + decode_batches(second.build())
    values = [(r.key, r.value) for batch in decoded for r in batch.records]
    assert values == records


def test_append_packed_takes_one_record_even_when_it_alone_exceeds_max_size():
    key_lens, value_lens, data = _packed([(b"k", b"v" * 500)])
    builder = BatchBuilder()
    assert builder.append_packed(1, data, key_lens, value_lens, 0, 0, 10)[0] == 1
