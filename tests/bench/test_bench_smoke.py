"""The benchmark runs end to end (tiny model, a handful of jobs) and its output has the documented form."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SUMMARY_KEYS = {"workers", "workload", "precision", "raw_tps", "seed_tps", "e2e_tps", "e2e_over_raw",
                "e2e_over_seed", "p50_ms", "p99_ms", "seed_p50_ms", "idle_overhead_ms", "rss_mb",
                "raw_mfu", "e2e_mfu", "peak_gflops", "worker_efficiency", "bulk_over_raw", "redis_cmds_per_job",
                "redis_cpu_ms_per_job", "worker_spread", "unbatched_tps", "interactive_behind_bulk_p50_ms"}
"""The keys the last line must have (docs/performance.md)."""


@pytest.mark.slow
def test_smoke_run_writes_results_plots_and_a_json_last_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "inferq.bench", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert SUMMARY_KEYS <= set(summary), SUMMARY_KEYS - set(summary)
    assert summary["workers"] >= 1 and summary["workload"] == "short" and summary["mode"] == "smoke"
    for key in ("raw_tps", "seed_tps", "e2e_tps", "rss_mb", "peak_gflops", "worker_efficiency", "bulk_over_raw",
                "redis_cmds_per_job", "redis_cpu_ms_per_job", "unbatched_tps"):
        assert summary[key] > 0, key
    results = (tmp_path / "RESULTS.md").read_text()
    assert "inferq-bench --smoke" in results and "## Side by side" in results and "cores" in results
    assert "reference layout" in results and "INFERQ_BATCH_SIZE=1, same load" in results
    for plot in ("throughput.png", "latency.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    detail = json.loads((tmp_path / "results.json").read_text())
    assert {p["precision"] for p in detail["precisions"]} == {"fp32", "int8", "onnx-fp32", "onnx-int8"}
    # Progress goes to stderr as a bar, never into the JSON line.
    assert "%|" in done.stderr
