"""What one pruning decision costs in a large study (issue 30: `prune_decision_p99_ms`,
goal <= 2), against rebuilding the study for each decision, in one run:

a study of `--trials` finished trials of `--epochs` epochs each (a third pruned at
their third epoch), then `--running` trials trained side by side, an epoch at a time,
each settling at its last epoch while a new one starts. After each epoch is stored,
the decision the epoch path asks for is timed two ways over the same rows:
  kept     Pruning.decide: the study kept in memory between decisions, brought up to
           date from one light row per trial (gateway/studies/decisions.py);
  rebuilt  every trial with every epoch read, the study rebuilt in a worker process
           (pruners.decide, as each decision did before).
  python bench/pruning.py [--json] [--pruner successive_halving|median|...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.orchestration import percentile
from bench.report import print_figures
from gateway import workers
from gateway.attempts import convert
from gateway.store import migrate, open_pool
from gateway.store.studies import StudyStore
from gateway.studies import pruners
from gateway.studies.pruning import Pruning
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as pb
from tests.trainer_harness import lenet_command


def _study(pruner: str, epochs: int) -> bytes:
    study = pb.Study(name="big", objective=pb.OBJECTIVE_BEST_VAL_ACCURACY, n_trials=1000)
    study.base_command.CopyFrom(lenet_command(label_names=["a", "b"], n_epoch=epochs))
    study.pruner.name = pruner
    return study.SerializeToString()


def _forms() -> tuple[bytes, str]:
    """An attempt's stored forms (every trial's attempt has them: the decision reads none)."""
    spec, doc = convert.stored_forms(
        convert.new_spec(attempt_pb2.Attempt(name="x", training_commands=lenet_command()))
    )
    return spec, json.dumps(doc)


async def start_trial(conn: psycopg.AsyncConnection[Any], study_id: int, number: int) -> int:
    """Trial `number` of the study, its attempt training; returns the attempt's id."""
    spec, doc = _forms()
    row = await (
        await conn.execute(
            "INSERT INTO attempts (name, status, spec, doc) VALUES"
            " (%s || '-' || %s, 'TRAINING', %s, %s) RETURNING id",
            (f"s{study_id}", number, spec, doc),
        )
    ).fetchone()
    assert row is not None
    await conn.execute(
        "INSERT INTO study_trials (study_id, number, attempt_id, queued, params, internal)"
        " VALUES (%s, %s, %s, true, '{}', '{}')",
        (study_id, number, row[0]),
    )
    return int(row[0])


async def write_study(url: str, trials: int, epochs: int, pruner: str, name: str = "big") -> int:
    """A study of `trials` finished trials; returns its id."""
    spec, doc = _forms()
    async with open_pool(url, 1, 2) as pool, pool.connection() as conn:
        row = await (
            await conn.execute(
                "INSERT INTO studies (name, owner, spec) VALUES (%s, 'bench', %s) RETURNING id",
                (name, _study(pruner, epochs)),
            )
        ).fetchone()
        assert row is not None
        study_id = int(row[0])
        # Trial n's attempt; a third pruned at epoch 3; curves rising to a level of their own.
        await conn.execute(
            "WITH made AS (INSERT INTO attempts (name, status, spec, doc, current_epoch)"
            " SELECT %(name)s || '-' || n, CASE WHEN n %% 3 = 0 THEN 'PRUNED' ELSE 'COMPLETE'"
            " END, %(spec)s, %(doc)s, 0 FROM generate_series(0, %(trials)s - 1) n"
            " RETURNING id, name)"
            " INSERT INTO study_trials (study_id, number, attempt_id, queued, params, internal)"
            " SELECT %(study)s, substr(name, length(%(name)s) + 2)::int, id, true, '{}', '{}'"
            " FROM made",
            {"spec": spec, "doc": doc, "trials": trials, "study": study_id, "name": name},
        )
        await conn.execute(
            "INSERT INTO attempt_epochs (attempt_id, epoch, loss, val_accuracy, val_loss)"
            " SELECT t.attempt_id, e, 1.0 / e, v, 1 - v FROM study_trials t,"
            " generate_series(1, CASE WHEN t.number %% 3 = 0 THEN 3 ELSE %(epochs)s END) e,"
            " LATERAL (SELECT (0.3 + 0.6 * ((t.number * 7919) %% 101) / 100.0)"
            "  * (1 - 0.5 ^ e) AS v) c WHERE t.study_id = %(study)s",
            {"epochs": epochs, "study": study_id},
        )
        await conn.commit()
    return study_id


