"""The worker in this process: real rings, a real engine, tansu — no daemon around it.

Ingest's side is played by the test through the public ring-entry codec (``wire.ring_entry``)
and ``RingProducer``/``RingConsumer``; what reaches Kafka is read back with confluent-kafka.
Pins the worker's contract: every record of every entry gets exactly one report run, offsets
in the runs are where the records are in the log, and ring space is released only after the
reports for it were published.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import uuid
from collections.abc import Iterator

import pytest

from daemon.config import producer_settings
from daemon.ring import Ring, RingConsumer, RingProducer, RingWakeups
from daemon.wire.ring_entry import decode_report_entry, entry_head
from daemon.worker import Worker
from kpd.protocol import decode_reports
from kpd.protocol.base import AckLevel, KpdErrorCode, Persistence, Status
from kpd.protocol.records import encode_records
from tests.brokers.mock_cluster import ApiKey
from tests.brokers.reader import read_all

RING_BYTES = 1 << 20
CONN_ID = 0xC0FFEE


class RingPair:
    """The two rings of one worker, both ends held by the test (ingest's ends included)."""

    def __init__(self, reports_bytes: int = RING_BYTES) -> None:
        base = f"/dev/shm/kpd-test-worker-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.names = (base + "-rec", base + "-rep")
        rec_wakeups, rep_wakeups = RingWakeups.create(), RingWakeups.create()
        self.ingest_records = RingProducer(Ring.create(self.names[0], RING_BYTES), rec_wakeups)
        self.worker_records = RingConsumer(Ring.attach(self.names[0]), rec_wakeups)
        reports = Ring.create(self.names[1], reports_bytes)
        self.worker_reports = RingProducer(reports, rep_wakeups)
        self.ingest_reports = RingConsumer(Ring.attach(self.names[1]), rep_wakeups)

    def put(
        self,
        topic: str,
        partition: int,
        base_seq: int,
        records,
        ack=AckLevel.KAFKA,
        offsets=None,
        batched=False,
        received_ms=1_700_000_000_000,
    ) -> None:
        section = encode_records(records)
        seq_offsets = None if offsets is None else struct.pack(f">{len(offsets)}I", *offsets)
        head = entry_head(CONN_ID, base_seq, len(records), partition, received_ms, ack,
                          topic.encode(), seq_offsets, batched)  # fmt: skip
        assert self.ingest_records.write(head + section)
        self.ingest_records.publish()

    def runs(self) -> list:
        runs = []
        for end_pos, entry in self.ingest_reports.read_entries():
            conn_id, count, _, frame = decode_report_entry(entry)
            assert conn_id == CONN_ID
            decoded = decode_reports(frame[5:])  # after the length prefix and type byte
            assert count == sum(run.count for run in decoded)
            runs.extend(decoded)
            self.ingest_reports.release(end_pos)
        return runs

    def close(self) -> None:
        for name in self.names:
            Ring.unlink(name)


@pytest.fixture
def rings() -> Iterator[RingPair]:
    pair = RingPair()
    yield pair
    pair.close()


async def _run_until(
    worker: Worker, rings: RingPair, records: int, timeout_s: float, read_after=lambda: True
) -> list:
    """Run the worker until ``records`` records have report runs; return the runs. Reports
    are read (as ingest does) only once ``read_after()`` holds."""
    task = asyncio.get_running_loop().create_task(worker.run())
    runs: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while not read_after():
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.01)
        while sum(run.count for run in runs) < records:
            assert time.monotonic() < deadline, f"only {runs} after {timeout_s} s"
            assert not task.done(), task
            runs.extend(rings.runs())
            await asyncio.sleep(0.01)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await worker.close()
    return runs


