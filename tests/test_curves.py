"""Curves (issue 14) through a real gateway: prognoses of imported history, filters on
them, the curve model's fits and versions, and every bad request named. The model's
maths on made-up curves with known answers; the live paths are in test_curves_live.py.
"""

from __future__ import annotations

import functools
import json
import math
import time

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from learning.curves import features, model, prognosis, rules
from learning.curves.pruner import LearnedPruner
from metalearn import documents
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    curve_service_pb2_grpc,
    study_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import curve_service_pb2 as cpb
from metalearn.v1 import study_service_pb2 as spb
from tests.conftest import SEED
from tests.harness import GatewayThread, fresh_database
from tests.rpc import violations

EPOCHS = 6


def _curve(rate: float, ceiling: float, n_labels: int, noise: float, rng: np.random.Generator):
    """A made-up run: validation accuracy rising from chance toward `ceiling`."""
    chance = 1 / n_labels
    points = []
    for e in range(1, EPOCHS + 1):
        acc = chance + (ceiling - chance) * (1 - math.exp(-rate * e)) + rng.normal(0, noise)
        acc = min(max(acc, 0.0), 1.0)
        loss = math.log(n_labels) * (1 - 0.9 * (acc - chance) / (1 - chance)) + 0.01
        points.append(rules.Point(e, loss, loss * 1.05, acc))
    return points


def _made_up(n_per_task: int = 20, seed: int = 0) -> tuple[list[features.Run], list[str]]:
    rng = np.random.default_rng(seed)
    runs, tasks = [], []
    for task, n_labels in (("a", 10), ("b", 4), ("c", 5)):
        for i in range(n_per_task):
            lr = [0.0001, 0.001, 0.01, 0.1][i % 4]
            rate = {0.0001: 0.05, 0.001: 0.3, 0.01: 0.9, 0.1: 0.0}[lr]
            ceiling = 0.95 if lr != 0.1 else 1 / n_labels
            points = _curve(rate, ceiling, n_labels, 0.01, rng)
            runs.append(features.Run(points, EPOCHS, n_labels, lr, "SGD", 32))
            tasks.append(task)
    return runs, tasks


@functools.cache
def made_up_model() -> model.CurveModel:
    """One fit of the made-up runs, shared by the tests that only read it (a fit is
    seconds)."""
    runs, tasks = _made_up()
    return model.fit(runs, tasks)


def _attempt(name: str, run: features.Run) -> attempt_pb2.Attempt:
    a = attempt_pb2.Attempt(name=name, status=attempt_pb2.ATTEMPT_STATUS_TRAINED)
    c = a.training_commands
    c.label_names.extend([f"{name[0]}{i}" for i in range(run.n_labels)])
    c.n_epoch = run.n_epoch
    c.batch_size = run.batch_size
    c.optimizer.update({"name": run.optimizer, "lr": run.learning_rate})
    c.model.layers.add().update({"name": "Flatten"})
    a.n_epoch = run.n_epoch
    for p in run.points:
        a.epochs.add(epoch=p.epoch, loss=p.loss, val_loss=p.val_loss, val_accuracy=p.val_accuracy)
    return a


def history(prefix: str = "") -> list[attempt_pb2.Attempt]:
    """The made-up runs as finished attempts to import (60 runs on 3 tasks)."""
    runs, tasks = _made_up()
    return [
        _attempt(f"{prefix}{t}{i}", r) for i, (r, t) in enumerate(zip(runs, tasks, strict=True))
    ]


def _stubs(channel: grpc.Channel):
    return (
        attempt_service_pb2_grpc.AttemptServiceStub(channel),
        curve_service_pb2_grpc.CurveServiceStub(channel),
    )


