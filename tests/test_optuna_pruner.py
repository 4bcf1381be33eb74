"""The learned pruner outside metalearn's own studies: ForecastCurve on a real gateway,
and `metalearn.optuna.LearnedPruner` in a real Optuna study (on Optuna's own in-memory
storage and on metalearn's), pruning the trials the model says cannot win.

The curves are tests/test_curves.py's made-up ones, whose answers are known: a learning
rate of 0.1 stays at chance, the others rise toward 0.95."""

from __future__ import annotations

import math

import grpc
import numpy as np
import optuna
import pytest

import metalearn.optuna
from learning.curves import features
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import curve_service_pb2 as cpb
from tests.harness import GatewayThread, fresh_database
from tests.rpc import violations
from tests.test_curves import EPOCHS, _curve, _stubs, history, made_up_model

LEARNING_RATES = [0.0001, 0.001, 0.01, 0.1]


def test_a_curve_without_losses_is_forecast_from_its_accuracies() -> None:
    """The model learns curves known only by their accuracies too: such a curve is not
    read as diverged (a NaN loss from a trainer), and is predicted better than by its
    last value."""
    fitted = made_up_model()
    rng = np.random.default_rng(11)
    errors, last = [], []
    for rate in (0.3, 0.9):
        run = features.without_loss(
            features.Run(_curve(rate, 0.95, 6, 0.0, rng), EPOCHS, 6, 0.001, "SGD", 32)
        )
        found = fitted.predict(run, 2)
        assert found is not None
        final = run.points[-1].val_accuracy
        errors.append(abs(found.median - final))
        last.append(abs(run.points[1].val_accuracy - final))
        assert features.row(run, 2)[features.NAMES.index("diverging")] == 0.0
        assert math.isnan(features.row(run, 2)[features.NAMES.index("loss_last")])
    assert sum(errors) < sum(last), (errors, last)


def _request(accuracies: list[float], **fields: object) -> cpb.ForecastCurveRequest:
    request = cpb.ForecastCurveRequest(**{"n_epoch": EPOCHS, "n_labels": 10, **fields})  # type: ignore[arg-type]
    for a in accuracies:
        request.epochs.add(val_accuracy=a)
    return request


