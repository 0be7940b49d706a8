"""Smoke run of the API benchmark (bench/bench_api.py --quick, tiny sizes): it runs end to end and reports.

No timing thresholds here: rates and RSS are the benchmark's report, not a pass/fail on a shared machine.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPS = ("ping", "create", "get-one", "list-100", "list-100-deep")


def test_quick_api_benchmark_reports_rates_ratios_and_rss(tmp_path):
    out = tmp_path / "api.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_api.py"), "--quick", "--schedules", "40", "--grow-to", "300",
         "--rounds", "2", "--duration", "0.3", "--clients", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())

    assert {"config", "setup", "ops", "rounds", "grown", "rss", "rss_base", "targets_met"} <= set(report)
    assert report["setup"]["stored_via_api"] == 40
    assert len(report["rounds"]) == 2
    for op in OPS:
        entry = report["ops"][op]
        assert entry["rate_median"] > 0 and entry["ratio_median"] > 0, (op, entry)
        assert len(entry["ratio_rounds"]) == 2 and all(r > 0 for r in entry["ratio_rounds"])
        assert report["grown"]["round"][op]["ratio"] > 0
    assert report["ops"]["ping"]["ratio_median"] == 1.0
    assert {op for op in OPS if "target" in report["ops"][op]} == {"create", "get-one", "list-100"}
    # Growth by bulk insert reached the requested size, and the server's memory was read after it.
    assert report["grown"]["schedules_before_round"] >= 300
    assert report["rss"]["schedules"] >= 300 and report["rss"]["VmRSS_mb"] > 0
    assert "ratio" in proc.stdout and "RSS" in proc.stdout
