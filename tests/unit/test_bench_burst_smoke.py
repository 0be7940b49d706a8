"""Smoke run of the burst benchmark (bench/bench_burst.py --quick with small sizes): it runs end to end, and
its bookkeeping checks hold: every run once, none lost, every per-machine result recorded.

No timing thresholds here: the ratios are the benchmark's report, not a pass/fail on a shared machine.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_burst_benchmark_reports_every_figure(tmp_path):
    out = tmp_path / "burst.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_burst.py"), "--quick", "--sizes", "6",
                           "--script-runs", "6", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())

    [row] = report["power"]
    assert row["n"] == 6 and row["floor"]["total_s"] > 0 and row["ratio"] > 0
    for variant in ("batched", "unbatched"):
        got = row[variant]
        assert (got["lost"], got["doubled"]) == (0, 0), got
        assert got["statuses"] == {"succeeded": 6} and got["results_recorded"] == 6 == got["machines_stopped"]
    assert row["batched"]["batches"] < row["unbatched"]["batches"] == 6
    script = report["script"]
    assert script["runs"] == 6 and script["bare_s"] > 0 and script["bare_entries_s"] > 0
    assert script["batched"]["statuses"] == {"succeeded": 6} and script["batched"]["results_recorded"] == 6
