"""Admission: the one way records enter kpd's rings, whichever socket they came in on.

``Admission.admit(source, header, ack)`` takes one PRODUCE-shaped unit of records (a
``ProduceHeader`` and its records section) from a *record source* and owns every step
between it and the rings: the topic checks (a legal Kafka name, ``topics.allow``), the
partition-count lookup (``TopicDirectory``, up to ``max.block.ms`` for an unknown topic),
the refusals, the planning into ring entries (``EntryPlanner``), and the enqueue into the ring
of ``worker_for(topic, partition, W)`` with its backpressure (wait for ring space up to
``max.block.ms``, then BUFFER_FULL). It also counts what it accepted and refused, publishes
what it staged, and holds ACCEPTED answers until their entries are published (and synced:
``ring_sync``).

A record source is anything that hands records to ``admit`` (``RecordSource`` below): today a
kpd-protocol client connection (``connection``), a ``socket.lines`` writer (``lines``) and
the ``socket.kafka`` listener (``kafka.listener``, one source for all its Kafka clients).
The interface is small on purpose:

* ``conn_id`` -- from ``next_source_id()``: ring entries carry it, and workers' reports come
  back under it, so it is unique among all sources of this ingest and of earlier ones (the
  Kafka listener's is one fixed id outside that sequence, so that reports of entries an
  earlier ingest wrote reach it); or, for a protocol v2 connection, its session id (bit 63
  set, never a ``next_source_id``): then every entry it stages is journaled in
  ``sessions`` once published;
* ``name`` -- for logs;
* ``batched`` -- whether the source batched its records already (a Kafka client lingers
  before each Produce request): their ring entries carry ``BATCHED`` and a worker sends them
  without lingering a second time;
* ``refused(first_seq, count, code, message, kafka_error)`` -- records admission did not take
  (FAILED, NOT_PERSISTED); admission has counted them already;
* ``reader`` -- the ``ReportReader`` that hears this source's outcomes, or None for a source
  nobody reads from (the write-only lines socket). For ack level ``accepted`` admission
  calls ``reader.owe(n)`` when the entry is staged and ``reader.accepted(frame, n)`` once
  it is published; for ``kafka`` ``reader.owe(n)``, the worker's report pays it off.

``admit`` returns None when it is done (the common case: no awaiting on the hot path) or an
awaitable when the records wait for a lookup or ring space; a source processes its records in
order, so it stops reading until that is done. Owned by ingest's event loop.

Must not import the server, the sources, the producer engine, uvloop or signal handling.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import NamedTuple, Protocol

from daemon.ingest.ring_sync import RingSync
from daemon.ingest.routing import Entry, EntryPlanner
from daemon.ingest.sessions import Sessions, is_session
from daemon.ownership import worker_for
from daemon.ring import RingProducer
from daemon.wire.ring_entry import ENTRY_HEAD_BYTES, entry_head, seq_runs
from kpd.protocol import ReportRun, encode_reports
from kpd.protocol.base import AckLevel, KpdErrorCode, Status
from kpd.protocol.records import ProduceHeader

__all__ = ["Admission", "RecordSource", "ReportReader", "TopicDirectory", "is_legal_topic"]

log = logging.getLogger(__name__)

# Kafka's rule for topic names (org.apache.kafka.common.internals.Topic.validate): 1 to 249
# of [a-zA-Z0-9._-], and not "." or ".." (they would be directory names on the broker).
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def is_legal_topic(topic: str) -> bool:
    """Whether Kafka accepts ``topic`` as a name at all (whether it exists is another matter)."""
    return _LEGAL_TOPIC.fullmatch(topic) is not None and topic not in (".", "..")


class ReportReader(Protocol):
    """Who hears a source's outcomes (a kpd client on its connection)."""

    def owe(self, n: int) -> None:
        """``n`` more records' outcomes are on their way: GOODBYE waits for them."""

    def accepted(self, frame: bytes, n: int) -> None:
        """The ACCEPTED report of ``n`` owed records, now that their entry is published."""


