"""What one ``python -m bench`` runs: which contenders on which workload, how many times.

Owns the default plan (the one ``make bench`` runs and bench/RESULTS.md reports), the quick
plan the test suite runs, and how the command line narrows either. Three sections:

* throughput: every contender of a step on the step's workload, ``runs`` times, interleaved;
* scaling: kpd with 1, 2, 4, ... workers up to the CPUs present (bench.contenders
  ``scaling_contender``), on workload (a);
* latency: the paced contenders, one run each.

The default plan fits ~30 minutes on a 2-core machine: 1,000,000 records of (a), (u) and (l),
250,000 of (c) (1 KiB values: a quarter of the bytes still takes kpd ~3 s), 3 runs each;
4,000,000 lines of (l-long) once, for `kpd send`'s memory (it must not grow with the input:
the two lengths are both far beyond what a bounded sender keeps in flight); one run per
scaling row, per rings.fsync row (``kpd-1-accepted-fsync-*``) and per paced contender.
Workloads (b) and (d), aiokafka, confluent-kafka-4, the ``-warm`` app variants and the engine
variants are not in it (no target names them); ``--workload`` / ``--contenders`` run them.
Adding a row to the default run is adding a contender name to a step here.

Pure: names and numbers, no I/O.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bench.contenders import FSYNC_POLICIES, LATENCY_CONTENDERS, find, scaling_contender
from bench.workloads import WORKLOADS, Workload, base_name, quick

__all__ = ["Plan", "Step", "default_plan", "narrow", "quick_plan", "worker_counts"]

DEFAULT_RUNS = 3
LINES_LONG_SCALE = 4  # (l-long) has 4 times (l)'s lines: `kpd send`'s memory must not follow


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
        latency=(Step(a, LATENCY_CONTENDERS, runs=1), Step(u, ("kpd-1@100k",), runs=1)),
    )  # fmt: skip


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
    unless ``scaling`` / ``latency`` name what to run. ``runs`` and ``records`` override."""
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
    latency_steps = plan.latency if not focused else ()
    if latency is not None:
        base = steps[0].workload if workloads and steps else _workload("a", plan)
        latency_steps = (Step(base, tuple(latency), runs=1),) if latency else ()
    narrowed = Plan(tuple(steps), scaling_steps, latency_steps, plan.quick)
    return _resized(narrowed, runs, records)


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
        tuple(resize(s, None) for s in plan.latency),
        plan.quick,
    )
