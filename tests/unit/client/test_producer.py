"""The sync Producer against a fake kpd (fake_kpd.py): delivery, failures, reconnecting,
partitioning, frames and sequence numbers, flush and close, futures."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from kpd import (
    CONNECTION_LOST,
    KpdConnectionError,
    KpdErrorCode,
    Persistence,
    Producer,
    RecordMetadata,
    TopicError,
)
from kpd.outbound import COALESCE_AFTER_WRITE_S
from kpd.protocol import (
    MIN_MAX_FRAME_BYTES,
    AckLevel,
    FrameType,
    ReportRun,
    Status,
    TopicMetadata,
    encode_error,
    encode_frame,
)
from tests.unit.client.fake_kpd import (
    DEADLINE,
    KAFKA_MURMUR2,
    FakeConn,
    Received,
    error_of,
    failing,
    java_partition,
    results,
)
from tests.waiting import wait_for

# Each test runs with both twins of send()'s hot path (tests/unit/client/conftest.py).
pytestmark = pytest.mark.usefixtures("send_path")

# --- delivery and results -------------------------------------------------------------------


def test_futures_resolve_with_consecutive_offsets_of_their_partition(kpd):
    with Producer(kpd.path) as producer:
        assert producer.partitions_for("t") == 4
        futures = [producer.send("t", b"v%d" % i, partition=2) for i in range(5)]
        producer.flush()
        assert all(f.done() for f in futures)
        assert results(futures) == [RecordMetadata("t", 2, i, -1) for i in range(5)]


def test_acks_accepted_resolves_with_the_partition_and_no_offset(kpd):
    with Producer(kpd.path, acks="accepted") as producer:
        future = producer.send("t", b"v", partition=1)
        assert future.result(DEADLINE) == RecordMetadata("t", 1, -1, -1)
    assert kpd.hellos[0].default_ack == AckLevel.ACCEPTED


def test_acks_none_resolves_once_written_without_any_report(kpd):
    kpd.respond = kpd.silent
    with Producer(kpd.path, acks="none") as producer:
        futures = [producer.send("t", b"v", partition=3) for _ in range(3)]
        producer.flush()
        assert results(futures) == [RecordMetadata("t", 3, -1, -1)] * 3
    assert kpd.hellos[0].default_ack == AckLevel.NONE


def test_timestamp_and_headers_reach_kpd_and_the_metadata(kpd):
    with Producer(kpd.path) as producer:
        future = producer.send(
            "t",
            b"v",
            key=b"k",
            partition=0,
            timestamp_ms=1_700_000_000_000,
            headers=[("h", b"1"), ("n", None)],
        )
        assert future.result(DEADLINE).timestamp == 1_700_000_000_000
        dict_headers = producer.send("t", b"w", partition=0, headers={"a": b"b"})
        dict_headers.result(DEADLINE)
    assert kpd.records() == [
        (b"k", b"v", 1_700_000_000_000, (("h", b"1"), ("n", None))),
        (None, b"w", None, (("a", b"b"),)),
    ]


def test_a_report_run_spanning_two_frames_settles_both(kpd):
    kpd.respond = kpd.hold
    with Producer(kpd.path, batch_bytes=1) as producer:  # every record is its own frame
        futures = [producer.send("t", b"v", partition=0) for _ in range(3)]
        kpd.wait_for(lambda: len(kpd.frames) == 3)
        kpd.release(merge=True)
        assert [m.offset for m in results(futures)] == [0, 1, 2]


# --- failures -------------------------------------------------------------------------------


def test_failed_run_raises_delivery_error_with_codes_and_persistence(kpd):
    kpd.respond = failing(
        error=KpdErrorCode.KAFKA_ERROR,
        kafka_error=10,  # MESSAGE_TOO_LARGE
        persistence=Persistence.NOT_PERSISTED,
        message="too big for the broker",
    )
    with Producer(kpd.path) as producer:
        error = error_of(producer.send("t", b"v", partition=0))
    assert (error.code, error.kafka_error, error.persistence) == (
        KpdErrorCode.KAFKA_ERROR,
        10,
        Persistence.NOT_PERSISTED,
    )
    assert error.message == "too big for the broker"
    assert not error.retriable


def test_delivery_timeout_is_retriable_and_may_be_persisted(kpd):
    kpd.respond = failing(
        error=KpdErrorCode.DELIVERY_TIMEOUT, persistence=Persistence.POSSIBLY_PERSISTED
    )
    with Producer(kpd.path) as producer:
        error = error_of(producer.send("t", b"v", partition=0))
    assert error.retriable
    assert error.persistence is Persistence.POSSIBLY_PERSISTED


def test_unknown_error_code_from_a_newer_kpd_is_a_non_retriable_failure(kpd):
    kpd.respond = failing(error=59, persistence=Persistence.NOT_PERSISTED)
    with Producer(kpd.path) as producer:
        error = error_of(producer.send("t", b"v", partition=0))
    assert error.code == 59
    assert not error.retriable


def test_connection_loss_fails_written_records_and_sends_the_rest_after_reconnecting(kpd):
    kpd.respond = kpd.silent
    producer = Producer(kpd.path, linger_ms=60_000, batch_bytes=1000)
    sent = producer.send("t", b"x" * 1000, partition=0)  # fills a frame: written at once
    kpd.wait_for(lambda: len(kpd.frames) == 1)
    lingering = producer.send("t", b"small", partition=1)  # waits out its 60 s linger
    kpd.respond = kpd.deliver
    kpd.drop_connections()
    assert error_of(sent).persistence is Persistence.POSSIBLY_PERSISTED
    assert error_of(sent).code == CONNECTION_LOST
    assert error_of(sent).retriable
    later = producer.send("t", b"after", partition=0)
    producer.flush(DEADLINE)
    assert lingering.result(0).partition == 1
    assert later.result(0).partition == 0
    producer.close()
    assert len(kpd.hellos) == 2
    # The new connection numbers from 0 again: the fake kpd checks it (no violations).
    assert kpd.violations == []
    assert [(f.base_seq, f.records[0][1]) for f in kpd.frames[1:]] == [(0, b"small"), (1, b"after")]


def test_error_frame_fails_outstanding_records_with_its_code(kpd):
    kpd.respond = kpd.silent
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        kpd.send_to_clients(encode_error(KpdErrorCode.SHUTTING_DOWN, "draining"), close=True)
        error = error_of(future)
    assert error.code is KpdErrorCode.SHUTTING_DOWN
    assert error.retriable
    assert "draining" in error.message


def test_a_frame_a_draining_kpd_refused_is_sent_again_after_reconnecting(kpd):
    # Protocol section 9: while kpd drains for a restart it answers PRODUCE frames with a
    # FAILED run SHUTTING_DOWN / NOT_PERSISTED (whole frame, partition -1), then closes.
    kpd.respond = failing(
        error=KpdErrorCode.SHUTTING_DOWN, persistence=Persistence.NOT_PERSISTED, message="bye"
    )
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"a", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        kpd.respond = kpd.deliver  # the restarted kpd
        kpd.send_to_clients(encode_error(KpdErrorCode.SHUTTING_DOWN, "drained"), close=True)
        assert future.result(DEADLINE).offset == 0
    assert [(f.base_seq, f.records[0][1]) for f in kpd.frames] == [(0, b"a"), (0, b"a")]
    assert len(kpd.hellos) == 2 and kpd.violations == []


def test_malformed_server_frame_ends_the_connection(kpd):
    kpd.respond = kpd.silent
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        kpd.send_to_clients(encode_frame(FrameType.PING, b"\0" * 8))  # servers never PING
        error = error_of(future)
    assert error.code is KpdErrorCode.UNEXPECTED_FRAME
    assert error.persistence is Persistence.POSSIBLY_PERSISTED


def test_record_too_large_for_a_frame_fails_locally_and_is_never_sent(kpd):
    with Producer(kpd.path) as producer:
        big = producer.send("t", b"x" * MIN_MAX_FRAME_BYTES, partition=0)
        small = producer.send("t", b"ok", partition=0)
        assert error_of(big).code is KpdErrorCode.RECORD_TOO_LARGE
        assert error_of(big).persistence is Persistence.NOT_PERSISTED
        assert small.result(DEADLINE).offset == 0
    assert kpd.records() == [(None, b"ok", None, ())]


def test_handshake_refused_raises_kpd_connection_error(kpd):
    kpd.refuse = (KpdErrorCode.UNSUPPORTED_VERSION, "server speaks 2..2")
    with pytest.raises(KpdConnectionError) as caught:
        Producer(kpd.path)
    assert caught.value.code is KpdErrorCode.UNSUPPORTED_VERSION
    assert isinstance(caught.value, OSError)


def test_a_producer_made_while_kpd_is_down_starts_and_send_waits_for_kpd(kpd):
    # Issue 19 item 11: like Java's KafkaProducer, the constructor does not raise; send()
    # waits up to max_block_ms for kpd.
    kpd.stop_listening()
    with Producer(kpd.path, max_block_ms=30_000) as producer:
        threading.Timer(0.3, kpd.listen_again).start()
        future = producer.send("t", b"v", partition=0)
        assert future.result(timeout=DEADLINE).offset == 0


def test_a_producer_kpd_never_comes_to_fails_its_records_naming_the_socket(tmp_path):
    path = str(tmp_path / "absent.sock")
    with Producer(path, max_block_ms=200) as producer:
        error = error_of(producer.send("t", b"v", partition=0))
    assert error.persistence is Persistence.NOT_PERSISTED
    assert path in str(error)


def test_a_socket_nobody_serves_is_an_outage_too(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a killed daemon's leftover: bound, never listening
    try:
        with Producer(path, max_block_ms=200) as producer:
            error = error_of(producer.send("t", b"v", partition=0))
    finally:
        stale.close()
    assert f"{path}" in str(error)


def test_records_survive_kpd_going_away_and_coming_back(kpd):
    with Producer(kpd.path, linger_ms=60_000) as producer:
        producer.send("t", b"before", partition=0)
        producer.flush(DEADLINE)
        queued = producer.send("t", b"queued", partition=0)  # lingers in an open batch
        kpd.stop_listening()
        # Blocks until kpd is back if the I/O thread noticed the outage already, else queues.
        with ThreadPoolExecutor(1) as pool:
            during = pool.submit(producer.send, "t", b"during", partition=0)
            kpd.listen_again()
            during = during.result(DEADLINE)
        producer.flush(DEADLINE)
        assert (queued.result(0).offset, during.result(0).offset) == (1, 2)
    assert [r[1] for r in kpd.records()] == [b"before", b"queued", b"during"]
    assert kpd.violations == []


def test_send_blocks_for_max_block_ms_while_kpd_is_down_then_fails_naming_the_socket(kpd):
    producer = Producer(kpd.path, linger_ms=60_000, max_block_ms=300)
    queued = producer.send("t", b"queued", partition=0)
    kpd.stop_listening()
    # Queued before the outage: fails once kpd stayed unreachable for max.block.ms.
    error = error_of(queued)
    assert error.persistence is Persistence.NOT_PERSISTED
    assert f"is kpd running? socket: {kpd.path}" in error.message
    # Sent during the outage: send() blocks up to max.block.ms, then the future fails.
    error = error_of(producer.send("t", b"later", partition=0))
    assert error.code == CONNECTION_LOST
    assert error.persistence is Persistence.NOT_PERSISTED
    assert "max.block.ms 300" in error.message and kpd.path in error.message
    assert "No such file or directory" in error.message
    producer.close(timeout=DEADLINE)


# --- partitioning ---------------------------------------------------------------------------


def test_keyed_records_go_to_the_java_murmur2_partition(kpd):
    kpd.partitions["t"] = 7
    with Producer(kpd.path) as producer:
        assert producer.partitions_for("t") == 7
        futures = {key: producer.send("t", b"v", key=key) for key in KAFKA_MURMUR2}
        producer.flush()
    for key, future in futures.items():
        assert future.result().partition == java_partition(key, 7), key
    by_frame = {r[0]: frame.partition for frame in kpd.frames for r in frame.records}
    assert by_frame == {key: java_partition(key, 7) for key in KAFKA_MURMUR2}


def test_explicit_partition_is_honoured_over_the_key(kpd):
    with Producer(kpd.path) as producer:
        producer.partitions_for("t")
        future = producer.send("t", b"v", key=b"21", partition=3)
        assert future.result(DEADLINE).partition == 3
    assert java_partition(b"21", 4) != 3


def test_keyless_records_stick_to_one_partition_then_move_on(kpd):
    kpd.partitions["t"] = 5
    with Producer(kpd.path, batch_bytes=1000) as producer:
        producer.partitions_for("t")
        futures = [producer.send("t", b"x" * 100) for _ in range(40)]
        producer.flush()
    partitions = [f.result().partition for f in futures]
    # KIP-794: ~batch bytes (10 records of 100 bytes) on one partition, then another one.
    runs = [p for i, p in enumerate(partitions) if i == 0 or partitions[i - 1] != p]
    assert partitions[:10] == [partitions[0]] * 10
    assert len(runs) == 4
    assert all(a != b for a, b in itertools.pairwise(runs))


def test_the_first_keyed_record_waits_for_the_partition_count_and_leaves_partitioned(kpd):
    # No partitions_for(): the app sends at once, and kpd's METADATA answer is late.
    kpd.partitions["t"] = 7
    kpd.hold_metadata = True
    sent: Future = Future()
    with Producer(kpd.path) as producer:
        thread = threading.Thread(
            target=lambda: sent.set_result(producer.send("t", b"v", key=b"abc")), daemon=True
        )
        thread.start()
        kpd.wait_for(lambda: kpd.metadata_requests == [("t",)])
        assert not sent.done()  # send() is blocked on the count, like Java's waitOnMetadata
        kpd.release_metadata()
        future = sent.result(DEADLINE)
        thread.join(DEADLINE)
        later = [producer.send("t", b"v", key=key) for key in KAFKA_MURMUR2]
        producer.flush()
    assert future.result().partition == java_partition(b"abc", 7)
    assert [f.result().partition for f in later] == [java_partition(k, 7) for k in KAFKA_MURMUR2]
    assert all(frame.partition >= 0 for frame in kpd.frames)  # none left to kpd


def test_keyless_records_before_the_count_let_kpd_choose_without_waiting(kpd):
    kpd.hold_metadata = True
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v")  # returns although METADATA is unanswered
        producer.flush()
        assert future.result().partition == 0  # what the fake kpd chose for partition -1
        kpd.release_metadata()
    assert kpd.frames[0].partition == -1
    assert ("t",) in kpd.metadata_requests


def test_a_keyed_record_for_a_missing_topic_fails_clearly_after_max_block_ms(kpd):
    with Producer(kpd.path, max_block_ms=300) as producer:
        started = time.monotonic()
        error = error_of(producer.send("nope", b"v", key=b"k"))
        assert time.monotonic() - started >= 0.3  # it waited max.block.ms, not less
        assert error.code is KpdErrorCode.UNKNOWN_TOPIC
        assert error.persistence is Persistence.NOT_PERSISTED
        assert "'nope' not present in metadata after 300 ms" in str(error)
        # It asked again while it waited (the topic may have been created meanwhile).
        assert kpd.metadata_requests.count(("nope",)) >= 2
        # The next keyed record fails at once with the same error instead of waiting again...
        again = producer.send("nope", b"v", key=b"k")
        assert again.done() and error_of(again).message == error.message
        # ...until the topic exists: the client keeps asking, and then places records again.
        kpd.partitions["nope"] = 3
        kpd.wait_for(lambda: TopicMetadata("nope", KpdErrorCode.NONE, 3) in kpd.metadata_answers)
        producer.send("t", b"barrier", partition=0).result(DEADLINE)  # reported after it
        assert producer.send("nope", b"v", key=b"abc").result(DEADLINE).partition == (
            java_partition(b"abc", 3)
        )
    assert not kpd.violations


def test_a_keyed_record_for_a_forbidden_topic_fails_at_once(kpd):
    kpd.topic_errors["secret"] = KpdErrorCode.TOPIC_NOT_ALLOWED
    with Producer(kpd.path, max_block_ms=DEADLINE * 1000) as producer:
        error = error_of(producer.send("secret", b"v", key=b"k"))  # no max.block.ms wait
    assert error.code is KpdErrorCode.TOPIC_NOT_ALLOWED
    assert "kpd answered TOPIC_NOT_ALLOWED" in error.message
    assert not any(frame.topic == "secret" for frame in kpd.frames)


def test_unknown_topic_raises_topic_error_from_partitions_for(kpd):
    with Producer(kpd.path) as producer, pytest.raises(TopicError) as caught:
        producer.partitions_for("nope")
    assert caught.value.code is KpdErrorCode.UNKNOWN_TOPIC


def test_invalid_partition_report_refreshes_the_partition_count(kpd):
    kpd.partitions["t"] = 2
    with Producer(kpd.path) as producer:
        assert producer.partitions_for("t") == 2
        kpd.partitions["t"] = 4  # partitions were added behind the client's back
        kpd.respond = failing(
            error=KpdErrorCode.INVALID_PARTITION, persistence=Persistence.NOT_PERSISTED
        )
        error = error_of(producer.send("t", b"v", partition=3))
        assert error.code is KpdErrorCode.INVALID_PARTITION
        kpd.wait_for(lambda: len(kpd.metadata_requests) == 2)
        kpd.respond = kpd.deliver
        # A report written after the METADATA_RESPONSE: once it is in, so is the new count.
        producer.send("t", b"barrier", partition=0).result(DEADLINE)
        assert producer.partitions_for("t") == 4
        # "foobar" maps to a different partition of 4 than of 2.
        assert java_partition(b"foobar", 4) != java_partition(b"foobar", 2)
        keyed = producer.send("t", b"v", key=b"foobar")
        assert keyed.result(DEADLINE).partition == java_partition(b"foobar", 4)


# --- batching and sequence numbers ----------------------------------------------------------


def test_a_tight_send_loop_puts_many_records_in_each_frame(kpd):
    with Producer(kpd.path, linger_ms=50) as producer:
        producer.partitions_for("t")
        futures = [producer.send("t", b"v" * 100, key=b"k%d" % (i % 8)) for i in range(2000)]
        producer.flush()
        results(futures)
    assert sum(f.count for f in kpd.frames) == 2000
    # 2000 records of ~110 bytes over 4 partitions fit in a handful of 64 KiB frames.
    assert len(kpd.frames) <= 12


def test_frames_are_cut_at_batch_bytes(kpd):
    with Producer(kpd.path, batch_bytes=4096, linger_ms=60_000) as producer:
        futures = [producer.send("t", b"v" * 100, partition=0) for _ in range(200)]
        producer.flush()
        results(futures)
    sizes = [frame.size for frame in kpd.frames]
    assert all(size < 4096 + 200 for size in sizes)
    assert all(size >= 4096 for size in sizes[:-1])


def test_sequence_numbers_are_continuous_across_frames_and_partitions(kpd):
    with Producer(kpd.path, batch_bytes=2000) as producer:
        producer.partitions_for("t")
        for i in range(300):
            producer.send("t", b"v" * 50, key=b"key-%d" % i)
            if i % 50 == 0:
                producer.send("other", b"w")
        producer.flush()
    assert not kpd.violations
    frames = sorted(kpd.frames, key=lambda f: f.base_seq)
    assert frames[0].base_seq == 0
    assert all(a.base_seq + a.count == b.base_seq for a, b in itertools.pairwise(frames))
    assert frames == kpd.frames  # and they went out in that order


def test_an_idle_producer_writes_each_record_at_once_without_flush(kpd):
    with Producer(kpd.path) as producer:  # the default: no linger
        for offset in range(3):
            assert producer.send("t", b"v", partition=0).result(DEADLINE).offset == offset
    assert [frame.count for frame in kpd.frames] == [1, 1, 1]


def test_records_sent_while_a_write_is_in_flight_coalesce_and_ring_no_doorbell(kpd):
    producer = Producer(kpd.path, batch_bytes=60_000)
    kpd.pause_reading()
    try:
        # ~3.8 MB in full frames: far more than the socket holds while kpd does not read, so
        # once the I/O thread took the first of them its write stays in flight until resumed.
        big = [producer.send("t", b"x" * 60_000, partition=0) for _ in range(64)]
        wait_for(lambda: len(producer._session._outbox) < 64, DEADLINE, "the first write")
        rings = []
        ring = producer._doorbell.ring
        producer._doorbell.ring = lambda: rings.append(1) or ring()
        small = [producer.send("t", b"s%d" % i, partition=1) for i in range(10)]
        assert rings == []  # the I/O thread is busy writing: send() makes no syscall
    finally:
        kpd.resume_reading()
    producer.flush(DEADLINE)
    results(big + small)
    producer.close(DEADLINE)
    assert [frame.count for frame in kpd.frames if frame.partition == 1] == [10]


def _quiet(producer: Producer) -> None:
    """Wait until the I/O thread sleeps with nothing to write and the last write is older
    than the coalescing window: the next send() finds the connection idle."""
    wait_for(
        lambda: (
            producer._io_idle
            and not producer._outbound.pending
            and time.monotonic() - producer._outbound.wrote_at > COALESCE_AFTER_WRITE_S
        ),
        DEADLINE,
        "an idle connection",
    )


class _Writes:
    """Wraps a Producer's socket: notes which thread each sendmsg ran on and what it
    returned; ``refuse`` makes the next sendmsg calls of the app's thread fail with EAGAIN."""

    def __init__(self, producer: Producer) -> None:
        self.calls: list[tuple[str, int]] = []
        self.refuse = 0
        self._sock = producer._outbound.sock
        producer._outbound.sock = self

    def sendmsg(self, buffers):
        thread = threading.current_thread().name
        if self.refuse and thread != "kpd-client-io":
            self.refuse -= 1
            self.calls.append((thread, -1))
            raise BlockingIOError
        written = self._sock.sendmsg(buffers)
        self.calls.append((thread, written))
        return written


