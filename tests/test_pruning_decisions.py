"""Pruning decisions from the study kept between epochs (gateway/studies/decisions.py)
against the study rebuilt from every trial (pruners.decide), decision by decision, over
simulated studies: trials running side by side, pruned, finished, failed, retried, their
attempts deleted, some decided by another gateway; every pruner a study may name.
Decisions are booleans and rung values: compared exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from typing import Any

import pytest

from bench.pruning import start_trial, write_study
from gateway.store import migrate, open_pool
from gateway.store.studies import StudyStore, TrialRecord
from gateway.studies import decisions, pruners
from gateway.studies.decisions import Mirror, Mirrors
from gateway.studies.pruning import Pruning
from metalearn.v1 import study_service_pb2 as pb
from tests.harness import fresh_database, truncate, watch_workers

N_EPOCH = 9
PRUNERS: list[tuple[str, dict[str, Any]]] = [
    ("median", {"n_startup_trials": 2}),
    ("percentile", {"percentile": 25.0, "n_startup_trials": 1, "n_warmup_steps": 1}),
    ("successive_halving", {"reduction_factor": 2}),
    ("hyperband", {"reduction_factor": 2}),
    ("wilcoxon", {"p_threshold": 0.3, "n_startup_steps": 1}),
]


def record(number: int, attempt_id: int | None, status: str) -> TrialRecord:
    return TrialRecord(
        number=number, attempt_id=attempt_id, attempt_name=f"s-{number}", queued=True,
        status=status, work="train" if status == "TRAINING" else "", params={},
        internal={}, sampler_state={}, error="", seeded_by=None, epochs=0,
        best_val_accuracy=None, last_val_accuracy=None, best_val_loss=None,
        last_val_loss=None, steps=[], val_accuracies=[], val_losses=[],
    )  # fmt: skip


def with_epoch(trial: TrialRecord, accuracy: float) -> TrialRecord:
    accs = [*trial.val_accuracies, accuracy]
    losses = [*trial.val_losses, 1 - accuracy]
    return dataclasses.replace(
        trial, epochs=len(accs), steps=list(range(1, len(accs) + 1)), val_accuracies=accs,
        val_losses=losses, best_val_accuracy=max(accs), last_val_accuracy=accs[-1],
        best_val_loss=min(losses), last_val_loss=losses[-1],
    )  # fmt: skip


def keys(trials: list[TrialRecord], changed_at: dict[int, int]) -> list[tuple[Any, ...]]:
    """`StudyStore.decision_rows` of these trials (`changed_at`: their attempts' updated_at)."""
    return [(t.number, t.attempt_id, t.queued, t.status, t.work, t.error,
             json.dumps(t.sampler_state, sort_keys=True), t.optuna_state, t.values,
             changed_at.get(t.number), None) for t in trials]  # fmt: skip


async def simulate(
    name: str, args: dict[str, Any], objective: int, seed: int
) -> tuple[int, int, int, int]:
    """Runs a study of 24 trials, 3 at a time; returns how many decisions the mirror
    made, how many trials it read for them, how many times it rebuilt the study, and
    how many decisions pruned."""
    rng = random.Random(seed)
    study = pb.Study(objective=objective)
    study.pruner.name = name
    study.pruner.args.update(args)
    mirror = Mirror(f"study-{seed}", study, pruners.make(name, args, N_EPOCH))
    trials: list[TrialRecord] = []
    changed_at: dict[int, int] = {}  # each attempt's updated_at
    skill: dict[int, float] = {}
    tick, pruned, decisions, reads, rebuilds = 0, 0, 0, 0, 0
    while len(trials) < 24 or any(t.status == "TRAINING" for t in trials):
        tick += 1
        running = [t.number for t in trials if t.status == "TRAINING"]
        if len(trials) < 24 and (len(running) < 3 or rng.random() < 0.1):
            number = len(trials)
            trials.append(record(number, 100 + number, "TRAINING"))
            changed_at[number] = tick
            skill[number] = rng.random()
            continue
        number = rng.choice(running)
        trial = trials[number]
        noise = rng.gauss(0, 0.05)
        trials[number] = trial = with_epoch(trial, skill[number] * (1 - 0.5**trial.epochs) + noise)
        # What the rebuilt study decides, over every trial's whole curve.
        want = pruners.decide(
            mirror._name, study, pruners.make(name, args, N_EPOCH), trials, number
        )
        if rng.random() < 0.7:  # else another gateway decided (its rungs come as rows)
            rows = keys(trials, changed_at)
            read = mirror.changed(rows, number)
            decisions += 1
            reads += len(read)
            if not await mirror.sync(rows, [trials[n] for n in read], number):
                await mirror.rebuild(rows, trials, number)
                rebuilds += 1
            got = mirror.prune(number)
            assert got == want, (name, seed, tick, number)
        prune, state = want
        trial = dataclasses.replace(trial, sampler_state={**trial.sampler_state, **state})
        if prune or trial.epochs == N_EPOCH or rng.random() < 0.03:
            status = "PRUNED" if prune else "COMPLETE" if trial.epochs == N_EPOCH else "FAILED"
            pruned += prune
            trial = dataclasses.replace(trial, status=status, work="")
            changed_at[number] = tick
        trials[number] = trial
        settled = [t.number for t in trials if t.status in ("COMPLETE", "FAILED")]
        if settled and rng.random() < 0.02:  # an attempt deleted: its trial fails
            gone = rng.choice(settled)
            trials[gone] = dataclasses.replace(trials[gone], attempt_id=None, status="")
            changed_at.pop(gone, None)
        if settled and rng.random() < 0.02:  # a failed attempt retried from its start
            again = rng.choice(settled)
            if trials[again].status == "FAILED":
                trials[again] = record(again, trials[again].attempt_id, "TRAINING")
                changed_at[again] = tick
    return decisions, reads, rebuilds, pruned


@pytest.mark.parametrize(("name", "args"), PRUNERS, ids=[n for n, _ in PRUNERS])
def test_the_kept_study_decides_as_a_rebuilt_one(name: str, args: dict[str, Any]) -> None:
    totals = [0, 0, 0, 0]
    for seed, objective in enumerate([pb.OBJECTIVE_BEST_VAL_ACCURACY, pb.OBJECTIVE_LAST_VAL_LOSS]):
        for i, n in enumerate(asyncio.run(simulate(name, args, objective, seed))):
            totals[i] += n
    decisions, reads, rebuilds, pruned = totals
    # The comparison covered decisions both ways, and studies built again.
    assert pruned > 0 and rebuilds > 0, (name, totals)
    # Most decisions read the decided trial and the one decided before it, not all 24.
    assert reads < 3 * decisions, (name, totals)


def test_a_trial_is_read_again_only_when_its_row_changes() -> None:
    async def run() -> None:
        study = pb.Study(objective=pb.OBJECTIVE_BEST_VAL_ACCURACY)
        study.pruner.name = "median"
        mirror = Mirror("s", study, pruners.make("median", {}, N_EPOCH))
        done = with_epoch(record(0, 10, "COMPLETE"), 0.9)
        running = with_epoch(record(1, 11, "TRAINING"), 0.5)
        trials, changed_at = [done, running], {0: 1, 1: 2}
        assert mirror.changed(keys(trials, changed_at), 1) == [0, 1]
        assert await mirror.sync(keys(trials, changed_at), trials, 1)
        assert mirror.completed_values() == [0.9]
        assert mirror.changed(keys(trials, changed_at), 1) == [1]
        # A replay decides on the finished trial (running while decided): the next
        # decision reads it again, at rest.
        assert mirror.changed(keys(trials, changed_at), 0) == [0]
        assert not await mirror.sync(keys(trials, changed_at), trials, 0)
        await mirror.rebuild(keys(trials, changed_at), trials, 0)
        assert mirror.completed_values() == []
        assert mirror.changed(keys(trials, changed_at), 1) == [0, 1]
        assert await mirror.sync(keys(trials, changed_at), trials, 1)
        assert mirror.completed_values() == [0.9]
        # Its test queued: the attempt changed, the trial is read again.
        changed_at[0] = 3
        assert mirror.changed(keys(trials, changed_at), 1) == [0, 1]
        # A finished trial cannot change in place: the study is built again.
        failed = dataclasses.replace(done, status="FAILED")
        assert not await mirror.sync(keys([failed, running], changed_at), [failed, running], 1)
        await mirror.rebuild(keys([failed, running], changed_at), [failed, running], 1)
        assert mirror.completed_values() == []

    asyncio.run(run())


def test_the_kept_studies_are_bounded_by_the_values_they_hold() -> None:
    async def run() -> None:
        mirrors = Mirrors(limit=15)
        study = pb.Study()
        trial = record(0, 10, "TRAINING")
        for value in [0.1] * N_EPOCH:
            trial = with_epoch(trial, value)
        made = []
        for i in range(2):
            mirror = mirrors.of(i, f"s{i}", study, pruners.make("median", {}, N_EPOCH))
            assert await mirror.sync(keys([trial], {0: 1}), [trial], 0)
            assert mirror.values == N_EPOCH + 1
            made.append(mirror)
        # 20 values held, over 15: the least recently decided study goes.
        assert mirrors.of(1, "s1", study, pruners.make("median", {}, N_EPOCH)) is made[1]
        assert mirrors.of(0, "s0", study, pruners.make("median", {}, N_EPOCH)) is not made[0]

    asyncio.run(run())


def empty_store(server_url: str) -> str:
    """A database of its own, migrated and empty."""
    url = fresh_database(server_url, "pruning")
    asyncio.run(migrate(url))
    return url


def stores(pool: Any) -> tuple[StudyStore, Pruning]:
    store = StudyStore(pool)
    return store, Pruning(store)


def test_a_decision_follows_the_rows_not_what_an_emptied_database_held(postgres_url) -> None:
    """A database emptied (RESTART IDENTITY: ids handed out again) under a running
    gateway: an attempt id now names another trial of another study, and the decision
    is the rebuilt study's over the new rows."""
    url = empty_store(postgres_url)

    async def run() -> None:
        async with open_pool(url, 1, 2) as pool:
            store, pruning = stores(pool)
            first = await write_study(url, 6, 5, "median", name="first")
            async with pool.connection() as conn:
                attempt = await start_trial(conn, first, 6)
            assert await pruning.decide(attempt, 1) is None  # no epoch yet: nothing to judge
            truncate(url)
            async with pool.connection() as conn:  # ids now start again, one off
                await conn.execute(
                    "INSERT INTO attempts (name, status, doc) VALUES ('x', 'QUEUED', '{}')"
                )
            second = await write_study(url, 12, 5, "median", name="second")
            record, trials = await store.get("second")
            number = next(t.number for t in trials if t.attempt_id == attempt)
            study = pb.Study.FromString(record.spec)
            want, _ = pruners.decide("second", study, pruners.make("median", {}, 5), trials, number)
            assert want  # the trial the id names now is one the median pruner stops
            assert (await pruning.decide(attempt, 5) is not None) == want
            assert second == first  # the same id: only the study's creation tells them apart

    asyncio.run(run())


def test_equal_values_leave_the_best_trial_a_rebuild_would_take() -> None:
    """Optuna's best trial is the first of equal ones to complete; a rebuild adds trials
    by number. Trial 1 completes before trial 0 at the same value: Wilcoxon, which
    judges against the best trial, decides as over the rebuilt study."""

    async def run() -> None:
        args = {"p_threshold": 0.5, "n_startup_steps": 0}
        study = pb.Study(objective=pb.OBJECTIVE_LAST_VAL_ACCURACY)
        study.pruner.name = "wilcoxon"
        mirror = Mirror("s", study, pruners.make("wilcoxon", args, N_EPOCH))
        low, high = [0.1, 0.2, 0.3, 0.9], [0.6, 0.7, 0.8, 0.9]
        trials = [record(0, 10, "TRAINING"), record(1, 11, "TRAINING"), record(2, 12, "TRAINING")]
        for n, curve in ((0, low), (1, high)):
            for value in curve:
                trials[n] = with_epoch(trials[n], value)
        for value in [0.5, 0.55, 0.6, 0.65]:
            trials[2] = with_epoch(trials[2], value)
        changed_at = {0: 1, 1: 1, 2: 1}
        rows = keys(trials, changed_at)
        assert await mirror.sync(rows, [trials[n] for n in mirror.changed(rows, 2)], 2)
        for n, tick in ((1, 2), (0, 3)):  # trial 1 ends first
            trials[n] = dataclasses.replace(trials[n], status="COMPLETE", work="")
            changed_at[n] = tick
            rows = keys(trials, changed_at)
            read = [trials[k] for k in mirror.changed(rows, 2)]
            if not await mirror.sync(rows, read, 2):
                await mirror.rebuild(rows, trials, 2)
        want = pruners.decide("s", study, pruners.make("wilcoxon", args, N_EPOCH), trials, 2)
        assert mirror.prune(2) == want
        # Keys read before another decision added a trial are older, not wrong.
        assert mirror.changed(rows[:2], 2) == []

    asyncio.run(run())


def test_a_study_too_large_to_keep_is_decided_over_a_rebuilt_one(postgres_url, monkeypatch) -> None:
    """Beyond decisions.MAX_MIRROR_VALUES a study is not kept: each decision rebuilds it
    in a worker process, off the event loop."""
    monkeypatch.setattr(decisions, "MAX_MIRROR_VALUES", 1)
    sent = watch_workers(monkeypatch)
    url = empty_store(postgres_url)

    async def run() -> None:
        async with open_pool(url, 1, 2) as pool:
            store, pruning = stores(pool)
            study_id = await write_study(url, 12, 5, "median", name="large")
            record, trials = await store.get("large")
            low = next(t for t in trials if t.number == 5)  # its curve stays low
            study = pb.Study.FromString(record.spec)
            want, _ = pruners.decide("large", study, pruners.make("median", {}, 5), trials, 5)
            assert want and low.attempt_id is not None
            assert await pruning.decide(low.attempt_id, 5) is not None
            assert study_id == record.id and sent == ["decide"]

    asyncio.run(run())
