"""Smoke run of the dispatch benchmark (bench/bench_dispatch.py --quick): it runs end to end and counts right.

No timing thresholds here: latency and CPU are the benchmark's report, not a pass/fail on a shared machine.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_dispatch_benchmark_fires_everything_once(tmp_path):
    out = tmp_path / "dispatch.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_dispatch.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())

    cloudcron = report["dispatch"]["cloudcron"]
    assert cloudcron["expected_fires"] > 0
    assert cloudcron["fires"] == cloudcron["expected_fires"]
    assert cloudcron["duplicates"] == 0
    assert cloudcron["misses"] == 0
    assert cloudcron["lateness_ms"]["n"] == cloudcron["fires"]

    # The anchor ran on the same load. Its misses are not asserted: APScheduler drops a fire later than
    # its misfire_grace_time (1 s) by design, so on a loaded machine that is a timing outcome.
    apscheduler = report["dispatch"]["apscheduler"]
    assert apscheduler["expected_fires"] == cloudcron["expected_fires"]
    assert apscheduler["fires"] > 0
    assert apscheduler["duplicates"] == 0

    start = report["start"]
    assert start["expected_fires"] > 0
    assert start["started"] == start["expected_fires"]
    assert start["duplicates"] == 0 and start["duplicate_messages"] == 0
    assert start["misses"] == 0
