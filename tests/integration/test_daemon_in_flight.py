"""Batches in flight at a kill -9 are written once (issue 20, kpd's no-duplicates promise).

tansu behind an ``AnswerHold``: the requests of the daemon's workers reach tansu, which appends
the batches, but the answers are held back, so at the kill every one of those batches is in
Kafka and unanswered. The worker that adopts the ring (a replacement worker, the next daemon)
must resend them under the old producer id, where tansu answers DUPLICATE_SEQUENCE_NUMBER,
before it produces the rest under its own. Only tansu: librdkafka's mock cluster does not
deduplicate an idempotent (non-transactional) producer's sequences at all (DESIGN.md §5;
tests/integration/test_produce_wire.py pins both brokers' behaviour). An independent reader
(confluent-kafka) counts every record exactly once and checks each key's order.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from kpd import Producer
from tests.brokers import unique_topic_name
from tests.brokers.answer_hold import AnswerHold
from tests.brokers.reader import read_all
from tests.daemon_harness import KpdDaemon, wait_for
from tests.integration.test_daemon_lifecycle import LoadClient

pytestmark = pytest.mark.timeout(240)

WARM, COUNT, KEYS = 1_000, 4_000, 13


def _send(daemon: KpdDaemon, topic: str, indices: range) -> None:
    with Producer(daemon.socket_path, acks="accepted") as producer:
        for i in indices:
            producer.send(topic, b"v%d" % i, key=b"k%d" % (i % KEYS))
        producer.flush(timeout=60)


def _in_flight_then_kill(hold: AnswerHold, daemon: KpdDaemon, topic: str, kill) -> None:
    """Warm up, hold the answers, send COUNT records (ack accepted), wait until tansu has
    appended some of those the workers sent, then ``kill``, let answers flow again (the
    adopter's connections are new: never held) and send COUNT more: the stream goes on."""
    results = LoadClient(daemon, topic, "warm", WARM, acks="kafka").wait()
    assert all(status == "ok" for _, status, _, _ in results), results[:3]
    hold.hold()
    _send(daemon, topic, range(COUNT))
    wait_for(lambda: hold.produce_requests_held >= 2, 30, "Produce requests held")
    # Appended: a new connection (not held) reads some of them back.
    read_all(hold.bootstrap, topic, WARM + 1, timeout_s=30, exact=False)
    kill(daemon)
    hold.release()
    _send(daemon, topic, range(COUNT, 2 * COUNT))


def _check_once_and_in_order(hold: AnswerHold, topic: str, daemon: KpdDaemon) -> None:
    """Once the adopter resent what was in flight, stop the daemon (it drains: everything is
    produced by then), then read it all back."""
    wait_for(lambda: "flight journal: resent" in daemon.log_path.read_text(), 60,
             "the adopting worker to resend what was in flight")  # fmt: skip
    assert daemon.stop() == 0, daemon.log_tail()
    log = daemon.log_path.read_text()
    records = read_all(hold.bootstrap, topic, WARM + 2 * COUNT, timeout_s=90)  # exact: no repeat
    ours = [r for r in records if r.value.startswith(b"v")]
    assert sorted(r.value for r in ours) == sorted(b"v%d" % i for i in range(2 * COUNT))
    by_key = defaultdict(list)
    for r in ours:  # read_all sorts by (partition, offset); a key lives on one partition
        by_key[r.key].append(int(r.value[1:]))
    assert all(seq == sorted(seq) for seq in by_key.values()), "a key's records out of order"
    found = [int(n) for n in re.findall(r"(\d+) already written", log)]
    assert sum(found) > 0, "no resend under the old producer id was answered as a duplicate"


def _kill_a_worker(daemon: KpdDaemon) -> None:
    daemon.kill_a_worker()  # returns once the supervisor started its replacement


def _kill_the_daemon(daemon: KpdDaemon) -> None:
    daemon.kill_all()
    daemon.start()


@pytest.mark.parametrize(
    "kill",
    [pytest.param(_kill_a_worker, id="worker"), pytest.param(_kill_the_daemon, id="daemon")],
)
def test_kill_9_with_batches_in_flight_writes_each_record_once(held_tansu, tmp_path, kill):
    hold, tansu = held_tansu
    topic = tansu.create_topic(unique_topic_name("inflight"), 3)
    daemon = KpdDaemon(tmp_path, hold.bootstrap, workers=2).start()
    try:
        _in_flight_then_kill(hold, daemon, topic, kill)
        _check_once_and_in_order(hold, topic, daemon)
    finally:
        daemon.stop()