def test_forecast_curve_predicts_prunes_and_names_bad_fields(gateway: GatewayThread) -> None:
    with gateway.channel() as ch:
        attempts, curves = _stubs(ch)
        attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=history()))
        version = curves.FitCurveModel(cpb.FitCurveModelRequest()).model.version
        # A fast learner, accuracies only: predicted high, and not pruned under 0.9.
        fast = curves.ForecastCurve(
            _request([0.55, 0.8], best=0.9, finished=3, learning_rate=0.01, optimizer="SGD")
        )
        assert fast.predicted and fast.model_version >= version
        assert fast.final_val_accuracy_low <= fast.final_val_accuracy
        assert fast.final_val_accuracy <= fast.final_val_accuracy_high
        assert fast.final_val_accuracy_high <= fast.final_val_accuracy_ceiling
        assert fast.final_val_accuracy > 0.8 and not fast.prune and not fast.prune_reason
        # At chance for three epochs, with its losses: pruned, and says why.
        stuck = _request([0.1, 0.11, 0.1], best=0.9, finished=3, learning_rate=0.1)
        for p in stuck.epochs:
            p.loss = math.log(10)
        found = curves.ForecastCurve(stuck)
        assert found.predicted and found.prune, found
        assert "not above the study's best 0.9000" in found.prune_reason
        # Without a best there is no verdict; with too few finished trials, none either.
        stuck.ClearField("best")
        assert not curves.ForecastCurve(stuck).prune
        stuck.best, stuck.n_startup_trials = 0.9, 5
        assert not curves.ForecastCurve(stuck).prune
        # The last epoch is in: nothing left to forecast.
        done = curves.ForecastCurve(_request([0.5] * EPOCHS))
        assert not done.predicted and "last epoch" in done.note
        # Chance from the caller's validation split: nine images in ten of one class.
        majority = _request([0.9, 0.9, 0.9], validation_images_per_label=[90] + [1] * 9)
        assert curves.ForecastCurve(majority).predicted
        bad = _request([0.5, 1.5], n_epoch=1, learning_rate=-1.0, best=2.0, margin=3.0)
        bad.validation_images_per_label.extend([5, 5])  # two counts for ten classes
        bad.epochs[0].loss = 1.0  # one epoch with a loss, one without
        bad.task_fingerprint = "not-hex"
        with pytest.raises(grpc.RpcError) as err:
            curves.ForecastCurve(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        found_fields = violations(err.value)
        for field in ("epochs", "epochs[1].val_accuracy", "learning_rate", "best", "margin",
                      "task_fingerprint", "validation_images_per_label"):  # fmt: skip
            assert field in found_fields, (field, found_fields)
        with pytest.raises(grpc.RpcError) as err:
            curves.ForecastCurve(_request([0.5], task_fingerprint="0" * 64))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with gateway.channel(gateway.make_token("forecast-reader", "reader")) as ch:
        _, curves = _stubs(ch)
        assert curves.ForecastCurve(_request([0.55, 0.8])).predicted
    with gateway.channel("not-a-token") as ch:
        _, curves = _stubs(ch)
        with pytest.raises(grpc.RpcError) as err:
            curves.ForecastCurve(_request([0.5]))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _objective(pruner: metalearn.optuna.LearnedPruner, with_loss: bool):
    """Replays a made-up curve of the trial's learning rate, epoch by epoch."""

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_categorical("lr", LEARNING_RATES)
        rate = {0.0001: 0.05, 0.001: 0.3, 0.01: 0.9, 0.1: 0.0}[lr]
        ceiling = 0.95 if lr != 0.1 else 0.1
        points = _curve(rate, ceiling, 10, 0.005, np.random.default_rng(trial.number))
        for p in points:
            if with_loss:
                pruner.report(trial, p.epoch, p.val_accuracy, loss=p.loss, val_loss=p.val_loss)
            else:
                trial.report(p.val_accuracy, p.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return points[-1].val_accuracy

    return objective


def _run(storage: object, pruner: metalearn.optuna.LearnedPruner, with_loss: bool) -> optuna.Study:
    study = optuna.create_study(
        storage=storage,  # type: ignore[arg-type]
        direction="maximize",
        pruner=pruner,
        study_name=f"pruned-{with_loss}",
        sampler=optuna.samplers.BruteForceSampler(seed=0),
    )
    # The best learning rate first, so that the study has a best to beat.
    study.enqueue_trial({"lr": 0.01})
    study.optimize(_objective(pruner, with_loss), n_trials=len(LEARNING_RATES))
    return study


def test_an_optuna_study_prunes_the_trial_at_chance(gateway: GatewayThread) -> None:
    with gateway.channel() as ch:
        attempts, curves = _stubs(ch)
        attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=history()))
        curves.FitCurveModel(cpb.FitCurveModelRequest())
    pruner = metalearn.optuna.LearnedPruner(
        n_epoch=EPOCHS, n_labels=10, gateway=gateway.address, token=gateway.admin_token
    )
    storage = metalearn.optuna.Storage(gateway.address, token=gateway.admin_token)
    try:
        # Optuna's own storage, accuracies alone; metalearn's, with losses.
        for store, with_loss in ((optuna.storages.InMemoryStorage(), False), (storage, True)):
            study = _run(store, pruner, with_loss)
            states = {t.params["lr"]: t.state for t in study.trials}
            assert states[0.1] == optuna.trial.TrialState.PRUNED, states
            assert states[0.01] == optuna.trial.TrialState.COMPLETE, states
            stuck = next(t for t in study.trials if t.params["lr"] == 0.1)
            assert (
                "not above the study's best"
                in stuck.system_attrs[metalearn.optuna.pruner.REASON_KEY]
            )
            assert len(stuck.intermediate_values) < EPOCHS
    finally:
        storage.close()
        pruner.close()
    # A maximized accuracy is what it forecasts: anything else is refused at once.
    with pytest.raises(ValueError, match="maximized"):
        optuna.create_study(direction="minimize", pruner=pruner).optimize(
            _objective(pruner, False), n_trials=2
        )


def test_without_a_model_trials_run_on_and_the_pruner_says_why(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = GatewayThread(fresh_database(postgres_url, "forecast_none")).start()
    try:
        pruner = metalearn.optuna.LearnedPruner(
            n_epoch=EPOCHS, n_labels=10, gateway=fresh.address, token=fresh.admin_token
        )
        with caplog.at_level("WARNING", logger="metalearn.optuna.pruner"):
            study = _run(optuna.storages.InMemoryStorage(), pruner, False)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "no curve model fitted yet" in said[0], said
        pruner.close()
    finally:
        fresh.stop()
