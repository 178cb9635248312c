"""``python -m bench``: run the plan (bench.plan) and report.

Owns the command line and the order of runs. Runs are interleaved (run 1 of every contender
of a step, then run 2, ...) so a slow minute of a shared machine hurts every contender alike.
Throughput steps come first, then the scaling rows, then the paced runs for ack latency.
Exits 1 when any run failed or was not verified, so ``make bench-quick`` and the test suite
notice; a run skipped because something is missing (kcat, rsyslog, a client API) is
reported, not failed.

    python -m bench                      # the default plan (~30 min on 2 cores);
                                         # writes bench/RESULTS.md
    python -m bench --quick              # every kind of contender on 20,000 records, once
    python -m bench --workload a --contenders kpd-1,confluent-kafka --records 100000 --runs 1
    python -m bench --contenders rsyslog,kpd-send-pipe --records 50000 --runs 1
    python -m bench --scaling 1,2 --workload a --contenders none --records 100000
    python -m bench --latency kpd-1@100k --workload u --contenders none
    python -m bench --latency all --contenders none --scaling none   # only the paced rows
    python -m bench --profile --workload a   # kpd engine under py-spy -> bench/profile/

Naming workloads or contenders narrows the plan and leaves out scaling and latency unless
``--scaling`` / ``--latency`` ask for them; ``--contenders none`` runs no throughput step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import environment, report
from bench.contenders import CONTENDERS, find
from bench.plan import ALL_PACED, Plan, Step, default_plan, narrow, quick_plan, worker_counts
from bench.profile import attach_py_spy, render_top
from bench.runner import REPO_ROOT, RunResult, run_once
from bench.targets import median_runs
from bench.workloads import QUICK_RECORDS, WORKLOADS, Workload

__all__ = ["main"]

_DEFAULT_RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
_DEFAULT_PROFILE_DIR = REPO_ROOT / "bench" / "profile"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default=None,
                   help="comma-separated names from " + ",".join(WORKLOADS)
                   + " (default: the plan's)")  # fmt: skip
    p.add_argument("--contenders", default=None,
                   help="comma-separated from " + ",".join(CONTENDERS)
                   + ", kpd-N@wM (N apps, M workers), or 'none' (default: the plan's)")  # fmt: skip
    p.add_argument(
        "--latency",
        default=None,
        help="paced contenders for ack latency, comma-separated, 'all' (the plan's paced "
        "rows: kpd-1 and confluent-kafka at 1k, 10k and 100k records/s) or 'none'",
    )
    p.add_argument("--scaling", default=None,
                   help="worker counts for the scaling table, comma-separated, 'auto' "
                   f"({','.join(map(str, worker_counts()))} here) or 'none'")  # fmt: skip
    p.add_argument("--runs", type=int, default=None, help="runs per throughput contender")
    p.add_argument("--records", type=int, default=None, help="override every record count")
    p.add_argument("--quick", action="store_true",
                   help=f"the quick plan: {QUICK_RECORDS:,} records, one run each; checks the "
                   "bench works, not speed")  # fmt: skip
    p.add_argument("--results", type=Path, default=None,
                   help=f"write RESULTS.md here (default {_DEFAULT_RESULTS} for the full "
                   "default run, else nowhere)")  # fmt: skip
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
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    plan = _plan(args)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kpd-bench-") as tmp:
        log_root = args.log_dir or Path(tmp)
        if args.profile:
            workloads = [s.workload for s in plan.throughput] if args.workload else [
                WORKLOADS["a"]]  # fmt: skip
            return _profile(workloads, log_root, args.profile_dir)
        throughput = _run_steps(plan.throughput, log_root, "")
        scaling = _run_steps(plan.scaling, log_root, "scaling-")
        if scaling:
            print(f"\n{report.scaling_table(report.summarize(scaling))}\n", flush=True)
        latency = _run_latency(plan.latency, log_root)
    minutes = (time.monotonic() - started) / 60
    print(f"{len(throughput) + len(scaling) + len(latency)} runs in {minutes:.1f} min")
    _write_outputs(args, argv, plan, throughput, scaling, latency, minutes)
    everything = [*throughput, *scaling, *latency]
    for r in everything:
        if r.skipped:
            print(f"SKIPPED {r.workload} {r.contender} run {r.run}: {r.skipped}", file=sys.stderr)
    failed = [r for r in everything if not r.ok and not r.skipped]
    for r in failed:
        print(f"FAILED {r.workload} {r.contender} run {r.run}: {r.error}\n  "
              + "\n  ".join(r.client_errors), file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _plan(args: argparse.Namespace) -> Plan:
    base = quick_plan() if args.quick else default_plan()
    contenders = _names(args.contenders)
    latency = _names(args.latency)
    for name in [*(contenders or ()), *(latency or ())]:
        if name != ALL_PACED and not _known(name):
            raise SystemExit(f"unknown contender {name!r}; see --help")
    try:
        plan = narrow(base, workloads=_names(args.workload) or (),
                      contenders=contenders or (), runs=args.runs, records=args.records,
                      latency=latency, scaling=_scaling(args.scaling))  # fmt: skip
    except KeyError as exc:
        raise SystemExit(f"unknown workload {exc}; choose from {', '.join(WORKLOADS)}") from None
    if contenders == []:  # "--contenders none": only scaling and latency
        plan = Plan((), plan.scaling, plan.latency)
    return plan


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list; "none" is the empty list, no option at all None."""
    if text is None:
        return None
    if text == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"no names in {text!r}; see --help")
    return names