class RecordSource(Protocol):
    """Where records come from (see the module docstring)."""

    conn_id: int
    name: str
    batched: bool
    reader: ReportReader | None
    # Called with (first_seq, ring index, end position) right after each entry of the
    # source's records is staged in a ring, before anything publishes it: a source that must
    # journal what it takes before a worker can see it (the Kafka listener's idempotent
    # batches; ``Admission.before_publish`` writes its lines). None for the others.
    write_ahead: Callable[[int, int, int], None] | None

    def refused(
        self, first_seq: int, count: int, code: KpdErrorCode, message: str, kafka_error: int
    ) -> None:
        """Records ``[first_seq, first_seq + count)`` were not taken (NOT_PERSISTED)."""


_MAX_VERDICTS = 4096


class TopicDirectory:
    """Partition counts by topic, as ingest knows them, plus whether a topic is allowed.

    ``partition_count`` is async: an unknown topic is looked up in Kafka (up to max.block.ms).
    """

    def __init__(
        self,
        allows: Callable[[str], bool],
        resolve: Callable[[str, float], Awaitable[int]],
    ) -> None:
        self._allows = allows
        self._resolve = resolve  # (topic, timeout_s) -> awaitable partition count or raises
        self._counts: dict[str, int] = {}
        # Bumped whenever a known count changes: what admission's routes are valid for.
        self.generation = 0
        # topics.allow's verdict per topic name: the glob match ran per frame (issue 18,
        # finding 7). Bounded: names come from clients, so a stream of new ones clears it.
        self._verdicts: dict[str, bool] = {}

    def allowed(self, topic: str) -> bool:
        verdict = self._verdicts.get(topic)
        if verdict is None:
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.clear()
            verdict = self._verdicts[topic] = self._allows(topic)
        return verdict

    def names(self) -> list[str]:
        """The topics ingest knows, sorted (a Kafka Metadata request for all topics)."""
        return sorted(self._counts)

    def known(self, topic: str) -> int | None:
        """The topic's partition count if ingest knows it, without asking Kafka."""
        return self._counts.get(topic)

    async def partition_count(self, topic: str, timeout_s: float) -> int:
        count = self._counts.get(topic)
        if count is None:
            count = await self._resolve(topic, timeout_s)
            self._counts[topic] = count
            self.generation += 1
        return count

    def update(self, counts: Mapping[str, int]) -> None:
        """Fresh metadata: the topics ingest knows take their new, larger counts (partitions
        are only ever added); topics it never needed stay out."""
        for topic, count in counts.items():
            known = self._counts.get(topic)
            if known is not None and count > known:
                self._counts[topic] = count
                self.generation += 1


class _Route(NamedTuple):
    """What admitting a frame for a topic ingest checked already needs, per topic: valid
    while the directory's ``generation`` is the one it was made at."""

    generation: int
    count: int  # partitions
    topic: bytes  # UTF-8, as ring entries carry it
    limit: int  # the largest records section one ring entry takes beside its head and topic
    rings: list[int]  # worker_for(topic, partition, W) by partition


_MAX_ROUTES = 4096  # topics whose route admission remembers (names come from clients)


class _Idle(Protocol):
    busy: bool
    idle: asyncio.Event


