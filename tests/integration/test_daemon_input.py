"""The running daemon against bad socket input (docs/protocol.md sections 3, 4 and 10).

Everything goes through a real ``kpd run`` subprocess and a real tansu broker. Frames are
built field by field with ``struct`` here (never with kpd's codec), so a test can break any
field on purpose; kpd's client-side ``FrameDecoder`` only splits what the daemon answers, and
fails the test if the daemon ever sends a malformed frame.

What is proven:

* hypothesis-generated garbage — flipped bytes, truncated and padded bodies, wrong lengths,
  unknown and out-of-state frame types, frames before HELLO, broken HELLOs and control frames,
  bad UTF-8 topics, count mismatches — never kills ingest (its PID is unchanged), a bad
  PRODUCE body gets exactly one FAILED run with its code and the connection goes on, and an
  unrecoverable stream gets ERROR with its code and a close; meanwhile a well-behaved client
  on another connection gets every record DELIVERED, and confluent-kafka reads them back;
* topics outside ``topics.allow``, illegal topic names, partitions past the partition count
  and records larger than a ring entry get their specific codes, while a frame larger than a
  ring entry made of small records is split and delivered;
* ack NONE frames get no report, ACCEPTED one ACCEPTED run, KAFKA one DELIVERED run, and the
  daemon's GOODBYE comes after the last report owed, then it closes;
* a full ring stops ingest reading the connection (backpressure), answers BUFFER_FULL after
  ``max.block.ms``, and the daemon delivers again once the broker is back.

tansu creates a topic when Metadata names it (like Kafka's ``auto.create.topics.enable``), so a
legal topic name is never UNKNOWN_TOPIC here; illegal names are what can be tested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpd import protocol as wire
from kpd.protocol import SESSION_BIT, FrameType, KpdErrorCode, Persistence, Status
from tests.brokers import TansuBroker, read_all, unique_topic_name
from tests.daemon_harness import KpdDaemon

pytestmark = pytest.mark.timeout(240)

ALLOW = "input-*"  # topics.allow of the shared daemon
DENIED_TOPIC = b"fuzz-denied"  # legal, but outside topics.allow: no fuzzed frame reaches Kafka
MAX_FRAME = 1088 * 1024  # socket.max_frame_bytes default (the WELCOME announces it)
HANDSHAKE_LIMIT = 4096  # docs/protocol.md section 2: frames before WELCOME
RING_BYTES = 256 * 1024  # small records rings, so one ring entry (half a ring) < one frame
REPLY_S = 10.0  # deadline for any answer the daemon gives at once

# The codes a malformed PRODUCE body may get (docs/protocol.md section 4 "per frame"), plus
# what a body that happens to stay valid gets for the denied topic or a mutated name.
BODY_CODES = frozenset(
    {
        KpdErrorCode.BAD_FRAME,
        KpdErrorCode.BAD_RECORD_COUNT,
        KpdErrorCode.BAD_FLAGS,
        KpdErrorCode.BAD_LENGTH,
        KpdErrorCode.BAD_STRING,
        KpdErrorCode.BAD_FIELD,
        KpdErrorCode.INVALID_PARTITION,
        KpdErrorCode.TOPIC_NOT_ALLOWED,
        KpdErrorCode.INVALID_TOPIC,  # a flipped topic byte made the name illegal
    }
)
FATAL_CODES = frozenset(code for code in KpdErrorCode if 1 <= code <= 39)
# A HELLO offering version 2 or more carries a session id and a resume_seq (protocol.md 5).
_V2_SESSION = struct.pack(">QQ", SESSION_BIT | 1, 0)

# ---- frames, field by field -----------------------------------------------------------------


def frame(frame_type: int, payload: bytes) -> bytes:
    # u32 length (type byte + payload), u8 type, payload
    return struct.pack(">IB", 1 + len(payload), frame_type) + payload


def string(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw  # u16 byte length + UTF-8 bytes


def hello_payload(magic=b"KPD1", low=1, high=1, ack=2, features=0, name=b"fuzz", tail=b"") -> bytes:
    # magic[4], min_version u16, max_version u16, default_ack u8, features u32, client_name
    return magic + struct.pack(">HHBI", low, high, ack, features) + string(name) + tail


def produce_payload(
    seq: int,
    records: list[tuple[bytes | None, bytes | None]],
    *,
    topic: bytes = DENIED_TOPIC,
    partition: int = 0,
    ack: int = 2,
    count: int | None = None,
    layout: int = 0,
    key_lens: list[int] | None = None,
    tail: bytes = b"",
) -> bytes:
    """A PRODUCE payload (docs/protocol.md section 6), every field overridable."""
    n = len(records) if count is None else count
    keys = key_lens if key_lens is not None else [-1 if k is None else len(k) for k, _ in records]
    values = [-1 if v is None else len(v) for _, v in records]
    data = b"".join((k or b"") + (v or b"") for k, v in records)
    return (
        struct.pack(">QIiB", seq, n, partition, ack)  # base_seq, count, partition, ack
        + string(topic)
        + bytes([layout])  # layout: no timestamps, no headers
        + struct.pack(f">{len(keys)}i", *keys)  # key_lens column
        + struct.pack(f">{len(values)}i", *values)  # value_lens column
        + data
        + tail
    )


def produce(seq: int, records, **fields) -> bytes:
    return frame(FrameType.PRODUCE, produce_payload(seq, records, **fields))


def ping(token: int) -> bytes:
    return frame(FrameType.PING, struct.pack(">Q", token))


def goodbye(next_seq: int) -> bytes:
    return frame(FrameType.GOODBYE, struct.pack(">Q", next_seq))


def metadata_request(request_id: int, topics: list[bytes]) -> bytes:
    # request_id u32, topic_count u16, topic strings
    body = struct.pack(">IH", request_id, len(topics)) + b"".join(map(string, topics))
    return frame(FrameType.METADATA_REQUEST, body)


# ---- a raw client ---------------------------------------------------------------------------


class RawConn:
    """One socket to the daemon; what it reads is split by kpd's client FrameDecoder."""

    def __init__(self, path: str, *, greet: bool = True, ack: int = 2) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self._decoder = wire.FrameDecoder(wire.Role.CLIENT)
        self._ready: list[wire.Frame] = []
        self.eof = False
        if greet:
            self.send(frame(FrameType.HELLO, hello_payload(ack=ack)))
            welcome = self.read_frame()
            assert welcome is not None and welcome.type == FrameType.WELCOME, welcome

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        # The daemon may have closed first; what it said before is still readable.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def read_frame(self, timeout_s: float = REPLY_S) -> wire.Frame | None:
        """The next frame, or None at EOF; fails the test when the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while not self._ready:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no frame from kpd within {timeout_s} s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                assert self._decoder.pending_bytes == 0, "kpd closed in the middle of a frame"
                continue
            self._ready.extend(self._decoder.feed(data))  # a malformed answer fails the test
        return self._ready.pop(0)

    def runs_until(self, done, timeout_s: float = REPLY_S) -> list[wire.ReportRun]:
        """REPORT runs read until ``done(runs)``; any other frame fails the test."""
        runs: list[wire.ReportRun] = []
        deadline = time.monotonic() + timeout_s
        while not done(runs):
            got = self.read_frame(max(0.0, deadline - time.monotonic()))
            assert got is not None, f"kpd closed the connection; runs so far {runs}"
            if got.type == FrameType.ERROR:
                raise AssertionError(f"unexpected ERROR {wire.decode_error(got.payload)}")
            assert got.type == FrameType.REPORT, got.type
            runs.extend(wire.decode_reports(got.payload))
        return runs

    def expect_failed_run(self, first_seq: int, count: int, codes) -> wire.ReportRun:
        (run,) = self.runs_until(bool)
        assert (run.first_seq, run.count, run.status) == (first_seq, count, Status.FAILED), run
        assert run.error in codes, run
        assert run.persistence == Persistence.NOT_PERSISTED, run
        return run

    def expect_error(self, codes, allow_runs: bool = False) -> wire.ErrorFrame:
        """An ERROR frame with one of ``codes``, then EOF (the daemon closed)."""
        while True:
            got = self.read_frame()
            assert got is not None, "kpd closed without an ERROR frame"
            if got.type == FrameType.ERROR:
                break
            assert allow_runs and got.type == FrameType.REPORT, got.type
        error = wire.decode_error(got.payload)
        assert error.code in codes, error
        assert self.read_frame() is None, "kpd sent more after ERROR"
        return error

    def expect_alive(self, token: int) -> None:
        self.send(ping(token))
        pong = self.read_frame()
        assert pong is not None and pong.type == FrameType.PONG, pong
        assert wire.decode_pong(pong.payload) == token


def delivered(first_seq: int, count: int):
    """``done`` for runs_until: the runs cover [first_seq, first_seq + count)."""
    return lambda runs: sum(r.count for r in runs if r.first_seq >= first_seq) >= count


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kpd(tansu, tmp_path_factory):
    """One daemon for the module: small rings, a short max.block.ms, topics.allow = input-*."""
    extra = {
        "kafka": {"max.block.ms": 2000, "max.request.size": RING_BYTES // 2},
        "rings": {"records_bytes": RING_BYTES},
        "topics": {"allow": [ALLOW]},
    }
    with KpdDaemon(tmp_path_factory.mktemp("kpd-input"), tansu.bootstrap, extra=extra) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def good_topic(tansu):
    return tansu.create_topic(unique_topic_name("input-good"), 3)


# ---- the well-behaved client next to the fuzzer ----------------------------------------------


@dataclass
class GoodClient:
    """Sends frames of 20 records round-robin over 3 partitions until stopped, each frame
    waited for (all DELIVERED) before the next; runs in a thread beside the fuzzer."""

    path: str
    topic: str
    stop: threading.Event = field(default_factory=threading.Event)
    values: list[bytes] = field(default_factory=list)
    failures: list = field(default_factory=list)
    frames: int = 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test thread
            self.failures.append(exc)

    def _run(self) -> None:
        conn = RawConn(self.path)
        seq = 0
        while not self.stop.is_set() or self.frames < 3:
            values = [f"good-{seq + i}".encode() for i in range(20)]
            conn.send(
                produce(
                    seq,
                    [(None, v) for v in values],
                    topic=self.topic.encode(),
                    partition=self.frames % 3,
                )
            )
            runs = conn.runs_until(delivered(seq, 20), timeout_s=60)
            bad = [r for r in runs if r.status != Status.DELIVERED]
            assert not bad, bad
            self.values.extend(values)
            seq += 20
            self.frames += 1
        conn.send(goodbye(seq))
        answer = conn.read_frame()
        assert answer is not None and answer.type == FrameType.GOODBYE, answer
        assert wire.decode_goodbye(answer.payload) == seq
        conn.close()


# ---- fuzz cases -----------------------------------------------------------------------------
#
# A case is a function of the connection's next sequence number returning the bytes to send
# and what the daemon must answer: ("failed", first_seq, count, codes) -> exactly one FAILED
# run, the connection stays open and the next sequence number moves past the run;
# ("fatal", codes) -> ERROR with one of codes, then close; ("ends", codes) -> the stream is
# out of sync, the client stops writing, and the daemon closes (any ERROR has one of codes).


@dataclass(frozen=True)
class Case:
    label: str  # what a failing example shows (hypothesis prints the dataclass fields)
    build: object  # (next_seq) -> (bytes, expectation)


SMALL = st.binary(min_size=0, max_size=12)
RECORDS = st.lists(st.tuples(st.none() | SMALL, st.none() | SMALL), min_size=1, max_size=5)


def _head_oracle(seq: int, payload: bytes):
    """docs/protocol.md section 4 applied to a PRODUCE payload whatever its body holds."""
    if len(payload) < 12:
        return ("fatal", {KpdErrorCode.BAD_FRAME})
    base_seq, count = struct.unpack_from(">QI", payload)
    if count == 0:
        return ("fatal", {KpdErrorCode.BAD_RECORD_COUNT})
    if base_seq != seq:
        return ("fatal", {KpdErrorCode.SEQUENCE_MISMATCH})
    return ("failed", seq, count, BODY_CODES)


@st.composite
def flipped_produce(draw):
    records = draw(RECORDS)
    where = draw(st.floats(0, 1, exclude_max=True))
    mask = draw(st.integers(1, 255))

    def build(seq):
        payload = bytearray(produce_payload(seq, records))
        pos = int(where * len(payload))
        payload[pos] ^= mask
        return frame(FrameType.PRODUCE, bytes(payload)), _head_oracle(seq, bytes(payload))

    return Case(f"flip({records}, at={where:.3f}, mask={mask:#x})", build)


@st.composite
def resized_produce(draw):
    """Truncated or padded body, the length prefix telling the truth about it."""
    records = draw(RECORDS)
    cut = draw(st.integers(1, 40))
    pad = draw(st.binary(min_size=1, max_size=16))
    shorten = draw(st.booleans())

    def build(seq):
        payload = produce_payload(seq, records)
        payload = payload[: max(0, len(payload) - cut)] if shorten else payload + pad
        return frame(FrameType.PRODUCE, payload), _head_oracle(seq, payload)

    how = f"cut={cut}" if shorten else f"pad={pad!r}"
    return Case(f"resized({records}, {how})", build)


def _per_frame(label, code, **fields):
    records = fields.pop("records", [(b"k", b"v"), (None, b"value")])
    codes = code if isinstance(code, frozenset) else {code}

    def build(seq):
        payload = produce_payload(seq, records, **fields)
        return frame(FrameType.PRODUCE, payload), ("failed", seq, fields.get("count", 2), codes)

    return Case(label, build)


PER_FRAME = st.one_of(
    st.binary(min_size=1, max_size=8)
    .filter(lambda raw: not _is_utf8(raw))
    .map(lambda raw: _per_frame(f"topic bytes {raw!r}", KpdErrorCode.BAD_STRING, topic=raw)),
    st.integers(0x04, 0xFF).map(
        lambda bits: _per_frame(f"layout {bits:#x}", KpdErrorCode.BAD_FLAGS, layout=bits)
    ),
    st.integers(4, 255).map(lambda ack: _per_frame(f"ack {ack}", KpdErrorCode.BAD_FIELD, ack=ack)),
    st.integers(-(2**31), -2).map(
        lambda p: _per_frame(f"partition {p}", KpdErrorCode.INVALID_PARTITION, partition=p)
    ),
    st.integers(-(2**31), -2).map(
        lambda n: _per_frame(
            f"key length {n}",
            KpdErrorCode.BAD_LENGTH,
            records=[(None, b"v")],
            count=1,
            key_lens=[n],
        )
    ),
    st.integers(3, 2**32 - 1).map(
        lambda n: _per_frame(
            f"count {n} for 2 records",
            frozenset({KpdErrorCode.BAD_RECORD_COUNT, KpdErrorCode.BAD_LENGTH}),
            count=n,
        )
    ),
    st.binary(min_size=1, max_size=9).map(
        lambda tail: _per_frame(f"trailing data {tail!r}", KpdErrorCode.BAD_LENGTH, tail=tail)
    ),
    st.just(_per_frame("legal name outside topics.allow", KpdErrorCode.TOPIC_NOT_ALLOWED)),
    st.sampled_from([b"", b".", b"..", b"has space", b"x" * 250, b"caf\xc3\xa9"]).map(
        lambda name: _per_frame(f"illegal topic {name!r}", KpdErrorCode.INVALID_TOPIC, topic=name)
    ),
)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _fatal(label, data, code):
    return Case(label, lambda seq: (data(seq) if callable(data) else data, ("fatal", {code})))


FATAL = st.one_of(
    st.integers(0, 255)
    .filter(lambda t: t not in {int(x) for x in FrameType})
    .map(
        lambda t: _fatal(
            f"unknown type {t:#x}", frame(t, b"\0" * 8), KpdErrorCode.UNKNOWN_FRAME_TYPE
        )
    ),
    st.sampled_from(
        [
            FrameType.HELLO,
            FrameType.WELCOME,
            FrameType.ERROR,
            FrameType.REPORT,
            FrameType.METADATA_RESPONSE,
            FrameType.PONG,
        ]
    ).map(
        lambda t: _fatal(
            f"{t.name} from a client", frame(t, hello_payload()), KpdErrorCode.UNEXPECTED_FRAME
        )
    ),
    st.integers(MAX_FRAME - 3, 2**32 - 1).map(
        lambda n: _fatal(
            f"length {n}", struct.pack(">IB", n, FrameType.PRODUCE), KpdErrorCode.FRAME_TOO_LARGE
        )
    ),
    st.just(_fatal("length 0", b"\0\0\0\0", KpdErrorCode.BAD_FRAME)),
    st.binary(max_size=16)
    .filter(lambda p: len(p) != 8)
    .map(lambda p: _fatal(f"PING {p!r}", frame(FrameType.PING, p), KpdErrorCode.BAD_FRAME)),
    st.binary(max_size=5).map(
        lambda p: _fatal(
            f"METADATA_REQUEST {p!r}", frame(FrameType.METADATA_REQUEST, p), KpdErrorCode.BAD_FRAME
        )
    ),
    st.integers(0, 2**32 - 1).map(
        lambda rid: _fatal(
            f"METADATA_REQUEST {rid} of no topics",
            metadata_request(rid, []),
            KpdErrorCode.BAD_FIELD,
        )
    ),
    st.integers(1, 2**64 - 1).map(
        lambda off: _fatal(
            f"GOODBYE next_seq + {off}",
            lambda seq: goodbye((seq + off) % 2**64),
            KpdErrorCode.SEQUENCE_MISMATCH,
        )
    ),
    st.binary(max_size=7).map(
        lambda p: _fatal(f"GOODBYE {p!r}", frame(FrameType.GOODBYE, p), KpdErrorCode.BAD_FRAME)
    ),
    st.integers(1, 2**64 - 1).map(
        lambda off: _fatal(
            f"PRODUCE base_seq + {off}",
            lambda seq: produce((seq + off) % 2**64, [(None, b"v")]),
            KpdErrorCode.SEQUENCE_MISMATCH,
        )
    ),
    st.binary(max_size=11).map(
        lambda p: _fatal(f"PRODUCE {p!r}", frame(FrameType.PRODUCE, p), KpdErrorCode.BAD_FRAME)
    ),
    st.just(
        _fatal(
            "PRODUCE of 0 records",
            lambda seq: produce(seq, [], count=0),
            KpdErrorCode.BAD_RECORD_COUNT,
        )
    ),
)


@st.composite
def wrong_length(draw):
    """A valid PRODUCE whose length prefix lies: the stream is out of sync from there on."""
    records = draw(RECORDS)
    delta = draw(st.integers(-60, 60).filter(bool))

    def build(seq):
        data = bytearray(produce(seq, records))
        (length,) = struct.unpack_from(">I", data)
        struct.pack_into(">I", data, 0, max(1, length + delta))
        return bytes(data), ("ends", FATAL_CODES)

    return Case(f"length {delta:+d} ({records})", build)


# Before HELLO: only HELLO is allowed, frames are capped at 4096 bytes, and a HELLO must be
# well formed with a version in common (docs/protocol.md section 5).
BEFORE_HELLO = st.one_of(
    st.sampled_from(
        [produce(0, [(None, b"v")]), ping(1), goodbye(0), metadata_request(1, [b"input-x"])]
    ).map(lambda data: _fatal(f"before HELLO: {data[:5]!r}", data, KpdErrorCode.UNEXPECTED_FRAME)),
    st.integers(HANDSHAKE_LIMIT - 3, 2**32 - 1).map(
        lambda n: _fatal(
            f"handshake length {n}",
            struct.pack(">IB", n, FrameType.HELLO),
            KpdErrorCode.FRAME_TOO_LARGE,
        )
    ),
    st.binary(min_size=4, max_size=4)
    .filter(lambda m: m != b"KPD1")
    .map(
        lambda m: _fatal(
            f"magic {m!r}", frame(FrameType.HELLO, hello_payload(magic=m)), KpdErrorCode.BAD_MAGIC
        )
    ),
    st.integers(3, 0xFFFF).map(  # kpd speaks 1..2; a HELLO offering 2 also names a session
        lambda v: _fatal(
            f"versions {v}..{v}",
            frame(FrameType.HELLO, hello_payload(low=v, high=v) + _V2_SESSION),
            KpdErrorCode.UNSUPPORTED_VERSION,
        )
    ),
    st.integers(3, 255).map(
        lambda ack: _fatal(
            f"HELLO ack {ack}",
            frame(FrameType.HELLO, hello_payload(ack=ack)),
            KpdErrorCode.BAD_FIELD,
        )
    ),
    # The 19-byte HELLO ends with the 6-byte name "fuzz": cutting into the name's bytes leaves a
    # string longer than what remains (BAD_LENGTH); cutting more leaves a truncated field.
    st.integers(1, 24).map(
        lambda cut: _fatal(
            f"HELLO cut by {cut}",
            frame(FrameType.HELLO, hello_payload()[:-cut]),
            KpdErrorCode.BAD_LENGTH if cut <= 4 else KpdErrorCode.BAD_FRAME,
        )
    ),
    st.integers(2, 0xFFFF).map(
        lambda v: _fatal(
            f"versions {v}..{v - 1}",
            frame(FrameType.HELLO, hello_payload(low=v, high=v - 1)),
            KpdErrorCode.BAD_FIELD,
        )
    ),
    st.just(
        _fatal(
            "HELLO name not UTF-8",
            frame(FrameType.HELLO, hello_payload(name=b"\xff")),
            KpdErrorCode.BAD_STRING,
        )
    ),
    st.binary(min_size=1, max_size=8).map(
        lambda tail: _fatal(
            f"HELLO + {tail!r}",
            frame(FrameType.HELLO, hello_payload(tail=tail)),
            KpdErrorCode.BAD_FRAME,
        )
    ),
)


def run_case(conn: RawConn, seq: int, case: Case) -> int | None:
    """Send one case and check the answer; the next sequence number, None once closed."""
    data, expect = case.build(seq)
    conn.send(data)
    if expect[0] == "failed":
        _, first_seq, count, codes = expect
        conn.expect_failed_run(first_seq, count, codes)
        return first_seq + count
    if expect[0] == "fatal":
        conn.expect_error(expect[1])
        return None
    conn.sock.shutdown(socket.SHUT_WR)  # "ends": nothing more can be framed; kpd must close
    while (got := conn.read_frame()) is not None:
        if got.type == FrameType.ERROR:
            assert wire.decode_error(got.payload).code in expect[1]
        else:
            assert got.type == FrameType.REPORT, got.type
    return None


AFTER_HELLO = st.one_of(flipped_produce(), resized_produce(), PER_FRAME, FATAL, wrong_length())


def test_fuzzed_frames_get_their_errors_while_a_good_client_keeps_delivering(
    kpd, tansu, good_topic
):
    ingest = kpd.child_pids("ingest")
    workers = kpd.child_pids("worker")
    good = GoodClient(kpd.socket_path, good_topic)
    thread = threading.Thread(target=good.run, name="good-client")
    thread.start()
    counts = {"fatal": 0, "failed": 0, "alive": 0}

    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(
        st.one_of(
            st.tuples(st.lists(PER_FRAME, min_size=1, max_size=3), AFTER_HELLO).map(
                lambda t: (True, t)
            ),
            BEFORE_HELLO.map(lambda case: (False, ([], case))),
        ),
        st.integers(0, 2**64 - 1),
    )
    def fuzz(example, token):
        greet, (warmup, case) = example
        conn = RawConn(kpd.socket_path, greet=greet)
        try:
            seq = 0
            for step in [*warmup, case]:
                seq = run_case(conn, seq, step)
                if seq is None:
                    counts["fatal"] += 1
                    return
                counts["failed"] += 1
            conn.expect_alive(token)  # a FAILED run never ends the connection
            counts["alive"] += 1
        finally:
            conn.close()

    try:
        fuzz()
    finally:
        good.stop.set()
        thread.join(120)
    assert not thread.is_alive() and not good.failures, good.failures
    # Every path was taken many times (typically ~280, ~130 and ~20): ERROR + close, FAILED
    # runs, and connections still alive at the end.
    assert counts["fatal"] >= 50 and counts["failed"] >= 50 and counts["alive"] >= 5, counts
    assert kpd.child_pids("ingest") == ingest, "ingest was restarted: it died of input"
    assert kpd.child_pids("worker") == workers
    back = read_all(tansu.bootstrap, good_topic, len(good.values))
    assert sorted(r.value for r in back) == sorted(good.values)


# ---- targeted errors ------------------------------------------------------------------------


def test_topic_outside_topics_allow_is_refused_in_produce_and_metadata(kpd):
    conn = RawConn(kpd.socket_path)
    conn.send(produce(0, [(b"k", b"v")], topic=b"other-topic", ack=0))  # even with ack NONE
    run = conn.expect_failed_run(0, 1, {KpdErrorCode.TOPIC_NOT_ALLOWED})
    assert "other-topic" in run.message
    conn.send(metadata_request(7, [b"other-topic"]))
    answer = conn.read_frame()
    assert answer.type == FrameType.METADATA_RESPONSE
    response = wire.decode_metadata_response(answer.payload)
    assert response.request_id == 7
    assert [(t.topic, t.error, t.partitions) for t in response.topics] == [
        ("other-topic", KpdErrorCode.TOPIC_NOT_ALLOWED, -1)
    ]
    conn.expect_alive(1)
    conn.close()


def test_illegal_topic_name_fails_at_once_as_invalid_topic_in_produce_and_metadata(kpd):
    # "input-a b" matches topics.allow (input-*), so only the name check can refuse it; kpd
    # decides it alone, without asking Kafka for max.block.ms, and says so with its own code
    # in both answers (docs/protocol.md section 10; issue 21 section 3 point 3).
    conn = RawConn(kpd.socket_path)
    conn.send(produce(0, [(None, b"v")], topic=b"input-a b"))
    run = conn.expect_failed_run(0, 1, {KpdErrorCode.INVALID_TOPIC})
    assert run.kafka_error == 0
    conn.send(metadata_request(8, [b"input-a b", b"input-" + b"x" * 250]))
    response = wire.decode_metadata_response(conn.read_frame().payload)
    assert [t.error for t in response.topics] == [KpdErrorCode.INVALID_TOPIC] * 2
    conn.close()


def test_partition_past_the_partition_count_is_invalid_and_the_next_frame_delivers(kpd, good_topic):
    conn = RawConn(kpd.socket_path)
    conn.send(produce(0, [(None, b"a"), (None, b"b")], topic=good_topic.encode(), partition=3))
    run = conn.expect_failed_run(0, 2, {KpdErrorCode.INVALID_PARTITION})
    assert "3 partitions" in run.message
    conn.send(produce(2, [(None, b"c")], topic=good_topic.encode(), partition=2))
    (ok,) = conn.runs_until(bool)
    assert (ok.first_seq, ok.count, ok.status, ok.partition) == (2, 1, Status.DELIVERED, 2)
    conn.close()


def test_frame_over_max_frame_bytes_ends_the_connection_with_frame_too_large(kpd):
    conn = RawConn(kpd.socket_path)
    # Only the head of the frame is sent: the daemon must judge the length before the body.
    conn.send(struct.pack(">IB", MAX_FRAME - 4 + 1, FrameType.PRODUCE))
    error = conn.expect_error({KpdErrorCode.FRAME_TOO_LARGE})
    assert str(MAX_FRAME) in error.message
    conn.close()


def test_record_larger_than_a_ring_entry_fails_record_too_large(kpd, tansu, good_topic):
    conn = RawConn(kpd.socket_path)
    big = b"x" * (RING_BYTES // 2 + 1)  # one ring entry is at most half the ring
    conn.send(produce(0, [(None, b"small"), (b"k", big)], topic=good_topic.encode()))
    conn.expect_failed_run(0, 2, {KpdErrorCode.RECORD_TOO_LARGE})
    conn.expect_alive(2)
    conn.close()


def test_frame_larger_than_a_ring_entry_is_split_and_delivered(kpd, tansu):
    topic = tansu.create_topic(unique_topic_name("input-split"), 1)
    values = [bytes([i % 251]) * 2000 + str(i).encode() for i in range(300)]  # ~600 KB frame
    conn = RawConn(kpd.socket_path)
    conn.send(produce(0, [(None, v) for v in values], topic=topic.encode(), partition=0))
    runs = conn.runs_until(delivered(0, len(values)), timeout_s=60)
    assert {r.status for r in runs} == {Status.DELIVERED}
    covered = sorted(seq for r in runs for seq in range(r.first_seq, r.first_seq + r.count))
    assert covered == list(range(len(values)))  # every record reported exactly once
    back = read_all(tansu.bootstrap, topic, len(values))
    assert [r.value for r in back] == values  # one partition: the frame's order is kept
    conn.close()


def test_each_ack_level_gets_its_reports_and_goodbye_waits_for_the_owed_ones(kpd, good_topic):
    """Ack NONE: no report; ACCEPTED: one ACCEPTED run; KAFKA: one DELIVERED run (docs/protocol.md
    section 6). GOODBYE comes after the last report owed, then the daemon closes (section 9).
    All on one partition, so one worker reports the three frames in order and any stray report
    of the first two would arrive before the third's DELIVERED run, hence before GOODBYE."""
    topic = good_topic.encode()
    conn = RawConn(kpd.socket_path)
    conn.send(produce(0, [(None, b"none")] * 3, topic=topic, partition=1, ack=0))
    conn.send(produce(3, [(None, b"accepted")] * 2, topic=topic, partition=1, ack=1))
    conn.send(produce(5, [(None, b"kafka")] * 4, topic=topic, partition=1, ack=2))
    conn.send(goodbye(9))
    frames = []
    while (got := conn.read_frame(timeout_s=60)) is not None:
        frames.append(got)
    *reports, last = frames
    assert last.type == FrameType.GOODBYE and wire.decode_goodbye(last.payload) == 9
    runs = [run for f in reports for run in wire.decode_reports(f.payload)]
    assert [(r.first_seq, r.count, r.status) for r in runs if r.status == Status.ACCEPTED] == [
        (3, 2, Status.ACCEPTED)
    ]
    kafka = [r for r in runs if r.status != Status.ACCEPTED]
    assert {r.status for r in kafka} == {Status.DELIVERED} and all(r.first_seq >= 5 for r in kafka)
    assert sum(r.count for r in kafka) == 4
    conn.close()