def test_an_idle_connection_is_written_by_the_callers_thread_without_a_doorbell(kpd):
    with Producer(kpd.path) as producer:
        producer.send("t", b"warm", partition=0).result(DEADLINE)
        writes = _Writes(producer)
        rings = []
        ring = producer._doorbell.ring
        producer._doorbell.ring = lambda: rings.append(1) or ring()
        futures = []
        for i in range(3):
            _quiet(producer)
            futures.append(producer.send("t", b"v%d" % i, partition=i))
            # Written before send() returned: nothing is left for the I/O thread.
            assert producer._session.buffered_bytes == 0
        assert [f.result(DEADLINE).partition for f in futures] == [0, 1, 2]
        assert rings == []
        assert [thread for thread, _ in writes.calls] == ["MainThread"] * 3
    assert [frame.records[0][1] for frame in kpd.frames[1:]] == [b"v0", b"v1", b"v2"]
    assert kpd.violations == []


def test_eagain_on_the_callers_write_leaves_the_frame_to_the_io_thread(kpd):
    with Producer(kpd.path) as producer:
        producer.send("t", b"warm", partition=0).result(DEADLINE)
        _quiet(producer)
        writes = _Writes(producer)
        writes.refuse = 1
        first = producer.send("t", b"refused once", partition=0)
        later = [producer.send("t", b"after %d" % i, partition=0) for i in range(5)]
        assert [f.result(DEADLINE).offset for f in [first, *later]] == list(range(1, 7))
        assert writes.calls[0] == ("MainThread", -1)
        assert writes.calls[1][0] == "kpd-client-io"
    values = [record[1] for frame in kpd.frames[1:] for record in frame.records]
    assert values == [b"refused once"] + [b"after %d" % i for i in range(5)]
    assert kpd.violations == []


