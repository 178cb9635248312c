"""Where each millisecond of a kpd record goes: the stage trace read from the daemon's /metrics.

Owns the parsing of one histogram family out of Prometheus' text exposition format (version
0.0.4: ``name_bucket{le="..."}``, ``name_sum``, ``name_count`` samples, any other labels),
the difference of two scrapes (before "go" and after "done", so only the run's records
count), and the figures of each stage: mean, and p50 / p99 estimated from the cumulative
buckets as Prometheus' ``histogram_quantile`` does (linear within the bucket that holds the
rank; a rank in the +Inf bucket gives the highest finite bound). Series that differ only in
other labels (``worker``) are summed per stage.

``STAGE_METRIC`` is the per-record stage histogram issue 18 asks the daemon to export
(``kpd_record_stage_seconds{stage}``); until the daemon has it, ``stage_figures`` returns an
empty list and the report says "not available".

Pure: text in, figures out; imports only the stdlib.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["STAGE_METRIC", "Histogram", "StageFigures", "parse_histograms", "stage_figures"]

STAGE_METRIC = "kpd_record_stage_seconds"
STAGE_LABEL = "stage"
# The Kafka listener's own figure, per request (not per record): a Produce request handled ->
# its answer written, what kpd adds to a Kafka client's round trip. Shown as one more stage.
REQUEST_METRIC = "kpd_kafka_produce_seconds"
REQUEST_STAGE = "kafka request (per request)"

# One sample line: name, optional {labels}, value, optional timestamp.
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
# One label pair; values may hold escaped quotes, backslashes and newlines.
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?\s*')


@dataclass
class Histogram:
    """One stage's cumulative buckets (upper bound -> count at or below it), sum and count."""

    buckets: dict[float, float]
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Histogram | None) -> Histogram:
        if earlier is None:
            return self
        return Histogram(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float:
        """Prometheus' histogram_quantile over these buckets (NaN when empty)."""
        bounds = sorted(self.buckets)
        if not bounds or self.count <= 0:
            return math.nan
        rank = q * self.count
        previous_bound, previous_count = 0.0, 0.0
        for bound in bounds:
            cumulative = self.buckets[bound]
            if cumulative >= rank:
                if math.isinf(bound):
                    return previous_bound  # the rank is beyond the last finite bound
                if cumulative == previous_count:
                    return bound
                share = (rank - previous_count) / (cumulative - previous_count)
                return previous_bound + (bound - previous_bound) * share
            previous_bound, previous_count = bound, cumulative
        return previous_bound

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count > 0 else math.nan


@dataclass(frozen=True)
class StageFigures:
    stage: str
    count: float
    mean_s: float
    p50_s: float
    p99_s: float


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _labels(text: str | None) -> dict[str, str]:
    return {name: _unescape(value) for name, value in _LABEL.findall(text or "")}


def _number(text: str) -> float:
    return float(text)  # float() reads "+Inf", "-Inf" and "NaN" as Prometheus writes them


def parse_histograms(text: str, metric: str, by: str) -> dict[str, Histogram]:
    """The histogram family ``metric`` in exposition ``text``, one Histogram per value of the
    label ``by`` (series differing in other labels are summed), in first-seen order."""
    found: dict[str, Histogram] = {}
    suffixes = {f"{metric}_bucket": "bucket", f"{metric}_sum": "sum", f"{metric}_count": "count"}
    for line in text.splitlines():
        if not line.startswith(metric):
            continue  # comments (# HELP, # TYPE) and other families
        match = _SAMPLE.match(line)
        if match is None or match[1] not in suffixes:
            continue
        labels = _labels(match[2])
        key = labels.get(by, "")
        histogram = found.setdefault(key, Histogram({}))
        value = _number(match[3])
        kind = suffixes[match[1]]
        if kind == "bucket":
            le = _number(labels["le"])
            histogram.buckets[le] = histogram.buckets.get(le, 0.0) + value
        elif kind == "sum":
            histogram.sum += value
        else:
            histogram.count += value
    return found


def stage_figures(after: str | None, before: str | None = None) -> list[StageFigures]:
    """Mean, p50 and p99 of each stage over the records between two scrapes of /metrics
    (``before`` None: since the daemon started). Empty when the daemon exports no stage
    trace (or was not scraped)."""
    if after is None:
        return []
    now = parse_histograms(after, STAGE_METRIC, STAGE_LABEL)
    then = parse_histograms(before, STAGE_METRIC, STAGE_LABEL) if before else {}
    requests = parse_histograms(after, REQUEST_METRIC, "").get("")
    if requests is not None:
        now[REQUEST_STAGE] = requests
        if before:
            then[REQUEST_STAGE] = parse_histograms(before, REQUEST_METRIC, "").get("")
    figures = []
    for stage, histogram in now.items():
        run = histogram.minus(then.get(stage))
        if stage == REQUEST_STAGE and not run.count:
            continue  # a listener that served no Produce request in the run
        figures.append(StageFigures(stage, run.count, run.mean, run.quantile(0.50),
                                    run.quantile(0.99)))  # fmt: skip
    return figures
