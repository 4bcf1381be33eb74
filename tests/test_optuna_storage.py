"""Optuna scripts unchanged on metalearn (issue 28): `metalearn.optuna.Storage` runs an
Optuna script's study from several worker processes, each study and trial is a metalearn
study and attempt, owners and roles hold, bad requests name their field, and Optuna's
own proxy client reaches the gateway through `metalearn optuna-proxy`.

(Optuna's own storage test suite runs in tests/test_optuna_storage_suite.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import GrpcStorageProxy
from optuna.storages._grpc.auto_generated import api_pb2
from optuna.storages._grpc.auto_generated import api_pb2_grpc as optuna_grpc
from optuna.trial import TrialState

from dashboard.study_pages import study_data
from metalearn.optuna import Storage
from metalearn.v1 import attempt_pb2
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import attempt_service_pb2_grpc as agrpc
from metalearn.v1 import optuna_trial_service_pb2 as otpb
from metalearn.v1 import optuna_trial_service_pb2_grpc as otgrpc
from metalearn.v1 import reporting_service_pb2 as rpb
from metalearn.v1 import reporting_service_pb2_grpc as rgrpc
from metalearn.v1 import study_service_pb2 as spb
from metalearn.v1 import study_service_pb2_grpc as sgrpc
from tests.harness import GatewayThread
from tests.rpc import expect_error, violations

ROOT = Path(__file__).resolve().parents[1]
CODE = grpc.StatusCode

# An Optuna script as its users write it: the storage is the one line that changed.
SCRIPT = textwrap.dedent(
    """
    import sys

    import optuna
    import metalearn.optuna


    def objective(trial):
        x = trial.suggest_float("x", -10, 10)
        layers = trial.suggest_int("layers", 1, 4)
        optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
        value = (x - 2) ** 2 + layers + (0.5 if optimizer == "sgd" else 0.0)
        for step in range(5):
            trial.report(value + (5 - step), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value


    if __name__ == "__main__":
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=sys.argv[1],
            storage=metalearn.optuna.Storage(),
            sampler=optuna.samplers.TPESampler(n_startup_trials=4),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
            load_if_exists=True,
        )
        study.optimize(objective, n_trials=int(sys.argv[2]))
    """
)


def _storage(gateway: GatewayThread, token: str | None = None) -> Storage:
    return Storage(f"127.0.0.1:{gateway.port}", token=token or gateway.admin_token)


def _env(gateway: GatewayThread, token: str) -> dict[str, str]:
    return {
        **os.environ,
        "METALEARN_GATEWAY": f"127.0.0.1:{gateway.port}",
        "METALEARN_TOKEN": token,
        "PYTHONPATH": str(ROOT),
    }


@pytest.mark.slow
def test_an_optuna_script_runs_unchanged_from_several_workers(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    token = gateway.make_token("optuna-user", "writer")
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), "quadratic", "8"],
            env=_env(gateway, token),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err

    # Optuna sees 24 trials numbered once each, as with its own RDB storage.
    study = optuna.load_study(study_name="quadratic", storage=_storage(gateway, token))
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(24))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and study.best_value == min(t.value for t in complete)
    assert all(set(t.params) == {"x", "layers", "optimizer"} for t in trials)

    # metalearn sees the same study, its trials as attempts of the user's.
    with gateway.channel(token) as channel:
        held = sgrpc.StudyServiceStub(channel).GetStudy(spb.GetStudyRequest(name="quadratic"))
        shown = held.study
        assert shown.owner == "optuna-user"
        assert list(shown.optuna.directions) == [spb.STUDY_DIRECTION_MINIMIZE]
        assert shown.trials_made == 24 and len(shown.trials) == 24
        assert shown.best_trial.number == study.best_trial.number
        assert shown.best_trial.value == pytest.approx(study.best_value, rel=0, abs=0)
        pruned = {t.number for t in trials if t.state == TrialState.PRUNED}
        assert {t.number for t in shown.trials if t.state == spb.TRIAL_STATE_PRUNED} == pruned

        listed = agrpc.AttemptServiceStub(channel).ListAttempts(
            apb.ListAttemptsRequest(filter='trial.study = "quadratic"', page_size=100)
        )
        assert len(listed.attempts) == 24
        best = next(a for a in listed.attempts if a.trial.number == study.best_trial.number)
        assert best.name == f"quadratic-{study.best_trial.number}"
        assert best.owner == "optuna-user"
        assert best.provenance == attempt_pb2.PROVENANCE_REPORTED
        assert best.reported.origin.system == "optuna"
        assert best.reported.params["optimizer"] == study.best_trial.params["optimizer"]
        assert list(best.trial.values) == [study.best_value]

        # Its intermediate values are the attempt's metric, step by step.
        history = rgrpc.ReportingServiceStub(channel).GetMetricHistory(
            rpb.GetMetricHistoryRequest(attempt_id=best.id, key="intermediate_value", after_step=-1)
        )
        expected = study.best_trial.intermediate_values
        assert dict(zip(history.steps, history.values, strict=True)) == expected


def test_owners_roles_and_bad_requests(gateway: GatewayThread) -> None:
    alice = gateway.make_token("optuna-alice", "writer")
    mallory = gateway.make_token("optuna-mallory", "writer")
    reader = gateway.make_token("optuna-reader", "reader")
    mine = _storage(gateway, alice)
    study_id = mine.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "alices")
    trial_id = mine.create_new_trial(study_id)
    mine.set_trial_param(trial_id, "lr", 0.1, FloatDistribution(1e-4, 1.0, log=True))

    # Another writer reads the study but changes nothing of it.
    theirs = _storage(gateway, mallory)
    assert theirs.get_trial(trial_id).params == {"lr": 0.1}
    for call in (
        lambda: theirs.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0]),
        lambda: theirs.set_trial_intermediate_value(trial_id, 0, 0.5),
        lambda: theirs.set_trial_user_attr(trial_id, "k", 1),
        lambda: theirs.create_new_trial(study_id),
        lambda: theirs.set_study_user_attr(study_id, "k", 1),
        lambda: theirs.delete_study(study_id),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == CODE.PERMISSION_DENIED  # type: ignore[attr-defined]

    # A reader reads, and makes nothing.
    read_only = _storage(gateway, reader)
    assert read_only.get_study_name_from_id(study_id) == "alices"
    with pytest.raises(grpc.RpcError) as info:
        read_only.create_new_study([optuna.study.StudyDirection.MINIMIZE], "readers")
    assert info.value.code() == CODE.PERMISSION_DENIED  # type: ignore[attr-defined]

    # Bad requests are INVALID_ARGUMENT naming the field (Optuna's client: ValueError or
    # the RpcError itself).
    with gateway.channel(alice) as channel:
        stub = optuna_grpc.StorageServiceStub(channel)  # type: ignore[no-untyped-call]
        cases = [
            (stub.CreateNewStudy, api_pb2.CreateNewStudyRequest(study_name="a b", directions=[0]),
             "study_name"),
            (stub.CreateNewStudy, api_pb2.CreateNewStudyRequest(study_name="ok", directions=[]),
             "directions"),
            (stub.SetTrialParameter,
             api_pb2.SetTrialParameterRequest(trial_id=trial_id, param_name="y",
                                              param_value_internal=0.5, distribution="{nope"),
             "distribution"),
            (stub.SetTrialParameter,
             api_pb2.SetTrialParameterRequest(
                 trial_id=trial_id, param_name="c", param_value_internal=7.0,
                 distribution='{"name": "CategoricalDistribution",'
                              ' "attributes": {"choices": ["a", "b"]}}'),
             "param_value_internal"),
            (stub.SetTrialIntermediateValue,
             api_pb2.SetTrialIntermediateValueRequest(trial_id=trial_id, step=-1,
                                                      intermediate_value=1.0),
             "step"),
            (stub.SetTrialUserAttribute,
             api_pb2.SetTrialUserAttributeRequest(trial_id=trial_id, key="k", value="{not json"),
             "value"),
            (stub.SetTrialStateValues,
             api_pb2.SetTrialStateValuesRequest(trial_id=trial_id, state=99), "state"),
            (stub.SetTrialUserAttribute,
             api_pb2.SetTrialUserAttributeRequest(trial_id=trial_id, key="a\x00b", value="1"),
             "key"),
            (stub.SetStudySystemAttribute,
             api_pb2.SetStudySystemAttributeRequest(study_id=study_id, key="k",
                                                    value='"' + "x" * 300_000 + '"'),
             "value"),
        ]  # fmt: skip
        for method, request, field in cases:
            err = expect_error(CODE.INVALID_ARGUMENT, method, request, timeout=10)
            assert field in violations(err), (field, violations(err))
        # An incompatible distribution for a parameter the study has is Optuna's ValueError.
        other = mine.create_new_trial(study_id)
        with pytest.raises(ValueError):
            mine.set_trial_param(other, "lr", 0.5, FloatDistribution(0.0, 1.0))
        # Nothing stored was damaged.
        assert mine.get_trial(trial_id).params == {"lr": 0.1}
        assert mine.get_trial(other).params == {}


def test_the_study_through_metalearn_api(gateway: GatewayThread) -> None:
    storage = _storage(gateway)
    study = optuna.create_study(storage=storage, study_name="api-view", direction="maximize")
    study.set_user_attr("dataset", "digits")
    study.enqueue_trial({"x": 1.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 2) * 0.5, n_trials=3)
    with gateway.channel(gateway.admin_token) as channel:
        stub = sgrpc.StudyServiceStub(channel)
        shown = stub.GetStudy(spb.GetStudyRequest(name="api-view")).study
        assert shown.optuna.user_attrs["dataset"] == "digits"
        assert shown.trials[0].params["x"] == 1.5
        assert shown.best_trial.value == pytest.approx(study.best_value, abs=0)
        listed = [s.name for s in stub.ListStudies(spb.ListStudiesRequest()).studies]
        assert "api-view" in listed
        # The dashboard's page and the CLI show what such a study optimizes.
        page = study_data(shown, {})
        assert page["objective"] == "value (maximized)" and page["maximize"]
        assert page["params"] == ["x"] and page["study"]["sampler"] == "Optuna's clients"
        shown_cli = subprocess.run(
            [sys.executable, "-m", "metalearn.cli", "study", "show", "api-view"],
            env=_env(gateway, gateway.admin_token), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown_cli.returncode == 0, shown_cli.stderr
        assert "held for Optuna's clients  trials 3" in shown_cli.stdout
        assert "value (maximized)" in shown_cli.stdout
        # Its clients end it, not metalearn: nothing to stop; deleting it works at once.
        expect_error(CODE.FAILED_PRECONDITION, stub.StopStudy,
                     spb.StopStudyRequest(name="api-view"))  # fmt: skip
        stub.DeleteStudy(spb.DeleteStudyRequest(name="api-view"))
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("api-view")


@pytest.fixture()
def proxy(gateway: GatewayThread) -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "metalearn.cli", "optuna-proxy", "--listen", "127.0.0.1:0"],
        env=_env(gateway, gateway.admin_token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on" in line, process.stderr.read() if process.stderr else line
        port = int(line.split(" listening on ")[1].split(",")[0].rsplit(":", 1)[1])
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_optunas_own_proxy_client_through_the_proxy(
    gateway: GatewayThread, proxy: tuple[str, int]
) -> None:
    host, port = proxy
    client = GrpcStorageProxy(host=host, port=port)
    client.wait_server_ready(timeout=20)
    study = optuna.create_study(storage=client, study_name="via-proxy")
    study.optimize(lambda t: t.suggest_int("n", 0, 9) ** 2, n_trials=5)
    assert len(study.trials) == 5
    # Held by metalearn, under the proxy's token.
    assert _storage(gateway).get_study_id_from_name("via-proxy") == study._study_id
    # The gateway's errors come through as they are: Optuna's client maps them.
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        optuna.create_study(storage=client, study_name="via-proxy")
    with pytest.raises(KeyError):
        client.get_trial(10**9)
    with pytest.raises(grpc.RpcError) as info:
        client.create_new_study([optuna.study.StudyDirection.MINIMIZE], "no spaces allowed")
    assert info.value.code() == CODE.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "study_name" in violations(info.value)


def test_the_proxy_listens_on_loopback_only(gateway: GatewayThread) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "metalearn.cli", "optuna-proxy", "--listen", "0.0.0.0:0"],
        env=_env(gateway, gateway.admin_token),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr


def test_write_trial_stores_values_and_end_at_once(gateway: GatewayThread) -> None:
    alice = gateway.make_token("optuna-writer", "writer")
    other = gateway.make_token("optuna-other", "writer")
    storage = _storage(gateway, alice)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "writes")
    trial_id = storage.create_new_trial(study_id)
    with gateway.channel(alice) as channel:
        stub = otgrpc.OptunaTrialServiceStub(channel)
        cases = [
            (otpb.WriteTrialRequest(trial_id=trial_id, steps=[0, 1], intermediate_values=[1.0]),
             "intermediate_values"),
            (otpb.WriteTrialRequest(trial_id=trial_id, steps=[0, -1],
                                    intermediate_values=[1.0, 2.0]), "steps[1]"),
            (otpb.WriteTrialRequest(trial_id=trial_id, values=[1.0]), "values"),
            (otpb.WriteTrialRequest(trial_id=trial_id, state=9), "state"),
        ]  # fmt: skip
        for request, field in cases:
            err = expect_error(CODE.INVALID_ARGUMENT, stub.WriteTrial, request, timeout=10)
            assert field in violations(err), (field, violations(err))
        # Nothing of a refused call was stored.
        assert storage.get_trial(trial_id).intermediate_values == {}
        stub.WriteTrial(
            otpb.WriteTrialRequest(
                trial_id=trial_id, steps=[0, 1, 1], intermediate_values=[3.0, 2.0, 1.5],
                state=otpb.OPTUNA_TRIAL_STATE_COMPLETE, values=[1.5],
            )
        )  # fmt: skip
        expect_error(CODE.FAILED_PRECONDITION, stub.WriteTrial,
                     otpb.WriteTrialRequest(trial_id=trial_id, steps=[2],
                                            intermediate_values=[1.0]))  # fmt: skip
        expect_error(CODE.NOT_FOUND, stub.WriteTrial, otpb.WriteTrialRequest(trial_id=10**9))
    with gateway.channel(other) as channel:
        fresh = storage.create_new_trial(study_id)
        expect_error(CODE.PERMISSION_DENIED, otgrpc.OptunaTrialServiceStub(channel).WriteTrial,
                     otpb.WriteTrialRequest(trial_id=fresh, steps=[0],
                                            intermediate_values=[1.0]))  # fmt: skip
    done = _storage(gateway).get_trial(trial_id)
    assert done.state == TrialState.COMPLETE and done.value == 1.5
    assert done.intermediate_values == {0: 3.0, 1: 1.5}


def test_a_running_trials_values_reach_other_readers_while_it_runs(
    gateway: GatewayThread,
) -> None:
    worker = _storage(gateway)
    study = optuna.create_study(storage=worker, study_name="live")
    trial = study.ask()
    trial.report(0.75, 0)
    trial.report(0.5, 1)
    # The worker sends its values together, within FLUSH_SECONDS: another reader sees
    # them while the trial still runs (the deadline is generous: a busy machine).
    reader = _storage(gateway)
    deadline = time.monotonic() + 30
    while reader.get_trial(trial._trial_id).intermediate_values != {0: 0.75, 1: 0.5}:
        assert time.monotonic() < deadline, "the values never reached the gateway"
        time.sleep(0.05)
    assert reader.get_trial(trial._trial_id).state == TrialState.RUNNING
    # Its end sends what is left with it; reads of the store come after its values.
    trial.report(0.25, 2)
    study.tell(trial, 0.25)
    assert reader.get_trial(trial._trial_id).intermediate_values == {0: 0.75, 1: 0.5, 2: 0.25}
    # A worker whose trial was ended elsewhere hears it when it ends it, as with Optuna's
    # own storages.
    second = study.ask()
    second.report(1.0, 0)
    reader.set_trial_state_values(second._trial_id, TrialState.FAIL)
    second.report(0.9, 1)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        worker.set_trial_state_values(second._trial_id, TrialState.COMPLETE, [0.9])
    worker.close()


def test_enqueued_trials_are_taken_and_the_gateway_says_when_none_wait(
    gateway: GatewayThread,
) -> None:
    """A worker does not read a study's waiting trials before each trial when the gateway
    just said none wait (with its last new trial); one enqueued through its own storage
    is taken at once, and one enqueued elsewhere within WAITING_SECONDS."""
    worker = _storage(gateway)
    study = optuna.create_study(storage=worker, study_name="queue")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    study.enqueue_trial({"x": 0.25})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert study.trials[-1].params == {"x": 0.25}
    # What the gateway tells a new trial: whether trials wait in its study.
    with gateway.channel() as channel:
        stub = optuna_grpc.StorageServiceStub(channel)  # type: ignore[no-untyped-call]
        request = api_pb2.CreateNewTrialRequest(study_id=study._study_id,
                                                template_trial_is_none=True)  # fmt: skip
        _, call = stub.CreateNewTrial.with_call(request)
        assert dict(call.trailing_metadata())["metalearn-study-waiting"] == "0"
        elsewhere = _storage(gateway)
        optuna.load_study(study_name="queue", storage=elsewhere).enqueue_trial({"x": 0.5})
        _, call = stub.CreateNewTrial.with_call(request)
        assert dict(call.trailing_metadata())["metalearn-study-waiting"] == "1"
    # The trial enqueued elsewhere is taken once the worker reads again (at most
    # WAITING_SECONDS after the gateway last said none waited: here, a later read).
    worker._none_waiting.clear()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    taken = [t for t in study.trials if t.params == {"x": 0.5}]
    assert [t.state for t in taken] == [TrialState.COMPLETE]
    worker.close()
    elsewhere.close()
