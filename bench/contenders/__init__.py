"""The contenders: who produces the workload, and how many processes each uses.

Owns the registry. A contender is a module with ``main(session)`` (see bench.child) run in
``processes`` child processes, each producing one shard of the records (``i % processes``);
the parent sums CPU and delivery over them. Adding a contender is one entry here plus one
module. Two more seams:

* ``service="kpd"`` (``"kpd-eos"``: in exactly-once mode): the runner starts a fresh kpd
  daemon for each run (bench.kpd_service),
  hands its socket to every child as ``options["socket"]``, measures the daemon's processes
  apart from the app's, and stops it with SIGTERM after the run.
* ``binary``: a program the contender drives (kcat); when it is not on PATH the run is
  skipped with that reason instead of failing.

``LATENCY_CONTENDERS`` are the paced runs (``options["rate"]`` records/s offered, in bursts):
they report ack latency percentiles, not throughput.

Imports no client library: the parent only needs names and module paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CONTENDERS",
    "DEFAULT_CONTENDERS",
    "KPD_CONTENDERS",
    "LATENCY_CONTENDERS",
    "QUICK_CONTENDERS",
    "Contender",
]


@dataclass(frozen=True)
class Contender:
    name: str
    module: str  # imported by bench.child; provides main(session)
    description: str
    processes: int = 1
    options: dict = field(default_factory=dict)
    service: str | None = None  # "kpd": the runner starts a daemon per run
    binary: str | None = None  # a program that must be on PATH, else the run is skipped
    install_hint: str = ""  # how to get ``binary``, printed in the skipped row
    max_records: int | None = None  # fewer records for a slow contender (same records/s)


_KPD = "bench.contenders.kpd_engine"
_KPD_CLIENT = "bench.contenders.kpd_client"
_AIOKAFKA = "bench.contenders.aiokafka_producer"
_CONFLUENT = "bench.contenders.confluent_producer"
_KCAT = "bench.contenders.kcat"
LATENCY_RATE = 100_000  # records/s offered by the paced runs
_PACED = {"rate": LATENCY_RATE, "burst": 100}  # 100 records every millisecond

CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender(
            "kpd-engine", _KPD,
            "kpd's ProducerEngine under uvloop, kpd's defaults (256 KiB batch.size, "
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
        Contender(
            "kpd-1", _KPD_CLIENT,
            "kpd end to end: one app process sends through daemon.client.Producer "
            "(acks=kafka) over the UNIX socket to a kpd daemon (2 workers) started for the "
            "run, and waits for every record's future",
            service="kpd",
        ),
        Contender("kpd-4", _KPD_CLIENT, "the same with 4 app processes, one shard each",
                  processes=4, service="kpd"),
        Contender("aiokafka", _AIOKAFKA,
                  "AIOKafkaProducer.send per record, a done-callback each, under uvloop; "
                  "16 KiB batches; idempotence off (tansu 0.6.0 rejects its InitProducerId v0); "
                  "at most 300,000 records per run (it runs ~10x slower than the others, and "
                  "the full bench must stay within ~25 min)",
                  max_records=300_000),
        Contender("confluent-kafka", _CONFLUENT,
                  "confluent_kafka.Producer.produce per record, a delivery callback each; "
                  "librdkafka's default 1 MB batch.size; partitioner murmur2_random"),
        Contender("confluent-kafka-4", _CONFLUENT,
                  "the same in 4 processes, one shard each", processes=4),
        Contender(
            "kcat", _KCAT,
            "`kcat -P -l FILE` (Debian's kcat 1.7 on the confluent-kafka wheel's librdkafka via "
            "LD_LIBRARY_PATH), records prepared in the file before the clock; the clock "
            "includes kcat's start; same librdkafka settings as confluent-kafka",
            binary="kcat", install_hint="apt-get install -y kcat",
        ),
        # Not run by default: kpd with librdkafka's batch size, to tell batch size from engine
        # cost when values are large.
        Contender(
            "kpd-engine-1MB", _KPD, "kpd-engine with batch.size 1000000 (librdkafka's default)",
            options={"partition": "given", "settings": {"batch_size": 1_000_000}},
        ),
        # Not run by default: exactly-once mode (kafka.transactional.id), beside the defaults.
        Contender(
            "kpd-engine-eos", _KPD,
            "kpd-engine in exactly-once mode: transactional.id set, a commit every 100 ms "
            "(transaction.interval.ms), outcomes only once committed",
            options={"partition": "given", "settings": {"transactional_id": "bench-eos"}},
        ),
        Contender(
            "kpd-1-eos", _KPD_CLIENT,
            "kpd-1 with the daemon in exactly-once mode (kafka.transactional.id); records are "
            "acknowledged once their transaction committed",
            service="kpd-eos",
        ),
        Contender(
            "kpd-1@100k", _KPD_CLIENT,
            f"kpd-1 paced at {LATENCY_RATE:,} records/s offered (100 records every ms); "
            "latency from send() to the future's done-callback",
            options=_PACED, service="kpd",
        ),
        Contender(
            "kpd-1@100k-gc", _KPD_CLIENT,
            "kpd-1@100k with the app's gc thresholds raised (gc.set_threshold(100000, 50, 100)),"
            " the tuning docs/operations.md suggests for latency-sensitive apps that keep many"
            " futures alive",
            options={**_PACED, "gc_threshold": [100_000, 50, 100]}, service="kpd",
        ),
        Contender(
            "confluent-kafka@100k", _CONFLUENT,
            f"confluent-kafka paced at {LATENCY_RATE:,} records/s offered; latency from "
            "produce() to the delivery callback (poll() serves callbacks between bursts)",
            options=_PACED,
        ),
    )
}  # fmt: skip

DEFAULT_CONTENDERS = ("kpd-engine", "kpd-engine+part", "kpd-1", "kpd-4", "aiokafka",
                      "confluent-kafka", "confluent-kafka-4", "kcat")  # fmt: skip
# What the test suite's quick run covers: every kind of child that needs no extra package.
QUICK_CONTENDERS = ("kpd-engine", "kpd-engine+part", "kpd-1", "aiokafka", "confluent-kafka")
LATENCY_CONTENDERS = ("kpd-1@100k", "kpd-1@100k-gc", "confluent-kafka@100k")
# Ratios are printed for these against every other contender.
KPD_CONTENDERS = ("kpd-engine", "kpd-engine+part", "kpd-engine-1MB", "kpd-1", "kpd-4",
                  "kpd-engine-eos", "kpd-1-eos")