async def _replay(url: str, study_id: int, first: int, args: argparse.Namespace) -> dict[str, Any]:
    kept: list[float] = []
    rebuilt: list[float] = []
    agree = 0
    async with open_pool(url, 1, 4) as pool:
        store = StudyStore(pool)
        pruning = Pruning(store)
        record, _ = await store.get("big")
        study = pb.Study.FromString(record.spec)
        made = first
        running: dict[int, tuple[int, int]] = {}  # number: (attempt id, epochs done)

        async def start() -> None:
            nonlocal made
            async with pool.connection() as conn:
                running[made] = (await start_trial(conn, study_id, made), 0)
            made += 1

        for _ in range(args.running):
            await start()
        for step in range(args.decisions):
            number = sorted(running)[step % len(running)]
            attempt_id, done = running[number]
            epoch = done + 1
            level = 0.3 + 0.6 * ((number * 7919) % 101) / 100.0
            value = level * (1 - 0.5**epoch)
            async with pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO attempt_epochs (attempt_id, epoch, loss, val_accuracy, val_loss)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (attempt_id, epoch, 1.0 / epoch, value, 1 - value),
                )
            started = time.perf_counter()
            trials = await store.trials(study_id)
            pruner = pruners.make(study.pruner.name, {}, args.epochs)
            prune, _ = await workers.run(pruners.decide, "big", study, pruner, trials, number)
            rebuilt.append(time.perf_counter() - started)
            started = time.perf_counter()
            why = await pruning.decide(attempt_id, epoch)
            kept.append(time.perf_counter() - started)
            agree += prune == (why is not None)
            running[number] = (attempt_id, epoch)
            if why is not None or epoch == args.epochs:
                async with pool.connection() as conn:
                    await conn.execute(
                        "UPDATE attempts SET status = %s, updated_at = now() WHERE id = %s",
                        ("PRUNED" if why else "COMPLETE", attempt_id),
                    )
                del running[number]
                await start()
    return {
        "decisions": len(kept),
        # Both ways decided alike (the rebuilt one first: the kept one stores the rungs).
        "decisions_agreeing": agree,
        "prune_decision_p50_ms": percentile(kept, 0.5) * 1e3,
        "prune_decision_p99_ms": percentile(kept, 0.99) * 1e3,
        "rebuilt_decision_p50_ms": percentile(rebuilt, 0.5) * 1e3,
        "rebuilt_decision_p99_ms": percentile(rebuilt, 0.99) * 1e3,
        "p99_ratio_rebuilt_over_kept": percentile(rebuilt, 0.99) / percentile(kept, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--trials", type=int, default=500, help="finished trials")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of a full trial")
    parser.add_argument("--running", type=int, default=4, help="trials run side by side")
    parser.add_argument("--decisions", type=int, default=1000, help="decisions timed")
    parser.add_argument("--pruner", default="successive_halving", help="the study's pruner")
    args = parser.parse_args()
    with scratch_postgres() as scratch:
        asyncio.run(migrate(scratch.url))
        study_id = asyncio.run(write_study(scratch.url, args.trials, args.epochs, args.pruner))
        figures = {"trials": args.trials, "epochs": args.epochs}
        figures.update(asyncio.run(_replay(scratch.url, study_id, args.trials, args)))

    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
