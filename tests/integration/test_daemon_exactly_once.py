"""The real daemon in exactly-once mode (``kafka.transactional.id``): kill -9 of a worker,
kill -9 of the whole daemon and a restart with another worker count, a second kpd with the
same transactional id. Every check reads the committed view from the log with the oracle
(tests/brokers/txn_log.py), because tansu's read_committed consumers see aborted records.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from tests.brokers import unique_topic_name
from tests.brokers.txn_log import read_committed
from tests.daemon_harness import KpdDaemon, wait_for
from tests.integration.test_daemon_lifecycle import LoadClient

pytestmark = pytest.mark.timeout(240)


def _eos(base: str, interval_ms: int = 50, **kafka) -> dict:
    return {"kafka": {"transactional.id": base, "transaction.interval.ms": interval_ms, **kafka}}


def _committed_values(bootstrap: str, topic: str, partitions: int):
    views = read_committed(bootstrap, topic, partitions)
    values = Counter(r.value for v in views.values() for r in v.visible)
    return views, values


def _assert_committed_once(
    bootstrap: str, topic: str, partitions: int, client: str, count: int, *also: tuple[str, int]
):
    """Every record ``<client>-0`` .. ``<client>-<count - 1>`` (and those of the ``also``
    clients, ``(client, count)`` each) is committed exactly once, and nothing else; returns
    the committed views."""
    views, values = _committed_values(bootstrap, topic, partitions)
    for name, n in ((client, count), *also):
        missing = [i for i in range(n) if values[f"{name}-{i}".encode()] == 0]
        assert not missing, f"{len(missing)} acknowledged records not committed, e.g. {missing[:5]}"
    count += sum(n for _, n in also)
    doubled = sorted(v for v, n in values.items() if n > 1)
    where = {}  # for the diagnosis: where the copies of a double are
    for p, view in views.items():
        for record in view.visible:
            if record.value in doubled[:3]:
                where.setdefault(record.value, []).append((p, record.offset))
    assert not doubled, f"{len(doubled)} records committed twice, e.g. {where}"
    assert sum(values.values()) == count
    return views


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _assert_key_order(views) -> None:
    """Within a partition, each key's records are committed in the order the client sent."""
    for view in views.values():
        last: dict[bytes, int] = {}
        for record in view.visible:
            index = int(record.value.rsplit(b"-", 1)[1])
            assert last.get(record.key, -1) < index, f"key {record.key!r} out of order"
            last[record.key] = index


