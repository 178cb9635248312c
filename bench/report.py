"""Turning run results into figures: medians, the table, the ratios, RESULTS.md.

Owns the arithmetic and the text; pure (no I/O, no clock): callers pass results and context
in and write the text where they like.

Figures per (workload, contender), each the median over runs: records/s; MB/s of key + value
bytes; CPU seconds per million records (which is also microseconds per record) of the app
process(es), of the kpd daemon's processes when there is one, and of the broker; peak RSS of
the app and its growth during the timed part (the peak includes the pre-built records, the
growth is the client's own memory); kpd's peak RSS next to its configured rings. Text
workloads (the shell path) get a table of their own with the sender program apart (``kpd
send``, rsyslogd), the scaling runs a table by worker count, paced runs a table of ack
latency, one of CPU per record per process and one of the daemon's stage trace (bench.stages)
when it has one; the targets of the issues are judged in bench.targets.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.contenders import CONTENDERS, is_kpd
from bench.runner import RunResult
from bench.stages import STAGE_METRIC
from bench.targets import median_runs, targets_table

__all__ = [
    "Summary",
    "latency_table",
    "lines_table",
    "process_cpu_table",
    "ratios_table",
    "render_results",
    "results_table",
    "runs_table",
    "scaling_table",
    "stage_table",
    "summarize",
]


@dataclass(frozen=True)
class Summary:
    workload: str
    contender: str
    runs: int
    verified_runs: int
    records_per_s: float
    mb_per_s: float
    producer_cpu_s_per_m: float
    broker_cpu_s_per_m: float
    rss_peak_mib: float
    rss_growth_mib: float
    kpd_cpu_s_per_m: float  # nan when the contender runs no daemon
    kpd_rss_peak_mib: float
    kpd_ring_mib: float
    kpd_processes: int
    records: int = 0
    reaped_cpu_s_per_m: float = 0.0  # the program the app process ran (kpd send, rsyslogd)
    reaped_rss_mib: float = 0.0  # its peak RSS
    kpd_workers: int = 0
    skipped: str = ""

    @property
    def verified(self) -> bool:
        return self.runs > 0 and self.verified_runs == self.runs

    @property
    def app_and_kpd_cpu_s_per_m(self) -> float:
        """CPU per record on the client's side of the broker: the app plus its daemon."""
        kpd = self.kpd_cpu_s_per_m if self.kpd_processes else 0.0
        return self.producer_cpu_s_per_m + kpd


