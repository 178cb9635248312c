"""What one ``python -m bench`` runs: which contenders on which workload, how many times.

Owns the default plan (the one ``make bench`` runs and bench/RESULTS.md reports), the quick
plan the test suite runs, and how the command line narrows either. Three sections:

* throughput: every contender of a step on the step's workload, ``runs`` times, interleaved;
* scaling: kpd with 1, 2, 4, ... workers up to the CPUs present (bench.contenders
  ``scaling_contender``), on workload (a);
* latency: the paced contenders, ``PACED_RUNS`` rounds: kpd-1, confluent-kafka and
  confluent-kafka-via-kpd side by side at 1,000, 10,000 and 100,000 records/s offered (issues
  18 and 20), each rate a step of its own whose record count is the rate times
  ``PACED_SECONDS`` (long enough for a stable p99 at 1k/s: 15,000 records, the first second
  of them the warm-up), plus kpd-1@100k-gc.

The default plan fits ~30 minutes on a 2-core machine: 1,000,000 records of (a), (u) and (l),
250,000 of (c) (1 KiB values: a quarter of the bytes still takes kpd ~3 s), 3 runs each;
4,000,000 lines of (l-long) once, for `kpd send`'s memory (it must not grow with the input:
the two lengths are both far beyond what a bounded sender keeps in flight); one run per
scaling row and per rings.fsync row (``kpd-1-accepted-fsync-*``); the paced section ~16
minutes (ten rows, five rounds).
Workloads (b) and (d), aiokafka, confluent-kafka-4, the ``-warm`` app variants and the engine
variants are not in it (no target names them); ``--workload`` / ``--contenders`` run them.
Adding a row to the default run is adding a contender name to a step here.

Pure: names and numbers, no I/O.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bench.contenders import (
    FSYNC_POLICIES,
    LATENCY_RATES,
    PACED_CLIENTS,
    find,
    paced_name,
    scaling_contender,
)
from bench.workloads import WORKLOADS, Workload, base_name, quick

__all__ = [
    "ALL_PACED",
    "PACED_RUNS",
    "PACED_SECONDS",
    "Plan",
    "Step",
    "default_plan",
    "latency_steps",
    "narrow",
    "quick_plan",
    "worker_counts",
]

DEFAULT_RUNS = 3
LINES_LONG_SCALE = 4  # (l-long) has 4 times (l)'s lines: `kpd send`'s memory must not follow
# Seconds of paced sending per rate: at 1k/s a p99.9 needs thousands of records after the
# one-second warm-up; at 100k/s ten seconds is a million records.
PACED_SECONDS = {1_000: 15, 10_000: 10, 100_000: 10}
# Each paced row this many times, the rows of a rate interleaved (round 1 of every contender,
# then round 2, ...): one run's p50 moved 2-5x with the neighbours of a shared VM (the direct
# librdkafka p50 at 10k/s 4.1 ms in one run, 19.7 in another an hour later). The targets
# judge each contender's median run (bench.targets.median_runs) and each p50 target the
# median of the rounds' own differences. Five, not three: in one full run the listener's
# rounds at 100k/s added +4.07, +2.33 and +0.06 ms to the direct p50, a spread wider than
# the 2 ms bound itself, so the median of three was one round's luck (docs/performance.md,
# round 7). Two more rounds cost ~6 minutes of `make bench`.
PACED_RUNS = 5
ALL_PACED = "all"  # --latency all: the plan's own paced steps
_QUICK_PACED_RATE = 10_000  # the quick plan's one paced rate (2 s of its records)


@dataclass(frozen=True)
class Step:
    workload: Workload
    contenders: tuple[str, ...]
    runs: int = DEFAULT_RUNS
    scale: int = 1  # a --records override gives this step records x scale


@dataclass(frozen=True)
class Plan:
    throughput: tuple[Step, ...]
    scaling: tuple[Step, ...] = ()
    latency: tuple[Step, ...] = ()
    quick: bool = False  # workloads named on the command line are made quick too

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.throughput + self.scaling + self.latency


_END_TO_END = ("kpd-1", "kpd-1-batch", "kpd-1-nokeep", "kpd-4", "kpd-4-nokeep",
               "confluent-kafka", "confluent-kafka-via-kpd", "confluent-kafka-tuned")  # fmt: skip
_FSYNC = tuple(f"kpd-1-accepted-fsync-{policy}" for policy in FSYNC_POLICIES)
_LINES = ("rsyslog", "kpd-send-file", "kpd-send-pipe")
# A workload named on the command line that the default plan does not run gets these.
_OTHER_WORKLOADS = ("kpd-engine", "kpd-1", "kpd-4", "confluent-kafka", "confluent-kafka-tuned")


def worker_counts(cpus: int | None = None) -> tuple[int, ...]:
    """1, 2, 4, ... up to the CPUs present, and the CPU count itself when not a power of 2."""
    cpus = cpus or os.cpu_count() or 1
    counts = [1]
    while counts[-1] * 2 <= cpus:
        counts.append(counts[-1] * 2)
    if counts[-1] != cpus:
        counts.append(cpus)
    return tuple(counts)


def _lines_long(workload: Workload, contenders: tuple[str, ...], runs: int) -> Step:
    long = replace(workload, name=f"{workload.name}-long",
                   records=workload.records * LINES_LONG_SCALE)  # fmt: skip
    return Step(long, contenders, runs, scale=LINES_LONG_SCALE)


def default_plan(cpus: int | None = None) -> Plan:
    a, u, c, lines = WORKLOADS["a"], WORKLOADS["u"], WORKLOADS["c"], WORKLOADS["l"]
    return Plan(
        throughput=(
            Step(a, ("kpd-engine", *_END_TO_END, "kcat", "kpd-1-eos")),
            Step(a, _FSYNC, runs=1),  # what ack accepted costs per rings.fsync policy
            Step(u, _END_TO_END),
            Step(replace(c, records=250_000),
                 ("kpd-1", "confluent-kafka", "confluent-kafka-tuned")),
            Step(lines, _LINES),
            _lines_long(lines, ("kpd-send-pipe",), runs=1),
        ),
        scaling=_scaling(a, worker_counts(cpus), runs=1),
        latency=latency_steps(a, extra={100_000: ("kpd-1@100k-gc",)}),
    )  # fmt: skip


def latency_steps(workload: Workload, rates: Sequence[int] = LATENCY_RATES,
                  extra: dict[int, tuple[str, ...]] | None = None,
                  seconds: dict[int, float] | None = None,
                  runs: int = PACED_RUNS) -> tuple[Step, ...]:  # fmt: skip
    """One step per rate: kpd-1 and confluent-kafka paced at it (and ``extra`` contenders
    at that rate), ``workload`` cut to the rate times its seconds of records, ``runs``
    rounds."""
    seconds = seconds or PACED_SECONDS
    steps = []
    for rate in rates:
        records = int(rate * seconds.get(rate, 10))
        names = (*(paced_name(c, rate) for c in PACED_CLIENTS), *(extra or {}).get(rate, ()))
        steps.append(Step(replace(workload, records=records), names, runs=runs))
    return tuple(steps)


def quick_plan() -> Plan:
    """Every kind of child once, tiny: checks the bench works (the test suite runs it)."""
    a = quick(WORKLOADS["a"])
    return Plan(
        throughput=(
            Step(a, ("kpd-engine", "kpd-1", "kpd-1-nokeep", "kpd-1-batch", "aiokafka",
                     "confluent-kafka", "confluent-kafka-tuned", "confluent-kafka-via-kpd"),
                 runs=1),
            Step(quick(WORKLOADS["d"]), ("kpd-1",), runs=1),
            Step(quick(WORKLOADS["u"]), ("kpd-1",), runs=1),
            Step(quick(WORKLOADS["l"]), ("rsyslog", "kpd-send-pipe"), runs=1),
        ),
        scaling=_scaling(a, (1,), runs=1),
        latency=latency_steps(a, (_QUICK_PACED_RATE,),
                              seconds={_QUICK_PACED_RATE: a.records / _QUICK_PACED_RATE},
                              runs=1),
        quick=True,
    )  # fmt: skip


def _scaling(workload: Workload, counts: Sequence[int], runs: int) -> tuple[Step, ...]:
    return (Step(workload, tuple(scaling_contender(w).name for w in counts), runs),)


def narrow(
    plan: Plan,
    workloads: Sequence[str] = (),
    contenders: Sequence[str] = (),
    runs: int | None = None,
    records: int | None = None,
    latency: Sequence[str] | None = None,
    scaling: Sequence[int] | None = None,
) -> Plan:
    """The plan as the command line narrows it. ``workloads``: only those (the plan's steps
    for them, or a default set of contenders for a workload it does not run). ``contenders``:
    only those, on the given workloads or else wherever the plan runs them (on (a), or (l)
    for a line reader, when it runs them nowhere). Naming either drops scaling and latency
    unless ``scaling`` / ``latency`` name what to run: paced contenders, grouped by their rate
    into steps of that rate's length (``PACED_SECONDS``; the quick plan keeps its records),
    or ``["all"]`` for the plan's own paced steps. ``runs`` and ``records`` override."""
    focused = bool(workloads or contenders)
    steps = list(plan.throughput)
    if workloads:
        by_name = {base_name(s.workload.name): s for s in steps}
        steps = [by_name.get(name) or Step(_workload(name, plan), _OTHER_WORKLOADS,
                                           runs=1 if plan.quick else DEFAULT_RUNS)
                 for name in workloads]  # fmt: skip
    if contenders:
        steps = _with_contenders(steps, contenders, plan, given_workloads=bool(workloads))
    scaling_steps = plan.scaling if not focused else ()
    if scaling is not None:
        base = steps[0].workload if workloads and steps else _workload("a", plan)
        scaling_steps = _scaling(base, scaling, runs=1) if scaling else ()
    paced = plan.latency if not focused else ()
    if latency is not None and list(latency) != [ALL_PACED]:
        base = steps[0].workload if workloads and steps else _workload("a", plan)
        paced = _paced_steps(base, latency, plan.quick)
    elif latency is not None:
        paced = plan.latency
    narrowed = Plan(tuple(steps), scaling_steps, paced, plan.quick)
    return _resized(narrowed, runs, records)