def test_the_prototype_document_is_flagged_at_chance_since_epoch_1(gateway: GatewayThread) -> None:
    doc = json.loads(SEED.read_text())
    with gateway.channel() as ch:
        attempts, _ = _stubs(ch)
        attempts.ImportAttempts(
            apb.ImportAttemptsRequest(attempts=[documents.attempt_from_document(doc)])
        )
        got = attempts.GetAttempt(apb.GetAttemptRequest(name=doc["name"])).attempt
        p = got.prognosis
        assert p.epoch == 100
        assert [(f.kind, f.since_epoch) for f in p.flags] == [
            (attempt_pb2.CURVE_FLAG_KIND_AT_CHANCE, 1)
        ]
        assert "ln(9)" in p.flags[0].detail
        assert p.hopeless and p.hopeless_reason == "at chance since epoch 1"
        # Nothing to predict from: it says so instead of guessing.
        assert not p.predicted and "no validation accuracy" in p.note
        # Exported and imported again (as another name): the same prognosis, made anew.
        exported = documents.attempt_to_document(got)
        assert exported["prognosis"]["hopeless"] is True
        exported["name"] = "again"
        attempts.ImportAttempts(apb.ImportAttemptsRequest(
            attempts=[documents.attempt_from_document(exported)]))  # fmt: skip
        again = attempts.GetAttempt(apb.GetAttemptRequest(name="again")).attempt
        assert again.prognosis == p
        # A run that learnt: no flag, not hopeless.
        fine = documents.attempt_from_document(
            {**doc, "name": "fine", "training_losses": [2.2 / e for e in range(1, 11)]}
        )
        attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=[fine]))
        both = [doc["name"], "again"]
        for text, found in (
            ('prognosis.flags = "AT_CHANCE"', both),
            ("prognosis.hopeless = true", both),
            ('prognosis.flags = "DIVERGING"', []),
            ("prognosis:*", [*both, "fine"]),
            ('NOT prognosis.flags = "AT_CHANCE"', ["fine"]),
            ("prognosis.hopeless = false", ["fine"]),
        ):
            listed = attempts.ListAttempts(apb.ListAttemptsRequest(filter=text)).attempts
            assert [a.name for a in listed] == found, text


def test_a_fresh_store_has_no_curve_model_and_says_why(gateway: GatewayThread) -> None:
    with gateway.channel() as ch:
        attempts, curves = _stubs(ch)
        with pytest.raises(grpc.RpcError) as err:
            curves.GetCurveModel(cpb.GetCurveModelRequest())
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no curve model fitted yet" in err.value.details()
        runs, _ = _made_up(3)
        attempts.ImportAttempts(apb.ImportAttemptsRequest(
            attempts=[_attempt(f"a{i}", r) for i, r in enumerate(runs[:5])]))  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            curves.FitCurveModel(cpb.FitCurveModelRequest())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "needs 30 finished runs" in err.value.details()
        assert "the store has 5 on 2" in err.value.details()
        # Then each prognosis's note says what that fit found, not only a count.
        with pytest.raises(grpc.RpcError) as err:
            curves.GetCurveModel(cpb.GetCurveModelRequest())
        assert err.value.details().startswith(
            "no curve model fitted yet: a curve model needs 30 finished runs"
        ), err.value.details()


def test_fitting_makes_a_version_with_its_quality_on_unseen_tasks(gateway: GatewayThread) -> None:
    with gateway.channel() as ch:
        attempts, curves = _stubs(ch)
        attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=history()))
        first = curves.FitCurveModel(cpb.FitCurveModelRequest()).model
        # (The gateway's own refit may have come first: versions only grow.)
        assert first.version >= 1 and first.attempts == 60 and first.tasks == 3
        q = first.quality
        assert q.folds == 3
        assert 0 <= q.mae_at_3 < q.baseline_mae_at_3, q
        assert 0 < q.interval_coverage <= 1
        second = curves.FitCurveModel(cpb.FitCurveModelRequest()).model
        assert second.version == first.version + 1
        assert curves.GetCurveModel(cpb.GetCurveModelRequest()).model == second
    # Refitting is an admin's: a writer may read the model, not refit it.
    writer = gateway.make_token("curve-writer", "writer")
    with gateway.channel(writer) as ch:
        _, curves = _stubs(ch)
        assert curves.GetCurveModel(cpb.GetCurveModelRequest()).model == second
        with pytest.raises(grpc.RpcError) as err:
            curves.FitCurveModel(cpb.FitCurveModelRequest())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with gateway.channel("not-a-token") as ch:
        _, curves = _stubs(ch)
        with pytest.raises(grpc.RpcError) as err:
            curves.GetCurveModel(cpb.GetCurveModelRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_model_fitted_on_one_replica_is_used_by_every_replica_at_once(
    postgres_url: str,
) -> None:
    """Replicas cache the newest model a few seconds; a fit anywhere is told to all (a
    trial claimed by another replica just after a fit is judged by that fit)."""
    url = fresh_database(postgres_url, "curves_replicas")
    first, second = GatewayThread(url).start(), GatewayThread(url).start()
    try:
        cache = second.background.curves

        def newest_loaded() -> int:
            found = second.run(cache.current())
            return found.row.version if found is not None else 0

        assert newest_loaded() == 0  # looked: nothing fitted yet, and that is remembered
        with first.channel() as ch:
            attempts, curves = _stubs(ch)
            attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=history()))
            fitted = curves.FitCurveModel(cpb.FitCurveModelRequest()).model
        deadline = time.monotonic() + 2  # well within the cache's own 5 s
        while newest_loaded() != fitted.version and time.monotonic() < deadline:
            time.sleep(0.05)
        assert newest_loaded() == fitted.version
    finally:
        first.stop()
        second.stop()


