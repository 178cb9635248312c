"""A worker's batches in flight to Kafka, journaled so that a kill -9 does not write them twice.

Owns the records ring's flight journal (``flight_journal``): ``journal`` stages and publishes
the slots of one Produce request just before it is written; ``released`` lets slots die with
their entries. At adoption (``open`` found slots a predecessor left), ``resend`` rebuilds those
batches from the unreleased ring entries (``resend_plan``), has the engine send them under the
predecessor's producer id and epoch (``ProducerEngine.resend``), and returns the done-journal
runs of the records the broker has now (appended now, or already), which the worker then
reports as recorded outcomes instead of producing them again. Records whose batch the broker
no longer recognises (``Verdict.FORGOTTEN``) or that cannot be rebuilt are left to the ordinary
replay under the worker's own new producer id: they may be written twice, and are counted
(``kpd_resent_records_total{outcome="forgotten"}``) and logged.

The adopter then takes a new producer id, as Java's and librdkafka's idempotent producers do
when they start without their predecessor's memory (only a transactional id keeps a producer id
across instances): the old id's sequences are not continued, since only the partitions that had
batches in flight are in the journal, and the next sequence of every other one is unknown.

Owned by the worker's event loop. Must not import the process layer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from daemon.producer.engine import ProducerEngine, accumulator_settings
from daemon.producer.resend import Verdict, stamped_batch
from daemon.ring import LAYOUT_VERSION, RingConsumer
from daemon.wire.ring_entry import decode_records_entry
from daemon.worker.done_journal import DoneRun
from daemon.worker.flight_journal import FlightBatch, FlightJournal, topic_crc
from daemon.worker.resend_plan import TakenEntry, done_runs, rebuild

__all__ = ["InFlight"]

log = logging.getLogger(__name__)


class InFlight:
    """One records ring's flight journal and what a predecessor left in it."""

    def __init__(self, journal: FlightJournal, records: RingConsumer, adopted: list) -> None:
        self._journal = journal
        self._records = records
        self.adopted: list[FlightBatch] = adopted  # slots a predecessor left, until resent
        self._crcs: dict[str, int] = {}

    @classmethod
    def open(cls, path: str, records: RingConsumer) -> InFlight:
        journal, adopted = FlightJournal.open(
            path,
            release_pos=records.cursor,
            ring_layout=LAYOUT_VERSION,
            entry_format=records.labels.format,
        )
        return cls(journal, records, adopted)

    # ---- the sender's hook -----------------------------------------------------------------

    def topic_crc(self, topic: str) -> int:
        crc = self._crcs.get(topic)
        if crc is None:
            crc = self._crcs[topic] = topic_crc(topic)
        return crc

    def journal(self, flights: list[FlightBatch]) -> None:
        """A Produce request's batches, published with one store before it is written."""
        journal = self._journal
        for flight in flights:
            journal.add(flight)
        journal.commit()

    def released(self, release_pos: int) -> None:
        self._journal.released(release_pos)

    def close(self) -> None:
        self._journal.close()

    # ---- adoption --------------------------------------------------------------------------

    async def resend(
        self, engine: ProducerEngine, done: Mapping[int, list[DoneRun]]
    ) -> list[DoneRun]:
        """Resend the adopted batches under their producer id (see the module docstring);
        the done-journal runs of the records the broker has now."""
        flights, self.adopted = self.adopted, []
        entries = self._unreleased(max(flight.last_end for flight in flights))
        settings = accumulator_settings(engine.settings)

        def build(records: list[tuple], flight: FlightBatch) -> bytes:
            return stamped_batch(settings, records, flight.producer_id, flight.epoch,
                                 flight.base_sequence)  # fmt: skip

        rebuilt, broken = rebuild(flights, entries, done, build)
        if broken:
            log.warning("flight journal: %d batches in flight at the predecessor's end cannot "
                        "be rebuilt; their records are produced again and may be written "
                        "twice", len(broken))  # fmt: skip
        if not rebuilt:
            return []
        results = await engine.resend([item.batch for item in rebuilt])
        runs: list[DoneRun] = []
        tally = dict.fromkeys(Verdict, 0)
        for item, result in zip(rebuilt, results, strict=True):
            tally[result.verdict] += item.batch.record_count
            runs.extend(done_runs(item, result))
            if result.verdict is Verdict.FORGOTTEN:
                log.warning("%s-%d: a batch of %d records in flight at the predecessor's end "
                            "could not be resent under its producer id (%s); produced again "
                            "under the new one, it may be written twice", item.batch.topic,
                            item.batch.partition, item.batch.record_count,
                            result.why)  # fmt: skip
        log.info("flight journal: resent %d batches under the predecessor's producer id: "
                 "%d records appended, %d already written, %d produced again",
                 len(rebuilt), tally[Verdict.APPENDED], tally[Verdict.DUPLICATE],
                 tally[Verdict.FORGOTTEN])  # fmt: skip
        return runs

    def _unreleased(self, up_to: int) -> list[TakenEntry]:
        """The ring's unreleased entries up to the one ending at ``up_to``, decoded; the ring
        is rewound after, so the worker reads them all again."""
        records = self._records
        taken: list[TakenEntry] = []
        try:
            while records.cursor < up_to:
                batch = records.read_entries(max_bytes=1 << 20)
                if not batch:
                    break
                for end_pos, payload in batch:
                    seal = records.seal_of(end_pos, len(payload))
                    taken.append(TakenEntry(end_pos, seal, decode_records_entry(payload)))
        finally:
            records.rewind()
        return taken