def _past_the_socket_buffer(kpd) -> bytes:
    """A value whose frame is larger than what the socket holds while kpd does not read,
    yet fits kpd's max frame."""
    kpd.max_frame_bytes = 4 * 1024 * 1024
    return b"x" * 3_000_000


def test_a_partial_write_by_the_caller_is_finished_by_the_io_thread_in_order(kpd):
    value = _past_the_socket_buffer(kpd)
    producer = Producer(kpd.path, batch_bytes=4_000_000)
    producer.send("t", b"warm", partition=0).result(DEADLINE)
    _quiet(producer)
    writes = _Writes(producer)
    kpd.pause_reading()
    try:
        big = producer.send("t", value, partition=0)  # the caller's write takes a part
        assert writes.calls[0][0] == "MainThread"
        assert 0 <= writes.calls[0][1] < len(value)
        # While the rest is pending, records coalesce for the I/O thread.
        small = [producer.send("t", b"s%d" % i, partition=1) for i in range(10)]
        assert all(thread == "kpd-client-io" for thread, _ in writes.calls[1:])
    finally:
        kpd.resume_reading()
    producer.flush(DEADLINE)
    assert big.result(0).offset == 1
    assert [f.result(0).offset for f in small] == list(range(10))
    producer.close(DEADLINE)
    assert all(thread == "kpd-client-io" for thread, _ in writes.calls[1:])
    assert [frame.count for frame in kpd.frames if frame.partition == 1] == [10]
    assert kpd.violations == []


