"""The contenders: who produces the workload, and how many processes each uses.

Owns the registry. A contender is a module with ``main(session)`` (see bench.child) run in
``processes`` child processes, each producing one shard of the records (``i % processes``);
the parent sums CPU and delivery over them. Adding a contender is one entry here plus one
module. The seams the later contenders need already exist:

* confluent-kafka in 4 processes: ``Contender("confluent-kafka-x4", _CONFLUENT, processes=4)``.
* kpd end to end through its socket (1 or 4 client processes): a module that starts the daemon
  (or is handed its socket in ``options``), sends through ``daemon.client`` and passes the
  daemon's pids to ``session.ready(measure_pids=...)`` so its CPU and RSS count too.
* ``kcat -P``: a module that writes the records to a kcat child (Debian's kcat with
  ``LD_LIBRARY_PATH`` at the confluent-kafka wheel's librdkafka) and reports kcat's pid the
  same way.

Imports no client library: the parent only needs names and module paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CONTENDERS", "DEFAULT_CONTENDERS", "KPD_CONTENDERS", "Contender"]


@dataclass(frozen=True)
class Contender:
    name: str
    module: str  # imported by bench.child; provides main(session)
    description: str
    processes: int = 1
    options: dict = field(default_factory=dict)


_KPD = "bench.contenders.kpd_engine"
_AIOKAFKA = "bench.contenders.aiokafka_producer"
_CONFLUENT = "bench.contenders.confluent_producer"

CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender(
            "kpd-engine", _KPD,
            "kpd's ProducerEngine under uvloop, Kafka's defaults (16 KiB batch.size, "
            "idempotence on); partitions chosen before the clock, as kpd's ingest does for "
            "its workers",
            options={"partition": "given"},
        ),
        Contender(
            "kpd-engine+part", _KPD,
            "the same, choosing each record's partition in the timed loop (murmur2 / sticky), "
            "as the other clients do inside send",
            options={"partition": "inline"},
        ),
        Contender("aiokafka", _AIOKAFKA,
                  "AIOKafkaProducer.send per record, a done-callback each, under uvloop; "
                  "16 KiB batches; idempotence off (tansu 0.6.0 rejects its InitProducerId v0)"),
        Contender("confluent-kafka", _CONFLUENT,
                  "confluent_kafka.Producer.produce per record, a delivery callback each; "
                  "librdkafka's default 1 MB batch.size; partitioner murmur2_random"),
        # Not run by default: kpd with librdkafka's batch size, to tell batch size from engine
        # cost when values are large (16 KiB holds only 15 records of 1 KiB).
        Contender(
            "kpd-engine-1MB", _KPD, "kpd-engine with batch.size 1000000 (librdkafka's default)",
            options={"partition": "given", "settings": {"batch_size": 1_000_000}},
        ),
    )
}  # fmt: skip

DEFAULT_CONTENDERS = ("kpd-engine", "kpd-engine+part", "aiokafka", "confluent-kafka")
# Ratios are printed for these against every other contender.
KPD_CONTENDERS = ("kpd-engine", "kpd-engine+part", "kpd-engine-1MB")
