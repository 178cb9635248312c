"""The stage trace's parser (bench.stages) on a literal /metrics sample in Prometheus' text
format: histograms summed over workers per stage, two scrapes' difference, and the
mean / p50 / p99 estimated from buckets as histogram_quantile does."""

from __future__ import annotations

import math

from bench.stages import REQUEST_STAGE, STAGE_METRIC, parse_histograms, stage_figures

# Two workers; stage "ring" has 100 records in worker 0 and 100 in worker 1 after the run.
_BEFORE = """\
# HELP kpd_record_stage_seconds Time a record spent in each stage.
# TYPE kpd_record_stage_seconds histogram
kpd_record_stage_seconds_bucket{le="0.001",stage="ring",worker="0"} 10.0
kpd_record_stage_seconds_bucket{le="0.01",stage="ring",worker="0"} 10.0
kpd_record_stage_seconds_bucket{le="+Inf",stage="ring",worker="0"} 10.0
kpd_record_stage_seconds_sum{stage="ring",worker="0"} 0.005
kpd_record_stage_seconds_count{stage="ring",worker="0"} 10.0
"""
_AFTER = """\
# HELP kpd_records_received_total Records received.
# TYPE kpd_records_received_total counter
kpd_records_received_total{worker="0"} 210.0
# HELP kpd_record_stage_seconds Time a record spent in each stage.
# TYPE kpd_record_stage_seconds histogram
kpd_record_stage_seconds_bucket{le="0.001",stage="ring",worker="0"} 60.0
kpd_record_stage_seconds_bucket{le="0.01",stage="ring",worker="0"} 110.0
kpd_record_stage_seconds_bucket{le="+Inf",stage="ring",worker="0"} 110.0
kpd_record_stage_seconds_sum{stage="ring",worker="0"} 0.255
kpd_record_stage_seconds_count{stage="ring",worker="0"} 110.0
kpd_record_stage_seconds_bucket{le="0.001",stage="ring",worker="1"} 0.0
kpd_record_stage_seconds_bucket{le="0.01",stage="ring",worker="1"} 98.0
kpd_record_stage_seconds_bucket{le="+Inf",stage="ring",worker="1"} 100.0
kpd_record_stage_seconds_sum{stage="ring",worker="1"} 0.75
kpd_record_stage_seconds_count{stage="ring",worker="1"} 100.0
kpd_record_stage_seconds_bucket{stage="request \\"written\\"",le="0.01"} 4.0
kpd_record_stage_seconds_bucket{stage="request \\"written\\"",le="+Inf"} 4.0
kpd_record_stage_seconds_sum{stage="request \\"written\\""} 0.02 1700000000000
kpd_record_stage_seconds_count{stage="request \\"written\\""} 4.0
kpd_record_stage_seconds_created{stage="ring",worker="0"} 1.7e9
"""


def test_histograms_are_summed_over_other_labels_per_stage() -> None:
    found = parse_histograms(_AFTER, STAGE_METRIC, "stage")
    assert list(found) == ["ring", 'request "written"']  # first-seen order, escapes undone
    ring = found["ring"]
    assert ring.buckets == {0.001: 60.0, 0.01: 208.0, math.inf: 210.0}
    assert (ring.count, round(ring.sum, 9)) == (210.0, 1.005)
    assert parse_histograms(_AFTER, "kpd_no_such_metric", "stage") == {}


def test_figures_cover_only_the_records_between_two_scrapes() -> None:
    ring, written = stage_figures(_AFTER, _BEFORE)
    # The run: 200 ring records, 50 at or under 1 ms, 198 at or under 10 ms, 2 beyond.
    assert (ring.stage, ring.count) == ("ring", 200.0)
    assert math.isclose(ring.mean_s, 1.0 / 200)
    # p50: rank 100 in the (1 ms, 10 ms] bucket holding ranks 51..198: 1 + 9 x 50/148 ms.
    assert math.isclose(ring.p50_s, 0.001 + 0.009 * 50 / 148)
    # p99: rank 198 is that bucket's upper edge.
    assert math.isclose(ring.p99_s, 0.01)
    # Nothing of this stage before the run: all of it counts; its p99 is in the first bucket.
    assert (written.count, written.mean_s) == (4.0, 0.005)
    assert math.isclose(written.p99_s, 0.01 * 0.99)


def test_a_rank_beyond_the_last_finite_bucket_gives_that_bound_and_no_trace_gives_nothing() -> None:
    tail = """kpd_record_stage_seconds_bucket{stage="x",le="0.5"} 1
kpd_record_stage_seconds_bucket{stage="x",le="+Inf"} 10
kpd_record_stage_seconds_sum{stage="x"} 30
kpd_record_stage_seconds_count{stage="x"} 10
"""
    (x,) = stage_figures(tail)
    assert (x.p50_s, x.p99_s, x.mean_s) == (0.5, 0.5, 3.0)
    assert stage_figures("kpd_records_received_total 3\n", "") == []  # the daemon has no trace
    assert stage_figures(None) == []  # not scraped


def test_the_kafka_listeners_request_time_is_one_more_stage_between_the_two_scrapes() -> None:
    def scrape(fast: int, total: int, seconds: float) -> str:
        return (f'kpd_kafka_produce_seconds_bucket{{le="0.001"}} {fast}\n'
                f'kpd_kafka_produce_seconds_bucket{{le="+Inf"}} {total}\n'
                f"kpd_kafka_produce_seconds_sum {seconds}\n"
                f"kpd_kafka_produce_seconds_count {total}\n")  # fmt: skip

    *_, request = stage_figures(_AFTER + scrape(9, 10, 0.02), _BEFORE + scrape(1, 2, 0.01))
    assert (request.stage, request.count) == (REQUEST_STAGE, 8.0)
    assert math.isclose(request.mean_s, 0.01 / 8)
    assert math.isclose(request.p50_s, 0.001 * 4 / 8)
    # No Produce request in the run (a listener that served none): no such row.
    assert [f.stage for f in stage_figures(_AFTER + scrape(1, 2, 0.01),
                                           _BEFORE + scrape(1, 2, 0.01))] == [
        "ring", 'request "written"']  # fmt: skip
