"""How every benchmark prints its figures: a table, or one JSON object."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def print_figures(figures: Mapping[str, Any], as_json: bool) -> None:
    """Numbers rounded to 3 places; anything else (a list of names) as it is."""
    if as_json:
        print(json.dumps({k: _rounded(v) for k, v in figures.items()}))
    else:
        for key, value in figures.items():
            if isinstance(value, list) and any(isinstance(v, str) and len(v) > 40 for v in value):
                print(key)  # long lines (a sweep's settings): one a line
                for v in value:
                    print(f"  {v}")
                continue
            shown = f"{value:12.3f}" if isinstance(value, float | int) else f"{value}"
            print(f"{key:<36} {shown}")


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of every process, as "name:pid" (Linux's /proc; a process
    gone meanwhile is left out)."""
    found = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        found[f"{comm}:{entry.name}"] = (int(fields[11]) + int(fields[12])) / tick
    return found
