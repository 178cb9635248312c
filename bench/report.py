"""Turning run results into figures: medians, the table, the ratios, RESULTS.md.

Owns the arithmetic and the text; pure (no I/O, no clock): callers pass results and context
in and write the text where they like.

Figures per (workload, contender), each the median over runs: records/s; MB/s of key + value
bytes; CPU seconds per million records of the producing process(es) and of the broker (which
is also microseconds per record); peak RSS of the producer and its growth during the timed
part (the peak includes the pre-built records, the growth is the client's own memory).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.runner import RunResult

__all__ = [
    "Summary",
    "ratios_table",
    "render_results",
    "results_table",
    "runs_table",
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

    @property
    def verified(self) -> bool:
        return self.runs > 0 and self.verified_runs == self.runs


def summarize(results: Iterable[RunResult]) -> list[Summary]:
    """One Summary per (workload, contender), in first-seen order; failed runs give no
    figures (they are counted as unverified) so a crash never drags a median."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.workload, result.contender), []).append(result)
    return [_summary(workload, contender, runs) for (workload, contender), runs in groups.items()]


def _summary(workload: str, contender: str, runs: list[RunResult]) -> Summary:
    good = [r for r in runs if r.ok]

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
    )


def results_table(summaries: Sequence[Summary]) -> str:
    rows = [
        "| contender | records/s | MB/s | producer CPU s/1M rec | broker CPU s/1M rec "
        "| peak RSS MiB | RSS growth MiB | verified |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        rows.append(
            f"| {s.contender} | {s.records_per_s:,.0f} | {s.mb_per_s:.1f} "
            f"| {s.producer_cpu_s_per_m:.2f} | {s.broker_cpu_s_per_m:.2f} "
            f"| {s.rss_peak_mib:.0f} | {s.rss_growth_mib:.0f} "
            f"| {s.verified_runs}/{s.runs} |"
        )
    return "\n".join(rows)


def ratios_table(summaries: Sequence[Summary], kpd_names: Sequence[str]) -> str:
    """kpd / each other contender: throughput (>1: kpd faster) and producer CPU per record
    (<1: kpd cheaper)."""
    by_name = {s.contender: s for s in summaries}
    rows = [
        "| kpd contender | vs | throughput kpd/other | CPU per record kpd/other |",
        "|---|---|---:|---:|",
    ]
    for kpd_name in kpd_names:
        kpd = by_name.get(kpd_name)
        if kpd is None:
            continue
        for other in summaries:
            if other.contender in kpd_names:
                continue
            rows.append(
                f"| {kpd_name} | {other.contender} "
                f"| {_ratio(kpd.records_per_s, other.records_per_s)} "
                f"| {_ratio(kpd.producer_cpu_s_per_m, other.producer_cpu_s_per_m)} |"
            )
    return "\n".join(rows)


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
    kpd_names: Sequence[str],
) -> str:
    """The whole RESULTS.md. ``context`` holds titled key/value sections (run, machine,
    versions); ``workloads`` and ``contenders`` map names to descriptions."""
    out = ["# kpd benchmark results", "", "Written by `python -m bench`; do not edit by hand.", ""]
    for title, values in context.items():
        out += [f"## {title}", ""] + [f"- {k}: {v}" for k, v in values.items()] + [""]
    out += ["## Contenders", ""] + [f"- **{k}**: {v}" for k, v in contenders.items()] + [""]
    summaries = summarize(results)
    for name, description in workloads.items():
        mine = [s for s in summaries if s.workload == name]
        out += [f"## Workload {name}: {description}", "", results_table(mine), "",
                ratios_table(mine, kpd_names), ""]  # fmt: skip
    out += ["## Every run", "", runs_table(results), "", _METHOD]
    return "\n".join(out) + "\n"


_METHOD = """## Method

- Each run starts a fresh tansu (memory storage) on loopback, creates the topic, and starts the
  contender in its own process(es). The contender builds its records and connects before the
  clock starts; the clock runs from "go" to the last delivery report.
- CPU is utime + stime from /proc/PID/stat (all threads, 10 ms ticks) read by the parent just
  before "go" and just after "done", for the producer process(es) and for the broker. CPU
  seconds per million records equals microseconds per record.
- Peak RSS is VmHWM of the producer process and includes the records it built up front;
  RSS growth is VmHWM minus VmRSS at "go": the client's own buffers.
- Delivery is verified by reading the topic back with librdkafka (CRCs checked) and counting
  distinct record ids (each value starts with its id); a run counts only if every record was
  read exactly once with its own key. Figures are medians over verified runs.
- Producer and broker share the machine's cores, as in the issue's measurements; so does
  anything else running, which is why runs are interleaved and medians reported.
- Each client keeps its own defaults beyond the workload's settings. Batch size: kpd and
  aiokafka 16 KiB, librdkafka 1 MB (with 1 KiB values a 16 KiB batch holds 15 records, which
  costs the broker more per record; `--contenders kpd-engine-1MB` shows kpd at 1 MB). lz4:
  kpd and librdkafka use LZ4's fast compressor (kpd maps Kafka's default level 9 to it, as
  lz4-java does); aiokafka passes level 9 to an LZ4 frame compressor, which is LZ4-HC.
"""
