"""One Producer object across kpd restarts, with no app code change: SIGTERM + start, kill -9
of the ingest process, kill -9 of the whole daemon + start. The real daemon runs as a
subprocess, tansu is the broker, confluent-kafka's consumer reads back what Kafka holds.

What each scenario guarantees (and the tests check), given that the client never resends a
record that may have been written (in-flight records at a break fail POSSIBLY_PERSISTED: kpd
cannot recognise a resend) and resends what a draining kpd refused (SHUTTING_DOWN /
NOT_PERSISTED: certainly not taken):

* every record whose future succeeded is in Kafka;
* every record that failed NOT_PERSISTED is not in Kafka, and nothing unsent is in Kafka;
* SIGTERM + start with a healthy broker: no record fails at all, none is in Kafka twice (kpd
  drains what it took, refuses the rest, and the client sends that again);
* kill -9 of ingest: no record is in Kafka twice; those in flight fail POSSIBLY_PERSISTED (they
  are in the workers' rings and usually delivered: their reports died with ingest);
* kill -9 of the whole daemon: a record may be in Kafka twice only if it was in flight at the
  kill (a ring entry replayed after the restart, when the rings outlive the daemon), so
  duplicates are bounded by what was in flight, and POSSIBLY_PERSISTED records may or may not
  be in Kafka.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections import Counter

import pytest

from kpd import AsyncProducer, DeliveryError, Persistence, Producer
from tests.brokers.reader import read_all
from tests.daemon_harness import KpdDaemon, wait_for

pytestmark = pytest.mark.timeout(240)

CHUNK = 200  # the app flushes every CHUNK records, as an app that checks its results would


class App:
    """An app sending ``r-<i>`` records continuously through one producer, on its own thread,
    until stopped; it records each record's outcome."""

    def __init__(self, socket_path: str, topic: str, flavour: str) -> None:
        self.socket_path = socket_path
        self.topic = topic
        self.flavour = flavour
        self.sent = 0  # records handed to send()
        self.max_ok = -1  # highest index whose future succeeded, after its chunk's flush
        self.outcomes: dict[int, object] = {}  # index -> "ok" or DeliveryError
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> App:
        self._thread.start()
        return self

    def finish(self) -> dict[int, object]:
        self.stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the app did not finish"
        if self.error is not None:
            raise self.error
        return self.outcomes

    def _main(self) -> None:
        try:
            if self.flavour == "sync":
                self._run_sync()
            else:
                asyncio.run(self._run_async())
        except BaseException as exc:  # the test reports it
            self.error = exc

    def _note(self, chunk) -> None:
        for index, future in chunk:
            error = future.exception(0)
            self.outcomes[index] = "ok" if error is None else error
            if error is None:
                self.max_ok = max(self.max_ok, index)

    def _run_sync(self) -> None:
        producer = Producer(self.socket_path, acks="kafka", linger_ms=5, max_block_ms=30_000)
        while not self.stop.is_set():
            chunk = []
            for _ in range(CHUNK):
                chunk.append((self.sent, producer.send(self.topic, f"r-{self.sent}".encode())))
                self.sent += 1
            producer.flush(60)
            self._note(chunk)
        producer.close(60)

    async def _run_async(self) -> None:
        producer = AsyncProducer(self.socket_path, acks="kafka", linger_ms=5, max_block_ms=30_000)
        await producer.start()
        while not self.stop.is_set():
            chunk = []
            for _ in range(CHUNK):
                value = f"r-{self.sent}".encode()
                chunk.append((self.sent, await producer.send(self.topic, value)))
                self.sent += 1
            await producer.flush(60)
            self._note(chunk)
        await producer.close(60)


def _kill_whole_daemon(daemon: KpdDaemon) -> None:
    """kill -9 of every kpd process (the children first: they are not in a group of their own
    here, and the supervisor must not restart them)."""
    pids = daemon.child_pids("worker") + daemon.child_pids("ingest")
    os.kill(daemon.process.pid, signal.SIGKILL)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    daemon.process.wait(30)
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), 30, "children gone")


