"""A tiny run of `make bench`, so the benchmark cannot rot (its figures are not judged here)."""
from __future__ import annotations

import json
import subprocess
import sys


def test_the_benchmark_runs_both_dialects_without_failures():
    result = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--duration", "2", "--concurrency", "1,2",
                             "--dialects", "solidus,getcandy", "--rebuild-events", "5000"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [(l["dialect"], l["concurrency"]) for l in report["levels"]] == [
        ("solidus", 1), ("solidus", 2), ("getcandy", 1), ("getcandy", 2)]
    for level in report["levels"]:
        assert level["completed"] >= 1 and level["failed"] == 0, level["failures"]
        assert "PUT complete" in level["endpoints_ms"] or "POST orders/process" in level["endpoints_ms"]
    assert report["saga_lag_ms"]["n"] > 0
    # The run's checkouts were copied until the stores held 5,000 events, and all were folded.
    assert report["rebuild"]["copied_events"] > 0 and report["rebuild"]["events"] >= 5000
    assert {"order", "order-saga", "gateway", "postgresql"} <= set(report["peak_rss_mib"])
