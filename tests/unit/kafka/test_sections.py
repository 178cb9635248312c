"""A Kafka batch's records as a kpd records section (``daemon.kafka.sections``): the C
accelerator's ``kafka_section`` and its pure twin give the same bytes and the same errors.

Expected records come from kpd-client's own section reader (``iter_records``) on the result,
the batches from kpd's RecordBatch builder; then both implementations run on the same valid
batches, on each byte of a batch flipped, and on fuzzed bytes, and must agree on everything:
the section, whether keyless, or the kind of error.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.kafka.errors import ErrorCode
from daemon.kafka.records import HEADER_SIZE, BatchBuilder
from daemon.kafka.sections import SectionError, kafka_section, kafka_section_python
from kpd.protocol.records import iter_records
from tests.accel import IMPLEMENTATIONS, compiled

BASE_TS = 1_700_000_000_000


def _payload(records) -> bytes:
    """The records part of a batch of (timestamp, key, value, headers)."""
    builder = BatchBuilder()
    for timestamp, key, value, headers in records:
        builder.append(timestamp, key, value, headers)
    return bytes(builder.build())[HEADER_SIZE:]


def _convert(implementation: str):
    return compiled().kafka_section if implementation == "C" else kafka_section_python


def _outcome(convert, payload, count, base=BASE_TS, fixed=0, has_fixed=False):
    try:
        return convert(payload, count, base, fixed, has_fixed)
    except ValueError as exc:
        return ("error", exc.args[0])


def _decoded(section: bytes, count: int) -> list[tuple]:
    return [
        (None if r.key is None else bytes(r.key), None if r.value is None else bytes(r.value),
         r.timestamp, tuple((n, None if v is None else bytes(v)) for n, v in r.headers))
        for r in iter_records(section, count)
    ]  # fmt: skip


RECORDS = [
    (BASE_TS, b"k0", b"v0", ()),
    (BASE_TS + 5, None, b"v1", [("h", b"x"), ("n", None), ("ü", b"")]),
    (BASE_TS + 2, b"", None, ()),
    (BASE_TS + 9, b"k3" * 100, b"v" * 300, [("trace", b"t" * 20)]),
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_batch_becomes_the_section_kpd_reads_back(implementation):
    section, keyless = _convert(implementation)(_payload(RECORDS), 4, BASE_TS, 0, False)
    assert _decoded(section, 4) == [(k, v, t, tuple(h)) for t, k, v, h in RECORDS]
    assert not keyless


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_keyless_without_headers_and_log_append_time(implementation):
    records = [(BASE_TS + i, None, b"v%d" % i, ()) for i in range(50)]
    section, keyless = _convert(implementation)(_payload(records), 50, BASE_TS, 42, True)
    assert keyless
    assert {t for _, _, t, _ in _decoded(section, 50)} == {42}
    assert section[0] == 0x01  # timestamps only: no header column


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_each_check_answers_its_own_kind(implementation):
    convert = _convert(implementation)
    payload = _payload(RECORDS)
    assert _outcome(convert, payload, 5)[0] == "error"  # more records than there are
    assert _outcome(convert, payload, 3) == ("error", 0)  # bytes after the last: corrupt
    assert _outcome(convert, payload, 4, base=-10) == ("error", 1)  # a timestamp below -1
    assert _outcome(convert, payload, 4, base=(1 << 63) - 3) == ("error", 1)  # beyond i64
    shuffled = _payload([RECORDS[0]]) + _payload([RECORDS[0]])  # offset deltas 0, 0
    assert _outcome(convert, shuffled, 2) == ("error", 2)


def test_errors_carry_the_kafka_code_the_partition_is_answered_with():
    with pytest.raises(SectionError) as raised:
        kafka_section(_payload(RECORDS), 4, -10, None)
    assert raised.value.error_code == ErrorCode.INVALID_TIMESTAMP


def test_the_twins_agree_on_every_byte_of_a_batch_flipped():
    payload = _payload(RECORDS)
    native = compiled().kafka_section
    for index in range(len(payload)):
        for flip in (0x01, 0x80, 0xFF):
            broken = bytearray(payload)
            broken[index] ^= flip
            blob = bytes(broken)
            assert _outcome(native, blob, 4) == _outcome(kafka_section_python, blob, 4), (
                index,
                flip,
            )


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(-2, 12), st.integers(-(2**40), 2**40))
def test_the_twins_agree_on_fuzzed_bytes(payload, count, base):
    native = compiled().kafka_section
    assert _outcome(native, payload, count, base) == _outcome(
        kafka_section_python, payload, count, base
    )