def test_worker_delivers_entries_and_reports_the_offsets_kafka_gave(tansu, topic_factory, rings):
    topic = topic_factory(tansu, partitions=2)
    first = [(b"k%d" % i, b"v%d" % i, None, ()) for i in range(300)]
    second = [(None, b"h%d" % i, 1_600_000_000_000 + i, [("trace", b"t%d" % i)])
              for i in range(50)]  # fmt: skip
    rings.put(topic, 0, 0, first)
    rings.put(topic, 1, 300, second)  # timestamps and headers: the worker's general path
    worker = Worker(producer_settings(bootstrap_servers=tansu.bootstrap, linger_ms=5),
                    rings.worker_records, rings.worker_reports)  # fmt: skip

    runs = asyncio.run(_run_until(worker, rings, 350, 60))

    assert {run.status for run in runs} == {Status.DELIVERED}
    covered = sorted(seq for run in runs for seq in range(run.first_seq, run.first_seq + run.count))
    assert covered == list(range(350))  # every record once, none twice
    log = {(r.partition, r.offset): r for r in read_all(tansu.bootstrap, topic, 350)}
    for run in runs:
        for i in range(run.count):
            record = log[(run.partition, run.base_offset + i)]
            seq = run.first_seq + i
            if seq < 300:
                assert (record.key, record.value) == (b"k%d" % seq, b"v%d" % seq)
            else:
                n = seq - 300
                assert record.value == b"h%d" % n
                assert record.headers == (("trace", b"t%d" % n),)
                assert record.timestamp == 1_600_000_000_000 + n
    # Commit on ack: every entry had its reports published, so all ring space is released.
    assert rings.worker_records.held_bytes() == 0
    assert rings.ingest_records.free_bytes() == rings.ingest_records.capacity


