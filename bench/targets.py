"""The performance issue's targets, judged from one run's figures: met, missed, not measured.

Owns the targets (what is compared with what, on which workload, and the limits) and their
table in RESULTS.md. Every target is always listed; one whose contender did not run (or was
skipped, e.g. a client without a batch API) says "not measured" and why. Workloads are
matched by their full-run name ("a-quick" counts as "a"), so the quick run exercises this too.

On (a) and again on (u) (a unique 36-byte key per record):
    kpd-1 >= 1.2 x confluent-kafka (callbacks) and >= 1.0 x confluent-kafka-tuned, records/s
    kpd-4 >= 0.9 x kpd-1 (apps send at once, keep every future); kpd-4-nokeep >= 0.9 x
        kpd-1-nokeep (apps keep no future)
    the app's CPU per record: send() <= 1.0 us, the batch API <= 0.3 us, send() <= 0.5 x
        confluent-kafka's produce()
    kpd's own processes <= 0.6 us of CPU per record (kpd-1)
    p99 ack latency <= 25 ms at 100,000 records/s offered, the app's default gc (kpd-1@100k)
On (c), 1 KiB values: kpd-1 >= 0.8 x confluent-kafka and x confluent-kafka-tuned.
On (l), lines: `kpd send` (file and pipe) >= 1.2 x rsyslog, records/s; fed by a pipe, its
    peak RSS on (l-long), 4 times the lines, <= 1.2 x its peak on (l) (memory that stays flat).
Every kpd run: kpd's peak RSS <= its rings + 60 MiB per kpd process (the worst run).
On (a), a librdkafka producer through kpd's Kafka listener (socket.kafka): records/s >= 0.8 x
    the same producer straight to the cluster (confluent-kafka-via-kpd / confluent-kafka);
    kpd's CPU <= 1.5 us per record; its p50 ack latency at 100,000 records/s offered at most
    2 ms above the direct producer's (confluent-kafka-via-kpd@100k - confluent-kafka@100k).

Pure: takes summaries and run results, returns text. Imports no client library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bench.workloads import base_name

if TYPE_CHECKING:  # report imports this module; only the types are needed here
    from bench.report import Summary
    from bench.runner import RunResult

__all__ = ["targets_table"]

P99_LIMIT_MS = 25.0
LISTENER_ADDED_P50_MS = 2.0
RSS_MIB_PER_PROCESS = 60
FLAT_RSS_RATIO = 1.2

Figure = Callable[["Summary"], float]


def _records_per_s(s: Summary) -> float:
    return s.records_per_s


def _app_cpu(s: Summary) -> float:
    return s.producer_cpu_s_per_m


def _kpd_cpu(s: Summary) -> float:
    return s.kpd_cpu_s_per_m


def _sender_rss(s: Summary) -> float:
    return s.reaped_rss_mib


class _Figures:
    """Summaries by (full-run workload name, contender); owned by one targets_table call."""

    def __init__(self, summaries: Sequence[Summary]) -> None:
        self._by_key = {(base_name(s.workload), s.contender): s for s in summaries}

    def get(self, workload: str, contender: str) -> tuple[Summary | None, str]:
        """The summary, or None and why there is no figure."""
        s = self._by_key.get((workload, contender))
        if s is None:
            return None, f"{contender} not run on ({workload})"
        if s.skipped and not s.runs:
            return None, f"{contender}: {s.skipped}"
        if not s.verified:
            return None, f"{contender}: {s.runs - s.verified_runs} of {s.runs} runs failed"
        return s, ""


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


def _row(what: str, workload: str, measured: str, limit: str, ok: bool | None) -> str:
    return f"| {what} | {workload} | {measured} | {limit} | {_verdict(ok)} |"


def _ratio_row(figures: _Figures, what: str, workload: str, numerator: str, denominator: str,
               figure: Figure, limit: float, at_least: bool, unit: str = "") -> str:  # fmt: skip
    top, why_top = figures.get(workload, numerator)
    bottom, why_bottom = figures.get(workload, denominator)
    bound = f"{'>=' if at_least else '<='} {limit:.1f}"
    if top is None or bottom is None:
        return _row(what, workload, why_top or why_bottom, bound, None)
    a, b = figure(top), figure(bottom)
    if not b or math.isnan(a) or math.isnan(b):
        return _row(what, workload, "no figure", bound, None)
    ratio = a / b
    digits = 0 if unit == "" else 2
    measured = f"{ratio:.2f} ({a:,.{digits}f} / {b:,.{digits}f}{unit})"
    return _row(what, workload, measured, bound, ratio >= limit if at_least else ratio <= limit)


def _absolute_row(figures: _Figures, what: str, workload: str, contender: str, figure: Figure,
                  limit: float, unit: str) -> str:  # fmt: skip
    s, why = figures.get(workload, contender)
    bound = f"<= {limit:.1f}{unit}"
    if s is None:
        return _row(what, workload, why, bound, None)
    value = figure(s)
    if math.isnan(value):
        return _row(what, workload, "no figure", bound, None)
    return _row(what, workload, f"{value:.2f}{unit}", bound, value <= limit)


def targets_table(
    summaries: Sequence[Summary],
    results: Sequence[RunResult],
    latency_results: Sequence[RunResult],
) -> str:
    figures = _Figures(summaries)
    rows = ["| target | workload | measured | limit | verdict |", "|---|---|---:|---:|---|"]
    for workload in ("a", "u"):
        rows += _end_to_end(figures, workload)
        rows.append(_latency(latency_results, workload))
    rows += [
        _ratio_row(figures, f"records/s with 1 KiB values, kpd-1 / {other}", "c", "kpd-1",
                   other, _records_per_s, 0.8, at_least=True)
        for other in ("confluent-kafka", "confluent-kafka-tuned")
    ]  # fmt: skip
    rows += _shell_path(figures)
    rows += _kafka_listener(figures, latency_results, "a")
    rows.append(_memory(results))
    return "\n".join(rows)


def _end_to_end(figures: _Figures, w: str) -> list[str]:
    return [
        _ratio_row(figures, "records/s, kpd-1 / confluent-kafka (callbacks)", w, "kpd-1",
                   "confluent-kafka", _records_per_s, 1.2, at_least=True),
        _ratio_row(figures, "records/s, kpd-1 / confluent-kafka-tuned (poll(0) every 1,000)",
                   w, "kpd-1", "confluent-kafka-tuned", _records_per_s, 1.0, at_least=True),
        _ratio_row(figures, "records/s, 4 apps / 1 app (send at once, keep every future)", w,
                   "kpd-4", "kpd-1", _records_per_s, 0.9, at_least=True),
        _ratio_row(figures, "records/s, 4 apps / 1 app (send at once, keep no future)", w,
                   "kpd-4-nokeep", "kpd-1-nokeep", _records_per_s, 0.9, at_least=True),
        _absolute_row(figures, "app CPU per record, send() (kpd-1)", w, "kpd-1", _app_cpu,
                      1.0, " µs"),
        _absolute_row(figures, "app CPU per record, the batch API (kpd-1-batch)", w,
                      "kpd-1-batch", _app_cpu, 0.3, " µs"),
        _ratio_row(figures, "app CPU per record, kpd-1 send() / confluent-kafka produce()", w,
                   "kpd-1", "confluent-kafka", _app_cpu, 0.5, at_least=False, unit=" µs"),
        _absolute_row(figures, "kpd's own CPU per record (supervisor + ingest + workers, "
                      "kpd-1)", w, "kpd-1", _kpd_cpu, 0.6, " µs"),
    ]  # fmt: skip


def _kafka_listener(figures: _Figures, latency_results: Sequence[RunResult], w: str) -> list[str]:
    via, direct = "confluent-kafka-via-kpd", "confluent-kafka"
    return [
        _ratio_row(figures, f"records/s, librdkafka through kpd's Kafka listener / direct "
                   f"({via} / {direct})", w, via, direct, _records_per_s, 0.8, at_least=True),
        _absolute_row(figures, f"kpd's own CPU per record through the Kafka listener ({via})",
                      w, via, _kpd_cpu, 1.5, " µs"),
        _added_p50(latency_results, w, f"{via}@100k", f"{direct}@100k"),
    ]  # fmt: skip


def _added_p50(latency_results: Sequence[RunResult], w: str, via: str, direct: str) -> str:
    what = f"p50 ack latency added by kpd's Kafka listener at 100,000 rec/s ({via} - {direct})"
    bound = f"<= {LISTENER_ADDED_P50_MS:g} ms"
    found = {}
    for contender in (via, direct):
        runs = [r for r in latency_results
                if r.contender == contender and base_name(r.workload) == w]  # fmt: skip
        if not runs or runs[0].latency is None or not runs[0].ok:
            return _row(what, w, f"{contender} not run or failed on ({w})", bound, None)
        found[contender] = runs[0].latency
    added = found[via]["p50_ms"] - found[direct]["p50_ms"]
    achieved = found[via]["achieved"] and found[direct]["achieved"]
    offered = "" if achieved else " (offered load NOT achieved)"
    measured = (f"{added:.2f} ms ({found[via]['p50_ms']:.2f} - {found[direct]['p50_ms']:.2f})"
                f"{offered}")  # fmt: skip
    return _row(what, w, measured, bound, added <= LISTENER_ADDED_P50_MS and achieved)


def _latency(latency_results: Sequence[RunResult], w: str) -> str:
    contender = "kpd-1@100k"
    what = f"p99 ack latency at 100,000 rec/s offered, default gc ({contender})"
    bound = f"<= {P99_LIMIT_MS:g} ms"
    runs = [r for r in latency_results
            if r.contender == contender and base_name(r.workload) == w]  # fmt: skip
    if not runs:
        return _row(what, w, f"{contender} not run on ({w})", bound, None)
    r = runs[0]
    lat = r.latency
    if lat is None or not r.ok:
        return _row(what, w, f"run failed: {r.error}"[:200], bound, None)
    offered = "" if lat["achieved"] else " (offered load NOT achieved)"
    measured = f"{lat['p99_ms']:.2f} ms at {lat['achieved_rate']:,.0f} rec/s{offered}"
    return _row(what, w, measured, bound, lat["p99_ms"] <= P99_LIMIT_MS and lat["achieved"])


def _shell_path(figures: _Figures) -> list[str]:
    senders = (
        ("kpd-send-file", "`kpd send < FILE`"),
        ("kpd-send-pipe", "`kpd send` fed by a pipe"),
    )
    rows = [_ratio_row(figures, f"records/s, {how} / rsyslog (imptcp -> omkafka)", "l",
                       sender, "rsyslog", _records_per_s, 1.2, at_least=True)
            for sender, how in senders]  # fmt: skip
    return [*rows, _flat_row(figures, *senders[1])]


def _flat_row(figures: _Figures, sender: str, how: str) -> str:
    """Peak RSS of the sender on (l-long) against (l): 4 times the lines."""
    long, why_long = figures.get("l-long", sender)
    short, why_short = figures.get("l", sender)
    bound = f"<= {FLAT_RSS_RATIO:.1f}"
    what = f"{how}: peak RSS on (l-long) / on (l) (flat however long the input)"
    if long is None or short is None:
        return _row(what, "l-long, l", why_long or why_short, bound, None)
    ratio = long.reaped_rss_mib / short.reaped_rss_mib
    measured = (f"{ratio:.2f} ({long.reaped_rss_mib:.0f} MiB for {long.records:,} lines / "
                f"{short.reaped_rss_mib:.0f} MiB for {short.records:,})")  # fmt: skip
    return _row(what, "l-long, l", measured, bound, ratio <= FLAT_RSS_RATIO)


def _memory(results: Sequence[RunResult]) -> str:
    """The kpd run furthest above its own limit: its peak RSS against that limit."""
    what = "kpd's peak RSS (sum of VmHWM), the worst kpd run"
    worst: tuple[float, float, RunResult] | None = None  # (peak MiB, limit MiB, run)
    for r in results:
        if not r.kpd_processes or not r.ok:
            continue
        peak = r.kpd_rss_peak_kib / 1024
        limit = r.kpd_ring_bytes / 2**20 + RSS_MIB_PER_PROCESS * r.kpd_processes
        if worst is None or peak - limit > worst[0] - worst[1]:
            worst = (peak, limit, r)
    bound = f"rings + {RSS_MIB_PER_PROCESS} MiB x processes"
    if worst is None:
        return _row(what, "all", "no kpd run", bound, None)
    peak, limit, r = worst
    measured = f"{peak:.0f} MiB ({r.contender} on ({base_name(r.workload)}); limit {limit:.0f} MiB)"
    return _row(what, "all", measured, bound, peak <= limit)