def test_a_frame_pending_when_the_connection_breaks_is_sent_once_on_the_next(kpd):
    value = _past_the_socket_buffer(kpd)
    producer = Producer(kpd.path, batch_bytes=4_000_000)
    producer.send("t", b"warm", partition=0).result(DEADLINE)
    _quiet(producer)
    kpd.pause_reading()
    big = producer.send("t", value, partition=0)  # written in part by the caller
    assert producer._outbound.pending
    after = [producer.send("t", b"a%d" % i, partition=0) for i in range(5)]  # coalesced
    kpd.drop_connections()  # the broken frame never reached kpd whole
    producer.flush(DEADLINE)
    assert [f.result(0).offset for f in [big, *after]] == list(range(1, 7))
    producer.close(DEADLINE)
    values = [record[1] for frame in kpd.frames for record in frame.records]
    assert values == [b"warm", value] + [b"a%d" % i for i in range(5)]
    assert kpd.violations == []


def test_linger_sends_a_partial_batch_without_flush(kpd):
    with Producer(kpd.path, linger_ms=1) as producer:
        future = producer.send("t", b"v", partition=0)
        assert future.result(DEADLINE).offset == 0


# --- flush and close ------------------------------------------------------------------------


def test_flush_waits_for_reports_and_times_out_while_they_are_held(kpd):
    kpd.respond = kpd.hold
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        with pytest.raises(TimeoutError):
            producer.flush(timeout=0.05)
        assert not future.done()
        kpd.release()
        producer.flush(timeout=DEADLINE)
        assert future.done()


