"""bench/reporting.py runs whole in its quick mode and prints the issue's figures; no run
of the many reporting at once loses anything (a correctness check, not a timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a gateway process, a training loop and 20 runs reporting for 5 s
def test_the_reporting_benchmark_prints_its_figures_and_loses_no_run() -> None:
    done = subprocess.run(
        [sys.executable, "bench/reporting.py", "--quick", "--json", "--runs", "20",
         "--seconds", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("ingest_points_per_s", "sdk_log_p99_us", "sdk_loop_ratio",
                "concurrent_runs_lost", "concurrent_watch_p99_ms"):  # fmt: skip
        assert key in figures, key
    assert figures["ingest_points_per_s"] > 0
    assert figures["concurrent_runs"] == 20
    assert figures["concurrent_runs_lost"] == 0
    assert figures["concurrent_watched_epochs"] > 0