def summarize(results: Iterable[RunResult]) -> list[Summary]:
    """One Summary per (workload, contender), in first-seen order; failed runs give no
    figures (they are counted as unverified) so a crash never drags a median."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.workload, result.contender), []).append(result)
    return [_summary(workload, contender, runs) for (workload, contender), runs in groups.items()]


def _summary(workload: str, contender: str, runs: list[RunResult]) -> Summary:
    good = [r for r in runs if r.ok]
    skipped = next((r.skipped for r in runs if r.skipped), "")
    runs = [r for r in runs if not r.skipped]
    kpd = [r for r in good if r.kpd_processes]

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    return Summary(
        workload=workload,
        contender=contender,
        runs=len(runs),
        verified_runs=len(good),
        records_per_s=median([r.records_per_s for r in good]),
        mb_per_s=median([r.mb_per_s for r in good]),
        producer_cpu_s_per_m=median([r.producer_cpu_s / r.records * 1e6 for r in good]),
        broker_cpu_s_per_m=median([r.broker_cpu_s / r.records * 1e6 for r in good]),
        rss_peak_mib=median([r.rss_peak_kib / 1024 for r in good]),
        rss_growth_mib=median([(r.rss_peak_kib - r.rss_ready_kib) / 1024 for r in good]),
        kpd_cpu_s_per_m=median([r.kpd_cpu_s / r.records * 1e6 for r in kpd]),
        kpd_rss_peak_mib=median([r.kpd_rss_peak_kib / 1024 for r in kpd]),
        kpd_ring_mib=median([r.kpd_ring_bytes / 2**20 for r in kpd]),
        kpd_processes=max((r.kpd_processes for r in kpd), default=0),
        records=max((r.records for r in runs), default=0),
        reaped_cpu_s_per_m=median([r.reaped_cpu_s / r.records * 1e6 for r in good]),
        reaped_rss_mib=median([r.reaped_rss_kib / 1024 for r in good]),
        kpd_workers=max((r.kpd_workers for r in kpd), default=0),
        skipped=skipped,
    )


def results_table(summaries: Sequence[Summary]) -> str:
    rows = [
        "| contender | records/s | MB/s | app CPU s/1M rec | kpd CPU s/1M rec "
        "| broker CPU s/1M rec | app peak RSS MiB | app RSS growth MiB "
        "| kpd peak RSS MiB (rings MiB) | verified |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        if s.skipped and not s.runs:
            rows.append(f"| {s.contender} | skipped: {s.skipped} |  |  |  |  |  |  |  | 0/0 |")
            continue
        kpd_cpu = f"{s.kpd_cpu_s_per_m:.2f}" if s.kpd_processes else "-"
        kpd_rss = (f"{s.kpd_rss_peak_mib:.0f} ({s.kpd_ring_mib:.0f})"
                   if s.kpd_processes else "-")  # fmt: skip
        rows.append(
            f"| {s.contender} | {s.records_per_s:,.0f} | {s.mb_per_s:.1f} "
            f"| {s.producer_cpu_s_per_m:.2f} | {kpd_cpu} | {s.broker_cpu_s_per_m:.2f} "
            f"| {s.rss_peak_mib:.0f} | {s.rss_growth_mib:.0f} | {kpd_rss} "
            f"| {s.verified_runs}/{s.runs} |"
        )
    return "\n".join(rows)


def ratios_table(summaries: Sequence[Summary]) -> str:
    """Each kpd contender / each other contender: throughput (>1: kpd faster), the app's CPU
    per record and the app's plus kpd's CPU per record (<1: kpd cheaper)."""
    rows = [
        "| kpd contender | vs | throughput kpd/other | app CPU per record kpd/other "
        "| app + kpd CPU per record kpd/other |",
        "|---|---|---:|---:|---:|",
    ]
    for kpd in summaries:
        if not is_kpd(kpd.contender) or not kpd.verified_runs:
            continue
        for other in summaries:
            if is_kpd(other.contender) or not other.verified_runs:
                continue
            rows.append(
                f"| {kpd.contender} | {other.contender} "
                f"| {_ratio(kpd.records_per_s, other.records_per_s)} "
                f"| {_ratio(kpd.producer_cpu_s_per_m, other.producer_cpu_s_per_m)} "
                f"| {_ratio(kpd.app_and_kpd_cpu_s_per_m, other.app_and_kpd_cpu_s_per_m)} |"
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def lines_table(summaries: Sequence[Summary]) -> str:
    """The shell path: the sender program apart from the app process that feeds it (which
    only writes a file into a socket or pipe), and the sender's own peak RSS."""
    rows = [
        "| contender | lines | records/s | sender CPU µs/rec | kpd CPU µs/rec "
        "| sender + kpd CPU µs/rec | feeding app CPU µs/rec | broker CPU µs/rec "
        "| sender peak RSS MiB | kpd peak RSS MiB | verified |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        if s.skipped and not s.runs:
            rows.append(f"| {s.contender} | skipped: {s.skipped} |" + " |" * 9)
            continue
        kpd_cpu = s.kpd_cpu_s_per_m if s.kpd_processes else 0.0
        rows.append(
            f"| {s.contender} | {s.records:,} | {s.records_per_s:,.0f} "
            f"| {s.reaped_cpu_s_per_m:.2f} | {_or_dash(s.kpd_processes, kpd_cpu)} "
            f"| {s.reaped_cpu_s_per_m + kpd_cpu:.2f} "
            f"| {s.producer_cpu_s_per_m - s.reaped_cpu_s_per_m:.2f} "
            f"| {s.broker_cpu_s_per_m:.2f} | {s.reaped_rss_mib:.0f} "
            f"| {_or_dash(s.kpd_processes, s.kpd_rss_peak_mib, '.0f')} "
            f"| {s.verified_runs}/{s.runs} |"
        )
    return "\n".join(rows)


def scaling_table(summaries: Sequence[Summary]) -> str:
    """One row per worker count: how kpd's throughput and CPU per record follow its workers."""
    rows = [
        "| workers | app processes | records/s | x 1 worker | app CPU µs/rec | kpd CPU µs/rec "
        "| broker CPU µs/rec | kpd peak RSS MiB (rings MiB) | verified |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    ordered = sorted(summaries, key=lambda s: s.kpd_workers)
    one = next((s.records_per_s for s in ordered if s.kpd_workers == 1), float("nan"))
    for s in ordered:
        apps = s.contender.split("@")[0].removeprefix("kpd-")
        if not s.verified_runs:
            rows.append(f"| {s.contender} | {apps} | FAILED |" + " |" * 6)
            continue
        rows.append(
            f"| {s.kpd_workers} | {apps} | {s.records_per_s:,.0f} "
            f"| {_ratio(s.records_per_s, one)} | {s.producer_cpu_s_per_m:.2f} "
            f"| {s.kpd_cpu_s_per_m:.2f} | {s.broker_cpu_s_per_m:.2f} "
            f"| {s.kpd_rss_peak_mib:.0f} ({s.kpd_ring_mib:.0f}) | {s.verified_runs}/{s.runs} |"
        )
    return "\n".join(rows)


def _reads_lines(contender: str) -> bool:
    known = CONTENDERS.get(contender)
    return known is not None and known.lines


def _or_dash(present: object, value: float, fmt: str = ".2f") -> str:
    return format(value, fmt) if present else "-"


def latency_table(results: Sequence[RunResult]) -> str:
    """One row per paced run, in run order (kpd-1 and confluent-kafka side by side at each
    rate, round after round): the load offered and achieved, the ack latency, CPU per
    record."""
    rows = [
        "| offered rec/s | contender | run | achieved rec/s | load achieved | latest burst ms "
        "| p50 ms | p99 ms | p99.9 ms | max ms | p99 ms incl. warm-up | app CPU µs/rec "
        "| kpd CPU µs/rec | verified |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lat = r.latency
        if lat is None:
            rows.append(f"| - | {r.contender} | {r.run} | FAILED: {r.error} |" + " |" * 10)
            continue
        waits = lat.get("queue_full_waits", 0)
        achieved = ("yes" if lat["achieved"] else "NO") + (
            f" ({waits:,} queue-full waits)" if waits else "")  # fmt: skip
        rows.append(
            f"| {lat['offered_rate']:,} | {r.contender} | {r.run} | {lat['achieved_rate']:,.0f} "
            f"| {achieved} | {lat['latest_burst_ms']:.1f} "
            f"| {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | {lat['p999_ms']:.2f} "
            f"| {lat['max_ms']:.2f} | {lat['p99_all_ms']:.2f} "
            f"| {r.producer_cpu_s / r.records * 1e6:.2f} "
            f"| {_or_dash(r.kpd_processes, r.kpd_cpu_s / r.records * 1e6)} "
            f"| {'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(rows)


def _role_order(role: str) -> tuple[int, str]:
    rank = {"supervisor": 0, "ingest": 1}.get(role.split()[0], 2)
    return rank, role.rjust(12)  # "worker 10" after "worker 9"


def process_cpu_table(results: Sequence[RunResult]) -> str:
    """CPU per record of each process of a paced run: the app, then kpd's supervisor,
    ingest and each worker (µs of CPU per record offered)."""
    roles = sorted({role for r in results for role in r.kpd_cpu_by_process}, key=_role_order)
    rows = [
        "| offered rec/s | contender | app µs/rec | "
        + "".join(f"{role} µs/rec | " for role in roles)
        + "kpd total µs/rec |",
        "|---:|---|---:|" + "---:|" * (len(roles) + 1),
    ]
    for r in results:
        if r.latency is None:
            continue
        per_record = 1e6 / r.records
        cells = [f"{r.kpd_cpu_by_process[role] * per_record:.2f}"
                 if role in r.kpd_cpu_by_process else "-" for role in roles]  # fmt: skip
        total = _or_dash(r.kpd_processes, r.kpd_cpu_s * per_record)
        rows.append(f"| {r.latency['offered_rate']:,} | {r.contender} "
                    f"| {r.producer_cpu_s * per_record:.2f} | "
                    + "".join(f"{c} | " for c in cells) + f"{total} |")  # fmt: skip
    return "\n".join(rows)


def stage_table(results: Sequence[RunResult]) -> str:
    """Where a kpd record's time goes at each rate: each stage of the daemon's stage trace
    (bench.stages) over the run's records, or why there is none."""
    rows = ["| offered rec/s | contender | stage | records | mean ms | p50 ms | p99 ms |",
            "|---:|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        if not r.kpd_processes or r.latency is None:
            continue
        head = f"| {r.latency['offered_rate']:,} | {r.contender} |"
        if r.stages is None:
            rows.append(f"{head} not available: /metrics not scraped (metrics off) | | | | |")
        elif not r.stages:
            rows.append(f"{head} not available: the daemon exports no {STAGE_METRIC} | | | | |")
        for stage in r.stages or ():
            rows.append(f"{head} {stage['stage']} | {stage['count']:,.0f} "
                        f"| {stage['mean_s'] * 1e3:.3f} | {stage['p50_s'] * 1e3:.3f} "
                        f"| {stage['p99_s'] * 1e3:.3f} |")  # fmt: skip
    return "\n".join(rows) if len(rows) > 2 else ""


def _ratio(numerator: float, denominator: float) -> str:
    if not denominator or denominator != denominator or numerator != numerator:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def runs_table(results: Sequence[RunResult]) -> str:
    rows = [
        "| workload | contender | run | records/s | wall s | producer CPU s | broker CPU s "
        "| verification |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.skipped:
            check = f"skipped: {r.skipped}"
        else:
            check = r.delivery.describe() if r.delivery else f"FAILED: {r.error}"
        rows.append(
            f"| {r.workload} | {r.contender} | {r.run} | {r.records_per_s:,.0f} "
            f"| {r.wall_s:.2f} | {r.producer_cpu_s:.2f} | {r.broker_cpu_s:.2f} | {check} |"
        )
    return "\n".join(rows)


def render_results(
    results: Sequence[RunResult],
    context: dict[str, dict[str, str]],
    workloads: dict[str, str],
    contenders: dict[str, str],
    latency_results: Sequence[RunResult] = (),
    scaling_results: Sequence[RunResult] = (),
    notes: Sequence[str] = (),
) -> str:
    """The whole RESULTS.md. ``context`` holds titled key/value sections (run, machine,
    versions); ``workloads`` and ``contenders`` map names to descriptions; ``results`` are
    the throughput runs, ``latency_results`` the paced runs, ``scaling_results`` the runs by
    worker count; ``notes`` are lines said about this run (what was skipped and why)."""
    out = ["# kpd benchmark results", "", "Written by `python -m bench`; do not edit by hand.", ""]
    for title, values in context.items():
        out += [f"## {title}", ""] + [f"- {k}: {v}" for k, v in values.items()] + [""]
    summaries = summarize(results)
    targets = targets_table(summaries, [*results, *scaling_results], latency_results)
    out += ["## Targets", "", _TARGETS_NOTE, "", targets, ""]
    if notes:
        out += ["## Notes on this run", ""] + [f"- {n}" for n in notes] + [""]
    out += ["## Contenders", ""] + [f"- **{k}**: {v}" for k, v in contenders.items()] + [""]
    for name, description in workloads.items():
        mine = [s for s in summaries if s.workload == name]
        if not mine:
            continue
        out += [f"## Workload {name}: {description}", "", results_table(mine), ""]
        if any(_reads_lines(s.contender) for s in mine):
            out += ["The shell path, the sender program apart:", "", lines_table(mine), ""]
        ratios = ratios_table(mine)
        out += [ratios, ""] if ratios else []
    if scaling_results:
        scaling = summarize(scaling_results)
        out += ["## Scaling with kpd's workers", "", _SCALING_NOTE.format(
            workload=scaling[0].workload, records=scaling[0].records), "",
            scaling_table(scaling), ""]  # fmt: skip
    if latency_results:
        workers = max((r.kpd_workers for r in latency_results), default=0)
        rounds = max((r.run for r in latency_results), default=1)
        out += ["## Ack latency at a fixed offered load", "", _LATENCY_NOTE.format(
                    workers=workers, runs=rounds), "",
                latency_table(latency_results), "", _PROCESS_CPU_NOTE, "",
                process_cpu_table(median_runs(latency_results)), ""]  # fmt: skip
        stages = stage_table(median_runs(latency_results))
        out += [_STAGES_NOTE, "", stages, ""] if stages else []
    out += ["## Every run", "", runs_table([*results, *scaling_results, *latency_results]),
            "", _METHOD]  # fmt: skip
    return "\n".join(out) + "\n"


_TARGETS_NOTE = """From issues 11 (flat out) and 18 (ack latency and CPU per record at \
1,000, 10,000 and 100,000 records/s offered, and flat out again: a row both set says "11, \
18"); issue 18's latency targets replace issue 11's p99 <= 25 ms at 100k/s. Each ratio is \
kpd's figure over the other's (records/s: higher is better; CPU and memory: lower is better), \
medians over this run's verified runs, except that a records/s ratio is the median of each \
pass's own ratio (a pass runs every contender of the workload in turn) and a paced p50 target \
the median of each round's own difference, so the host's drift between passes does not decide \
them; the other paced figures are the contender's median run by p50 of its rounds, against \
confluent-kafka's in the same `make bench`. (u) repeats the targets of (a) with a unique \
36-byte key per record."""

_SCALING_NOTE = """Workload ({workload}), {records:,} records; max(4, workers) app processes \
keeping every future (kpd-4 at 1, 2 and 4 workers); the worker counts are 1, 2, 4, ... up \
to the CPUs of the machine, so the same command on a bigger host shows how kpd scales. On a \
machine with fewer cores than apps + workers + broker, more workers only share the same \
cores."""


_LATENCY_NOTE = """Workload (a) paced as issue 18 measures it: one app process sends in \
bursts every millisecond (1, 10 or 100 records), never waiting for acks; acks=all, linger.ms \
5, 12 partitions; kpd at its defaults (`workers.count: auto`, the usable CPUs less one: \
{workers} here; metrics on so its stage trace can be read); \
15 s of records at 1k/s, 10 s at 10k/s and 100k/s; {runs} rounds, every contender of a rate \
in each round in turn ("run"); the p50 targets take the median of the rounds' own \
differences, the other targets, the per-process CPU and the stage tables each contender's \
median run by p50. Latency per record from just before \
send()/produce() to its completion (kpd: the future's done-callback on the client's I/O \
thread; confluent-kafka: the delivery callback, served by poll() while the sender waits for \
the next burst). "load achieved": the sender offered at least 98 % of the target rate \
(confluent-kafka's sender polls and retries when librdkafka's local queue is full, as an app \
does: its waits are counted beside it); \
"latest burst": how late the worst burst started. Percentiles are nearest-rank over the \
records sent after the first second (the warm-up: connections to the partition leaders, \
producer id; librdkafka's first records waited ~0.5 s for it); "p99 incl. warm-up" is over \
every record. CPU per record is the process's CPU from "go" to the last ack over the records \
sent: at a fixed rate it is mostly per wake-up, not per record, so it falls as the rate \
rises."""

_PROCESS_CPU_NOTE = """CPU per record per process of the paced runs (each contender's median \
run; utime + stime from /proc/PID/stat, 10 ms ticks; "app" includes the client's threads, \
librdkafka's for confluent-kafka):"""

_STAGES_NOTE = """Where a kpd record's time goes (each contender's median run; the daemon's \
per-record stage trace, \
`kpd_record_stage_seconds{stage}` on /metrics, over the run's records: scraped before "go" and \
after the last ack; p50 and p99 estimated from the histogram's buckets). The rows \
"kafka request (per request)" of the listener's runs count Produce requests, not records: \
`kpd_kafka_produce_seconds`, a request handled -> its answer written, what kpd adds to the \
client's round trip:"""


_METHOD = """## Method

- Each run starts a fresh tansu (memory storage) on loopback, creates the topic, and starts the
  contender in its own process(es). The contender builds its records before the clock starts;
  the clock runs from "go" to the last delivery report. The librdkafka clients get the topic's
  metadata before the clock; kpd's apps connect after "go" and send at once (`-warm`
  variants connect and call partitions_for first); `kpd send` and kcat start inside the
  clock; rsyslogd runs and has delivered a warm-up record before it, and its clock ends when
  it has exited after delivering everything.
- CPU is utime + stime from /proc/PID/stat (all threads, 10 ms ticks) read by the parent just
  before "go" and just after "done", for the producer process(es) and for the broker. CPU
  seconds per million records equals microseconds per record.
- "app" is the contender's own process(es): the Python app for the clients, the app plus
  the program it drives for kcat, `kpd send` and rsyslogd (their rusage as the app process
  reaped them; rsyslogd's from "go" on). The kpd contenders start a fresh daemon per run
  (`workers.count: auto`, the usable CPUs less one, unless the scaling table says otherwise;
  16 MiB record and 4 MiB report rings per worker, metrics off, log level warning) and stop
  it with SIGTERM afterwards; "kpd CPU" is its supervisor, ingest and workers (found by
  PPID), read like the app's.
- Peak RSS is VmHWM of the app process(es) and includes the records it built up front;
  RSS growth is VmHWM minus VmRSS at "go": the client's own buffers. A program the app
  process runs (kcat, `kpd send`, rsyslogd) has its own VmHWM, read every 20 ms while it runs
  (not ru_maxrss, which Linux raises to the RSS the forked child had before exec). kpd's
  peak RSS is the sum of VmHWM over its processes; a ring page counts in each process that
  touched it (ingest and the ring's worker), so it is an upper bound of kpd's memory.
- Delivery is verified by reading the topic back with librdkafka (CRCs checked) and counting
  distinct record ids (each value starts with its id); a run counts only if every record was
  read exactly once with its own key (and, for rsyslog, its one warm-up record, sent before
  the clock because omkafka connects on its first message). Figures are medians over
  verified runs.
- Producer and broker share the machine's cores, as in the issue's measurements; so does
  anything else running, which is why runs are interleaved and medians reported.
- Each client keeps its own defaults beyond the workload's settings. Batch size: kpd 256 KiB,
  aiokafka 16 KiB, librdkafka 1 MB (with 1 KiB values a 16 KiB batch holds 15 records, which
  costs the broker more per record; `--contenders kpd-engine-1MB` shows kpd at 1 MB). lz4:
  kpd and librdkafka use LZ4's fast compressor (kpd maps Kafka's default level 9 to it, as
  lz4-java does); aiokafka passes level 9 to an LZ4 frame compressor, which is LZ4-HC.
"""