def test_sigkilled_worker_leaves_every_accepted_record_committed_exactly_once(tansu, tmp_path):
    topic = "eos-sigkill-worker"
    tansu.create_topic(topic, 6)
    count = 30_000
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=_eos(topic)) as daemon:
        client = LoadClient(daemon, topic, "k", count)
        wait_for(lambda: client.progress() >= count // 3, 60, "a third of the records sent")
        daemon.kill_a_worker()
        results = client.wait()
        assert daemon.stop() == 0
    failed = [r for r in results if r[1] != "ok"]
    assert not failed, f"{len(failed)} records failed, first {failed[:3]}"

    views = _assert_committed_once(tansu.bootstrap, topic, 6, "k", count)
    assert all(v.open_transactions == {} for v in views.values())
    _assert_key_order(views)
    # Every reported offset holds that very record in the committed view.
    at = {(p, r.offset): r.value for p, v in views.items() for r in v.visible}
    for index, _, partition, offset in results:
        assert at[(partition, offset)] == f"k-{index}".encode()


def test_daemon_killed_then_restarted_with_another_worker_count_fences_the_old_ids(tansu, tmp_path):
    topic = "eos-relayout"
    tansu.create_topic(topic, 4)
    # Long transactions: when kpd is killed, its workers' transactions are open.
    first = KpdDaemon(tmp_path, tansu.bootstrap, workers=2, extra=_eos(topic, 50_000))
    first.start()
    accepted = LoadClient(first, topic, "a", 2000, acks="accepted").wait()
    assert len(accepted) == 2000 and all(r[1] == "ok" for r in accepted), accepted[:3]
    wait_for(
        lambda: sum(len(v.open_transactions) for v in read_committed(
            tansu.bootstrap, topic, 4).values()) >= 2,
        30, "both workers' transactions open in the log",
    )  # fmt: skip
    children = first.child_pids("worker") + first.child_pids("ingest")
    for pid in [first.process.pid, *children]:
        os.kill(pid, signal.SIGKILL)
    first.process.wait()
    first._log.close()
    # Its ingest must be gone before the next daemon starts: a live one still answers on the
    # same socket path, and the harness would take it for the new daemon.
    wait_for(lambda: not any(_alive(pid) for pid in children), 30, "the killed children gone")

    second = KpdDaemon(
        tmp_path, tansu.bootstrap, workers=3,
        extra={**_eos(topic), "rings": {"prefix": first.prefix}},
    )  # fmt: skip
    with second:
        log = second.log_tail(20000)
        assert "worker layout changed from 2 to 3 workers" in log
        for index in range(2):
            assert f"{topic}-2-{index}" in log
        results = LoadClient(second, topic, "b", 3000).wait()
        assert second.stop() == 0
    assert all(r[1] == "ok" for r in results)

    views, values = _committed_values(tansu.bootstrap, topic, 4)

    # The killed daemon's open transactions were aborted by the fence, not left open (which
    # would hold back read_committed consumers until transaction.timeout.ms).
    assert all(v.open_transactions == {} for v in views.values())
    assert sum(v.aborted for v in views.values()) >= 2
    # The killed daemon's accepted records were in its ring files: the new daemon re-routed
    # them to its 3 workers and committed them, each once (the aborted copies are not seen).
    assert sorted(values) == sorted(
        [f"a-{i}".encode() for i in range(2000)] + [f"b-{i}".encode() for i in range(3000)]
    )
    assert set(values.values()) == {1}


def test_a_second_kpd_with_the_same_transactional_id_fences_the_first(tansu, tmp_path):
    topic = "eos-two-daemons"
    tansu.create_topic(topic, 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with KpdDaemon(tmp_path / "a", tansu.bootstrap, workers=1, extra=_eos(topic)) as first:
        assert all(r[1] == "ok" for r in LoadClient(first, topic, "a", 100).wait())
        with KpdDaemon(tmp_path / "b", tansu.bootstrap, workers=1, extra=_eos(topic)) as second:
            assert all(r[1] == "ok" for r in LoadClient(second, topic, "b", 100).wait())
            late = LoadClient(first, topic, "late", 100).wait()
            assert second.stop() == 0
        assert first.stop() == 0  # the fenced daemon keeps running and stops cleanly
        log = first.log_tail(20000)
    assert all(r[1].startswith("failed:") for r in late), late[:3]
    assert any("FENCED" in r[1] or "INVALID_PRODUCER_EPOCH" in r[1] for r in late), late[:3]
    assert "writes nothing more" in log

    _, values = _committed_values(tansu.bootstrap, topic, 1)
    assert sorted(values) == sorted(
        [f"a-{i}".encode() for i in range(100)] + [f"b-{i}".encode() for i in range(100)]
    )


END_TXN = 26  # the Kafka API key


def _kill_the_worker(daemon: KpdDaemon) -> None:
    daemon.kill_a_worker()


def _kill_the_daemon(daemon: KpdDaemon) -> None:
    daemon.kill_all()
    daemon.start()


@pytest.mark.parametrize(
    "kill",
    [pytest.param(_kill_the_worker, id="worker"), pytest.param(_kill_the_daemon, id="daemon")],
)
def test_a_kill_between_the_coordinators_commit_and_its_answer_writes_nothing_twice(
    held_tansu, tmp_path, kill
):
    """The commit window: EndTxn reaches the coordinator, which commits; its answer is held
    back, and the worker is killed before it hears it. The adopter must find the commit's
    marker (commit_journal) and report those records instead of producing them again."""
    hold, tansu = held_tansu
    topic = tansu.create_topic(unique_topic_name("eos-window"), 3)
    # Long transactions: the commit held is one the client's records are surely in.
    extra = _eos(topic, interval_ms=2_000)
    daemon = KpdDaemon(tmp_path, hold.bootstrap, workers=1, extra=extra).start()
    try:
        first = LoadClient(daemon, topic, "a", 3_000, acks="accepted").wait()
        assert all(r[1] == "ok" for r in first), first[:3]
        hold.hold_after(END_TXN)
        wait_for(lambda: hold.answer_bytes_held > 0, 30, "an EndTxn answer held back")
        kill(daemon)
        hold.release()
        second = LoadClient(daemon, topic, "b", 3_000).wait()
        assert all(r[1] == "ok" for r in second), second[:3]
        assert daemon.stop() == 0, daemon.log_tail()
        log = daemon.log_path.read_text()
    finally:
        daemon.stop()
    views = _assert_committed_once(hold.bootstrap, topic, 3, "a", 3_000, ("b", 3_000))
    _assert_key_order(views)
    assert "the last commit before the restart happened" in log, log[-3000:]
