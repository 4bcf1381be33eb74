"""`make demo`'s script, run as a newcomer would: two attempts trained, tested, compared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


def test_the_demo_runs_end_to_end_twice(tmp_path: Path) -> None:
    env = {**os.environ, "METALEARN_DEMO_OUTPUT": str(tmp_path)}
    for _ in range(2):  # a second run must not trip over the first one's data or ports
        done = subprocess.run(
            [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=600, env=env
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        accuracies = [float(a) for a in re.findall(r"complete  accuracy (\d\.\d+)", done.stdout)]
        assert len(accuracies) == 2 and max(accuracies) >= 0.93, done.stdout[-2000:]
        assert "optimizer.name" in done.stdout and "metalearn up: stopped" in done.stdout
        # The dashboard ran beside the stack, and the demo says how to open it.
        assert "dashboard on http://127.0.0.1:" in done.stdout and "make demo UI=1" in done.stdout
        momentum = next(line for line in done.stdout.splitlines() if "optimizer.momentum" in line)
        assert momentum.split()[1:] == ["-", "0.9"]  # Adam has none
        with Image.open(tmp_path / "loss-curves.png") as image:
            assert image.size == (1000, 400)