def _paced_steps(base: Workload, names: Sequence[str], quick_plan: bool) -> tuple[Step, ...]:
    """The named paced contenders, one step per rate (in the order the rates first appear)."""
    by_rate: dict[int, list[str]] = {}
    for name in names:
        by_rate.setdefault(int(find(name).options.get("rate", 0)), []).append(name)
    steps = []
    for rate, group in by_rate.items():
        records = base.records if quick_plan or not rate else rate * PACED_SECONDS.get(rate, 10)
        runs = 1 if quick_plan else PACED_RUNS
        steps.append(Step(replace(base, records=int(records)), tuple(group), runs=runs))
    return tuple(steps)


def _workload(name: str, plan: Plan) -> Workload:
    """The workload called ``name`` in this plan (quick in the quick plan)."""
    for step in plan.steps:
        if base_name(step.workload.name) == name:
            return step.workload
    return quick(WORKLOADS[name]) if plan.quick else WORKLOADS[name]


def _with_contenders(steps: list[Step], names: Sequence[str], plan: Plan,
                     given_workloads: bool) -> list[Step]:  # fmt: skip
    if given_workloads:
        return [replace(s, contenders=_fitting(names, s.workload)) for s in steps
                if _fitting(names, s.workload)]  # fmt: skip
    kept = [replace(s, contenders=tuple(n for n in s.contenders if n in names)) for s in steps]
    kept = [s for s in kept if s.contenders]
    placed = {n for s in kept for n in s.contenders}
    for name in (n for n in names if n not in placed):
        base = _workload("l" if find(name).lines else "a", plan)
        kept.append(Step(base, (name,), runs=1 if plan.quick else DEFAULT_RUNS))
    return kept


def _fitting(names: Sequence[str], workload: Workload) -> tuple[str, ...]:
    """The contenders that can run on ``workload`` (line readers need text lines)."""
    return tuple(n for n in names if workload.text or not find(n).lines)


def _resized(plan: Plan, runs: int | None, records: int | None) -> Plan:
    def resize(step: Step, runs: int | None) -> Step:
        workload = step.workload
        if records:
            workload = replace(workload, records=records * step.scale)
        return replace(step, workload=workload, runs=runs or step.runs)

    return Plan(
        tuple(resize(s, runs) for s in plan.throughput),
        tuple(resize(s, None) for s in plan.scaling),
        tuple(resize(s, runs) for s in plan.latency),
        plan.quick,
    )
