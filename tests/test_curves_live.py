"""Curves with real trainers: a deliberately diverging command is flagged as it runs,
and stopped when it opted in; WatchAttempt streams each prognosis after its epoch; a
study with the learned pruner stops a trial that stays at chance."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from google.protobuf import struct_pb2

from gateway.config import GatewayConfig
from metalearn.v1 import attempt_pb2, curve_service_pb2_grpc, study_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import curve_service_pb2 as cpb
from metalearn.v1 import study_service_pb2 as spb
from tests.harness import GatewayThread
from tests.test_curves import history
from tests.test_orchestration import Stack
from tests.trainer_harness import lenet_command

pytestmark = pytest.mark.slow

DIGITS = [f"digit {d}" for d in range(10)]
ENDED = {
    attempt_pb2.ATTEMPT_STATUS_TRAINED,
    attempt_pb2.ATTEMPT_STATUS_FAILED,
    attempt_pb2.ATTEMPT_STATUS_PRUNED,
}


@pytest.fixture(scope="module")
def live(
    digits_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    config = GatewayConfig(listen="127.0.0.1:0", database_url=digits_gateway.database_url,
                           dispatch_seconds=0.2, study_tick_seconds=0.5)  # fmt: skip
    fast = GatewayThread(digits_gateway.database_url, config).start()
    stack = Stack(fast, tmp_path_factory.mktemp("curves-live"))
    stack.ensure_trainers(1)
    try:
        yield stack
    finally:
        stack.close()
        fast.stop()


def diverging(**changes: object) -> attempt_pb2.TrainCommand:
    """A linear model whose learning rate triples every epoch: the loss falls for a few
    epochs, then rises every epoch (finite for a dozen epochs: no NaN to stop it)."""
    return lenet_command(
        label_names=DIGITS, n_epoch=12, batch_size=32,
        model={"layers": [{"name": "Flatten", "start_dim": 1},
                          {"name": "Linear", "in_features": "auto", "out_features": "n_labels"}]},
        optimizer={"name": "SGD", "lr": 0.1},
        scheduler={"name": "ExponentialLR", "gamma": 3.0},
        **changes,
    )  # fmt: skip


def _watch(live: Stack, name: str, into: list[apb.WatchAttemptResponse]) -> threading.Thread:
    def follow() -> None:
        try:
            for event in live.stub.WatchAttempt(apb.WatchAttemptRequest(name=name), timeout=120):
                into.append(event)
        except Exception as err:  # shown by the assertions that read `into`
            into.append(err)  # type: ignore[arg-type]

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread


def test_a_diverging_run_is_flagged_and_stopped_when_it_opted_in(live: Stack) -> None:
    events: list[apb.WatchAttemptResponse] = []
    live.stub.Train(apb.TrainRequest(name="div-stop", command=diverging(stop_when_hopeless=True)))
    watcher = _watch(live, "div-stop", events)  # (an attempt at rest has nothing to watch)
    stopped = live.wait_status("div-stop", ENDED, 180)
    assert stopped.status == attempt_pb2.ATTEMPT_STATUS_PRUNED, stopped.error
    assert "as hopeless: diverging since epoch" in stopped.error
    assert stopped.current_epoch < 12  # stopped early: its epochs are kept
    kinds = [f.kind for f in stopped.prognosis.flags]
    assert attempt_pb2.CURVE_FLAG_KIND_DIVERGING in kinds
    assert stopped.prognosis.hopeless and stopped.prognosis.epoch == stopped.current_epoch
    # The stored losses rise for the rule's epochs before it fired.
    since = next(f.since_epoch for f in stopped.prognosis.flags
                 if f.kind == attempt_pb2.CURVE_FLAG_KIND_DIVERGING)  # fmt: skip
    losses = list(stopped.training_losses)
    assert all(b > a for a, b in zip(losses[since - 2 :], losses[since - 1 :], strict=False))
    # The watcher saw a prognosis after each epoch, each after the epoch it was made at.
    watcher.join(30)
    order = [(e.WhichOneof("event"), e) for e in events]
    seen_epoch = 0
    prognoses = 0
    for kind, event in order:
        if kind == "epoch":
            seen_epoch = event.epoch.epoch
        elif kind == "prognosis":
            prognoses += 1
            assert event.prognosis.epoch <= seen_epoch
    assert prognoses >= 1, [k for k, _ in order]
    assert (
        order[-1][0] == "status" and order[-1][1].status.status == attempt_pb2.ATTEMPT_STATUS_PRUNED
    )
    # Found by a filter on the prognosis.
    listed = live.stub.ListAttempts(apb.ListAttemptsRequest(filter='prognosis.flags = "DIVERGING"'))
    assert "div-stop" in [a.name for a in listed.attempts]


def test_without_opting_in_a_diverging_run_is_flagged_and_runs_on(live: Stack) -> None:
    live.stub.Train(apb.TrainRequest(name="div-run", command=diverging()))
    ended = live.wait_status("div-run", ENDED, 180)
    # It runs on (to its end, or until the trainer meets a non-finite loss).
    assert ended.status in (attempt_pb2.ATTEMPT_STATUS_TRAINED, attempt_pb2.ATTEMPT_STATUS_FAILED)
    assert ended.current_epoch > 7, ended
    kinds = {f.kind for f in ended.prognosis.flags}
    assert kinds & {attempt_pb2.CURVE_FLAG_KIND_DIVERGING, attempt_pb2.CURVE_FLAG_KIND_NON_FINITE}
    assert ended.prognosis.hopeless


def test_a_study_with_the_learned_pruner_stops_a_trial_at_chance(live: Stack) -> None:
    # A curve model from imported history (made-up curves of three other tasks).
    live.stub.ImportAttempts(apb.ImportAttemptsRequest(attempts=history("hist-")))
    curves = curve_service_pb2_grpc.CurveServiceStub(live.channel)
    fitted = curves.FitCurveModel(cpb.FitCurveModelRequest()).model
    assert fitted.attempts >= 60
    base = lenet_command(n_epoch=6, batch_size=64, label_names=DIGITS[:3])
    study = spb.Study(name="learned", base_command=base, n_trials=2, max_parallel=1, seed=1)
    study.pruner.name = "learned"
    study.sampler.name = "grid"
    # A good learning rate (first, in the seeded grid's order), then one far too small to
    # leave chance in 6 epochs.
    lrs = [struct_pb2.Value(number_value=x) for x in (0.003, 1e-7)]
    study.search_space.add(path="optimizer.lr", categorical=spb.Choices(values=lrs))
    studies = study_service_pb2_grpc.StudyServiceStub(live.channel)
    studies.CreateStudy(spb.CreateStudyRequest(study=study))
    live.wait_for(
        lambda: (
            studies.GetStudy(spb.GetStudyRequest(name="learned")).study.state
            == spb.STUDY_STATE_DONE
        ),
        240,
        "the study to finish",
    )
    done = studies.GetStudy(spb.GetStudyRequest(name="learned")).study
    by_lr = {t.params["optimizer.lr"]: t for t in done.trials}
    assert by_lr[0.003].state == spb.TRIAL_STATE_COMPLETE
    slow = by_lr[1e-7]
    assert slow.state == spb.TRIAL_STATE_PRUNED, slow
    attempt = live.get(slow.attempt_name)
    assert "by the learned pruner" in attempt.error and attempt.current_epoch < 6
    # Its prognosis came from the fitted model (or a later refit of the same store).
    assert attempt.prognosis.predicted and attempt.prognosis.model_version >= fitted.version
