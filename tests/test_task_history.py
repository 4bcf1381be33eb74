"""Migration 0023: the per-task counts of finished runs that learning reads instead of
every run, kept by the attempts' own writes. Whatever the writes (inserts finished or
not, a run finishing, validated again, re-owned, deleted), each row says what a GROUP BY
over the attempts says."""

from __future__ import annotations

import asyncio

import psycopg

from tests.harness import fresh_database

# What the counts must equal: the runs `TaskStore.evaluations` reads, grouped as kept.
RECOUNT = (
    "SELECT task_key, provenance, CASE WHEN provenance = 'TRAINED' THEN '' ELSE owner END,"
    " count(*), max(id) FROM attempts WHERE status IN ('TRAINED', 'COMPLETE')"
    " AND best_val_accuracy BETWEEN 0 AND 1 AND task_key IS NOT NULL GROUP BY 1, 2, 3"
)
KEPT = "SELECT task_key, provenance, owner, runs, newest_id FROM task_history WHERE runs > 0"


def _doc(labels: list[str], lr: float, imported: bool = False) -> str:
    import json

    command = {"label_names": labels, "optimizer": {"name": "SGD", "lr": lr}}
    return json.dumps({"training_commands": command, "imported": imported})


def test_task_history_follows_every_write(postgres_url) -> None:
    from gateway.store import migrate

    url = fresh_database(postgres_url, "history")
    asyncio.run(migrate(url))
    with psycopg.connect(url) as conn:

        def same() -> None:
            kept = sorted(conn.execute(KEPT).fetchall())
            assert kept == sorted(conn.execute(RECOUNT).fetchall())

        def versions() -> int:
            row = conn.execute("SELECT COALESCE(sum(version), 0) FROM task_history").fetchone()
            return int(row[0]) if row else 0

        # 40 attempts on two tasks, of two owners, trained and imported, some finished.
        for i in range(40):
            conn.execute(
                "INSERT INTO attempts (name, status, owner, doc) VALUES (%s, %s, %s, %s)",
                (
                    f"a{i}",
                    "COMPLETE" if i % 3 else "QUEUED",
                    f"user{i % 2}",
                    _doc(
                        ["cat", "dog"] if i % 2 else ["ant", "bee"], 0.1 * (i % 4 + 1), i % 5 == 0
                    ),
                ),
            )
        # The epochs' trigger sets each one's best (migration 0021); this one's counts.
        conn.execute(
            "INSERT INTO attempt_epochs (attempt_id, epoch, loss, val_accuracy)"
            " SELECT id, 1, 1.0, (id % 10) / 10.0 FROM attempts"
        )
        same()
        assert conn.execute("SELECT count(*) FROM task_history").fetchone()[0] > 0
        before = versions()
        conn.execute("UPDATE attempts SET status = 'TRAINED' WHERE status = 'QUEUED'")  # finished
        same()
        assert versions() > before
        conn.execute("UPDATE attempts SET status = 'FAILED' WHERE id % 7 = 0")  # failed after all
        same()
        conn.execute("DELETE FROM attempt_epochs WHERE attempt_id % 4 = 0")  # best now NULL
        same()
        conn.execute("UPDATE attempts SET owner = 'user9' WHERE id % 5 = 0")  # re-owned claims
        same()
        conn.execute(  # moved to another task
            "UPDATE attempts SET doc = %s WHERE id %% 6 = 1", (_doc(["x", "y"], 0.3),)
        )
        same()
        conn.execute(  # a trained run now claimed as imported
            "UPDATE attempts SET doc = %s WHERE id = 3", (_doc(["x", "y"], 0.3, True),)
        )
        same()
        newest = conn.execute("SELECT max(id) FROM attempts WHERE status = 'COMPLETE'").fetchone()
        conn.execute("DELETE FROM attempts WHERE id = %s", newest)  # the newest run deleted
        same()
        conn.execute("DELETE FROM attempts WHERE id % 2 = 0")
        same()
        # Writes that do not concern learning leave every version alone.
        before = versions()
        conn.execute(
            "INSERT INTO attempts (name, status, doc) VALUES ('queued', 'QUEUED', %s)",
            (_doc(["cat", "dog"], 0.5),),
        )
        conn.execute("UPDATE attempts SET current_epoch = 3 WHERE status = 'QUEUED'")
        assert versions() == before
        conn.execute("DELETE FROM attempts")
        assert conn.execute(KEPT).fetchall() == []


def test_the_profilers_sweep_reads_the_keys_the_writes_noted(postgres_url) -> None:
    """Migration 0024: a key is noted when an attempt brings it (trained, studied or
    imported, or a reported run's declared task) and no task has it; an attempt only
    created brings none; the sweep reads the notes, and drops a key once it has a task."""
    import json

    from gateway.store import migrate, open_pool
    from gateway.store.tasks import TaskStore

    url = fresh_database(postgres_url, "unseen")
    asyncio.run(migrate(url))

    async def sweep() -> tuple[list[tuple[list[str], list[object]]], list[tuple[str, dict]]]:
        async with open_pool(url, 1, 1) as pool:
            tasks = TaskStore(pool)
            return await tasks.unseen(50), await tasks.undeclared(50)

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO attempts (name, status, doc) VALUES ('made', 'INCOMPLETE', %s)",
            (_doc(["cat", "dog"], 0.1),),
        )
        assert asyncio.run(sweep()) == ([], [])  # only created: no task yet
        conn.execute("UPDATE attempts SET status = 'QUEUED' WHERE name = 'made'")  # trained
        conn.execute(
            "INSERT INTO attempts (name, status, doc) VALUES ('again', 'QUEUED', %s)",
            (_doc(["dog", "cat"], 0.2),),  # the same key
        )
        reported = {"reported": {"task": {"dataset": "mine", "labels": ["a", "b"]}}}
        conn.execute(
            "INSERT INTO attempts (name, status, owner, doc)"
            " VALUES ('mine', 'TRAINING', 'ann', %s)",
            (json.dumps(reported),),
        )
        unseen, undeclared = asyncio.run(sweep())
        assert [sorted(labels) for labels, _ in unseen] == [["cat", "dog"]]
        assert undeclared == [("ann", {"dataset": "mine", "labels": ["a", "b"]})]
        # Once the keys have tasks, the sweep has nothing to do, and forgets the notes.
        conn.execute(
            "INSERT INTO tasks (fingerprint, key, label_names, image_ops)"
            " SELECT md5(task_key), task_key, '[]', '[]' FROM attempts"
            " WHERE name IN ('made', 'mine')"
        )
        assert asyncio.run(sweep()) == ([], [])
        assert conn.execute("SELECT count(*) FROM unseen_task_keys").fetchone() == (0,)
        # A key that has a task is not noted again.
        conn.execute(
            "INSERT INTO attempts (name, status, doc) VALUES ('third', 'QUEUED', %s)",
            (_doc(["cat", "dog"], 0.3),),
        )
        assert conn.execute("SELECT count(*) FROM unseen_task_keys").fetchone() == (0,)
