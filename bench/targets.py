"""The benchmark issue's targets, judged from a run's figures: met, missed, or not measured.

Owns the targets (what is compared with what, and the limits) and their table in RESULTS.md.
Pure: takes summaries and run results, returns text. Imports no client library.

    kpd >= 1.2 x confluent-kafka (one process) in records/s on workload (a)
    the app's CPU per record with kpd's client <= 0.5 x confluent-kafka's produce() with
        delivery callbacks, on workload (a)
    p99 ack latency <= 25 ms at 100,000 records/s offered (and that load actually offered)
    kpd's peak RSS <= its configured rings + 60 MiB per kpd process, in every run
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # report imports this module; only the types are needed here
    from bench.report import Summary
    from bench.runner import RunResult

__all__ = ["THROUGHPUT_RATIO", "targets_table"]

THROUGHPUT_RATIO = 1.2
APP_CPU_RATIO = 0.5
P99_LIMIT_MS = 25.0
RSS_MIB_PER_PROCESS = 60
_WORKLOAD = ("a", "a-quick")  # the workload the throughput and CPU targets name
_BASELINE = "confluent-kafka"
_KPD_END_TO_END = ("kpd-1", "kpd-4")
_KPD_PACED = ("kpd-1@100k", "kpd-1@100k-gc")  # as is, and with the app's GC tuned


def targets_table(
    summaries: Sequence[Summary],
    results: Sequence[RunResult],
    latency_results: Sequence[RunResult],
) -> str:
    rows = ["| target | contender | measured | limit | verdict |", "|---|---|---:|---:|---|"]
    rows += _throughput_and_cpu(summaries)
    rows += _latency(latency_results)
    rows += _memory(results)
    return "\n".join(rows)


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


def _throughput_and_cpu(summaries: Sequence[Summary]) -> list[str]:
    in_a = {s.contender: s for s in summaries if s.workload in _WORKLOAD and s.verified}
    base = in_a.get(_BASELINE)
    rows = []
    for name in _KPD_END_TO_END:
        kpd = in_a.get(name)
        if kpd is None or base is None:
            continue
        speed = kpd.records_per_s / base.records_per_s
        cpu = kpd.producer_cpu_s_per_m / base.producer_cpu_s_per_m
        rows += [
            f"| records/s on (a), kpd / confluent-kafka | {name} | {speed:.2f} "
            f"({kpd.records_per_s:,.0f} / {base.records_per_s:,.0f}) | >= {THROUGHPUT_RATIO} "
            f"| {_verdict(speed >= THROUGHPUT_RATIO)} |",
            f"| app CPU per record on (a), kpd client / confluent-kafka produce() | {name} "
            f"| {cpu:.2f} ({kpd.producer_cpu_s_per_m:.2f} / {base.producer_cpu_s_per_m:.2f} "
            f"µs) | <= {APP_CPU_RATIO} | {_verdict(cpu <= APP_CPU_RATIO)} |",
        ]
    return rows


def _latency(latency_results: Sequence[RunResult]) -> list[str]:
    rows = []
    for r in latency_results:
        if r.contender not in _KPD_PACED:
            continue
        lat = r.latency
        if lat is None or not r.ok:
            rows.append(f"| p99 ack latency at 100k rec/s | {r.contender} | run failed "
                        f"| <= {P99_LIMIT_MS:g} ms | {_verdict(None)} |")  # fmt: skip
            continue
        ok = lat["p99_ms"] <= P99_LIMIT_MS and lat["achieved"]
        offered = "" if lat["achieved"] else " (offered load NOT achieved)"
        rows.append(
            f"| p99 ack latency at {lat['offered_rate']:,} rec/s offered | {r.contender} "
            f"| {lat['p99_ms']:.2f} ms at {lat['achieved_rate']:,.0f} rec/s{offered} "
            f"| <= {P99_LIMIT_MS:g} ms | {_verdict(ok)} |"
        )
    return rows


def _memory(results: Sequence[RunResult]) -> list[str]:
    """The worst kpd run of each kpd contender: its peak RSS against its own limit."""
    worst: dict[str, tuple[float, float]] = {}  # contender -> (peak MiB, limit MiB)
    for r in results:
        if not r.kpd_processes or not r.ok:
            continue
        peak = r.kpd_rss_peak_kib / 1024
        limit = r.kpd_ring_bytes / 2**20 + RSS_MIB_PER_PROCESS * r.kpd_processes
        if r.contender not in worst or peak - limit > worst[r.contender][0] - worst[r.contender][1]:
            worst[r.contender] = (peak, limit)
    return [
        f"| kpd peak RSS (sum of VmHWM), worst run | {name} | {peak:.0f} MiB "
        f"| {limit:.0f} MiB (rings + {RSS_MIB_PER_PROCESS} MiB x processes) "
        f"| {_verdict(peak <= limit)} |"
        for name, (peak, limit) in worst.items()
    ]