def test_too_little_data_is_refused_by_the_model_itself() -> None:
    runs, tasks = _made_up(3)
    with pytest.raises(model.TooLittleData, match="needs 30 finished runs"):
        model.fit(runs, tasks)
    with pytest.raises(model.TooLittleData, match="on 1"):
        model.fit(runs[:3] * 20, ["a"] * 60)


def test_a_store_where_one_task_alone_has_runs_to_learn_from_is_too_little() -> None:
    # 40 runs on 2 tasks, but task b's are one epoch long: nothing to predict from, so
    # no task is left to judge the model on (this once crashed the cross-validation).
    runs, tasks = _made_up(20)
    short = [features.Run(r.points[:1], 1, r.n_labels, r.learning_rate, "SGD", 32)
             for r in runs[20:40]]  # fmt: skip
    with pytest.raises(model.TooLittleData, match="of 1 task"):
        model.assess(runs[:20] + short, tasks[:40])


def test_the_model_predicts_from_the_first_epochs_better_than_the_last_value() -> None:
    fitted = made_up_model()
    rng = np.random.default_rng(7)
    # A new task: a slow learner ends far above where it is at epoch 2.
    slow = features.Run(_curve(0.3, 0.95, 6, 0.0, rng), EPOCHS, 6, 0.001, "SGD", 32)
    found = fitted.predict(slow, 2)
    assert found is not None and found.low <= found.median <= found.high
    final = slow.points[-1].val_accuracy
    assert abs(found.median - final) < abs(slow.points[1].val_accuracy - final)
    # Stored and loaded: the same predictions.
    again = model.CurveModel.loads(fitted.dumps())
    assert again is not None and again.predict(slow, 2) == found
    # A run that measures no validation accuracy gets no prediction, not a guess.
    blind = features.Run([rules.Point(1, 2.0), rules.Point(2, 1.9)], EPOCHS, 6)
    assert fitted.predict(blind, 2) is None


def test_a_model_stored_before_the_maths_moved_still_loads(monkeypatch) -> None:
    """Models fitted before issue 26 name `gateway.curves.model.CurveModel`; a store
    keeps them: they load from learning/, and a class gone for good means a refit."""
    import sys

    fitted = made_up_model()
    monkeypatch.setitem(sys.modules, "gateway.curves.model", model)
    monkeypatch.setattr(model.CurveModel, "__module__", "gateway.curves.model")
    old = fitted.dumps()
    monkeypatch.undo()
    assert b"gateway.curves.model" in old and "gateway.curves.model" not in sys.modules
    again = model.CurveModel.loads(old)
    assert again is not None and again.names == fitted.names
    gone = old.replace(b"CurveModel", b"CurveModeX")  # same length: a class not there
    assert model.CurveModel.loads(gone) is None


def test_the_learned_pruner_is_deterministic_for_a_fixed_model() -> None:
    fitted = made_up_model()
    copy = model.CurveModel.loads(fitted.dumps())
    assert copy is not None
    pruner = LearnedPruner()
    rng = np.random.default_rng(3)
    candidates = [
        features.Run(_curve(rate, ceiling, 10, 0.02, rng), EPOCHS, 10, lr, "SGD", 32)
        for rate, ceiling, lr in ((0.05, 0.95, 0.0001), (0.9, 0.95, 0.01), (0.0, 0.1, 0.1))
    ]
    decisions = [
        [pruner.decide(m, run, k, 0.9, 3) for run in candidates for k in range(1, EPOCHS)]
        for m in (fitted, fitted, copy)
    ]
    assert decisions[0] == decisions[1] == decisions[2]
    # The run at chance is stopped; the fast learner is not.
    at_chance = decisions[0][2 * (EPOCHS - 1) : 3 * (EPOCHS - 1)]
    fast = decisions[0][EPOCHS - 1 : 2 * (EPOCHS - 1)]
    assert any(at_chance) and not any(fast)
    # No best yet, too few finished trials, or the last epoch: nothing to decide.
    assert pruner.decide(fitted, candidates[2], 3, None, 3) is None
    assert LearnedPruner(n_startup_trials=5).decide(fitted, candidates[2], 3, 0.9, 3) is None
    assert pruner.decide(fitted, candidates[2], EPOCHS, 0.9, 3) is None


