"""The compiled accelerator and its pure-Python twins: same bytes, same answers, chosen once.

Expected bytes come from the Kafka record format written field by field (``struct.pack`` and
hand-encoded zigzag varints), never from either implementation; the two are also run against
each other on many shapes. See tests/unit/client/test_murmur2.py for murmur2 (Kafka's vectors).
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from array import array

import pytest

from daemon.ingest.connection import decode_produce
from daemon.ingest.routing import EntryPlanner
from daemon.kafka.records import append_packed_python, append_stamped_python
from daemon.ring.ordering import MemoryOrderingError, ordering_of, shared_words
from daemon.wire.ring_entry import ENTRY_HEAD_BYTES, seq_runs
from kpd.murmur2 import partition_for_key
from kpd.protocol.base import AckLevel, BadFrameError
from kpd.protocol.records import decode_produce_header, encode_section, iter_records
from tests.accel import IMPLEMENTATIONS, compiled, compiled_client


def test_the_c_accelerator_is_built_and_chosen_unless_kpd_pure_python_is_set():
    probe = (
        "import daemon.accel as a, kpd.accel as c, kpd.murmur2 as m, daemon.kafka.records as r;"
        "print(a.IMPLEMENTATION == c.IMPLEMENTATION and a.IMPLEMENTATION);"
        "print(m.murmur2 is getattr(c.native, 'murmur2', None));"
        "print(r._append_packed is r.append_packed_python)"
    )

    def run(env: dict[str, str]) -> list[str]:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                             text=True, check=True)  # fmt: skip
        return out.stdout.split("\n")[:3]

    import os

    base = {k: v for k, v in os.environ.items() if k != "KPD_PURE_PYTHON"}
    assert run(base) == ["C", "True", "False"]
    assert run({**base, "KPD_PURE_PYTHON": "1"}) == [
        "pure Python (KPD_PURE_PYTHON=1)",
        "False",
        "True",
    ]


@pytest.fixture(params=IMPLEMENTATIONS)
def append_packed(request):
    return compiled().append_packed if request.param == "C" else append_packed_python


# --- RecordBatch v2 records from packed columns -----------------------------------------------


def test_append_packed_writes_kafkas_record_layout_field_by_field(append_packed):
    # Two records sharing timestampDelta 5: ("k1", "v1") and (null key, 300 x "x"), appended at
    # offsetDelta 3 and 4 of a batch that holds 3 records already.
    head = b"\x00" + b"\x0a"  # attributes 0, timestampDelta 5 (zigzag 10)
    data = b"k1v1" + b"x" * 300
    record0 = (
        head
        + b"\x06"  # offsetDelta 3 (zigzag 6)
        + b"\x04"  # keyLength 2 (zigzag 4)
        + b"k1"
        + b"\x04"  # valueLength 2
        + b"v1"
        + b"\x00"  # headerCount 0
    )
    record1 = (
        head
        + b"\x08"  # offsetDelta 4
        + b"\x01"  # keyLength -1: null (zigzag 1)
        + b"\xd8\x04"  # valueLength 300: zigzag 600 = 0b100_1011000 -> 0xd8 0x04
        + b"x" * 300
        + b"\x00"  # headerCount 0
    )
    assert len(record0) == 10 and len(record1) == 307
    # length varints: 10 -> zigzag 20 (0x14); 307 -> zigzag 614 = 0xe6 0x04
    expected = b"\x14" + record0 + b"\xe6\x04" + record1
    buf = bytearray(b"HEADER")
    result = append_packed(buf, head, memoryview(data), (2, -1), (2, 300), 0, 0, 3, 1 << 20)
    assert result == (2, len(data), len(expected))
    assert buf == b"HEADER" + expected


def test_append_packed_stops_at_max_size_but_takes_one_record_into_an_empty_batch(append_packed):
    head = b"\x00\x00"
    data = b"a" * 30
    buf = bytearray(61)
    # max_size already reached: nothing at offset 5, one record at offset 0 (empty batch).
    assert append_packed(buf, head, data, (0, 0, 0), (10, 10, 10), 0, 0, 5, 10) == (0, 0, 0)
    end, pos, added = append_packed(buf, head, data, (0, 0, 0), (10, 10, 10), 0, 0, 0, 10)
    assert (end, pos) == (1, 10)
    assert added == 1 + 16  # length varint + attributes, ts, offset, klen, vlen, 10 B, headers
    # Continues where it stopped, until the buffer passes max_size.
    assert append_packed(buf, head, data, (0, 0, 0), (10, 10, 10), 1, 10, 1, 61 + 17 + 1)[:2] == (
        2,
        20,
    )


@pytest.mark.parametrize("seed", range(5))
def test_both_implementations_write_the_same_bytes_for_random_columns(seed):
    rng = random.Random(seed)
    count = rng.randint(1, 300)
    key_lens = [rng.choice((-1, 0, 3, 16, 200, 20000)) for _ in range(count)]
    value_lens = [rng.choice((-1, 0, 1, 100, 1024, 70000)) for _ in range(count)]
    data = rng.randbytes(sum(max(n, 0) for n in key_lens + value_lens))
    head = b"\x00" + bytes([rng.randrange(0x80)])
    for max_size in (100, 5000, 1 << 30):
        c, py = bytearray(61), bytearray(61)
        got = compiled().append_packed(c, head, data, key_lens, value_lens, 0, 0, 0, max_size)
        want = append_packed_python(py, head, data, key_lens, value_lens, 0, 0, 0, max_size)
        assert (got, c) == (want, py)


def test_c_append_packed_refuses_lengths_past_the_data():
    with pytest.raises(ValueError, match="past the data"):
        compiled().append_packed(bytearray(), b"\0\0", b"abc", (2,), (2,), 0, 0, 0, 100)


# --- records with a timestamp each (the Kafka listener's) --------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def append_stamped(request):
    return compiled().append_stamped if request.param == "C" else append_stamped_python


def test_append_stamped_writes_each_records_timestamp_delta_field_by_field(append_stamped):
    # Three records into a batch of base timestamp 1000 holding 2 records: timestamps 1005,
    # -1 (none: the default 1002) and 999 (before the base: a negative delta), so deltas 5,
    # 2 and -1; the largest timestamp appended is 1005.
    data = b"k1v1" + b"ab" + b"z"
    record0 = (
        b"\x00"  # attributes
        + b"\x0a"  # timestampDelta 5 (zigzag 10)
        + b"\x04"  # offsetDelta 2 (zigzag 4)
        + b"\x04k1"  # keyLength 2, key
        + b"\x04v1"  # valueLength 2, value
        + b"\x00"  # headerCount 0
    )
    record1 = b"\x00" + b"\x04" + b"\x06" + b"\x01" + b"\x04ab" + b"\x00"  # delta 2, null key
    record2 = b"\x00" + b"\x01" + b"\x08" + b"\x02z" + b"\x01" + b"\x00"  # delta -1, null value
    assert (len(record0), len(record1), len(record2)) == (10, 8, 7)
    expected = b"\x14" + record0 + b"\x10" + record1 + b"\x0e" + record2  # lengths, zigzag
    buf = bytearray(b"HEADER")
    stamps, keys, values = (1005, -1, 999), (2, -1, 1), (2, 2, -1)
    result = append_stamped(buf, 1000, 1002, stamps, memoryview(data), keys, values, 0, 0, 2,
                            1 << 20)  # fmt: skip
    assert result == (3, len(data), len(expected), 1005)
    assert buf == b"HEADER" + expected


def test_append_stamped_stops_at_max_size_and_says_the_largest_timestamp_it_took(append_stamped):
    data = b"a" * 30
    buf = bytearray(61)
    stamps, keys, values = (7, 9, 8), (0, 0, 0), (10, 10, 10)
    # An empty batch takes one record whatever max_size says; its timestamp is the largest.
    assert append_stamped(buf, 7, 0, stamps, data, keys, values, 0, 0, 0, 10) == (1, 10, 17, 7)
    assert append_stamped(buf, 7, 0, stamps, data, keys, values, 1, 10, 1, 61 + 17 + 1) == (
        2, 20, 17, 9,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_both_implementations_write_the_same_stamped_bytes_for_random_columns(seed):
    rng = random.Random(seed)
    count = rng.randint(1, 300)
    key_lens = [rng.choice((-1, 0, 3, 16, 200, 20000)) for _ in range(count)]
    value_lens = [rng.choice((-1, 0, 1, 100, 1024, 70000)) for _ in range(count)]
    stamp = 1_700_000_000_000
    stamps = []
    for _ in range(count):  # runs of equal timestamps, some -1, some going back
        stamp += rng.choice((0, 0, 1, 5, -3, 100_000))
        stamps.append(-1 if rng.random() < 0.1 else stamp)
    data = rng.randbytes(sum(max(n, 0) for n in key_lens + value_lens))
    native_stamps = memoryview(array("q", stamps)).cast("B").cast("q")
    for max_size in (100, 5000, 1 << 30):
        c, py = bytearray(61), bytearray(61)
        args = (stamps[0] if stamps[0] != -1 else 42, 42)
        got = compiled().append_stamped(c, *args, native_stamps, data, key_lens, value_lens,
                                        0, 0, 0, max_size)  # fmt: skip
        want = append_stamped_python(py, *args, stamps, data, key_lens, value_lens, 0, 0, 0,
                                     max_size)  # fmt: skip
        assert (got, c) == (want, py)


def test_both_implementations_refuse_a_timestamp_below_minus_one():
    for append in (compiled().append_stamped, append_stamped_python):
        with pytest.raises(ValueError, match="below -1"):
            append(bytearray(), 0, 0, (5, -2), b"", (0, 0), (0, 0), 0, 0, 0, 100)


def _stamped_section(stamps, keys, values) -> bytes:
    """A records section of layout 1 (timestamps, no headers), protocol section 1, written
    column by column."""
    count = len(stamps)
    data = b"".join((k or b"") + (v or b"") for k, v in zip(keys, values, strict=True))
    lens = [-1 if x is None else len(x) for x in keys + values]
    layout = b"\x01"  # timestamps, no headers
    return layout + struct.pack(f">{count}q", *stamps) + struct.pack(f">{2 * count}i", *lens) + data


def test_c_stamped_lengths_reads_the_columns_the_pure_scan_reads():
    from kpd.protocol.records import stamped_columns

    section = _stamped_section([5, -1, 1 << 40], [b"k", None, b""], [b"vv", b"w", None])
    stamps, keys, values, start = compiled().stamped_lengths(section, 3)
    got = (list(memoryview(stamps).cast("q")), list(memoryview(keys).cast("i")),
           list(memoryview(values).cast("i")), start)  # fmt: skip
    want = stamped_columns(section, 3)
    assert got == (list(want[0]), list(want[1]), list(want[2]), want[3])
    assert got == ([5, -1, 1 << 40], [1, -1, 0], [2, 1, -1], 1 + 3 * 16)


@pytest.mark.parametrize(
    "section",
    [
        _stamped_section([-2], [b"k"], [b"v"]),  # a timestamp below -1
        _stamped_section([1], [b"k"], [b"v"]) + b"x",  # lengths do not add up
        _stamped_section([1], [b"k"], [b"v"])[:10],  # columns past the end
        b"\x00" + _stamped_section([1], [b"k"], [b"v"])[1:],  # another layout
    ],
)
def test_c_stamped_lengths_refuses_what_the_pure_scan_refuses(section):
    from kpd.protocol.base import BadFrameError
    from kpd.protocol.records import stamped_columns

    with pytest.raises(ValueError):
        compiled().stamped_lengths(section, 1)
    if section[0] == 1:
        with pytest.raises(BadFrameError):
            stamped_columns(section, 1)


# --- ingest: partitions and groups of a -1 frame ------------------------------------------------


def _frame(keys, values):
    from kpd.protocol.produce import encode_produce_frame

    frame = encode_produce_frame(b"\x00\x01t", -1, 1000, keys, values)
    return decode_produce_header(memoryview(frame)[5:])


@pytest.fixture(params=IMPLEMENTATIONS)
def accel(request):
    return compiled() if request.param == "C" else None


@pytest.fixture
def planner(accel):
    return EntryPlanner("default", 16384, False, 1 << 20, accel=accel)


def test_a_keyed_frame_is_grouped_into_one_entry_per_partition_with_sequence_offsets(planner):
    keys = [b"user-%d" % (i % 23) for i in range(200)]
    keys[7] = keys[50] = None  # null keys join the topic's sticky partition
    values = [b"value-%d" % i for i in range(200)]
    entries = planner.split(_frame(keys, values), 6)
    assert len(entries) == len({e[0] for e in entries}) <= 6
    seen = {}
    for partition, section, first_seq, n, offsets in entries:
        assert first_seq == 1000
        indices = struct.unpack(f">{n}I", offsets)
        assert list(indices) == sorted(indices)  # the frame's order within a partition
        records = list(iter_records(section, n))
        for index, record in zip(indices, records, strict=True):
            seen[index] = partition
            assert (record.key, bytes(record.value)) == (keys[index], values[index])
    assert sorted(seen) == list(range(200))
    for index, key in enumerate(keys):
        if key is not None:
            assert seen[index] == partition_for_key(key, 6)
    assert seen[7] == seen[50]


def test_a_frame_whose_keys_share_one_partition_stays_one_consecutive_entry(planner):
    keys = [b"same"] * 10
    header = _frame(keys, [b"v"] * 10)
    ((partition, section, first_seq, n, offsets),) = planner.split(header, 4)
    assert (partition, first_seq, n, offsets) == (partition_for_key(b"same", 4), 1000, 10, None)
    assert bytes(section) == bytes(header.records)


def test_c_partition_keys_and_gather_agree_with_the_pure_loop_on_random_frames():
    rng = random.Random(7)
    for _ in range(20):
        count = rng.randint(1, 400)
        keys = [None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, 40))
                for _ in range(count)]  # fmt: skip
        values = [None if rng.random() < 0.05 else rng.randbytes(rng.randint(0, 64))
                  for _ in range(count)]  # fmt: skip
        section = encode_section(keys, values)
        parts = rng.randint(1, 50)
        column = array("I", compiled().partition_keys(section, count, parts, 0))
        assert list(column) == [0 if k is None else partition_for_key(k, parts) for k in keys]
        for p in set(column):
            sub, offsets, n = compiled().gather_records(section, count, bytes(column), p)
            chosen = [i for i in range(count) if column[i] == p]
            assert struct.unpack(f">{n}I", offsets) == tuple(chosen)
            assert sub == encode_section([keys[i] for i in chosen], [values[i] for i in chosen])


def test_c_partition_keys_refuses_a_section_whose_lengths_do_not_add_up():
    section = bytearray(encode_section([b"k"], [b"v"]))
    section[4] = 9  # key length 9: more than the data holds
    with pytest.raises(ValueError, match="add up"):
        compiled().partition_keys(bytes(section), 1, 3, 0)


def test_seq_runs_splits_a_scattered_entry_where_sequence_numbers_jump():
    offsets = struct.pack(">6I", 0, 1, 2, 5, 9, 10)
    assert seq_runs(offsets, 0, 6) == [(0, 0, 3), (5, 3, 1), (9, 4, 2)]
    assert seq_runs(offsets, 2, 3) == [(2, 2, 1), (5, 3, 1), (9, 4, 1)]


# --- ring memory ordering ----------------------------------------------------------------------


def test_a_weakly_ordered_cpu_without_the_accelerator_is_refused_with_the_reason():
    for machine in ("aarch64", "arm64", "ppc64le", "riscv64"):
        with pytest.raises(MemoryOrderingError, match=f"{machine} CPU.*C accelerator"):
            ordering_of(machine, compiled=None)
        with pytest.raises(MemoryOrderingError):
            shared_words(memoryview(bytearray(64)), machine, compiled=None)
        assert ordering_of(machine, compiled=compiled()) == "C11 atomics"
    assert ordering_of("x86_64", compiled=None) == "x86-64 TSO"


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_shared_words_read_and_write_native_u64_words_in_place(implementation):
    buffer = bytearray(64)
    accel = compiled() if implementation == "C" else None
    words = shared_words(memoryview(buffer), "x86_64", compiled=accel)
    words[2] = 2**64 - 1
    words[7] = 12345
    assert (words[2], words[7], words[0]) == (2**64 - 1, 12345, 0)
    assert struct.unpack_from("=Q", buffer, 56) == (12345,)
    with pytest.raises(IndexError):
        words[8]
    words.release()


def test_c_shared_words_refuse_unaligned_buffers_and_release_their_export():
    buffer = bytearray(72)
    with pytest.raises(ValueError, match="aligned"):
        compiled().SharedWords(memoryview(buffer)[1:65])
    words = compiled().SharedWords(memoryview(buffer))
    words.release()
    buffer.extend(b"x")  # no export left: the bytearray may resize again
    with pytest.raises(ValueError, match="released"):
        words[0]


def test_c_scan_plain_and_plain_lengths_agree_with_the_pure_scan():
    rng = random.Random(3)
    for _ in range(20):
        count = rng.randint(1, 200)
        keys = [None if rng.random() < 0.3 else rng.randbytes(rng.randint(0, 20))
                for _ in range(count)]  # fmt: skip
        values = [None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, 50))
                  for _ in range(count)]  # fmt: skip
        section = encode_section(keys, values)
        key_lens, value_lens, start = compiled_client().plain_lengths(section, count)
        assert list(memoryview(key_lens).cast("i")) == [-1 if k is None else len(k) for k in keys]
        assert list(memoryview(value_lens).cast("i")) == [
            -1 if v is None else len(v) for v in values
        ]
        assert start == 1 + 8 * count
        assert compiled_client().scan_plain(section, count) == (keys.count(None) == count)
    assert compiled_client().scan_plain(encode_section([None, None], [b"a", b"b"]), 2) is True
    with pytest.raises(ValueError):
        compiled_client().scan_plain(encode_section([b"k"], [b"v"]), 2)  # columns past the section


def test_a_grouped_entry_too_large_for_the_ring_is_cut_keeping_each_records_sequence(accel):
    small = EntryPlanner("default", 16384, False, 2048, accel=accel)
    keys = [b"k%d" % (i % 7) for i in range(90)]
    values = [b"v%03d" % i + b"x" * 60 for i in range(90)]
    header = _frame(keys, values)
    entries = small.fit(header, small.split(header, 3))
    assert len({entry[0] for entry in entries}) > 1 and len(entries) > 3
    limit = 2048 - ENTRY_HEAD_BYTES - len(b"t")
    seen = []
    for partition, section, first_seq, n, offsets in entries:
        assert len(section) + len(offsets) <= limit and first_seq == 1000
        for index, record in zip(struct.unpack(f">{n}I", offsets), iter_records(section, n),
                                 strict=True):  # fmt: skip
            assert bytes(record.value) == values[index]
            assert partition == partition_for_key(keys[index], 3)
            seen.append(index)
    assert sorted(seen) == list(range(90))


def _produce_payloads() -> list[bytes]:
    """PRODUCE payloads good and bad: plain and stamped records, every fixed field out of
    range, a topic cut short or not UTF-8, records whose lengths do not add up."""
    rng = random.Random(11)
    plain = encode_section([b"k1", None], [b"v1", b"value two"])
    keyless = encode_section([None, None, None], [b"a", None, b"c"])
    stamped = encode_section([b"k"], [b"v"], {0: 1700000000000})

    def head(base_seq=5, count=2, partition=3, ack=2, topic=b"orders"):
        return struct.pack(">QIiBH", base_seq, count, partition, ack, len(topic)) + topic

    payloads = [
        head() + plain,
        head(count=3, partition=-1) + keyless,
        head(count=1, ack=3, topic=b"") + encode_section([b""], [b""]),
        head(count=1) + stamped,  # another layout: the pure decoder's
        head(count=0) + plain,
        head(base_seq=(1 << 64) - 2, count=2) + plain,  # the last two sequence numbers
        head(base_seq=(1 << 64) - 1, count=2) + plain,  # past 2**64
        head(partition=-2) + plain,
        head(ack=4) + plain,
        head(topic=b"\xff\xfe") + plain,
        head(topic="tópico".encode()) + plain,
        head(count=3) + plain,  # more records than the section holds
        head() + plain[:-1],
        head() + plain + b"x",
        head(),  # no records section
        head()[:18],
        b"",
    ]
    for _ in range(200):  # flipped bytes anywhere
        payload = bytearray(rng.choice(payloads[:3]))
        payload[rng.randrange(len(payload))] = rng.randrange(256)
        payloads.append(bytes(payload))
    return payloads


def test_c_produce_head_agrees_with_decode_produce_header_or_leaves_the_frame_to_it():
    """For every payload the C head is what the pure decoder (the reference) returns, or
    None: then the pure decoder runs, so a bad frame always gets its exact error."""
    produce_head = compiled().produce_head
    decoded = 0
    for payload in _produce_payloads():
        head = produce_head(memoryview(payload))
        try:
            header = decode_produce_header(memoryview(payload))
        except BadFrameError:
            assert head is None, payload
            continue
        if head is None:
            assert header.records[0] != 0, payload  # only another layout is left to it
            continue
        base_seq, count, partition, ack, topic, start, keyless = head
        assert (base_seq, count, partition, ack, topic, keyless) == (
            header.base_seq, header.count, header.partition, int(header.ack), header.topic,
            header.keyless,
        )  # fmt: skip
        assert bytes(memoryview(payload)[start:]) == bytes(header.records)
        decoded += 1
    assert decoded >= 5


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_ingest_decodes_produce_frames_the_same_with_and_without_the_accelerator(implementation):
    produce_head = compiled().produce_head if implementation == "C" else None
    for payload in _produce_payloads():
        try:
            expected = decode_produce_header(memoryview(payload))
        except BadFrameError as exc:
            with pytest.raises(BadFrameError) as raised:
                decode_produce(memoryview(payload), produce_head)
            assert (raised.value.code, raised.value.message) == (exc.code, exc.message)
            continue
        header = decode_produce(memoryview(payload), produce_head)
        assert header._replace(records=bytes(header.records)) == expected._replace(
            records=bytes(expected.records)
        )
        assert type(header.ack) is AckLevel
