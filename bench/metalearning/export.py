"""The suite's table as history another metalearn would export: one TRAINED attempt
document per run, with its epochs (`metalearn examples import-history` imports the same
documents; the benchmark imports them too).

  python -m bench.metalearning.export OUT.ndjson
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from metalearn import documents
from metalearn.examples.history import history, table

__all__ = ["history", "main"]


def main() -> None:
    """python -m bench.metalearning.export OUT.ndjson: the table's runs, one per line."""
    lines = [json.dumps(documents.attempt_to_document(a)) for a in history(table())]
    Path(sys.argv[1]).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
