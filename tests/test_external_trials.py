"""Study trials run anywhere (issue 27): an external study's trials are asked for over
gRPC, reported as runs of users' code, pruned through the same stream, re-asked when
their worker is lost, and run by `metalearn agent` from a plain script."""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from metalearn.reporting.agent import Agent, TrialRun
from metalearn.v1 import attempt_pb2
from metalearn.v1 import reporting_service_pb2 as rpb
from metalearn.v1 import reporting_service_pb2_grpc as rgrpc
from metalearn.v1 import study_service_pb2 as spb
from metalearn.v1 import study_service_pb2_grpc as sgrpc
from tests.harness import GatewayThread
from tests.rpc import violations


def _study(name: str, n_trials: int, **kwargs: Any) -> spb.Study:
    external = kwargs.pop("external", None) or spb.ExternalTrials(
        task=attempt_pb2.DeclaredTask(dataset="toy", labels=["a", "b"]), n_epoch=5
    )
    return spb.Study(
        name=name,
        external=external,
        search_space=[
            spb.SearchParameter(path="lr", float=spb.FloatRange(low=1e-4, high=1.0, log=True)),
            spb.SearchParameter(path="model.depth", int=spb.IntRange(low=1, high=4)),
        ],
        n_trials=n_trials,
        seed=7,
        **kwargs,
    )


def _report(stub: rgrpc.ReportingServiceStub, attempt_id: int, accuracies: list[float]) -> str:
    """Reports epochs one batch each; the stop reason if metalearn stopped the run."""
    requests = [rpb.ReportRunRequest(attempt_id=attempt_id)]
    for epoch, accuracy in enumerate(accuracies, start=1):
        requests.append(
            rpb.ReportRunRequest(
                batch=rpb.ReportBatch(
                    sequence=epoch,
                    epochs=[
                        rpb.ReportedEpoch(epoch=epoch, loss=1 - accuracy, val_accuracy=accuracy)
                    ],
                )
            )
        )
    for reply in stub.ReportRun(iter(requests)):
        if reply.WhichOneof("kind") == "stop":
            return reply.stop.reason
    return ""


@pytest.fixture()
def stubs(channel: grpc.Channel) -> tuple[sgrpc.StudyServiceStub, rgrpc.ReportingServiceStub]:
    return sgrpc.StudyServiceStub(channel), rgrpc.ReportingServiceStub(channel)


def test_workers_ask_report_and_finish_an_external_studys_trials(
    stubs: tuple[sgrpc.StudyServiceStub, rgrpc.ReportingServiceStub],
) -> None:
    studies, reporting = stubs
    name = f"ext-{uuid.uuid4().hex[:6]}"
    studies.CreateStudy(spb.CreateStudyRequest(study=_study(name, 3, max_parallel=2)))
    first = studies.AskTrial(spb.AskTrialRequest(name=name, worker="w1")).trial
    second = studies.AskTrial(spb.AskTrialRequest(name=name, worker="w2")).trial
    assert (first.number, second.number) == (0, 1)
    assert 1e-4 <= first.params["lr"] <= 1.0 and first.params["model.depth"] in (1, 2, 3, 4)
    assert first.state == spb.TRIAL_STATE_RUNNING and first.attempt_id > 0
    # Two run, at most two at once: the third waits.
    assert studies.AskTrial(spb.AskTrialRequest(name=name)).WhichOneof("outcome") == "wait_seconds"
    # A retried ask (its answer lost) gets the same trial, not a new one.
    again = spb.AskTrialRequest(name=name, request_id="ask-1")
    for trial, accuracies in ((first, [0.5, 0.6, 0.7]), (second, [0.4, 0.5, 0.55])):
        assert _report(reporting, trial.attempt_id, accuracies) == ""
        done = reporting.FinishRun(rpb.FinishRunRequest(attempt_id=trial.attempt_id,
                                                        end=rpb.RUN_END_FINISHED))  # fmt: skip
        assert done.attempt.provenance == attempt_pb2.PROVENANCE_REPORTED
        assert done.attempt.trial.study == name
    third = studies.AskTrial(again).trial
    assert studies.AskTrial(again).trial.attempt_id == third.attempt_id
    _report(reporting, third.attempt_id, [0.9])
    reporting.FinishRun(rpb.FinishRunRequest(attempt_id=third.attempt_id, end=rpb.RUN_END_FAILED,
                                             error="out of memory"))  # fmt: skip
    finished = studies.AskTrial(spb.AskTrialRequest(name=name))
    assert finished.WhichOneof("outcome") == "done"
    study = studies.GetStudy(spb.GetStudyRequest(name=name)).study
    assert [t.state for t in study.trials] == [
        spb.TRIAL_STATE_COMPLETE, spb.TRIAL_STATE_COMPLETE, spb.TRIAL_STATE_FAILED
    ]  # fmt: skip
    assert study.best_trial.number == 0 and study.best_trial.value == 0.7
    deadline = time.monotonic() + 30
    while study.state != spb.STUDY_STATE_DONE and time.monotonic() < deadline:
        time.sleep(0.2)
        study = studies.GetStudy(spb.GetStudyRequest(name=name)).study
    assert study.state == spb.STUDY_STATE_DONE


