"""The benchmark cannot rot: its quick mode runs once per test session, end to end.

`python -m bench --quick` starts a fresh tansu per contender, produces 20,000 records of
workloads (a) and (d) with kpd's engine, aiokafka and confluent-kafka, reads every topic back
and exits non-zero unless every record of every contender was delivered exactly once. The
other tests pin the pieces that decide whether a run counts: the record ids, the sharding,
the distinct-record counter, and the profile summary. Speed is never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.contenders import DEFAULT_CONTENDERS
from bench.profile import render_top
from bench.verify import RecordCounter
from bench.workloads import QUICK_RECORDS, WORKLOADS, key_for, make_records, quick, record_id

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_delivers_every_record_of_every_contender(tmp_path: Path) -> None:
    results_md, runs_json = tmp_path / "RESULTS.md", tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(results_md),
         "--json", str(runs_json), "--log-dir", str(tmp_path / "logs")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"

    runs = json.loads(runs_json.read_text())
    seen = {(run["workload"], run["contender"]) for run in runs}
    assert seen == {(w, c) for w in ("a-quick", "d-quick") for c in DEFAULT_CONTENDERS}
    for run in runs:
        assert run["ok"], run
        assert run["delivered"] == QUICK_RECORDS
        assert run["delivery"]["distinct"] == QUICK_RECORDS
        assert run["delivery"]["read"] == QUICK_RECORDS
        assert run["wall_s"] > 0
        assert run["rss_peak_kib"] > 0  # /proc of the child was read while it ran

    text = results_md.read_text()
    assert "## Workload a-quick" in text and "## Workload d-quick" in text
    for contender in DEFAULT_CONTENDERS:
        assert f"| {contender} |" in text
    assert "| kpd-engine | confluent-kafka |" in text  # the ratios table
    assert "- librdkafka: " in text and "- tansu: 0.6.0" in text


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