def test_close_says_goodbye_and_waits_for_the_last_reports(kpd):
    kpd.respond = kpd.hold  # reports come only with the server's GOODBYE
    producer = Producer(kpd.path, linger_ms=60_000)
    futures = [producer.send("t", b"v", partition=0) for _ in range(3)]
    producer.close()
    assert [f.result(0).offset for f in futures] == [0, 1, 2]
    assert kpd.goodbyes == [3]
    with pytest.raises(RuntimeError):
        producer.send("t", b"v")
    producer.close()  # a second close is a no-op


def test_close_times_out_and_fails_what_kpd_never_reported(kpd):
    kpd.respond = kpd.silent
    kpd.answer_goodbye = False
    producer = Producer(kpd.path)
    future = producer.send("t", b"v", partition=0)
    producer.close(timeout=0.05)
    error = error_of(future)
    assert error.code == CONNECTION_LOST
    assert error.persistence is Persistence.POSSIBLY_PERSISTED
    assert kpd.goodbyes == [1]


# --- futures ---------------------------------------------------------------------------------


def test_done_callbacks_run_once_on_the_io_thread_or_at_once_when_done(kpd):
    kpd.respond = kpd.hold
    calls = []
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        future.add_done_callback(lambda f: calls.append((threading.current_thread().name, f)))
        kpd.wait_for(lambda: len(kpd.frames) == 1)
        assert calls == [] and not future.done()
        kpd.release()
        assert future.result(DEADLINE).offset == 0
        producer.flush()
        future.add_done_callback(lambda f: calls.append(("late", f)))
    assert calls == [("kpd-client-io", future), ("late", future)]
    assert not future.cancel() and not future.cancelled()


