"""`make demo`'s script, run as a newcomer would: two attempts trained, tested, compared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

# the whole demo (minutes): not in `make test-fast`.
pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


def test_the_demo_runs_end_to_end_over_an_earlier_runs_output(tmp_path: Path) -> None:
    env = {**os.environ, "METALEARN_DEMO_OUTPUT": str(tmp_path)}
    # What an earlier run leaves behind: everything else a run writes (its database, the
    # trainer's cache, the tokens) is in a temporary data directory of its own, and its
    # ports are free ones, so a second run differs from the first only by this plot.
    Image.new("RGB", (10, 10)).save(tmp_path / "loss-curves.png")
    done = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    accuracies = [float(a) for a in re.findall(r"complete  accuracy (\d\.\d+)", done.stdout)]
    # The two LeNets, then the suggested run and the cold trial on the new task.
    assert len(accuracies) == 4 and max(accuracies[:2]) >= 0.93, done.stdout[-2000:]
    # The new task has real neighbours in the history, learned from its pairs...
    fitted = re.search(r"fitted on (\d+) tasks and (\d+) pairs", done.stdout)
    assert fitted and int(fitted.group(1)) >= 24 and int(fitted.group(2)) > 0
    assert re.search(r"^   1  [0-9a-f]{12}  \S+/", done.stdout, re.M), done.stdout[-4000:]
    # ...the suggestion comes from them, and it is set against a cold first trial of
    # as many epochs, in one line whichever won.
    assert "metalearn's default command" not in done.stdout
    verdict = re.search(
        r"^Warm vs cold on the letters L, M, N, P, R \(new to the history\), 10 epochs"
        r" each: .* test accuracy, a cold study's first trial .*: the (warm start is"
        r" (ahead|behind) by \d\.\d{3}|two are level) on the test split",
        done.stdout,
        re.M,
    )
    assert verdict, done.stdout[-3000:]
    assert "optimizer.name" in done.stdout and "metalearn up: stopped" in done.stdout
    # The dashboard ran beside the stack, and the demo says how to open it.
    assert "dashboard on http://127.0.0.1:" in done.stdout and "make demo UI=1" in done.stdout
    momentum = next(line for line in done.stdout.splitlines() if "optimizer.momentum" in line)
    assert momentum.split()[1:] == ["-", "0.9"]  # Adam has none
    with Image.open(tmp_path / "loss-curves.png") as image:
        assert image.size == (1000, 400)
