"""How every benchmark prints its figures: a table, or one JSON object."""

from __future__ import annotations

import json
from collections.abc import Mapping
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