def test_result_times_out_while_the_report_is_held(kpd):
    kpd.respond = kpd.hold
    with Producer(kpd.path) as producer:
        future = producer.send("t", b"v", partition=0)
        with pytest.raises(TimeoutError):
            future.result(timeout=0.01)
        with pytest.raises(TimeoutError):
            future.exception(timeout=0)
        kpd.wait_for(lambda: len(kpd.frames) == 1)  # held only once kpd has read it
        kpd.release()
        assert future.exception(DEADLINE) is None


def test_runs_splitting_a_frame_give_each_record_its_own_outcome(kpd):
    def split(conn: FakeConn, frame: Received) -> list[ReportRun]:
        half = frame.count // 2
        failed = ReportRun(
            frame.base_seq + half,
            frame.count - half,
            Status.FAILED,
            error=KpdErrorCode.DELIVERY_TIMEOUT,
            persistence=Persistence.POSSIBLY_PERSISTED,
            message="late",
        )
        # The failed half is reported first: runs may come in any order (protocol §7).
        delivered = ReportRun(frame.base_seq, half, Status.DELIVERED, 1, 100, 5)
        return [failed, delivered]

    kpd.respond = split
    with Producer(kpd.path, linger_ms=60_000) as producer:
        futures = [producer.send("t", b"v", partition=1) for _ in range(4)]
        producer.flush()
    assert results(futures[:2]) == [RecordMetadata("t", 1, 100, 5), RecordMetadata("t", 1, 101, 5)]
    errors = [error_of(f) for f in futures[2:]]
    assert [e.code for e in errors] == [KpdErrorCode.DELIVERY_TIMEOUT] * 2
    assert errors[0] is not errors[1]
    assert error_of(futures[2]) is errors[0]  # the same object every time it is asked


def test_a_second_report_for_a_record_does_not_change_its_outcome(kpd):
    def twice(conn: FakeConn, frame: Received) -> list[ReportRun]:
        duplicate = ReportRun(
            frame.base_seq,
            frame.count,
            Status.FAILED,
            error=KpdErrorCode.INTERNAL_ERROR,
            persistence=Persistence.NOT_PERSISTED,
            message="dup",
        )
        return [*kpd.deliver(conn, frame), duplicate]

    kpd.respond = twice
    with Producer(kpd.path) as producer:
        futures = [producer.send("t", b"v", partition=0) for _ in range(3)]
        producer.flush()
        assert [m.offset for m in results(futures)] == [0, 1, 2]
        # The duplicate must not count as the outcome of records sent later either.
        kpd.respond = kpd.hold
        later = producer.send("t", b"w", partition=0)
        # kpd holds the fourth record (the first three may have come in one frame or two:
        # the I/O thread can seal the first before the next two are sent).
        kpd.wait_for(lambda: sum(frame.count for frame in kpd.frames) == 4)
        assert not later.done()
        kpd.release()
        assert later.result(DEADLINE).offset == 3
