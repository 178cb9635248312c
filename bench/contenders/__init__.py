"""The contenders: who produces the workload, and how many processes each uses.

Owns the registry. A contender is a module with ``main(session)`` (see bench.child) run in
``processes`` child processes, each producing one shard of the records (``i % processes``);
the parent sums CPU and delivery over them. Adding a contender is one entry here plus, for a
new kind of client, one module; bench.plan says which workloads run it by default. Seams:

* ``service="kpd"``: the runner starts a fresh kpd daemon for each run (bench.kpd_service),
  hands its socket to every child as ``options["socket"]``, measures the daemon's processes
  apart from the app's, and stops it with SIGTERM after the run. ``service_settings`` are
  config sections laid over the daemon's bench config, e.g. ``{"workers": {"count": 1}}``
  (the scaling table, see ``scaling_contender``) or ``{"rings": {...}}`` for a durability row.
  ``{"socket": {"kafka": "auto"}}`` opens kpd's Kafka listener on a free loopback port, and
  the children's bootstrap is that listener instead of the broker (a Kafka client through
  kpd).
* ``binary``: a program the contender drives (kcat, rsyslogd); when it is not on PATH the run
  is skipped with that reason instead of failing. What only the child can tell (a missing
  client API, a missing rsyslog module) it reports with ``Session.skip``.
* ``lines``: the contender reads text lines (``kpd send``, rsyslog) and runs only on a text
  workload (bench.workloads).

``LATENCY_CONTENDERS`` are the paced runs (``options["rate"]`` records/s offered, in bursts
every millisecond), kpd-1 and confluent-kafka at each of ``LATENCY_RATES``: they report ack
latency percentiles, not throughput.

Imports no client library: the parent only needs names and module paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "CONTENDERS",
    "LATENCY_CONTENDERS",
    "LATENCY_RATES",
    "PACED_CLIENTS",
    "Contender",
    "find",
    "is_kpd",
    "paced_name",
    "scaling_contender",
]


@dataclass(frozen=True)
class Contender:
    name: str
    module: str  # imported by bench.child; provides main(session)
    description: str
    processes: int = 1
    options: dict = field(default_factory=dict)
    service: str | None = None  # "kpd": the runner starts a daemon per run
    service_settings: dict = field(default_factory=dict)  # daemon config sections, laid over
    binary: str | None = None  # a program that must be on PATH, else the run is skipped
    install_hint: str = ""  # how to get ``binary``, printed in the skipped row
    max_records: int | None = None  # fewer records for a slow contender (same records/s)
    lines: bool = False  # reads text lines: runs on text workloads only


def is_kpd(name: str) -> bool:
    """kpd's own contenders (the engine, the client, ``kpd send``): ratios are kpd / other."""
    return name.startswith("kpd")


_KPD = "bench.contenders.kpd_engine"
_KPD_CLIENT = "bench.contenders.kpd_client"
_KPD_SEND = "bench.contenders.kpd_send"
_AIOKAFKA = "bench.contenders.aiokafka_producer"
_CONFLUENT = "bench.contenders.confluent_producer"
_KCAT = "bench.contenders.kcat"
_RSYSLOG = "bench.contenders.rsyslog"
# Records/s offered by the paced runs (issue 18: the loads hosts really run at), each in
# bursts every millisecond: 1, 10 and 100 records per burst.
LATENCY_RATES = (1_000, 10_000, 100_000)
# Side by side at each rate; confluent-kafka-via-kpd: the same client through kpd's Kafka
# listener (issue 20).
PACED_CLIENTS = ("kpd-1", "confluent-kafka", "confluent-kafka-via-kpd")
FSYNC_POLICIES = ("never", "100ms", "always")  # the rings.fsync rows
# The paced kpd runs keep kpd's default metrics.enabled (the throughput rows turn it off), so
# the runner can read the per-record stage trace from /metrics; port 0: the service picks one.
_METRICS_ON = {"metrics": {"enabled": True, "listen": "127.0.0.1:0"}}
_POLL_EVERY = 1000  # the tuned confluent-kafka loop's poll(0) interval
_VIA_KPD = {"socket": {"kafka": "auto"}}  # bootstrap.servers at kpd's Kafka listener
_KPD_APP = ("an app process that connects and sends at once (no partitions_for first) "
            "through kpd.Producer (acks=kafka) over the UNIX socket to a kpd "
            "daemon (its default worker count) started for the run")  # fmt: skip