def _known(name: str) -> bool:
    try:
        find(name)
    except KeyError:
        return False
    return True


def _scaling(text: str | None) -> list[int] | None:
    if text is None:
        return None
    if text == "none":
        return []
    if text == "auto":
        return list(worker_counts())
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise SystemExit(f"--scaling takes worker counts, 'auto' or 'none', not {text!r}") from None


def _run_steps(steps: tuple[Step, ...], log_root: Path, prefix: str) -> list[RunResult]:
    results: list[RunResult] = []
    for step in steps:
        workload = step.workload
        mine: list[RunResult] = []
        for run in range(1, step.runs + 1):
            for name in step.contenders:
                contender = find(name)
                log_dir = log_root / f"{prefix}{workload.name}-{name}-{run}"
                log_dir.mkdir(parents=True, exist_ok=True)
                result = run_once(contender, workload, run, log_dir)
                mine.append(result)
                _print_run(result)
        summaries = report.summarize(mine)
        print(f"\nworkload {workload.name}: {workload.description}, {workload.records:,} "
              f"records\n{report.results_table(summaries)}\n\n"
              f"{report.ratios_table(summaries)}\n", flush=True)  # fmt: skip
        results += mine
    return results


def _print_run(result: RunResult) -> None:
    head = f"{result.workload} run {result.run} {result.contender:<22}"
    if result.skipped:
        print(f"{head} skipped: {result.skipped}", flush=True)
        return
    check = result.delivery.describe() if result.delivery else result.error
    print(f"{head} {result.records_per_s:>12,.0f} rec/s  cpu {result.producer_cpu_s:6.2f} s"
          f"  kpd {result.kpd_cpu_s:6.2f} s  broker {result.broker_cpu_s:6.2f} s  {check}",
          flush=True)  # fmt: skip


def _run_latency(steps: tuple[Step, ...], log_root: Path) -> list[RunResult]:
    results = []
    for step in steps:
        # Round by round, every contender of the rate in each: a slow minute of a shared
        # machine hurts them alike (the targets judge each one's median run).
        for run, name in ((run, name) for run in range(1, step.runs + 1)
                          for name in step.contenders):  # fmt: skip
            suffix = f"-r{run}" if step.runs > 1 else ""
            log_dir = log_root / f"latency-{step.workload.name}-{name}{suffix}"
            log_dir.mkdir(parents=True, exist_ok=True)
            result = run_once(find(name), step.workload, run, log_dir)
            results.append(result)
            lat = result.latency or {}
            print(f"latency {step.workload.name} {name:<22} run {run} offered "
                  f"{lat.get('offered_rate', 0):,} rec/s, achieved "
                  f"{lat.get('achieved_rate', 0):,.0f}: p50 {lat.get('p50_ms', 0):.2f} "
                  f"p99 {lat.get('p99_ms', 0):.2f} p99.9 {lat.get('p999_ms', 0):.2f} ms  "
                  f"{_queue_full(lat)}"
                  f"{result.delivery.describe() if result.delivery else result.error}",
                  flush=True)  # fmt: skip
    if results:
        median = median_runs(results)
        print(f"\n{report.latency_table(results)}\n\n{report.process_cpu_table(median)}\n\n"
              f"{report.stage_table(median)}\n", flush=True)  # fmt: skip
    return results


