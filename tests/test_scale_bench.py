"""`bench/scale.py` at a small size (issue 30): the generator writes a store of the same
shapes as the million-attempt one, the figures come out, and what the writes keep
(each attempt's best, the per-task counts learning reads) is what the rows say."""

from __future__ import annotations

import math
from pathlib import Path

import psycopg
import pytest

from gateway.embedded import EmbeddedPostgres

pytestmark = pytest.mark.slow

ATTEMPTS = 600


def test_the_scale_benchmark_runs_at_a_small_size(tmp_path: Path) -> None:
    from bench.scale import GOALS, run

    figures = run(tmp_path / "store", ATTEMPTS, calls=2, appended=20, curves=False)
    assert figures["attempts"] == ATTEMPTS + 1  # and the one of 10,000 epochs
    assert figures["profiled_tasks"] >= 2
    for name in (*GOALS, "find_similar_p50_ms", "suggest_p50_ms", "list_order_lr_p50_ms"):
        assert math.isfinite(figures[name]) and figures[name] > 0, name
    postgres = EmbeddedPostgres(tmp_path / "store")
    url = postgres.start()
    try:
        with psycopg.connect(url) as conn:
            wrong = conn.execute(
                "SELECT count(*) FROM attempts a WHERE best_val_accuracy IS DISTINCT FROM"
                " (SELECT NULLIF(max(val_accuracy), 0) FROM attempt_epochs WHERE attempt_id = a.id)"
            ).fetchone()
            assert wrong == (0,)
            kept = conn.execute(
                "SELECT task_key, provenance, owner, runs FROM task_history WHERE runs > 0"
                " ORDER BY 1, 2, 3"
            ).fetchall()
            counted = conn.execute(
                "SELECT task_key, provenance,"
                " CASE WHEN provenance = 'TRAINED' THEN '' ELSE owner END, count(*)"
                " FROM attempts WHERE status IN ('TRAINED', 'COMPLETE')"
                " AND best_val_accuracy BETWEEN 0 AND 1 AND task_key IS NOT NULL"
                " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ).fetchall()
            assert kept == counted and kept
    finally:
        postgres.stop()