class Admission:
    """Owns the producing end of every records ring, the topic directory, the planner, the
    ACCEPTED answers waiting for a publish, and ingest's record counts."""

    def __init__(
        self,
        records: list[RingProducer],
        topics: TopicDirectory,
        planner: EntryPlanner,
        sync: RingSync,
        max_block_s: float,
        sessions: Sessions | None = None,
    ) -> None:
        self._records = records
        # Protocol v2 sessions: entries of a source whose conn_id is a session id are
        # journaled after their publish, before their announcement (``sessions``).
        self.sessions = sessions
        self.topics = topics
        self.planner = planner
        self.ring_sync = sync
        self.max_block_s = max_block_s
        # Source ids stay unique across ingest restarts: reports of a previous ingest's
        # sources must never reach a new one that reused a small id.
        # Bit 63 stays clear: ids with it set are protocol v2 session ids (kpd.protocol).
        start = (time.time_ns() // 1_000_000) & 0x7FFFFFFF
        self._ids = itertools.count(start << 32)
        self._dirty: set[int] = set()  # rings with staged, unpublished entries
        # Topics found legal, allowed and known, by name (``_route_of``): a frame for one of
        # them is checked with one lookup, and its ring entry needs no planning.
        self._routes: dict[str, _Route] = {}
        # ACCEPTED reports of staged entries: sent once published (and synced, if asked).
        self._unannounced: list[Callable[[], None]] = []
        # Counts for stats(); written only here.
        self.records_accepted = 0
        self.records_rejected = 0
        self.rejected_by_reason: Counter[str] = Counter()  # by KpdErrorCode name
        self.buffer_full_events = 0
        # Called once per publish of staged entries, when set: the metrics count what the
        # rings received at once, not at the next periodic flush, so a killed ingest takes
        # no published record out of kpd_ingest_records_accepted_total (the workers count it).
        self.on_published: Callable[[], None] | None = None
        # Called before any staged entry is published: what a source's ``write_ahead``
        # noted is written out first (the Kafka listener's dedupe journal lines).
        self.before_publish: Callable[[], None] | None = None

    def published_end(self, ring_index: int) -> int:
        """Where the published entries of worker ``ring_index``'s records ring end."""
        return self._records[ring_index].published_end

    @property
    def ring_shape(self) -> tuple[int, int]:
        """(worker count, records ring capacity): what ring positions are positions of."""
        return len(self._records), self._records[0].capacity

    def next_source_id(self) -> int:
        """A ``conn_id`` no other source of this ingest (or of an earlier one) has."""
        return next(self._ids)

    # ---- admitting -----------------------------------------------------------------------

    def admit(self, source: RecordSource, header: ProduceHeader, ack: AckLevel):
        """Check, plan and enqueue one unit of records; None when done, else an awaitable."""
        route = self._routes.get(header.topic)
        if route is None or route.generation != self.topics.generation:
            return self._admit_checked(source, header, ack)
        partition = header.partition
        if partition >= route.count:
            return self._admit_checked(source, header, ack)
        if partition >= 0 and len(header.records) <= route.limit:
            # The common case: a topic checked before, the partition chosen by the client and
            # the records fitting one ring entry as they are.
            return self._enqueue_one(source, route, partition, header, ack)
        return self._route(source, header, ack, route.count)

    def _admit_checked(self, source: RecordSource, header: ProduceHeader, ack: AckLevel):
        """``admit`` for a topic without a valid route: every check, then the route."""
        topic = header.topic
        if not is_legal_topic(topic):
            # kpd decides this itself (asking Kafka would only hold the source for
            # max.block.ms), so its own code, as METADATA answers (docs/protocol.md 10).
            self.refuse(source, header.base_seq, header.count, KpdErrorCode.INVALID_TOPIC,
                        f"topic {topic!r} is not a legal Kafka topic name")  # fmt: skip
            return None
        if not self.topics.allowed(topic):
            self.refuse(source, header.base_seq, header.count, KpdErrorCode.TOPIC_NOT_ALLOWED,
                        f"topic {topic!r} is not in topics.allow")  # fmt: skip
            return None
        count = self.topics.known(topic)
        if count is None or header.partition >= count:
            return self._admit_after_lookup(source, header, ack)
        self._remember_route(topic, count)
        return self._route(source, header, ack, count)

    def _remember_route(self, topic: str, count: int) -> None:
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        encoded = topic.encode()
        workers = len(self._records)
        self._routes[topic] = _Route(
            self.topics.generation,
            count,
            encoded,
            self.planner.max_entry_bytes - ENTRY_HEAD_BYTES - len(encoded),
            [worker_for(topic, partition, workers) for partition in range(count)],
        )

    async def _admit_after_lookup(self, source, header: ProduceHeader, ack: AckLevel) -> None:
        try:
            count = await self.topics.partition_count(header.topic, self.max_block_s)
        except Exception as exc:
            self.refuse(source, header.base_seq, header.count, KpdErrorCode.UNKNOWN_TOPIC,
                        str(exc))  # fmt: skip
            return
        waiting = self._route(source, header, ack, count)
        if waiting is not None:
            await waiting
        self.publish_all()

    def _route(self, source, header: ProduceHeader, ack: AckLevel, count: int):
        if header.partition >= count:
            self.refuse(source, header.base_seq, header.count, KpdErrorCode.INVALID_PARTITION,
                        f"{header.topic} has {count} partitions; no partition "
                        f"{header.partition}")  # fmt: skip
            return None
        planner = self.planner
        entries = planner.fit(header, planner.split(header, count))
        if entries is None:
            self.refuse(source, header.base_seq, header.count, KpdErrorCode.RECORD_TOO_LARGE,
                        "a record does not fit in a worker ring entry of "
                        f"{planner.max_entry_bytes} bytes (half of a worker's records ring: "
                        "raise kpd's rings.memory or rings.records_bytes)")  # fmt: skip
            return None
        return self._enqueue(source, entries, header, ack)

    def refuse(self, source: RecordSource, first_seq: int, count: int, code: KpdErrorCode,
               message: str, kafka_error: int = 0) -> None:  # fmt: skip
        """Answer records FAILED, NOT_PERSISTED, and count them: every record ingest refuses
        passes here, the sources' own refusals (a malformed frame, a draining ingest) too."""
        self.records_rejected += count
        self.rejected_by_reason[code.name] += count
        source.refused(first_seq, count, code, message, kafka_error)

    async def describe(self, topic: str) -> tuple[KpdErrorCode, int]:
        """A METADATA request's answer for ``topic``: (error code, partition count or -1)."""
        if not is_legal_topic(topic):
            return KpdErrorCode.INVALID_TOPIC, -1
        if not self.topics.allowed(topic):
            return KpdErrorCode.TOPIC_NOT_ALLOWED, -1
        try:
            return KpdErrorCode.NONE, await self.topics.partition_count(topic, self.max_block_s)
        except Exception:
            return KpdErrorCode.UNKNOWN_TOPIC, -1

    # ---- into rings ----------------------------------------------------------------------

    def _enqueue_one(self, source, route: _Route, partition: int, header: ProduceHeader,
                     ack: AckLevel):  # fmt: skip
        """``_enqueue`` of a unit that is one ring entry as it came (``admit``'s fast path)."""
        ring_index = route.rings[partition]
        first_seq, n, records = header.base_seq, header.count, header.records
        head = entry_head(source.conn_id, first_seq, n, partition, time.time_ns() // 1_000_000,
                          ack, route.topic, None, source.batched)  # fmt: skip
        ring = self._records[ring_index]
        if not ring.write_parts(head, records):
            entries = [(partition, records, first_seq, n, None)]
            return self._enqueue_when_free(source, entries, header, ack, set())
        if source.write_ahead is not None:
            source.write_ahead(first_seq, ring_index, ring.staged_end)
        self._dirty.add(ring_index)
        self._accepted(source, first_seq, n, partition, ack, None)
        return None

    def _enqueue(self, source, entries: list[Entry], header: ProduceHeader, ack: AckLevel):
        """Stage entries in rings; an awaitable for the rest if a ring is full."""
        topic = header.topic.encode()
        now_ms = time.time_ns() // 1_000_000
        workers = len(self._records)
        for position, (partition, records, first_seq, n, offsets) in enumerate(entries):
            ring_index = worker_for(header.topic, partition, workers)
            ring = self._records[ring_index]
            head = entry_head(source.conn_id, first_seq, n, partition, now_ms, ack, topic,
                              offsets, source.batched)  # fmt: skip
            if not ring.write_parts(head, records):
                started = {entry[0] for entry in entries[:position]}
                return self._enqueue_when_free(source, entries[position:], header, ack, started)
            if source.write_ahead is not None:
                source.write_ahead(first_seq, ring_index, ring.staged_end)
            self._dirty.add(ring_index)
            self._accepted(source, first_seq, n, partition, ack, offsets)
        return None

    async def _enqueue_when_free(self, source, entries, header, ack, started: set[int]) -> None:
        """Wait for ring space, up to max.block.ms, then refuse BUFFER_FULL. A unit is taken
        whole or from its start per partition: once an entry of a partition is in its ring
        (``started``), the unit's later entries of it wait for space however long it takes
        (the worker frees space as Kafka answers or delivery.timeout.ms fails records), and
        once one is refused, so are its later ones. So a Kafka client's batch is never taken
        in part (its retry would produce the part twice), nor a partition's records out of
        order."""
        topic = header.topic.encode()
        refused: set[int] = set()
        workers = len(self._records)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_block_s
        log.debug("%s: a worker's ring is full; reading nothing more from it for up to %.0f ms "
                  "(max.block.ms)", source.name, self.max_block_s * 1000)  # fmt: skip
        self.publish_all()
        for partition, records, first_seq, n, offsets in entries:
            ring_index = worker_for(header.topic, partition, workers)
            ring = self._records[ring_index]
            now_ms = time.time_ns() // 1_000_000
            head = entry_head(source.conn_id, first_seq, n, partition, now_ms, ack, topic,
                              offsets, source.batched)  # fmt: skip
            size = len(head) + len(records)
            written = False
            while partition not in refused and not (written := ring.write_parts(head, records)):
                if partition in started:
                    await ring.wait_writable(size)
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or not await ring.wait_writable(size, timeout=remaining):
                    break
            if not written:
                refused.add(partition)
                self.buffer_full_events += 1
                message = f"worker ring full for {self.max_block_s * 1000:.0f} ms (max.block.ms)"
                for seq, _, k in _runs_of(first_seq, n, offsets):
                    self.refuse(source, seq, k, KpdErrorCode.BUFFER_FULL, message)
                continue
            if source.write_ahead is not None:
                source.write_ahead(first_seq, ring_index, ring.staged_end)
            if self.before_publish is not None:
                self.before_publish()
            ring.publish()
            started.add(partition)
            self._accepted(source, first_seq, n, partition, ack, offsets)
            self._announce([ring_index])

    def _accepted(self, source, first_seq: int, n: int, partition: int, ack, offsets) -> None:
        self.records_accepted += n
        if self.sessions is not None and is_session(source.conn_id):
            self.sessions.taken(source.conn_id, first_seq, n, offsets, partition, ack)
        reader = source.reader
        if reader is None or ack == AckLevel.NONE:
            return
        reader.owe(n)  # ack KAFKA: the worker reports them
        if ack == AckLevel.ACCEPTED:
            runs = [
                ReportRun(seq, k, Status.ACCEPTED, partition)
                for seq, _, k in _runs_of(first_seq, n, offsets)
            ]
            frame = encode_reports(runs)
            self._unannounced.append(lambda: reader.accepted(frame, n))

    def publish_all(self) -> None:
        """Publish staged entries: one index store and at most one wake-up per ring."""
        if self._dirty and self.before_publish is not None:
            self.before_publish()
        for index in self._dirty:
            self._records[index].publish()
        if self._dirty and self.on_published is not None:
            self.on_published()
        self._announce(self._dirty)
        self._dirty.clear()

    def _announce(self, published: Iterable[int]) -> None:
        announce = self._unannounced
        if announce:
            self._unannounced = []
        if self.sessions is not None:
            self.sessions.published()  # the entries' journal lines, before ACCEPTED
        if announce or published:
            self.ring_sync.published(published, announce)

    # ---- draining ------------------------------------------------------------------------

    async def wait_idle(self, sources: Callable[[], Iterable[_Idle]]) -> None:
        """Until none of ``sources()`` is busy (records waiting in ``admit`` for a lookup or
        ring space), at most ``max.block.ms``: a draining listener's last step."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_block_s
        while True:
            busy = [source.idle for source in sources() if source.busy]
            remaining = deadline - loop.time()
            if not busy or remaining <= 0:
                return
            waits = [loop.create_task(idle.wait()) for idle in busy]
            _, pending = await asyncio.wait(waits, timeout=remaining)
            for wait in pending:
                wait.cancel()


def _runs_of(first_seq: int, n: int, offsets) -> list[tuple[int, int, int]]:
    """An entry's records as (first seq, index, count) runs of consecutive sequence numbers."""
    if offsets is None:
        return [(first_seq, 0, n)]
    return [(first_seq + offset, index, k) for offset, index, k in seq_runs(offsets, 0, n)]
