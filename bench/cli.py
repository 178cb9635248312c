"""``python -m bench``: run the contenders on the workloads and report.

Owns the command line and the order of runs. Runs are interleaved (run 1 of every contender,
then run 2, ...) so a slow minute of a shared machine hurts every contender alike. After the
throughput runs come the paced runs for ack latency (one each, workload (a)). Exits 1 when
any run failed or was not verified, so ``make bench-quick`` and the test suite notice; a run
skipped because a program is missing (kcat) is reported, not failed.

    python -m bench                      # workloads a-d, 3 runs each, then latency;
                                         # writes bench/RESULTS.md
    python -m bench --workload a         # one workload
    python -m bench --quick              # 20,000 records of (a) and (d), one run, no latency
    python -m bench --profile --workload a   # kpd engine under py-spy -> bench/profile/
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bench import environment, report
from bench.contenders import (
    CONTENDERS,
    DEFAULT_CONTENDERS,
    KPD_CONTENDERS,
    LATENCY_CONTENDERS,
    QUICK_CONTENDERS,
)
from bench.profile import attach_py_spy, render_top
from bench.runner import REPO_ROOT, RunResult, run_once
from bench.workloads import QUICK_RECORDS, WORKLOADS, Workload, quick

__all__ = ["main"]

_QUICK_WORKLOADS = ("a", "d")
_DEFAULT_RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
_DEFAULT_PROFILE_DIR = REPO_ROOT / "bench" / "profile"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--workload",
        default=None,
        help="comma-separated names from " + ",".join(WORKLOADS) + " (default: all; "
        f"--quick: {','.join(_QUICK_WORKLOADS)})",
    )
    p.add_argument(
        "--contenders",
        default=None,
        help="comma-separated from "
        + ",".join(CONTENDERS)
        + " (default: "
        + ",".join(DEFAULT_CONTENDERS)
        + f"; --quick: {','.join(QUICK_CONTENDERS)})",
    )
    p.add_argument(
        "--latency",
        default=None,
        help="paced contenders for ack latency, comma-separated, or 'none' (default: "
        + ",".join(LATENCY_CONTENDERS)
        + "; --quick: none)",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per contender (default 3; quick 1)")
    p.add_argument("--records", type=int, default=None, help="override the record count")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_RECORDS} records, one run: checks the bench works, not speed",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"write RESULTS.md here (default {_DEFAULT_RESULTS}; quick: nowhere)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write every run as JSON here")
    p.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="keep broker and contender logs here (default: a temporary directory)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run only kpd-engine under py-spy; write a flame graph and a top table",
    )
    p.add_argument("--profile-dir", type=Path, default=_DEFAULT_PROFILE_DIR)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    workloads = _workloads(args)
    with tempfile.TemporaryDirectory(prefix="kpd-bench-") as tmp:
        log_root = args.log_dir or Path(tmp)
        if args.profile:
            return _profile(workloads, log_root, args.profile_dir)
        default = QUICK_CONTENDERS if args.quick else DEFAULT_CONTENDERS
        contenders = [CONTENDERS[n] for n in _names(args.contenders or ",".join(default),
                                                      CONTENDERS)]  # fmt: skip
        paced = _paced_contenders(args)
        runs = args.runs or (1 if args.quick else 3)
        results = _run_all(workloads, contenders, runs, log_root)
        latency = _run_latency(paced, _latency_workload(args), log_root)
    _write_outputs(args, argv, workloads, [*contenders, *paced], results, latency)
    for r in results:
        if r.skipped:
            print(f"SKIPPED {r.workload} {r.contender} run {r.run}: {r.skipped}", file=sys.stderr)
    failed = [r for r in [*results, *latency] if not r.ok and not r.skipped]
    for r in failed:
        print(f"FAILED {r.workload} {r.contender} run {r.run}: {r.error}\n  "
              + "\n  ".join(r.client_errors), file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _workloads(args: argparse.Namespace) -> list[Workload]:
    default = ",".join(_QUICK_WORKLOADS if args.quick else WORKLOADS)
    chosen = [WORKLOADS[name] for name in _names(args.workload or default, WORKLOADS)]
    if args.quick:
        chosen = [quick(w) for w in chosen]
    if args.records:
        chosen = [replace(w, records=args.records) for w in chosen]
    return chosen


def _paced_contenders(args: argparse.Namespace) -> list:
    text = args.latency or ("none" if args.quick else ",".join(LATENCY_CONTENDERS))
    if text == "none":
        return []
    return [CONTENDERS[name] for name in _names(text, CONTENDERS)]


def _latency_workload(args: argparse.Namespace) -> Workload:
    """Workload (a); at 100,000 records/s its 1,000,000 records take 10 s."""
    workload = WORKLOADS["a"]
    return replace(workload, records=args.records) if args.records else workload


def _names(text: str, known: dict) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"unknown or no names {unknown}; choose from {', '.join(known)}")
    return names


def _run_all(workloads, contenders, runs: int, log_root: Path) -> list[RunResult]:
    results: list[RunResult] = []
    for workload in workloads:
        mine: list[RunResult] = []
        for run in range(1, runs + 1):
            for contender in contenders:
                log_dir = log_root / f"{workload.name}-{contender.name}-{run}"
                log_dir.mkdir(parents=True, exist_ok=True)
                result = run_once(contender, workload, run, log_dir)
                mine.append(result)
                check = result.delivery.describe() if result.delivery else result.error
                if result.skipped:
                    print(f"{workload.name} run {run} {contender.name:<16} skipped: "
                          f"{result.skipped}", flush=True)  # fmt: skip
                    continue
                print(f"{workload.name} run {run} {contender.name:<16} "
                      f"{result.records_per_s:>12,.0f} rec/s  cpu {result.producer_cpu_s:6.2f} s"
                      f"  broker {result.broker_cpu_s:6.2f} s  {check}", flush=True)  # fmt: skip
        summaries = report.summarize(mine)
        print(f"\nworkload {workload.name}: {workload.description}, {workload.records:,} "
              f"records\n{report.results_table(summaries)}\n\n"
              f"{report.ratios_table(summaries, KPD_CONTENDERS)}\n", flush=True)  # fmt: skip
        results += mine
    return results


def _run_latency(paced, workload: Workload, log_root: Path) -> list[RunResult]:
    results = []
    for contender in paced:
        log_dir = log_root / f"latency-{contender.name}"
        log_dir.mkdir(parents=True, exist_ok=True)
        result = run_once(contender, workload, 1, log_dir)
        results.append(result)
        lat = result.latency or {}
        print(f"latency {contender.name:<22} offered {lat.get('offered_rate', 0):,} rec/s, "
              f"achieved {lat.get('achieved_rate', 0):,.0f}: p50 {lat.get('p50_ms', 0):.2f} "
              f"p99 {lat.get('p99_ms', 0):.2f} p99.9 {lat.get('p999_ms', 0):.2f} ms  "
              f"{result.delivery.describe() if result.delivery else result.error}",
              flush=True)  # fmt: skip
    if results:
        print(f"\n{report.latency_table(results)}\n", flush=True)
    return results


def _write_outputs(args, argv, workloads, contenders, results, latency) -> None:
    if args.json:
        runs = [r.to_json() for r in [*results, *latency]]
        args.json.write_text(json.dumps(runs, indent=1))
    target = args.results or (None if args.quick else _DEFAULT_RESULTS)
    if target is None:
        return
    run_context = {
        "command": "`" + " ".join(["python -m bench", *argv]) + "`",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runs per contender": str(args.runs or (1 if args.quick else 3)),
        # Producer and broker share these cores with whatever else runs: say how busy it was.
        "load average at the end (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    context = {"Run": run_context, "Machine": environment.machine(),
               "Versions": environment.versions()}  # fmt: skip
    described = {
        w.name: f"{w.description}; {w.records:,} records, {w.partitions} partitions, "
        f"acks={w.acks}, linger.ms={w.linger_ms}"
        for w in workloads
    }
    described_contenders = {c.name: c.description for c in contenders}
    text = report.render_results(results, context, described, described_contenders,
                                 KPD_CONTENDERS, latency)  # fmt: skip
    target.write_text(text)
    print(f"wrote {target}")


def _profile(workloads: list[Workload], log_root: Path, out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    contender = CONTENDERS["kpd-engine"]
    status = 0
    for workload in workloads:
        base = out_dir / f"{contender.name}-{workload.name}"
        for fmt, path in (("flamegraph", base.with_suffix(".svg")),
                          ("raw", base.with_suffix(".collapsed"))):  # fmt: skip
            log_dir = log_root / f"profile-{workload.name}-{fmt}"
            log_dir.mkdir(parents=True, exist_ok=True)
            result = run_once(contender, workload, 1, log_dir, attach=attach_py_spy(path, fmt))
            if not result.ok:
                print(f"profiled run failed: {result.error}", file=sys.stderr)
                status = 1
        top = render_top(base.with_suffix(".collapsed").read_text())
        base.with_suffix(".txt").write_text(top)
        print(f"{base}.svg, .collapsed, .txt\n{top}")
    return status
