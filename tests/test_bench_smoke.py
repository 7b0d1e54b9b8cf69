"""A tiny run of `make bench`, so the benchmark cannot rot (its figures are not judged here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_the_benchmark_runs_both_dialects_without_failures():
    # Its own broker and PostgreSQL (not servers named in the environment), whose processes it measures.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    result = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--duration", "2", "--concurrency", "1,2",
                             "--dialects", "solidus,getcandy", "--rebuild-events", "5000", "--idle", "1"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [(item["dialect"], item["concurrency"]) for item in report["levels"]] == [
        ("solidus", 1), ("solidus", 2), ("getcandy", 1), ("getcandy", 2)]
    for level in report["levels"]:
        assert level["completed"] >= 1 and level["failed"] == 0, level["failures"]
        assert "PUT complete" in level["endpoints_ms"] or "POST orders/process" in level["endpoints_ms"]
        # The counted work of a checkout: the gateway calls services, which store events
        # and run statements (pg_stat_statements is loaded in the embedded server).
        work = level["work_per_flow"]
        # One process (the default): the gateway calls the services in-process.
        assert work["internal_calls"] == 0 and work["events"] >= 10, work
        assert work["statements"] >= work["events"] and work["transactions"] > 0 and work["top_statements"], work
        assert level["speed_probe_ms"] > 0 and level["cpu_relative_to_load_generator"] > 1
    assert report["machine"]["speed_probe_ms"]["before"] > 0 and report["machine"]["speed_probe_ms"]["after"] > 0
    assert report["saga_lag_ms"]["n"] > 0
    # At rest the consumers still poll the broker: measured, per process. A process's CPU time moves in
    # clock ticks (10 ms), so the broker's share of a short window may round to 0; the system's does not.
    idle = report["idle_cpu_cores"]
    assert {"tillstream", "postgresql", "broker (tansu)"} <= set(idle) and min(idle.values()) >= 0, idle
    assert sum(idle.values()) > 0, idle
    # The run's checkouts were copied until the stores held 5,000 events, and all were folded.
    assert report["rebuild"]["copied_events"] > 0 and report["rebuild"]["events"] >= 5000
    assert {"tillstream", "postgresql", "broker (tansu)"} <= set(report["peak_rss_mib"])
    assert report["topology"] == "one-process"


def test_a_second_run_on_the_same_day_keeps_the_first_runs_results(tmp_path):
    from bench.run import results_path

    first = results_path(tmp_path, "2026-11-24")
    first.write_text("{}")
    second = results_path(tmp_path, "2026-11-24")
    second.write_text("{}")
    assert (first.name, second.name, results_path(tmp_path, "2026-11-24").name) == (
        "2026-11-24.json", "2026-11-24-2.json", "2026-11-24-3.json")