# ---- a full ring ----------------------------------------------------------------------------


def test_full_ring_applies_backpressure_then_buffer_full_and_recovers(tmp_path):
    """A paused broker acknowledges nothing, so the worker releases no ring space (commit on
    ack) and its 128 KiB ring fills. The frame that does not fit holds the connection: the
    PING sent behind it is answered only after that frame's BUFFER_FULL run, max.block.ms
    later. Once the broker runs again, the records in the ring and new ones are delivered."""
    frame_records, value = 8, b"v" * 2000  # ~16 KiB frames: the ring holds about 7
    with TansuBroker(log_dir=tmp_path / "tansu") as broker:
        topic = broker.create_topic(unique_topic_name("input-full"), 1)
        extra = {
            "kafka": {"max.block.ms": 1000, "max.request.size": 64 * 1024},
            "rings": {"records_bytes": 128 * 1024},
        }
        with KpdDaemon(tmp_path, broker.bootstrap, workers=1, extra=extra) as daemon:
            ingest = daemon.child_pids("ingest")
            conn = RawConn(daemon.socket_path)
            seq = _deliver(conn, 0, topic, 1)  # metadata, producer id and connection are warm
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                seq, full_seq, waited = _fill_until_buffer_full(
                    conn, seq, topic, frame_records, value
                )
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            assert full_seq > 1, "the ring took no frame before it was full"
            in_ring = full_seq - 1  # records accepted into the ring while the broker slept
            runs = conn.runs_until(delivered(1, in_ring), timeout_s=60)
            assert {r.status for r in runs} == {Status.DELIVERED}, runs
            seq = _deliver(conn, seq, topic, frame_records)  # and new records flow again
            assert daemon.child_pids("ingest") == ingest
            conn.close()
        back = read_all(broker.bootstrap, topic, 1 + in_ring + frame_records)
        assert len(back) == 1 + in_ring + frame_records  # no BUFFER_FULL record reached Kafka
        assert waited >= 0.9  # the blocked frame was held for max.block.ms, not refused at once


