"""`metalearn retention` (issue 30, gateway/store/retention.py): old runs' per-step data
thinned, everything they say of themselves untouched, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json

import psycopg
import pytest

from metalearn.cli.main import main
from tests.harness import fresh_database

STEPS = 1000
BEST = 537  # the epoch whose validation accuracy is the run's best
KEEP = 50
SUMMARY = (
    "SELECT name, status, best_val_accuracy, current_epoch, prognosis_wire, doc::text,"
    " updated_at FROM attempts ORDER BY id"
)


def _run(conn: psycopg.Connection, name: str, status: str, days_old: int) -> int:
    doc = {"training_commands": {"label_names": ["cat", "dog"], "n_epoch": STEPS}}
    row = conn.execute(
        "INSERT INTO attempts (name, status, doc) VALUES (%s, %s, %s) RETURNING id",
        (name, status, json.dumps(doc)),
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO attempt_epochs (attempt_id, epoch, loss, val_accuracy)"
        " SELECT %s, e, 1.0 / e, CASE WHEN e = %s THEN 0.99 ELSE 0.5 + e / 10000.0 END"
        " FROM generate_series(1, %s) e",
        (row[0], BEST, STEPS),
    )
    series = conn.execute(
        "INSERT INTO metric_series (attempt_id, key, points) VALUES (%s, 'loss', %s) RETURNING id",
        (row[0], STEPS),
    ).fetchone()
    assert series is not None
    conn.execute(
        "INSERT INTO metric_points (series_id, step, value, at_ms)"
        " SELECT %s, s, CASE WHEN s = 700 THEN -5 ELSE 1.0 / (s + 1) END, s"
        " FROM generate_series(0, %s) s",
        (series[0], STEPS - 1),
    )
    conn.execute(
        "UPDATE attempts SET current_epoch = %s, updated_at = now() - make_interval(days => %s)"
        " WHERE id = %s",
        (STEPS, days_old, row[0]),
    )
    return int(row[0])


def _epochs(conn: psycopg.Connection, attempt_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT epoch FROM attempt_epochs WHERE attempt_id = %s ORDER BY epoch", (attempt_id,)
    ).fetchall()
    return [r[0] for r in rows]


def _points(conn: psycopg.Connection, attempt_id: int) -> tuple[list[int], int]:
    rows = conn.execute(
        "SELECT p.step FROM metric_points p JOIN metric_series s ON s.id = p.series_id"
        " WHERE s.attempt_id = %s ORDER BY p.step",
        (attempt_id,),
    ).fetchall()
    kept = conn.execute(
        "SELECT points FROM metric_series WHERE attempt_id = %s", (attempt_id,)
    ).fetchone()
    assert kept is not None
    return [r[0] for r in rows], int(kept[0])


def test_retention_thins_old_runs_and_keeps_what_they_say(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.store import migrate

    url = fresh_database(postgres_url, "retention")
    asyncio.run(migrate(url))
    with psycopg.connect(url, autocommit=True) as conn:
        old = _run(conn, "old", "COMPLETE", 100)
        old_pruned = _run(conn, "old-pruned", "PRUNED", 100)
        recent = _run(conn, "recent", "COMPLETE", 1)
        running = _run(conn, "running", "TRAINING", 100)
        summary = conn.execute(SUMMARY).fetchall()
        history = conn.execute("SELECT * FROM task_history ORDER BY task_key").fetchall()
        assert history  # the finished runs are counted for learning

    def retention(*extra: str) -> dict:
        argv = ["retention", "--database-url", url, "--older-than-days", "30"]
        assert main([*argv, "--keep", str(KEEP), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    would = retention("--dry-run")
    with psycopg.connect(url) as conn:
        assert len(_epochs(conn, old)) == STEPS  # a dry run changes nothing
    done = retention()
    assert (would["runs"], would["epochs_removed"], would["points_removed"]) == (
        done["runs"], done["epochs_removed"], done["points_removed"],
    )  # fmt: skip
    assert done["runs"] == 2
    with psycopg.connect(url) as conn:
        for thinned in (old, old_pruned):
            epochs = _epochs(conn, thinned)
            assert len(epochs) <= KEEP + 12
            # Its first epochs, its best and its last stay; the rest evenly spread.
            assert epochs[:10] == list(range(1, 11))
            assert BEST in epochs and epochs[-1] == STEPS
            gaps = [b - a for a, b in itertools.pairwise(epochs)]
            assert max(gaps) <= 2 * STEPS // KEEP
            steps, counted = _points(conn, thinned)
            assert counted == len(steps) <= KEEP + 14
            assert steps[:10] == list(range(10)) and 700 in steps and steps[-1] == STEPS - 1
        for untouched in (recent, running):
            assert len(_epochs(conn, untouched)) == STEPS
            assert _points(conn, untouched)[1] == STEPS
        # What every run says of itself, and what learning counts, did not move.
        assert conn.execute(SUMMARY).fetchall() == summary
        assert conn.execute("SELECT * FROM task_history ORDER BY task_key").fetchall() == history
        marked = conn.execute(
            "SELECT name FROM attempts WHERE compacted_at IS NOT NULL ORDER BY id"
        ).fetchall()
        assert marked == [("old",), ("old-pruned",)]
    again = retention()
    assert (again["runs"], again["epochs_removed"], again["points_removed"]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        (["--older-than-days", "0"], "--older-than-days"),
        (["--older-than-days", "5", "--keep", "3"], "--keep"),
        (["--older-than-days", "5", "--batch", "0"], "--batch"),
    ],
)
def test_retention_refuses_what_would_thin_too_much(
    flags: list[str], what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retention", "--database-url", "postgresql://nowhere/x", *flags]) == 1
    assert what in capsys.readouterr().err