def paced_name(client: str, rate: int) -> str:
    """``kpd-1@1k``: ``client`` paced at ``rate`` records/s (a multiple of 1,000)."""
    return f"{client}@{rate // 1000}k"


def _paced(rate: int) -> dict:
    """Options of a paced run: ``rate`` records/s in bursts every millisecond."""
    return {"rate": rate, "burst": max(1, rate // 1000)}


def _paced_contenders() -> list[Contender]:
    made = []
    for rate in LATENCY_RATES:
        burst = _paced(rate)["burst"]
        every = f"{rate:,} records/s offered ({burst} record{'s' if burst > 1 else ''} every ms)"
        made += [
            Contender(
                paced_name("kpd-1", rate), _KPD_CLIENT,
                f"kpd-1 paced at {every}, the app's default gc settings, kpd at its defaults "
                "(metrics on); latency from send() to the future's done-callback",
                options=_paced(rate), service="kpd", service_settings=_METRICS_ON,
            ),
            Contender(
                paced_name("confluent-kafka", rate), _CONFLUENT,
                f"confluent-kafka paced at {every}; latency from produce() to the delivery "
                "callback (poll() serves callbacks between bursts; on a full local queue, "
                "BufferError, it polls and retries, counting the waits)",
                options=_paced(rate),
            ),
            Contender(
                paced_name("confluent-kafka-via-kpd", rate), _CONFLUENT,
                f"{paced_name('confluent-kafka', rate)} through kpd's Kafka listener "
                "(confluent-kafka-via-kpd)",
                options=_paced(rate), service="kpd",
                service_settings={**_VIA_KPD, **_METRICS_ON},
            ),
        ]  # fmt: skip
    return made


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
        # kpd with librdkafka's batch size, to tell batch size from engine cost when values
        # are large.
        Contender(
            "kpd-engine-1MB", _KPD, "kpd-engine with batch.size 1000000 (librdkafka's default)",
            options={"partition": "given", "settings": {"batch_size": 1_000_000}},
        ),
        Contender("kpd-1", _KPD_CLIENT,
                  f"kpd end to end: {_KPD_APP}; one send() per record, every future kept "
                  "until flush()",
                  service="kpd"),
        Contender("kpd-4", _KPD_CLIENT, "kpd-1 with 4 app processes, one shard each",
                  processes=4, service="kpd"),
        Contender("kpd-1-nokeep", _KPD_CLIENT,
                  "kpd-1 keeping no future (each dropped at once; flush() at the end)",
                  options={"keep": "none"}, service="kpd"),
        Contender("kpd-4-nokeep", _KPD_CLIENT, "kpd-1-nokeep with 4 app processes",
                  processes=4, options={"keep": "none"}, service="kpd"),
        Contender("kpd-1-warm", _KPD_CLIENT,
                  "kpd-1 connecting and calling partitions_for(topic) before the clock",
                  options={"start": "warm"}, service="kpd"),
        Contender("kpd-4-warm", _KPD_CLIENT, "kpd-1-warm with 4 app processes",
                  processes=4, options={"start": "warm"}, service="kpd"),
        Contender("kpd-1-batch", _KPD_CLIENT,
                  "kpd-1 through the client's batch API, 1,000 records per call, keeping the "
                  "batches' futures (skipped as not available when the client has none)",
                  options={"api": "batch"}, service="kpd"),
        # What `accepted` costs per rings.fsync policy (docs/operations.md, "Durability").
        *(
            Contender(
                f"kpd-1-accepted-fsync-{policy}", _KPD_CLIENT,
                f"kpd-1 at ack level accepted (the future completes once the record is in a "
                f"ring file) with rings.fsync: {policy}",
                options={"acks": "accepted"}, service="kpd",
                service_settings={"rings": {"fsync": policy}},
            )
            for policy in FSYNC_POLICIES
        ),
        Contender("aiokafka", _AIOKAFKA,
                  "AIOKafkaProducer.send per record, a done-callback each, under uvloop; "
                  "16 KiB batches; idempotence off (tansu 0.6.0 rejects its InitProducerId v0); "
                  "at most 300,000 records per run (it runs ~10x slower than the others)",
                  max_records=300_000),
        Contender("confluent-kafka", _CONFLUENT,
                  "confluent_kafka.Producer.produce per record, a delivery callback each, "
                  "poll() only when produce() raises BufferError (librdkafka's queue is full); "
                  "librdkafka's default 1 MB batch.size; partitioner murmur2_random"),
        Contender("confluent-kafka-tuned", _CONFLUENT,
                  f"confluent-kafka that also calls poll(0) every {_POLL_EVERY:,} records "
                  "(callbacks served in small doses, a short queue)",
                  options={"poll_every": _POLL_EVERY}),
        Contender("confluent-kafka-4", _CONFLUENT,
                  "confluent-kafka-tuned in 4 processes, one shard each", processes=4,
                  options={"poll_every": _POLL_EVERY}),
        Contender("confluent-kafka-via-kpd", _CONFLUENT,
                  "confluent-kafka with bootstrap.servers at kpd's Kafka listener "
                  "(socket.kafka) of a kpd daemon (its default worker count) started for the "
                  "run; the same librdkafka settings, so acks=all is answered once the "
                  "cluster acknowledged",
                  service="kpd", service_settings=_VIA_KPD),
        Contender(
            "kcat", _KCAT,
            "`kcat -P -l FILE` (Debian's kcat 1.7 on the confluent-kafka wheel's librdkafka via "
            "LD_LIBRARY_PATH), records prepared in the file before the clock; the clock "
            "includes kcat's start; same librdkafka settings as confluent-kafka",
            binary="kcat", install_hint="apt-get install -y kcat",
        ),
        Contender(
            "rsyslog", _RSYSLOG,
            "Debian's rsyslogd 8.2302 in the foreground with its own config: imptcp on a UNIX "
            "stream socket -> omkafka (key and value split at the tab), on the confluent-kafka "
            "wheel's librdkafka via LD_LIBRARY_PATH (Debian's 2.0.2 fails ApiVersions with "
            "tansu); the lines sent over the socket by the app process; the clock ends when "
            "rsyslogd has exited after delivering everything (SIGTERM after the last line)",
            binary="rsyslogd", install_hint="apt-get install -y rsyslog rsyslog-kafka",
            lines=True,
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
            service="kpd", service_settings={"kafka": {"transactional.id": "bench-eos"}},
        ),
        Contender("kpd-send-file", _KPD_SEND,
                  "`kpd send --key-separator TAB < FILE` to a kpd daemon (its default worker "
                  "count) started for the run; the clock includes its start",
                  options={"input": "file"}, service="kpd", lines=True),
        Contender("kpd-send-pipe", _KPD_SEND,
                  "`... | kpd send --key-separator TAB`: the app process writes the lines into "
                  "its stdin pipe, as it writes them to rsyslog's socket",
                  options={"input": "pipe"}, service="kpd", lines=True),
        *_paced_contenders(),
        Contender(
            "kpd-1@100k-gc", _KPD_CLIENT,
            "kpd-1@100k with the app's gc thresholds raised (gc.set_threshold(100000, 50, 100)),"
            " the tuning docs/operations.md suggests for latency-sensitive apps that keep many"
            " futures alive",
            options={**_paced(100_000), "gc_threshold": [100_000, 50, 100]},
            service="kpd", service_settings=_METRICS_ON,
        ),
    )
}  # fmt: skip


