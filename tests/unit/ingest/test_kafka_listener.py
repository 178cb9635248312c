"""The Kafka listener as one record source of ingest's admission, in this process: a Produce
partition's batch in, a ring entry out, and the answer from the report the ingest server
routes back — with the real rings and server of ``test_connection``'s rig.

The whole-daemon tests (tests/integration/test_daemon_kafka_listener.py) reach the same code
through librdkafka; these pin the listener's place beside the kpd socket: it is no connection
of that socket (it takes none of its ``max_connections`` slots), admission's refusals reach it
as Kafka codes, and an idempotent resend is answered without a second entry.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from daemon.ingest.kafka.listener import SOURCE_ID, KafkaListener, KafkaListenerSettings
from daemon.ingest.kafka.outcomes import PendingOutcome
from daemon.kafka.errors import ErrorCode
from daemon.kafka.records import BatchBuilder, restamp
from daemon.ownership import worker_for
from daemon.process.ring_files import kafka_producers_path, prepare_ring_files
from daemon.ring import Ring, RingLabels, RingProducer, RingWakeups
from daemon.wire.ring_entry import decode_records_entry, encode_report_entry
from kpd import protocol as wire
from kpd.protocol import AckLevel, ReportRun, Status
from kpd.protocol.base import KpdErrorCode, Persistence
from tests.settings_for import settings_for
from tests.unit.ingest.test_connection import PARTITIONS, TOPIC, WORKERS, Rig
from tests.waiting import wait_for_async

PRODUCE_VERSION = 9
TIMEOUT_S = 5.0


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    yield made
    made.close()


def _listener(rig, state_path=None) -> KafkaListener:
    settings = settings_for(KafkaListenerSettings, config={"socket": {"kafka": "127.0.0.1:9092"}},
                            port=0, max_connections=4, state_path=state_path)  # fmt: skip
    listener = KafkaListener(settings, rig.server.admission)
    rig.server.hear_reports(listener.conn_id, listener)
    return listener


def _batch(values: list[bytes], producer: tuple[int, int, int] | None = None) -> bytes:
    builder = BatchBuilder()
    for value in values:
        builder.append(1_700_000_000_000, None, value)
    built = builder.build()
    if producer is not None:
        restamp(built, *producer)
    return bytes(built)


def _report(rig, worker: int, first_seq: int, count: int, base_offset: int) -> None:
    """What a worker writes once Kafka acknowledged an entry of the listener."""
    ring = RingProducer(Ring.attach(rig.names[2 * worker + 1]), RingWakeups.create())
    run = ReportRun(first_seq, count, Status.DELIVERED, 0, base_offset, 1_700_000_000_123)
    frame = wire.encode_reports([run])
    view = ring.reserve(len(encode_report_entry(SOURCE_ID, count, frame)))
    view[:] = encode_report_entry(SOURCE_ID, count, frame)
    del view
    ring.publish()


def test_a_batch_at_acks_all_is_answered_with_the_offset_the_worker_reports(rig):
    partition = 2
    worker = worker_for(TOPIC, partition, WORKERS)

    async def scenario():
        listener = _listener(rig)
        answer = await listener.produce_partition(
            TOPIC, partition, _batch([b"a", b"b", b"c"]), PRODUCE_VERSION, AckLevel.KAFKA,
            TIMEOUT_S,
        )  # fmt: skip
        listener.publish()  # what the connection does once per Produce request
        ((index, entry),) = rig.entries()
        assert (index, entry.conn_id, entry.partition, entry.count) == (worker, SOURCE_ID, 2, 3)
        assert rig.server.stats().connections == 0  # not a connection of the kpd socket
        assert listener.owed == 3
        _report(rig, worker, entry.base_seq, 3, 41)
        await rig.server.finish()  # forwards the reports rings' last entries
        return await answer, listener

    outcome, listener = asyncio.run(scenario())
    assert outcome == (ErrorCode.NONE, 41, 1_700_000_000_123)
    assert (listener.owed, listener.records) == (0, 3)


def test_the_listeners_entries_are_no_sessions_and_stay_out_of_the_sessions_journal(rig):
    # Its conn_id has the session bit set; its batches once went into the sessions journal
    # as taken and were never resolved there (a line per request, a window growing forever).
    async def scenario():
        listener = _listener(rig)
        producer_id, epoch = listener.producers.init_producer()
        answer = await listener.produce_partition(
            TOPIC, 0, _batch([b"a"], (producer_id, epoch, 0)), PRODUCE_VERSION,
            AckLevel.KAFKA, TIMEOUT_S,
        )  # fmt: skip
        listener.publish()
        answer.cancel()

    asyncio.run(scenario())
    assert len(rig.entries()) == 1
    assert rig.server.admission.sessions.journal.windows == {}
    with open(rig.journal) as journal:
        assert f"{SOURCE_ID:x}" not in journal.read()


def test_admissions_refusals_are_answered_with_kafka_codes(rig):
    async def scenario():
        listener = _listener(rig)
        produce = listener.produce_partition
        batch = _batch([b"x"])
        return (
            await produce("forbidden", 0, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S),
            await produce("no such/topic", 0, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S),
            await produce(TOPIC, PARTITIONS, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S),
            listener.records,
        )

    forbidden, illegal, beyond, records = asyncio.run(scenario())
    assert forbidden[0] == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    assert illegal[0] == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert beyond[0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert (records, rig.entries()) == (0, [])
    assert rig.server.admission.records_rejected == 3


def test_acks_1_is_answered_once_the_entry_is_published(rig):
    async def scenario():
        listener = _listener(rig)
        answer = await listener.produce_partition(
            TOPIC, 0, _batch([b"x", b"y"]), PRODUCE_VERSION, AckLevel.ACCEPTED, TIMEOUT_S
        )
        assert not answer.done()  # nothing published yet
        listener.publish()
        return await answer, listener.owed

    outcome, owed = asyncio.run(scenario())
    assert (outcome[0], owed) == (ErrorCode.NONE, 0)
    assert len(rig.entries()) == 1


def test_an_idempotent_resend_gets_the_first_outcome_and_no_second_entry(rig):
    partition = 1
    worker = worker_for(TOPIC, partition, WORKERS)

    async def scenario():
        listener = _listener(rig)
        producer_id, epoch = listener.producers.init_producer()
        batch = _batch([b"a", b"b"], (producer_id, epoch, 0))
        first = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        listener.publish()
        ((_, entry),) = rig.entries()
        _report(rig, worker, entry.base_seq, 2, 7)
        await rig.server.finish()
        resent = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        return await first, resent

    first, resent = asyncio.run(scenario())
    assert first == resent
    assert first[:2] == (ErrorCode.NONE, 7)
    assert rig.entries() == []  # the resend wrote nothing


def test_a_resend_whose_first_outcome_never_comes_is_answered_written_without_an_offset(rig):
    # Its first copy is in a ring, its outcome lost (a killed daemon's report): after the
    # request's timeout the resend is answered NONE at offset -1 (no second entry), which
    # every client takes as sent; kafkajs took DUPLICATE_SEQUENCE_NUMBER as fatal.
    async def scenario():
        listener = _listener(rig)
        producer_id, epoch = listener.producers.init_producer()
        batch = _batch([b"a", b"b"], (producer_id, epoch, 0))
        first = await listener.produce_partition(
            TOPIC, 1, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        listener.publish()
        resent = await listener.produce_partition(
            TOPIC, 1, batch, PRODUCE_VERSION, AckLevel.KAFKA, 0.05
        )
        return first.done(), await resent

    first_done, resent = asyncio.run(scenario())
    assert not first_done
    assert resent == (ErrorCode.NONE, -1, -1)
    assert len(rig.entries()) == 1  # the first copy's entry only


def test_an_idempotent_batchs_line_is_in_the_journal_before_its_entry_is_published(
    rig, tmp_path, monkeypatch
):
    # Write-ahead (issue 20): a worker may produce an entry as soon as it is published, so the
    # line that makes the client's resend recognisable must already be in the file then.
    path = str(tmp_path / "producers.jsonl")
    seen_at_publish: list[str] = []
    real_publish = RingProducer.publish

    def publish(self) -> None:
        with open(path) as journal:
            seen_at_publish.append(journal.read())
        real_publish(self)

    monkeypatch.setattr(RingProducer, "publish", publish)

    async def scenario():
        listener = _listener(rig, state_path=path)
        producer_id, epoch = listener.producers.init_producer()
        answer = await listener.produce_partition(
            TOPIC, 1, _batch([b"a"], (producer_id, epoch, 0)), PRODUCE_VERSION, AckLevel.KAFKA,
            TIMEOUT_S,
        )  # fmt: skip
        listener.publish()
        answer.cancel()
        listener.close()
        return producer_id

    producer_id = asyncio.run(scenario())
    assert seen_at_publish and f"kafka:{producer_id}:0:1:{TOPIC}" in seen_at_publish[0]


@pytest.mark.parametrize("published", [False, True], ids=["killed-before-publish", "published"])
def test_a_resend_after_a_kill_between_the_line_and_the_publish_is_taken_as_new(
    rig, tmp_path, published
):
    # Ingest killed after the batch's line and before its publish: the entry never reached a
    # ring, so the next listener withdraws the line and takes the client's resend as new
    # (before the write-ahead, the line came after the publish, and a kill between the two
    # had the resend taken again beside a published first copy: records twice). Published,
    # the resend is the same batch: it waits for the first copy's outcome, no second entry.
    path = str(tmp_path / "producers.jsonl")
    partition = 4

    async def first_ingest():
        listener = _listener(rig, state_path=path)
        producer_id, epoch = listener.producers.init_producer()
        batch = _batch([b"a", b"b", b"c"], (producer_id, epoch, 0))
        answer = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        if published:
            listener.publish()
        else:
            rig.server.admission.before_publish()  # the line is out; the kill comes now
        answer.cancel()
        return batch

    batch = asyncio.run(first_ingest())
    assert len(rig.entries()) == (1 if published else 0)
    rig.restart_ingest()

    async def next_ingest():
        listener = _listener(rig, state_path=path)
        resent = listener.offer_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        listener.publish()
        taken_again = isinstance(resent, PendingOutcome)
        if asyncio.iscoroutine(resent):
            resent.close()  # waits for the first copy's outcome: not taken again
        listener.close()
        return taken_again

    taken_again = asyncio.run(next_ingest())
    assert taken_again == (not published)
    assert len(rig.entries()) == (0 if published else 1)


MAX_BLOCK_S = 0.2


def test_a_batch_split_over_ring_entries_is_taken_whole_and_its_resend_meanwhile_once():
    # Issue 20's open edges: (a) a batch larger than a ring entry (half the 1 MiB ring) is
    # two entries; the ring has room for the first only. Refusing the second after
    # max.block.ms would answer the client a retriable error while the first half goes to
    # Kafka, and its retry would produce that half twice: the rest waits instead. (b) The
    # client's resend of the batch meanwhile (a new connection after its request timed
    # out) is answered with the first copy's outcome and never taken.
    rig = Rig(max_block_s=MAX_BLOCK_S)
    partition = 4
    worker = worker_for(TOPIC, partition, WORKERS)
    worker_end = rig.worker_ends[worker]

    async def scenario():
        listener = _listener(rig)
        filler = await listener.produce_partition(
            TOPIC, partition, _batch([b"f" * 450_000]), PRODUCE_VERSION, AckLevel.ACCEPTED,
            TIMEOUT_S,
        )  # fmt: skip
        listener.publish()
        await filler
        producer_id, epoch = listener.producers.init_producer()
        batch = _batch([bytes([i]) * 100_000 for i in range(9)], (producer_id, epoch, 0))
        first = asyncio.ensure_future(listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        ))  # fmt: skip
        read = await wait_for_async(lambda: worker_end.read_entries() or None,
                                    what="the filler in the ring")  # fmt: skip
        read += await wait_for_async(lambda: worker_end.read_entries() or None,
                                     what="the batch's first entry")  # fmt: skip
        resent = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        done, _ = await asyncio.wait({first}, timeout=3 * MAX_BLOCK_S)
        assert not done  # still waiting for room: not refused after max.block.ms
        worker_end.release(read[0][0])  # the worker is done with the filler
        answer = await asyncio.wait_for(first, TIMEOUT_S)
        listener.publish()
        read += await wait_for_async(lambda: worker_end.read_entries() or None,
                                     what="the batch's second entry")  # fmt: skip
        batch_entries = [decode_records_entry(entry) for _, entry in read[1:]]
        for entry in batch_entries:
            _report(rig, worker, entry.base_seq, entry.count, 70 + entry.base_seq
                    - batch_entries[0].base_seq)  # fmt: skip
        await rig.server.finish()
        return await answer, await resent, batch_entries

    try:
        first, resent, entries = asyncio.run(scenario())
        assert first == resent == (ErrorCode.NONE, 70, 1_700_000_000_123)
        assert sum(entry.count for entry in entries) == 9 and len(entries) == 2
        assert rig.server.admission.records_rejected == 0
        assert rig.entries() == []  # nothing more: the resend took nothing
    finally:
        rig.close()


def test_with_fsync_always_the_journal_is_synced_before_an_idempotent_answer(rig, monkeypatch):
    # rings.fsync: always (issue 20, edge c): the listener's dedupe journal follows the
    # rings' rule, so the line that makes a resend recognisable is on the disk first.
    synced: list[str] = []  # the files fdatasync was called on (ring files and journals)
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    partition = 0
    worker = worker_for(TOPIC, partition, WORKERS)

    async def scenario(path):
        rig.server.admission.ring_sync.policy = "always"
        listener = _listener(rig, state_path=path)
        producer_id, epoch = listener.producers.init_producer()
        batch = _batch([b"a"], (producer_id, epoch, 0))
        answer = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        listener.publish()
        ((_, entry),) = rig.entries()
        await wait_for_async(lambda: path in synced, what="a sync of the journal")
        synced.clear()
        _report(rig, worker, entry.base_seq, 1, 3)
        forwarded = asyncio.ensure_future(rig.server.finish())
        outcome = await answer
        assert path in synced  # the outcome's line was synced before the answer
        await forwarded
        listener.close()
        return outcome

    path = os.path.join(os.path.dirname(rig.journal), "kafka-producers.jsonl")
    assert asyncio.run(scenario(path))[:2] == (ErrorCode.NONE, 3)
    with open(path) as journal:
        assert '"g":' in journal.read()  # the batch's line, tagged with its ring sequence


def test_a_reports_outcome_line_is_written_before_its_ring_entry_is_released(rig):
    # The answers wait for the loop turn's end, the outcome's journal line does not: a kill -9
    # after the release finds the outcome in the journal (before the release, in the ring).
    partition = 0
    worker = worker_for(TOPIC, partition, WORKERS)

    async def scenario(path):
        listener = _listener(rig, state_path=path)
        producer_id, epoch = listener.producers.init_producer()
        batch = _batch([b"a"], (producer_id, epoch, 0))
        answer = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        listener.publish()
        ((_, entry),) = rig.entries()
        _report(rig, worker, entry.base_seq, 1, 5)
        reports = rig.server._reports[worker]
        with open(path) as journal:
            before = journal.read()
        assert rig.server._forward_once(reports)  # read, forwarded, released
        with open(path) as journal:
            written = journal.read()[len(before) :]
        outcome = await answer
        listener.close()
        return written, outcome

    path = os.path.join(os.path.dirname(rig.journal), "kafka-producers.jsonl")
    written, outcome = asyncio.run(scenario(path))
    assert '"o":[0,1,[0,5,' in written  # the outcome's line, written before the release
    assert outcome[:2] == (ErrorCode.NONE, 5)


def _unread_report(directory: str, prefix: str, runs: list[ReportRun]) -> None:
    """A killed daemon's reports ring holding a worker's report ingest never read."""
    ring = Ring.create(os.path.join(directory, f"{prefix}-reports-0"), 64 * 1024,
                       RingLabels(0, 0, 1))  # fmt: skip
    producer = RingProducer(ring, RingWakeups.create())
    count = sum(run.count for run in runs)
    assert producer.write_many([encode_report_entry(SOURCE_ID, count, wire.encode_reports(runs))])
    del producer
    ring.close()


@pytest.mark.parametrize("delivered", [True, False], ids=["delivered", "failed-unwritten"])
def test_a_killed_daemons_unread_listener_reports_answer_the_resend_after_the_restart(
    rig, tmp_path, delivered
):
    # Issue 20: the worker produced the batch and released its entry, wrote the report, and
    # the whole daemon was killed before ingest read it. The next start journals the report
    # by the batch's ring sequence number, so the client's resend is answered with the first
    # outcome (before: it waited for a report that never came, then DUPLICATE_SEQUENCE_NUMBER
    # after the request's timeout). A batch that failed whole and was never written is new
    # again, as in Kafka: its resend is taken.
    prefix = "kpd"
    path = kafka_producers_path(str(tmp_path), prefix)
    partition = 3

    async def first_daemon():
        listener = _listener(rig, state_path=path)
        producer_id, epoch = listener.producers.init_producer()
        batch = _batch([b"a", b"b"], (producer_id, epoch, 0))
        answer = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        listener.publish()
        answer.cancel()  # killed: nobody hears the answer
        listener.close()
        return batch

    batch = asyncio.run(first_daemon())
    ((_, entry),) = rig.entries()
    for worker in rig.worker_ends:  # produced (or failed for good): the entry is released
        if entries := worker.read_entries():
            worker.release(entries[-1][0])
    if delivered:
        run = ReportRun(entry.base_seq, 2, Status.DELIVERED, partition, 57, 1_700_000_000_999)
    else:
        run = ReportRun(entry.base_seq, 2, Status.FAILED, partition, error=KpdErrorCode.KAFKA_ERROR,
                        kafka_error=ErrorCode.MESSAGE_TOO_LARGE,
                        persistence=Persistence.NOT_PERSISTED)  # fmt: skip
    _unread_report(str(tmp_path), prefix, [run])

    prepare_ring_files(str(tmp_path), prefix, 1, 64 * 1024, 64 * 1024)  # the next start

    async def next_daemon():
        listener = _listener(rig, state_path=path)
        resent = await listener.produce_partition(
            TOPIC, partition, batch, PRODUCE_VERSION, AckLevel.KAFKA, TIMEOUT_S
        )
        listener.publish()
        if not isinstance(resent, tuple):  # taken as new: its answer comes with a report
            resent.cancel()
            resent = "taken again"
        listener.close()
        return resent

    resent = asyncio.run(next_daemon())
    if delivered:
        assert resent == (ErrorCode.NONE, 57, 1_700_000_000_999)
        assert rig.entries() == []  # answered, never taken twice
    else:
        assert resent == "taken again"
        assert len(rig.entries()) == 1