def _restart(daemon: KpdDaemon, fault: str) -> None:
    if fault == "sigterm":
        assert daemon.stop() == 0
        daemon.start()
    elif fault == "kill-ingest":
        (victim,) = daemon.child_pids("ingest")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: daemon.child_pids("ingest") not in ([], [victim]), 30, "a new ingest")
    else:
        _kill_whole_daemon(daemon)
        daemon._log.close()
        daemon.start()


@pytest.mark.parametrize(
    ("flavour", "fault"),
    [
        ("sync", "sigterm"),
        ("sync", "kill-ingest"),
        ("sync", "kill-daemon"),
        ("asyncio", "sigterm"),
        ("asyncio", "kill-ingest"),
        ("asyncio", "kill-daemon"),
    ],
)
def test_one_producer_keeps_sending_across_a_kpd_restart(tansu, tmp_path, flavour, fault):
    topic = f"reconnect-{flavour}-{fault}"
    tansu.create_topic(topic, 4)
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=2) as daemon:
        app = App(daemon.socket_path, topic, flavour).start()
        wait_for(lambda: app.max_ok >= 5 * CHUNK or app.error, 60, "records delivered before")
        _restart(daemon, fault)
        mark = app.sent
        wait_for(lambda: app.max_ok >= mark + 5 * CHUNK or app.error, 90, "records delivered after")
        outcomes = app.finish()
        assert daemon.stop() == 0
    delivered = {i for i, outcome in outcomes.items() if outcome == "ok"}
    failed = {i: outcome for i, outcome in outcomes.items() if outcome != "ok"}
    records = read_all(tansu.bootstrap, topic, len(delivered), timeout_s=60, exact=False)
    seen = Counter(int(r.value.split(b"-")[1]) for r in records)
    missing = sorted(delivered - set(seen))
    assert not missing, f"{len(missing)} delivered records not in Kafka, first {missing[:5]}"
    assert set(seen) <= set(outcomes), "Kafka holds records the app never sent"
    for index, error in failed.items():
        assert isinstance(error, DeliveryError), error
        if error.persistence is Persistence.NOT_PERSISTED:
            assert index not in seen, f"record {index} failed NOT_PERSISTED but is in Kafka"
    possibly = sum(e.persistence is Persistence.POSSIBLY_PERSISTED for e in failed.values())
    duplicates = {i: n for i, n in seen.items() if n > 1}
    print(  # the figures for a report: pytest -s
        f"{flavour}/{fault}: sent {len(outcomes)}, delivered {len(delivered)}, "
        f"possibly {possibly}, not persisted {len(failed) - possibly}, in Kafka {len(seen)}, "
        f"twice {len(duplicates)}"
    )
    if fault == "kill-daemon":
        # Only what was in flight at the kill can come back twice (replayed ring entries).
        assert len(duplicates) <= possibly + 2 * CHUNK, duplicates
    else:
        assert not duplicates, f"{len(duplicates)} records twice, e.g. {list(duplicates)[:5]}"
    if fault == "sigterm":
        assert not failed, f"{len(failed)} records failed across a graceful restart"
    # The same producer object delivered records sent after the restart: no app code change.
    assert max(delivered) >= mark + 5 * CHUNK


def test_send_with_kpd_down_fails_after_max_block_naming_the_socket_then_recovers(tansu, tmp_path):
    topic = "reconnect-max-block"
    tansu.create_topic(topic, 1)
    with KpdDaemon(tmp_path, tansu.bootstrap, workers=1) as daemon:
        producer = Producer(daemon.socket_path, max_block_ms=500)
        assert producer.send(topic, b"before").result(30).offset >= 0
        assert daemon.stop() == 0
        error = producer.send(topic, b"while-down").exception(30)
        assert isinstance(error, DeliveryError)
        assert error.persistence is Persistence.NOT_PERSISTED
        assert f"is kpd running? socket: {daemon.socket_path}" in error.message
        assert "max.block.ms 500" in error.message
        daemon.start()
        # kpd is back: the same producer reconnects by itself within its backoff.
        wait_for(lambda: producer.send(topic, b"after").exception(30) is None, 30, "a delivery")
        producer.close(30)
    values = [r.value for r in read_all(tansu.bootstrap, topic, 2, timeout_s=30, exact=False)]
    assert values[0] == b"before" and b"after" in values and b"while-down" not in values
