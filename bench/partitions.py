"""Partitioning the epochs table, measured (issue 30): the kept store of `bench/scale.py`
(`--attempts N`, /var/tmp/metalearn-scale/N) against a twin of its epochs partitioned by
hash of the attempt (`--partitions`), built here once and kept.

  python bench/partitions.py --attempts 1000000 --json

Figures, each for the one table and for the partitioned twin:
- `*_append_p50_ms`: one epoch inserted (autocommit, as a trainer's report is stored),
  triggers and foreign keys off on both (`session_replication_role = replica`), so the
  tables' own cost is compared: heap, primary key;
- `*_read_p50_ms`: one attempt's epochs in order (what GetAttempt reads);
- `*_bytes_per_epoch`, `*_index_bytes`: on disk, with indexes and TOAST;
- `*_vacuum_s`: VACUUM reading every page (as an anti-wraparound one does) of the
  whole table; `partition_vacuum_s`: of one partition
  (what autovacuum takes on at a time there).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import print_figures
from gateway.embedded import EmbeddedPostgres

TWIN = "epochs_by_hash"
SAMPLES = 600
WARM_UP = 100
TABLES = {"table": "attempt_epochs", "partitioned": TWIN}


def build_twin(conn: psycopg.Connection[Any], partitions: int) -> float:
    """The partitioned twin of attempt_epochs with every row, or nothing when kept."""
    if conn.execute("SELECT to_regclass(%s)", (TWIN,)).fetchone() != (None,):
        return 0.0
    start = time.perf_counter()
    conn.execute(
        # Its generated column too (each epoch's protobuf form, computed at insert).
        f"CREATE TABLE {TWIN} (LIKE attempt_epochs INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
        " INCLUDING GENERATED)"
        " PARTITION BY HASH (attempt_id)"
    )
    for i in range(partitions):
        conn.execute(
            f"CREATE TABLE {TWIN}_{i} PARTITION OF {TWIN}"
            f" FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})"
        )
    columns = ", ".join(
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'attempt_epochs'::regclass"
            " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
        )
    )
    conn.execute(f"INSERT INTO {TWIN} ({columns}) SELECT {columns} FROM attempt_epochs")
    conn.execute(f"ALTER TABLE {TWIN} ADD PRIMARY KEY (attempt_id, epoch)")
    conn.execute(f"VACUUM ANALYZE {TWIN}")
    return time.perf_counter() - start


def _p50_ms(
    conn: psycopg.Connection[Any], statements: dict[str, str], args: list[tuple[Any, ...]]
) -> dict[str, float]:
    """Each statement's p50 over `args`, the statements interleaved (neither table gets
    the warmer cache), after a warm-up of each."""
    times: dict[str, list[float]] = {name: [] for name in statements}
    for n, a in enumerate(args):
        for name, statement in statements.items():
            start = time.perf_counter()
            conn.execute(statement, a)
            if n >= WARM_UP:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def measure(conn: psycopg.Connection[Any]) -> dict[str, float]:
    figures: dict[str, float] = {}
    row = conn.execute("SELECT min(id), max(id) FROM attempts").fetchone()
    assert row is not None
    rng = random.Random(0)
    ids = [rng.randint(row[0], row[1]) for _ in range(SAMPLES)]
    conn.execute("SET session_replication_role = replica")  # no triggers, no FK checks
    # Epochs past any stored one, on attempts spread over the store; taken back after.
    appends = _p50_ms(
        conn,
        {
            name: f"INSERT INTO {table} (attempt_id, epoch, loss) VALUES (%s, %s, 1.0)"
            for name, table in TABLES.items()
        },
        [(i, 1_000_000 + n) for n, i in enumerate(ids)],
    )
    reads = _p50_ms(
        conn,
        {
            name: f"SELECT * FROM {table} WHERE attempt_id = %s ORDER BY epoch"
            for name, table in TABLES.items()
        },
        [(i,) for i in ids],
    )
    for name, table in TABLES.items():
        conn.execute(f"DELETE FROM {table} WHERE epoch >= 1000000")
        figures[f"{name}_append_p50_ms"] = appends[name]
        figures[f"{name}_read_p50_ms"] = reads[name]
        sizes = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)), sum(pg_indexes_size(c.oid))"
            " FROM pg_class c WHERE c.oid = %s::regclass"
            " OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)",
            (table, table),
        ).fetchone()
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert sizes is not None and count is not None
        figures[f"{name}_bytes_per_epoch"] = float(sizes[0]) / max(count[0], 1)
        figures[f"{name}_index_bytes"] = float(sizes[1])
        # Every page, as an anti-wraparound vacuum reads them (one that skips the pages
        # already all-visible says nothing of a table's size).
        start = time.perf_counter()
        conn.execute(f"VACUUM (DISABLE_PAGE_SKIPPING) {table}")
        figures[f"{name}_vacuum_s"] = time.perf_counter() - start
    start = time.perf_counter()
    conn.execute(f"VACUUM (DISABLE_PAGE_SKIPPING) {TWIN}_0")
    figures["partition_vacuum_s"] = time.perf_counter() - start
    conn.execute("SET session_replication_role = origin")
    figures["append_ratio_partitioned"] = (
        figures["partitioned_append_p50_ms"] / figures["table_append_p50_ms"]
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    postgres = EmbeddedPostgres(Path("/var/tmp/metalearn-scale") / str(args.attempts))
    url = postgres.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            figures = {"twin_build_s": build_twin(conn, args.partitions)}
            figures.update(measure(conn))
            figures["partitions"] = args.partitions
    finally:
        postgres.stop()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
