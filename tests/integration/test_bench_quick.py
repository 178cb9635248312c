"""The benchmark cannot rot: its quick mode runs once per test session, end to end.

`python -m bench --quick` runs the quick plan (bench.plan): a fresh tansu per run, 20,000
records of workloads (a), (d), (u) and (l) through kpd's engine, kpd end to end (a daemon per
run; one app keeping every future, one keeping none, the batch API when the client has one,
4 apps against a 1-worker daemon as a scaling row), aiokafka, confluent-kafka (both loops),
`kpd send` fed by a pipe and rsyslog (when Debian's rsyslog and omkafka are installed); it
reads every topic back and exits non-zero unless every record of every run that was not
skipped was delivered exactly once. The other tests pin the pieces that decide whether a run
counts or what it reports: record ids and keys, the sharding, the distinct-record counter,
the paced schedule and latency percentiles, a missing program making a skipped (not failed)
run, and the profile summary; tests/unit/test_bench_plan.py pins the plan and the targets.
Speed is never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.contenders import Contender, find
from bench.kpd_service import WORKERS
from bench.pacing import Pace, latency_summary, percentile, run_paced
from bench.plan import quick_plan
from bench.profile import render_top
from bench.runner import run_once
from bench.verify import WARM_UP_KEY, RecordCounter
from bench.workloads import QUICK_RECORDS, WORKLOADS, key_for, lines, make_records, quick, record_id

REPO_ROOT = Path(__file__).resolve().parents[2]
# What may be skipped rather than run: the batch API until the client has one, and the
# Debian programs where they are not installed.
_MAY_SKIP = {"kpd-1-batch": "not available", "rsyslog": "not installed"}


def test_quick_bench_delivers_every_record_of_every_contender(tmp_path: Path) -> None:
    results_md, runs_json = tmp_path / "RESULTS.md", tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(results_md),
         "--json", str(runs_json), "--log-dir", str(tmp_path / "logs")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"

    runs = {(run["workload"], run["contender"]): run for run in json.loads(runs_json.read_text())}
    planned = {(s.workload.name, c) for s in quick_plan().steps for c in s.contenders}
    assert set(runs) == planned
    for (_, contender), run in runs.items():
        if run["skipped"]:
            assert _MAY_SKIP.get(contender, "no skip allowed") in run["skipped"], run
            continue
        assert run["ok"], run
        assert run["delivered"] == QUICK_RECORDS
        assert run["delivery"]["distinct"] == QUICK_RECORDS
        assert run["delivery"]["read"] == QUICK_RECORDS
        assert run["wall_s"] > 0
        assert run["rss_peak_kib"] > 0  # /proc of the child was read while it ran
        if contender == "kpd-4@w1":  # the scaling row: its own worker count
            assert (run["kpd_processes"], run["kpd_workers"]) == (3, 1)
            assert run["kpd_ring_bytes"] == (16 + 4) * 2**20
        elif find(contender).service == "kpd":
            # The daemon's supervisor, ingest and its default workers were found and read apart.
            assert (run["kpd_processes"], run["kpd_workers"]) == (2 + WORKERS, WORKERS)
            assert run["kpd_rss_peak_kib"] > 0
            assert run["kpd_ring_bytes"] == WORKERS * (16 + 4) * 2**20
        else:
            assert run["kpd_processes"] == 0
        if contender in ("kpd-send-pipe", "rsyslog"):  # the program the child ran and reaped
            assert run["reaped_rss_kib"] > 0 and run["reaped_cpu_s"] > 0
        assert run["warm_ups"] == (1 if contender == "rsyslog" else 0)

    text = results_md.read_text()
    for workload in ("a-quick", "d-quick", "u-quick", "l-quick"):
        assert f"## Workload {workload}" in text
    for _, contender in planned:
        assert f"| {contender} |" in text
    assert "| kpd-1 | confluent-kafka |" in text  # the ratios table
    assert "| records/s, kpd-1 / confluent-kafka (callbacks) | a |" in text  # the targets
    assert "| records/s, kpd-1 / confluent-kafka (callbacks) | u |" in text
    assert "The shell path, the sender program apart:" in text
    assert "## Scaling with kpd's workers" in text
    assert "- librdkafka: " in text and "- tansu: 0.6.0" in text


def test_unique_keys_are_distinct_uuid_shaped_and_end_in_the_record_id() -> None:
    workload = quick(WORKLOADS["u"], records=5000)
    records = make_records(workload)
    assert len(set(records.keys)) == 5000
    assert all(len(k) == 36 and k.count(b"-") == 4 for k in records.keys)  # type: ignore[arg-type]
    assert records.keys[4321].endswith(b"-%012x" % 4321)  # type: ignore[union-attr]
    assert key_for(workload, 4321) == records.keys[4321]


def test_text_records_are_lines_with_a_decimal_id_and_one_tab() -> None:
    workload = quick(WORKLOADS["l"], records=3)
    records = make_records(workload)
    text = b"".join(lines(records, chunk=2))
    assert text.count(b"\n") == 3
    first = text.split(b"\n")[0]
    key, value = first.split(b"\t")
    assert key == b"key-000000000000" and value.startswith(b"0000000000")
    assert len(value) == 100 and value.isascii() and b"\t" not in value
    assert [workload.record_id(v) for v in records.values] == [0, 1, 2]


def test_every_value_carries_its_record_id_and_keys_cycle() -> None:
    workload = WORKLOADS["a"]
    records = make_records(quick(workload, records=25_000))
    assert [record_id(v) for v in records.values] == list(range(25_000))
    assert all(len(v) == 100 for v in records.values)
    # Key of record i is key (i mod 10,000), 16 bytes.
    assert records.keys[0] == records.keys[10_000] == b"key-000000000000"
    assert records.keys[12_345] == b"key-000000002345"


def test_shards_split_the_records_without_overlap() -> None:
    workload = quick(WORKLOADS["d"], records=1001)
    shards = [make_records(workload, shard, 4) for shard in range(4)]
    ids = sorted(record_id(v) for shard in shards for v in shard.values)
    assert ids == list(range(1001))
    assert all(key is None for shard in shards for key in shard.keys)


def test_counter_flags_duplicates_foreign_ids_and_wrong_keys() -> None:
    workload = quick(WORKLOADS["a"], records=3)
    counter = RecordCounter(workload)
    value = {i: i.to_bytes(8, "big") + b"v" * 92 for i in range(5)}  # id, then filler
    counter.take(key_for(workload, 0), value[0])
    counter.take(key_for(workload, 0), value[0])  # a duplicate
    counter.take(key_for(workload, 1), value[4])  # id 4 is not in a 3-record workload
    counter.take(key_for(workload, 1), value[2])  # id 2 under record 1's key
    counter.take(key_for(workload, 1), value[1][:50])  # truncated value
    counter.take(key_for(workload, 1), value[1])
    assert (counter.read, counter.distinct, counter.duplicates, counter.foreign) == (6, 2, 1, 3)
    counter.take(WARM_UP_KEY, b"warm-up")  # counted apart, never as a record
    assert (counter.read, counter.warm_ups) == (6, 1)


def test_counter_reads_text_ids_and_calls_a_value_without_one_foreign() -> None:
    workload = quick(WORKLOADS["l"], records=3)
    counter = RecordCounter(workload)
    good = make_records(workload).values
    counter.take(key_for(workload, 1), good[1])
    counter.take(key_for(workload, 2), b"x" * 100)  # no digits where the id belongs
    assert (counter.read, counter.distinct, counter.foreign) == (2, 1, 1)


def test_profile_top_counts_own_and_total_samples_per_function() -> None:
    collapsed = (
        "main (bench/child.py:10);append (daemon/producer/engine.py:140) 3\n"
        "main (bench/child.py:10);append (daemon/producer/engine.py:141);"
        "crc (daemon/protocol/records.py:7) 1\n"
        "main (bench/child.py:12) 1\n"
    )
    top = render_top(collapsed)
    assert top.startswith("5 samples")
    # append: on top of 3 of 5 stacks (60 %), anywhere in 4 of 5 (80 %), both lines merged.
    assert "  60.0    80.0  append (daemon/producer/engine.py)" in top
    assert "  20.0   100.0  main (bench/child.py)" in top


def test_paced_bursts_are_due_on_an_absolute_schedule_and_lateness_is_reported() -> None:
    now = [10.0]
    sent: list[tuple[int, int, float]] = []

    def send_burst(first: int, end: int) -> None:
        sent.append((first, end, now[0]))
        if first == 200:
            now[0] += 0.0035  # the third burst takes 3.5 ms: the next two start late

    def wait(seconds: float) -> None:
        now[0] += seconds

    latest = run_paced(Pace(rate=100_000, burst=100), 550, send_burst, wait, lambda: now[0])
    # 100 records per 1 ms: bursts due at 0, 1, 2, 3, 4, 5 ms after the start.
    assert [(first, end) for first, end, _ in sent] == [
        (0, 100), (100, 200), (200, 300), (300, 400), (400, 500), (500, 550),
    ]  # fmt: skip
    starts = [round((t - 10.0) * 1000, 6) for _, _, t in sent]
    assert starts == [0.0, 1.0, 2.0, 5.5, 5.5, 5.5]  # late bursts follow at once, no drift
    assert abs(latest - 0.0025) < 1e-9  # the burst due at 3 ms started at 5.5 ms


def test_percentile_is_nearest_rank() -> None:
    ordered = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(ordered, 0.50) == 50.0
    assert percentile(ordered, 0.99) == 99.0
    assert percentile(ordered, 0.999) == 100.0
    assert percentile([7.0], 0.5) == 7.0


def test_latency_summary_leaves_out_the_warm_up_and_says_if_the_load_was_offered() -> None:
    pace = Pace(rate=1000, burst=1)
    sent = [i / 1000 for i in range(3000)]  # 1000 records/s for 3 s
    # The first second waits 500 ms, then every record takes 2 ms except one of 7 ms.
    done = [s + (0.5 if s < 1.0 else 0.002) for s in sent]
    done[2500] = sent[2500] + 0.007
    summary = latency_summary(pace, sent, done, latest_s=0.0001, warmup_s=1.0)
    assert summary["measured"] == 2000 and summary["completed"] == 3000
    assert round(summary["p50_ms"], 6) == 2.0
    assert round(summary["p99_ms"], 6) == 2.0
    assert round(summary["max_ms"], 6) == 7.0
    assert round(summary["p99_all_ms"], 6) == 500.0  # a third of all records waited 500 ms
    assert summary["achieved"] and round(summary["achieved_rate"]) == 1000
    slow = latency_summary(pace, [i / 900 for i in range(3000)], done, latest_s=1.0)
    assert not slow["achieved"]  # 900 records/s is below 98 % of 1000


def test_a_contender_whose_program_is_missing_is_skipped_without_a_broker(tmp_path) -> None:
    missing = Contender(
        "ghost",
        "bench.contenders.kcat",
        "needs a program that is not there",
        binary="kpd-bench-no-such-program",
        install_hint="apt-get install it",
    )
    result = run_once(missing, quick(WORKLOADS["a"]), 1, tmp_path)
    assert result.skipped == "kpd-bench-no-such-program not installed (apt-get install it)"
    assert not result.ok and not result.error
    assert not (tmp_path / "tansu").exists()  # no broker was started for it