def test_hopeless_needs_a_fatal_rule_or_a_confident_model() -> None:
    chance = features.Run(rules.from_losses([math.log(10)] * 4), 20, 10)
    found = prognosis.assess(chance, 4, None)
    assert found.hopeless and found.reason == "at chance since epoch 1"
    rising = features.Run(rules.from_losses([1.0, 1.2, 1.5, 2.0]), 20, 10)
    assert prognosis.assess(rising, 4, None).reason.startswith("diverging since epoch")
    overfit = features.Run([rules.Point(e, 1 / e, 0.5 + 0.1 * e, 0.8) for e in range(1, 6)], 20, 10)
    found = prognosis.assess(overfit, 5, None)
    assert [f.kind for f in found.flags] == ["OVERFITTING"] and not found.hopeless


def test_bad_arguments_are_named(gateway: GatewayThread) -> None:
    with gateway.channel() as ch:
        attempts = attempt_service_pb2_grpc.AttemptServiceStub(ch)
        for below, stop, field_problem in (
            (1.5, True, "between 0 and 1"),
            (float("nan"), True, "between 0 and 1"),
            (0.5, False, "only with stop_when_hopeless"),
        ):
            command = attempt_pb2.TrainCommand(
                label_names=["x"], n_epoch=1, hopeless_below=below, stop_when_hopeless=stop
            )
            with pytest.raises(grpc.RpcError) as err:
                attempts.Train(apb.TrainRequest(name="bad", command=command))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            found = violations(err.value)
            assert field_problem in found.get("command.hopeless_below", ""), found
        studies = study_service_pb2_grpc.StudyServiceStub(ch)
        base = attempt_pb2.TrainCommand(label_names=["x"], n_epoch=2)
        base.optimizer.update({"name": "SGD", "lr": 0.1})
        for objective, args, field in (
            (spb.OBJECTIVE_BEST_VAL_LOSS, {}, "study.pruner.name"),
            (spb.OBJECTIVE_BEST_VAL_ACCURACY, {"margin": 5}, "study.pruner.args.margin"),
            (spb.OBJECTIVE_BEST_VAL_ACCURACY, {"min_epoch": 0}, "study.pruner.args.min_epoch"),
            (spb.OBJECTIVE_BEST_VAL_ACCURACY, {"quantile": 0.9}, "study.pruner.args.quantile"),
        ):
            study = spb.Study(name="s", base_command=base, n_trials=2, objective=objective)
            study.pruner.name = "learned"
            study.pruner.args.update(args)
            study.search_space.add(
                path="optimizer.lr", float=spb.FloatRange(low=0.001, high=0.1, log=True)
            )
            with pytest.raises(grpc.RpcError) as err:
                studies.CreateStudy(spb.CreateStudyRequest(study=study))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in violations(err.value), (field, violations(err.value))


def test_prognosis_is_output_only(gateway: GatewayThread) -> None:
    """A client cannot write a prognosis (it is not a writable field)."""
    with gateway.channel() as ch:
        attempts = attempt_service_pb2_grpc.AttemptServiceStub(ch)
        a = attempt_pb2.Attempt(name="forged")
        a.prognosis.hopeless = True
        created = attempts.CreateAttempt(apb.CreateAttemptRequest(attempt=a)).attempt
        assert not created.HasField("prognosis")
        listed = attempts.ListAttempts(apb.ListAttemptsRequest(filter="prognosis:*")).attempts
        assert not listed
        assert json_format.MessageToDict(created).get("prognosis") is None


def test_attempts_from_before_prognoses_are_given_one(gateway: GatewayThread) -> None:
    import asyncio

    import psycopg

    from gateway.curves.live import Curves
    from gateway.store import open_pool
    from gateway.store.curves import CurveStore

    doc = json.loads(SEED.read_text())
    with gateway.channel() as ch:
        attempts, _ = _stubs(ch)
        attempts.ImportAttempts(
            apb.ImportAttemptsRequest(attempts=[documents.attempt_from_document(doc)])
        )
        with psycopg.connect(gateway.database_url) as conn:
            conn.execute("UPDATE attempts SET prognosis = NULL, prognosis_wire = NULL")
        assert not attempts.GetAttempt(apb.GetAttemptRequest(name=doc["name"])).attempt.HasField(
            "prognosis"
        )

        async def backfill() -> tuple[int, int]:
            async with open_pool(gateway.database_url, 1, 2) as pool:
                curves = Curves(CurveStore(pool))
                return await curves.backfill(), await curves.backfill()

        assert asyncio.run(backfill()) == (1, 0)
        got = attempts.GetAttempt(apb.GetAttemptRequest(name=doc["name"])).attempt.prognosis
        assert got.hopeless and got.flags[0].kind == attempt_pb2.CURVE_FLAG_KIND_AT_CHANCE
        assert got.note == "its last epoch is in: nothing left to predict"