def test_external_studies_are_checked_field_by_field(
    stubs: tuple[sgrpc.StudyServiceStub, rgrpc.ReportingServiceStub],
) -> None:
    studies, _ = stubs
    bad = _study(f"bad-{uuid.uuid4().hex[:6]}", 3)
    bad.search_space[0].path = "layers[0].lr"
    bad.external.heartbeat_seconds = 5
    bad.external.task.labels[:] = ["only"]
    bad.warm_start.similar_tasks = 3  # an external study may warm-start (from reports)
    bad.warm_start.zero_shot_trials = 99  # but not with more trials than it has
    bad.external.task.features["log_classes"] = 1.0  # derived: declare the labels
    with pytest.raises(grpc.RpcError) as err:
        studies.CreateStudy(spb.CreateStudyRequest(study=bad))
    found = violations(err.value)
    for field in ("study.search_space[0].path", "study.external.heartbeat_seconds",
                  "study.external.task.labels", "study.warm_start.zero_shot_trials",
                  "study.external.task.features[log_classes]"):  # fmt: skip
        assert field in found, (field, found)
    with pytest.raises(grpc.RpcError) as err:
        studies.AskTrial(spb.AskTrialRequest(name="no-such-study"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow  # waits out a heartbeat of 10 s, the shortest a trial may have
def test_a_trial_whose_worker_went_silent_is_lost_and_asked_again(
    stubs: tuple[sgrpc.StudyServiceStub, rgrpc.ReportingServiceStub],
) -> None:
    studies, _ = stubs
    name = f"lost-{uuid.uuid4().hex[:6]}"
    external = spb.ExternalTrials(task=attempt_pb2.DeclaredTask(labels=["a", "b"]),
                                  heartbeat_seconds=10)  # fmt: skip
    studies.CreateStudy(spb.CreateStudyRequest(study=_study(name, 3, external=external)))
    silent = studies.AskTrial(spb.AskTrialRequest(name=name, worker="vanishes")).trial
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        trial = studies.GetStudy(spb.GetStudyRequest(name=name)).study.trials[0]
        if trial.state != spb.TRIAL_STATE_RUNNING:
            break
        time.sleep(0.5)
    assert trial.state == spb.TRIAL_STATE_FAILED and trial.error.startswith("lost:")
    again = studies.AskTrial(spb.AskTrialRequest(name=name)).trial
    assert again.number == 1 and dict(again.params) == dict(silent.params)
    fresh = studies.AskTrial(spb.AskTrialRequest(name=name)).trial
    assert fresh.number == 2 and dict(fresh.params) != dict(silent.params)


# What `metalearn agent` runs: a script of the user's, here a stand-in whose accuracy
# depends on the sampled learning rate; it reports through the SDK and stops when told.
SCRIPT = """
import argparse, math, sys, time
import metalearn

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--model.depth", dest="depth", type=int)
args = parser.parse_args()
with metalearn.start_run() as run:
    assert run.params["lr"] == args.lr, (run.params, args.lr)
    ceiling = max(0.05, 1.0 - abs(math.log10(args.lr) + 2) / 2)
    for epoch in range(1, 6):
        accuracy = ceiling * epoch / 5
        run.log(epoch=epoch, loss=1.0 - accuracy, val_accuracy=accuracy)
        time.sleep(0.15)
        if run.should_stop():
            sys.exit(0)
"""


@pytest.mark.slow  # 100 trials, each a Python process of its own, by 4 agents
def test_a_hundred_trials_run_by_agents_with_a_pruner(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    name = f"agents-{uuid.uuid4().hex[:6]}"
    pruner = spb.Algorithm(name="median")
    pruner.args.update({"n_startup_trials": 5, "n_warmup_steps": 1})
    with gateway.channel() as channel:
        sgrpc.StudyServiceStub(channel).CreateStudy(
            spb.CreateStudyRequest(study=_study(name, 100, max_parallel=4, pruner=pruner))
        )
    runs: list[TrialRun] = []
    errors: list[BaseException] = []

    def agent(k: int) -> None:
        try:
            worker = Agent(name, [sys.executable, str(script)], gateway=gateway.address,
                           token=gateway.admin_token, worker=f"agent-{k}")  # fmt: skip
            runs.extend(worker.run())
            worker.close()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=agent, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert not errors, errors
    with gateway.channel() as channel:
        study = sgrpc.StudyServiceStub(channel).GetStudy(spb.GetStudyRequest(name=name)).study
    numbers = sorted(r.number for r in runs)
    assert numbers == list(range(100))  # each trial run once, none lost or doubled
    # Pruned scripts heard it through the SDK and ended by themselves.
    assert [r.exit_code for r in runs if r.exit_code != 0] == []
    states = [t.state for t in study.trials]
    assert len(states) == 100 and spb.TRIAL_STATE_RUNNING not in states
    assert spb.TRIAL_STATE_FAILED not in states, [t.error for t in study.trials if t.error]
    pruned = states.count(spb.TRIAL_STATE_PRUNED)
    assert pruned >= 10, pruned  # the median pruner stopped the poor ones mid-run
    assert study.best_trial.value > 0.8 and not math.isnan(study.best_trial.value)
