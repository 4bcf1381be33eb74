"""How every benchmark prints its figures: a table, or one JSON object."""

from __future__ import annotations

import json


def print_figures(figures: dict[str, float], as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    else:
        for key, value in figures.items():
            print(f"{key:<36} {value:12.3f}")