def _deliver(conn: RawConn, seq: int, topic: str, n: int) -> int:
    conn.send(produce(seq, [(None, b"v")] * n, topic=topic.encode()))
    runs = conn.runs_until(delivered(seq, n), timeout_s=60)
    assert {r.status for r in runs} == {Status.DELIVERED}, runs
    return seq + n


def _fill_until_buffer_full(conn: RawConn, seq: int, topic: str, n: int, value: bytes):
    """Send frames, each followed by a PING, until one is answered BUFFER_FULL.

    Returns (next seq, first seq of the BUFFER_FULL frame, seconds it was held). A frame that
    fits is in the ring at once, so its PONG comes straight back; the frame that does not fit
    stops ingest reading, so its PONG may only follow its BUFFER_FULL run.
    """
    for token in range(64):
        conn.send(produce(seq, [(None, value)] * n, topic=topic.encode()))
        sent = time.monotonic()
        conn.send(ping(token))
        first = conn.read_frame()
        if first.type == FrameType.PONG:
            assert wire.decode_pong(first.payload) == token
            seq += n
            continue
        waited = time.monotonic() - sent
        (run,) = wire.decode_reports(first.payload)
        assert (run.first_seq, run.count, run.status) == (seq, n, Status.FAILED), run
        assert run.error == KpdErrorCode.BUFFER_FULL and wire.is_retriable(run.error)
        assert run.persistence == Persistence.NOT_PERSISTED
        pong = conn.read_frame()
        assert pong.type == FrameType.PONG and wire.decode_pong(pong.payload) == token
        return seq + n, seq, waited
    raise AssertionError("64 frames went into a 128 KiB ring: nothing applied backpressure")