LATENCY_CONTENDERS = tuple(paced_name(c, r) for r in LATENCY_RATES for c in PACED_CLIENTS)
SCALING_APPS = 4  # app processes of a scaling run, at least (more when there are more workers)


def scaling_contender(workers: int) -> Contender:
    """kpd with ``workers`` workers and max(4, workers) app processes keeping every future:
    one row of the scaling table."""
    apps = max(SCALING_APPS, workers)
    return Contender(
        f"kpd-{apps}@w{workers}", _KPD_CLIENT,
        f"kpd-{apps} (kpd-1 with {apps} app processes) against a daemon with {workers} "
        f"worker{'s' if workers > 1 else ''}",
        processes=apps, service="kpd", service_settings={"workers": {"count": workers}},
    )  # fmt: skip


_SCALING_NAME = re.compile(r"kpd-(\d+)@w(\d+)")


def find(name: str) -> Contender:
    """The contender called ``name``: a registry entry or a scaling row (``kpd-4@w2``).
    Raises KeyError for any other name."""
    if name in CONTENDERS:
        return CONTENDERS[name]
    scaling = _SCALING_NAME.fullmatch(name)
    if scaling:
        found = scaling_contender(int(scaling[2]))
        if found.name == name:
            return found
    raise KeyError(name)
