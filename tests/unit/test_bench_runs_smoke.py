"""Smoke run of the run benchmark (bench/bench_runs.py --quick --rounds 1): it runs end to end and reports every figure.

No timing thresholds here: overhead ratios and memory are the benchmark's report, not a pass/fail on a shared machine.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_benchmark_reports_every_figure(tmp_path):
    out = tmp_path / "runs.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_runs.py"), "--quick", "--rounds", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["rounds"] == 1
    assert set(report["targets"]) == {"one_ratio", "fifty_ratio", "worker_rss_mb"}
    one = report["one_machine"]
    assert {"cloudcron_s", "bare_ansible_s", "ratio", "meets_target", "samples"} <= set(one)
    assert len(one["samples"]["cloudcron"]) == len(one["samples"]["bare_ansible"]) == 1
    assert one["cloudcron_s"] > 0 and one["bare_ansible_s"] > 0
    fifty = report["fifty_machines"]
    assert {"cloudcron_s", "baseline_s", "baseline_loop_s", "baseline_ansible_startup_s", "ratio",
            "meets_target", "samples"} <= set(fifty)
    assert len(fifty["samples"]["cloudcron"]) == len(fifty["samples"]["baseline"]) == 1
    assert fifty["cloudcron_s"] > 0 and fifty["baseline_s"] > 0
    rss = report["worker_rss"]
    assert {"pid_rss_mb", "total_rss_mb", "peak_rss_mb", "meets_target"} <= set(rss)
    assert rss["total_rss_mb"] > 0