def test_records_with_their_own_timestamps_and_no_headers_keep_them(tansu, topic_factory, rings):
    # What a Kafka client's batch becomes through kpd's Kafka listener: a timestamp column, no
    # headers; the worker appends them in one call, each with its own (and -1: kpd's time).
    topic = topic_factory(tansu, partitions=1)
    stamps = [1_600_000_000_000 + i // 7 for i in range(60)] + [-1, -1, 1_500_000_000_000]
    records = [(b"k%d" % i if i % 3 else None, b"v%d" % i, stamp, ())
               for i, stamp in enumerate(stamps)]  # fmt: skip
    rings.put(topic, 0, 0, records)
    worker = Worker(producer_settings(bootstrap_servers=tansu.bootstrap, linger_ms=5),
                    rings.worker_records, rings.worker_reports)  # fmt: skip

    runs = asyncio.run(_run_until(worker, rings, len(records), 60))

    assert {run.status for run in runs} == {Status.DELIVERED}
    log = sorted(read_all(tansu.bootstrap, topic, len(records)), key=lambda r: r.offset)
    assert [(r.key, r.value) for r in log] == [(k, v) for k, v, _, _ in records]
    received = 1_700_000_000_000  # the entry's received_ms (RingPair.put)
    assert [r.timestamp for r in log] == [s if s != -1 else received for s in stamps]


def test_worker_fails_records_it_cannot_deliver_and_still_releases_their_space(rings):
    rings.put("nowhere", 0, 0, [(None, b"x", None, ())] * 20)
    settings = producer_settings(
        bootstrap_servers="127.0.0.1:9",  # nothing listens: no metadata, ever
        max_block_ms=300,
        request_timeout_ms=200,
        delivery_timeout_ms=500,
        linger_ms=0,
    )
    worker = Worker(settings, rings.worker_records, rings.worker_reports)

    runs = asyncio.run(_run_until(worker, rings, 20, 30))

    assert sum(run.count for run in runs) == 20
    for run in runs:
        assert run.status == Status.FAILED
        assert run.persistence == Persistence.NOT_PERSISTED  # it never reached a broker
        assert run.error in (KpdErrorCode.DELIVERY_TIMEOUT, KpdErrorCode.UNKNOWN_TOPIC)
        assert run.message  # says why, in words
    assert rings.worker_records.held_bytes() == 0


def test_a_worker_closed_before_delivering_keeps_the_records_in_its_ring(rings):
    # SIGTERM during a broker outage: the drain deadline passes, the worker closes, and what
    # it could not deliver stays in the ring file for the next daemon; a client waiting for
    # Kafka's ack is told so (by each record's own sequence number, for an entry ingest
    # partitioned), one that asked for ack accepted already has its answer.
    rings.put("nowhere", 0, 0, [(None, b"x", None, ())] * 20)
    rings.put("nowhere", 1, 20, [(None, b"y", None, ())] * 5)
    rings.put("nowhere", 1, 25, [(None, b"a", None, ())] * 3, ack=AckLevel.ACCEPTED)
    rings.put("nowhere", 2, 40, [(b"k", b"s", None, ())] * 4, offsets=[0, 1, 5, 9])
    settings = producer_settings(bootstrap_servers="127.0.0.1:9", linger_ms=0)
    worker = Worker(settings, rings.worker_records, rings.worker_reports)

    async def stop_during_the_outage() -> list:
        task = asyncio.get_running_loop().create_task(worker.run())
        deadline = time.monotonic() + 10
        while rings.worker_records.pending_bytes():  # until the worker took both entries
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        worker.stop()
        done, _ = await asyncio.wait({task}, timeout=0.3)
        assert not done, "nothing can be delivered: the drain runs until its deadline"
        await worker.close()
        await asyncio.wait_for(task, 5)
        return rings.runs()

    runs = asyncio.run(stop_during_the_outage())

    assert sorted((run.first_seq, run.count) for run in runs) == [
        (0, 20), (20, 5), (40, 2), (45, 1), (49, 1)
    ]  # fmt: skip
    for run in runs:
        assert (run.status, run.error) == (Status.FAILED, KpdErrorCode.SHUTTING_DOWN)
        assert run.persistence == Persistence.POSSIBLY_PERSISTED
        assert "stays in kpd's ring file" in run.message
    # Never released: a consumer attaching after it (the next daemon's worker) reads both.
    assert rings.worker_records.held_bytes() == rings.ingest_records.used_bytes() > 0
    ring, wakeups = Ring.attach(rings.names[0]), RingWakeups.create()
    try:
        replay = RingConsumer(ring, wakeups).read_entries()
        assert len(replay) == 4
        del replay
    finally:
        ring.close()
        wakeups.close()


def test_worker_reports_only_kafka_ack_entries_and_maps_scattered_sequences(
    tansu, topic_factory, rings
):
    # Entries of ack none/accepted get no report at all (nobody reads it) but their ring space
    # is still released once Kafka has them; an entry ingest partitioned itself carries each
    # record's sequence offset, and its runs name exactly those sequence numbers.
    topic = topic_factory(tansu, partitions=1)
    quiet = [(b"q%d" % i, b"quiet", None, ()) for i in range(40)]
    rings.put(topic, 0, 0, quiet[:20], ack=AckLevel.NONE)
    rings.put(topic, 0, 20, quiet[20:], ack=AckLevel.ACCEPTED)
    offsets = [0, 1, 2, 5, 9, 10, 11, 30]  # frame base 100: seqs 100-102, 105, 109-111, 130
    scattered = [(b"s%d" % o, b"seq%d" % (100 + o), None, ()) for o in offsets]
    rings.put(topic, 0, 100, scattered, offsets=offsets)
    worker = Worker(producer_settings(bootstrap_servers=tansu.bootstrap, linger_ms=5),
                    rings.worker_records, rings.worker_reports)  # fmt: skip

    runs = asyncio.run(_run_until(worker, rings, len(offsets), 60))

    assert sorted((run.first_seq, run.count) for run in runs) == [
        (100, 3), (105, 1), (109, 3), (130, 1)
    ]  # fmt: skip
    log = {(r.partition, r.offset): r for r in read_all(tansu.bootstrap, topic, 48)}
    for run in runs:
        for i in range(run.count):
            assert log[(run.partition, run.base_offset + i)].value == b"seq%d" % (run.first_seq + i)
    assert rings.worker_records.held_bytes() == 0


def test_an_entry_its_source_batched_is_sent_without_lingering_again(tansu, topic_factory, rings):
    # A Kafka client's batch (the listener's entries carry BATCHED) already waited for the
    # client's linger.ms: with a linger of ten minutes, its report still comes (before stop).
    # Accepted just now: linger counting from the acceptance would hold it the ten minutes.
    topic = topic_factory(tansu, partitions=1)
    records = [(None, b"b%d" % i, None, ()) for i in range(5)]
    rings.put(topic, 0, 0, records, batched=True, received_ms=int(time.time() * 1000))
    worker = Worker(producer_settings(bootstrap_servers=tansu.bootstrap, linger_ms=600_000),
                    rings.worker_records, rings.worker_reports)  # fmt: skip

    runs = asyncio.run(_run_until(worker, rings, 5, 60))

    assert [(run.status, run.first_seq, run.count) for run in runs] == [(Status.DELIVERED, 0, 5)]


def test_an_idle_worker_sleeps_on_its_ring_and_exits_when_stopped(tansu, rings):
    # Asleep on the watched doorbell (its wake-at flag announced), stop() alone ends run().
    worker = Worker(producer_settings(bootstrap_servers=tansu.bootstrap),
                    rings.worker_records, rings.worker_reports)  # fmt: skip
    wake_at = rings.worker_records._ring

    async def stop_while_asleep() -> None:
        task = asyncio.get_running_loop().create_task(worker.run())
        deadline = time.monotonic() + 20
        while not wake_at.consumer_wake_at:
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(task, 20)
        await worker.close()

    asyncio.run(stop_while_asleep())
    assert wake_at.consumer_wake_at == 0  # the flag was retracted: ingest rings no one


def test_a_full_reports_ring_makes_the_worker_wait_for_room(tansu, topic_factory):
    # 64 KiB of reports ring (the least the config allows) cannot hold 3,000 one-record runs:
    # the worker waits for ingest to make room, and every run still arrives, once.
    topic = topic_factory(tansu, partitions=1)
    rings = RingPair(reports_bytes=64 * 1024)
    try:
        entries = 3_000
        for seq in range(entries):
            rings.put(topic, 0, seq * 2, [(None, b"v", None, ())])  # no two runs merge
        worker = Worker(producer_settings(bootstrap_servers=tansu.bootstrap, linger_ms=5),
                        rings.worker_records, rings.worker_reports)  # fmt: skip
        reports = rings.ingest_reports._ring

        def waits_for_room() -> bool:  # the worker announced it sleeps for reports-ring space
            return reports.producer_wake_at != 0

        runs = asyncio.run(_run_until(worker, rings, entries, 60, read_after=waits_for_room))
        assert sorted(run.first_seq for run in runs) == [seq * 2 for seq in range(entries)]
        assert {run.status for run in runs} == {Status.DELIVERED}
    finally:
        rings.close()


def test_a_successor_reports_what_its_killed_predecessor_had_done_and_produces_only_the_rest(
    mock_cluster, topic_factory, rings, tmp_path
):
    # Entry A (partition 1, its leader down) is read first and stays in flight; entry B
    # (partition 0) behind it is acknowledged, so the ring cannot be released past A. The
    # worker is then killed (abandoned: nothing closed or flushed). Its successor on the same
    # ring and done journal reports B with the offsets Kafka gave the first time and produces
    # only A: each record once in Kafka.
    topic = topic_factory(mock_cluster, partitions=2)
    mock_cluster.set_partition_leader(topic, 0, 1)
    mock_cluster.set_partition_leader(topic, 1, 2)
    mock_cluster.broker_down(2)
    a = [(b"a", b"a%d" % i, None, ()) for i in range(30)]
    b = [(b"b", b"b%d" % i, None, ()) for i in range(20)]
    rings.put(topic, 1, 0, a)
    rings.put(topic, 0, 100, b)
    done_path = str(tmp_path / "records.done")
    settings = producer_settings(
        bootstrap_servers=mock_cluster.bootstrap, linger_ms=5, retry_backoff_ms=50
    )

    async def killed_once_b_is_reported() -> list:
        worker = Worker(settings, rings.worker_records, rings.worker_reports, done_path)
        asyncio.get_running_loop().create_task(worker.run())
        runs: list = []
        deadline = time.monotonic() + 60
        while sum(run.count for run in runs) < len(b):
            assert time.monotonic() < deadline, runs
            runs.extend(rings.runs())
            await asyncio.sleep(0.01)
        return runs  # asyncio.run cancels the worker's tasks: a kill, as far as files go

    first = asyncio.run(killed_once_b_is_reported())
    assert {(run.first_seq, run.status) for run in first} == {(100, Status.DELIVERED)}
    assert rings.ingest_records.used_bytes() > 0  # A holds the whole ring back

    mock_cluster.broker_up(2)
    ring, wakeups = Ring.attach(rings.names[0]), RingWakeups.create()
    try:
        successor = Worker(settings, RingConsumer(ring, wakeups), rings.worker_reports, done_path)
        second = asyncio.run(_run_until(successor, rings, len(a) + len(b), 60))
    finally:
        wakeups.close()

    again = sorted((r.first_seq, r.count, r.partition, r.base_offset) for r in second
                   if r.first_seq >= 100)  # fmt: skip
    assert again == sorted((r.first_seq, r.count, r.partition, r.base_offset) for r in first)
    assert sum(run.count for run in second if run.first_seq < 100) == len(a)
    log = read_all(mock_cluster.bootstrap, topic, len(a) + len(b), timeout_s=60)
    assert sorted(r.value for r in log) == sorted(v for _, v, _, _ in a + b)  # each once
    assert rings.ingest_records.used_bytes() == 0  # all released by the successor


def test_a_successor_produces_only_the_records_of_an_entry_that_had_no_outcome(
    mock_cluster, topic_factory, rings, tmp_path
):
    # One entry split over many batches: the first request is answered, every later one
    # fails retriably (NOT_ENOUGH_REPLICAS), so when the worker is killed the entry is half
    # done. Its successor appends only the other half and reports the first half from the
    # done journal: every record once in Kafka, every sequence number reported once.
    topic = topic_factory(mock_cluster, partitions=1)
    mock_cluster.set_partition_leader(topic, 0, 1)
    records = [(b"k", b"r%03d" % i, None, ()) for i in range(200)]
    rings.put(topic, 0, 0, records)
    mock_cluster.push_broker_request_errors(1, ApiKey.PRODUCE, (0, 0), *[(19, 0)] * 30)
    done_path = str(tmp_path / "records.done")
    settings = producer_settings(bootstrap_servers=mock_cluster.bootstrap, linger_ms=50,
                                 batch_size=512, retry_backoff_ms=200)  # fmt: skip

    async def killed_once_half_is_reported() -> list:
        worker = Worker(settings, rings.worker_records, rings.worker_reports, done_path)
        asyncio.get_running_loop().create_task(worker.run())
        runs: list = []
        deadline = time.monotonic() + 60
        while not runs:
            assert time.monotonic() < deadline
            runs.extend(rings.runs())
            await asyncio.sleep(0.01)
        return runs

    first = asyncio.run(killed_once_half_is_reported())
    done = sum(run.count for run in first)
    assert 0 < done < len(records), first
    ring, wakeups = Ring.attach(rings.names[0]), RingWakeups.create()
    try:
        successor = Worker(settings, RingConsumer(ring, wakeups), rings.worker_reports, done_path)
        second = asyncio.run(_run_until(successor, rings, len(records), 60))
    finally:
        wakeups.close()

    covered = sorted(s for run in second for s in range(run.first_seq, run.first_seq + run.count))
    assert covered == list(range(len(records)))
    log = {r.offset: r.value for r in read_all(mock_cluster.bootstrap, topic, len(records))}
    assert sorted(log.values()) == [v for _, v, _, _ in records]  # each once
    for run in second:
        for i in range(run.count):
            assert log[run.base_offset + i] == b"r%03d" % (run.first_seq + i)


def test_a_worker_with_a_lingering_batch_reads_its_ring_at_the_deadline_in_one_request(
    tansu, topic_factory, rings
):
    # Issue 18: while a batch lingers the worker does not wake per ring entry; it asks the
    # doorbell for half a batch.size and reads at the linger deadline, where the entries that
    # came meanwhile (another partition here) ride along in the same request.
    topic = topic_factory(tansu, partitions=2)
    worker = Worker(producer_settings(bootstrap_servers=tansu.bootstrap, linger_ms=300),
                    rings.worker_records, rings.worker_reports)  # fmt: skip
    ring, consumer = rings.worker_records._ring, rings.worker_records

    async def scenario() -> list:
        task = asyncio.get_running_loop().create_task(worker.run())
        deadline = time.monotonic() + 20
        # A first record delivered and reported: the sender is idle and asleep, so the next
        # batch's open arms its timer for the same deadline as the worker's own.
        rings.put(topic, 0, 0, [(None, b"w", None, ())], ack=AckLevel.KAFKA,
                  received_ms=int(time.time() * 1000) - 10_000)  # fmt: skip
        warm: list = []
        while not warm:
            assert time.monotonic() < deadline and not task.done(), task
            warm.extend(rings.runs())
            await asyncio.sleep(0.01)
        sent_before = worker.engine.counters.requests_sent
        rings.put(topic, 0, 1, [(None, b"a", None, ())], received_ms=int(time.time() * 1000))
        while ring.consumer_wake_at <= consumer.cursor + 1:  # not yet asleep, deferred
            assert time.monotonic() < deadline and not task.done(), task
            await asyncio.sleep(0.001)
        rings.put(topic, 1, 2, [(None, b"b", None, ())], received_ms=int(time.time() * 1000))
        runs: list = []
        while sum(run.count for run in runs) < 2:
            assert time.monotonic() < deadline and not task.done(), task
            runs.extend(rings.runs())
            await asyncio.sleep(0.01)
        sent = worker.engine.counters.requests_sent - sent_before
        worker.stop()
        await asyncio.wait_for(task, 30)
        await worker.close()
        return runs, sent

    runs, sent = asyncio.run(scenario())
    assert sorted((run.status, run.first_seq) for run in runs) == [
        (Status.DELIVERED, 1), (Status.DELIVERED, 2)
    ]  # fmt: skip
    assert sent == 1  # the record read at the deadline rode along