def _queue_full(latency: dict) -> str:
    """The sender's waits on a full local queue (librdkafka's BufferError), when it had any."""
    waits = latency.get("queue_full_waits", 0)
    return f"{waits:,} queue-full waits  " if waits else ""


def _write_outputs(args, argv, plan: Plan, throughput, scaling, latency, minutes) -> None:
    if args.json:
        runs = [r.to_json() for r in [*throughput, *scaling, *latency]]
        args.json.write_text(json.dumps(runs, indent=1))
    full_default = not (args.quick or args.workload or args.contenders or args.latency
                        or args.scaling or args.records or args.runs)  # fmt: skip
    target = args.results or (_DEFAULT_RESULTS if full_default else None)
    if target is None:
        return
    run_context = {
        "command": "`" + " ".join(["python -m bench", *argv]) + "`",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "counts": _counts(plan),
        "duration": f"{minutes:.1f} min",
        # Producer and broker share these cores with whatever else runs: say how busy it was.
        "load average at the end (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    context = {"Run": run_context, "Machine": environment.machine(),
               "Versions": environment.versions()}  # fmt: skip
    workloads = _described_workloads(plan)
    names = dict.fromkeys(n for step in plan.steps for n in step.contenders)
    described_contenders = {n: find(n).description for n in names}
    text = report.render_results(throughput, context, workloads, described_contenders,
                                 latency, scaling,
                                 _notes([*throughput, *scaling, *latency]))  # fmt: skip
    target.write_text(text)
    print(f"wrote {target}")


def _counts(plan: Plan) -> str:
    parts = [f"({s.workload.name}) {s.workload.records:,} records x {s.runs} run"
             f"{'s' if s.runs > 1 else ''}" for s in plan.throughput]  # fmt: skip
    if plan.scaling:
        s = plan.scaling[0]
        parts.append(f"scaling ({s.workload.name}) {s.workload.records:,} records x {s.runs} "
                     f"run per worker count")  # fmt: skip
    for s in plan.latency:
        parts.append(f"latency ({s.workload.name}) {s.workload.records:,} records x {s.runs} "
                     f"round{'s' if s.runs > 1 else ''} of each contender")  # fmt: skip
    return "; ".join(parts)


def _described_workloads(plan: Plan) -> dict[str, str]:
    described: dict[str, str] = {}
    for step in plan.steps:
        w = step.workload
        described.setdefault(w.name, f"{w.description}; {w.records:,} records, "
                             f"{w.partitions} partitions, acks={w.acks}, "
                             f"linger.ms={w.linger_ms}")  # fmt: skip
    return described


def _notes(results: list[RunResult]) -> list[str]:
    """What a reader of RESULTS.md must know about this run: skipped rows and the
    librdkafka that the Debian programs ran on."""
    notes = []
    skipped = {(r.contender, r.skipped) for r in results if r.skipped}
    notes += [f"{contender} skipped: {why}" for contender, why in sorted(skipped)]
    ran = {r.contender for r in results if not r.skipped}
    debian = sorted(ran & {"kcat", "rsyslog"})
    if debian:
        notes.append(
            f"{' and '.join(debian)} ran on the confluent-kafka wheel's librdkafka "
            "(LD_LIBRARY_PATH at a librdkafka.so.1 link to it): Debian's librdkafka 2.0.2 "
            "fails the ApiVersions exchange with tansu (DESIGN.md, Facts measured)."
        )
    return notes


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
