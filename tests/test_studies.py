"""StudyService against a real PostgreSQL and gateway: a study is checked whole before
it starts; trials are asked up to max_parallel and queued as attempts with their params;
the same seed asks the same first trials; owners stop and delete. (Studies that train,
with real trainers: tests/test_studies_live.py.)"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import attempt_service_pb2_grpc, study_service_pb2_grpc
from metalearn.v1 import study_service_pb2 as pb
from tests.harness import snapshot, upload_labels
from tests.rpc import expect_error, violations
from tests.trainer_harness import lenet_command


def make_study(name: str = "s", **changes: Any) -> pb.Study:
    keep = changes.pop("keep", (0, 1, 2))
    doc: dict[str, Any] = {
        "name": name,
        "base_command": json_format.MessageToDict(
            lenet_command(n_epoch=2), preserving_proto_field_name=True
        ),
        "search_space": [
            {"path": "optimizer.lr", "float": {"low": 1e-4, "high": 1e-1, "log": True}},
            {"path": "batch_size", "int": {"low": 16, "high": 64, "step": 16}},
            {"path": "model.layers[7].out_features", "int": {"low": 32, "high": 128}},
            {
                "path": "optimizer",
                "categorical": {"values": [{"name": "Adam", "lr": 0.001}, {"name": "SGD",
                                "lr": 0.05, "momentum": 0.9}]},
            },
        ],
        "n_trials": 6,
        "max_parallel": 2,
        "seed": 7,
        **changes,
    }  # fmt: skip
    doc["search_space"] = [doc["search_space"][i] for i in keep]
    return json_format.ParseDict(doc, pb.Study())


@pytest.fixture()
def studies(channel, gateway) -> study_service_pb2_grpc.StudyServiceStub:
    upload_labels(gateway, lenet_command().label_names)
    return study_service_pb2_grpc.StudyServiceStub(channel)


def wait_trials(studies, name: str, count: int, timeout: float = 20) -> pb.Study:
    deadline = time.monotonic() + timeout
    while True:
        study = studies.GetStudy(pb.GetStudyRequest(name=name)).study
        queued = [t for t in study.trials if t.attempt_id]
        if len(queued) >= count or time.monotonic() > deadline:
            return study
        time.sleep(0.1)


def test_a_study_asks_up_to_max_parallel_and_queues_attempts(studies, channel) -> None:
    created = studies.CreateStudy(pb.CreateStudyRequest(study=make_study("lr"))).study
    assert created.state == pb.STUDY_STATE_RUNNING and created.owner.startswith("admin")
    assert created.sampler.name == "tpe"
    study = wait_trials(studies, "lr", 2)
    listed = attempts_of(channel, 'trial.study = "lr"')
    assert listed == ["lr-0", "lr-1"]
    # No trainer runs them: two asked and queued, no more.
    time.sleep(0.5)
    study = studies.GetStudy(pb.GetStudyRequest(name="lr")).study
    assert study.trials_made == 2 and len(study.trials) == 2
    attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    for trial in study.trials:
        assert trial.state == pb.TRIAL_STATE_RUNNING and trial.attempt_name == f"lr-{trial.number}"
        params = json_format.MessageToDict(trial.params)
        assert 1e-4 <= params["optimizer.lr"] <= 1e-1
        assert params["batch_size"] in (16, 32, 48, 64)
        attempt = attempts.GetAttempt(apb.GetAttemptRequest(name=trial.attempt_name)).attempt
        assert attempt.tags["study"] == "lr" and attempt.tags["trial"] == str(trial.number)
        assert attempt.trial.study == "lr" and attempt.trial.number == trial.number
        assert attempt.trial.params == trial.params
        command = attempt.training_commands
        assert command.batch_size == params["batch_size"]
        assert command.optimizer["lr"] == pytest.approx(params["optimizer.lr"])
        assert command.model.layers[7]["out_features"] == params["model.layers[7].out_features"]
        assert command.n_epoch == 2 and attempt.status == 2  # QUEUED


def attempts_of(channel, text: str) -> list[str]:
    stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    return [a.name for a in stub.ListAttempts(apb.ListAttemptsRequest(filter=text)).attempts]


def test_the_same_seed_asks_the_same_first_trials(studies) -> None:
    for name in ("a", "b"):
        studies.CreateStudy(pb.CreateStudyRequest(study=make_study(name, keep=(1, 2, 3))))
    a, b = wait_trials(studies, "a", 2), wait_trials(studies, "b", 2)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert a.trials[0].params != a.trials[1].params
    studies.CreateStudy(pb.CreateStudyRequest(study=make_study("c", keep=(1, 2, 3), seed=8)))
    c = wait_trials(studies, "c", 2)
    assert [t.params for t in c.trials] != [t.params for t in a.trials]
    # A whole object is one choice.
    optimizer = json_format.MessageToDict(a.trials[0].params)["optimizer"]
    assert optimizer in ({"name": "Adam", "lr": 0.001}, {"name": "SGD", "lr": 0.05,
                                                         "momentum": 0.9})  # fmt: skip


def bad(studies, study: pb.Study) -> dict[str, str]:
    err = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, studies.CreateStudy, pb.CreateStudyRequest(study=study)
    )
    return violations(err)


def space(*params: dict[str, Any]) -> list[pb.SearchParameter]:
    return [json_format.ParseDict(p, pb.SearchParameter()) for p in params]


@pytest.mark.parametrize(
    ("param", "field", "what"),
    [
        ({"path": "optimizer.nope.lr", "float": {"low": 0.1, "high": 0.2}}, ".path",
         "optimizer.nope is not in the base command"),
        ({"path": "model.layers[99].out_features", "int": {"low": 1, "high": 2}}, ".path",
         "model.layers[99] is not in the base command"),
        ({"path": "optimizer..lr", "float": {"low": 0.1, "high": 0.2}}, ".path", "a path such"),
        ({"path": "optimizer.lr", "float": {"low": 0.2, "high": 0.1}}, ".float.high",
         "at least low"),
        ({"path": "optimizer.lr", "float": {"low": 0, "high": 0.1, "log": True}}, ".float.low",
         "above 0"),
        ({"path": "optimizer.lr", "float": {"low": 0.1, "high": 0.2, "step": 0.03}},
         ".float.step", "divide"),
        ({"path": "batch_size", "int": {"low": 16, "high": 64, "step": 10}}, ".int.step", "divide"),
        ({"path": "batch_size", "int": {"low": 0, "high": 8, "log": True}}, ".int.low",
         "at least 1"),
        ({"path": "batch_size", "categorical": {"values": [1, 1.0]}}, ".categorical.values",
         "each choice once"),
        ({"path": "batch_size", "categorical": {"values": []}}, ".categorical.values",
         "at least one"),
        ({"path": "batch_size"}, "", "float, int or categorical"),
        # Corners that make no command: a batch size over the limit, an unknown optimizer.
        ({"path": "batch_size", "int": {"low": 16, "high": 100000}}, "",
         "with batch_size = 100000"),
        ({"path": "optimizer", "categorical": {"values": [{"name": "Adam"}, {"name": "Nope"}]}},
         "", 'with optimizer = {"name": "Nope"}'),
        ({"path": "batch_size", "float": {"low": 16, "high": 17}}, "", "with batch_size = 16.5"),
    ],
)  # fmt: skip
def test_a_bad_search_space_is_refused_naming_the_parameter(
    studies, gateway, param, field, what
) -> None:
    before = snapshot(gateway.database_url)
    study = make_study("bad")
    del study.search_space[:]
    study.search_space.extend(space(param))
    found = bad(studies, study)
    key = f"study.search_space[0]{field}"
    assert key in found and what in found[key], found
    assert snapshot(gateway.database_url) == before


def test_bad_study_fields_are_named(studies) -> None:
    study = make_study("x" * 124, n_trials=0, max_parallel=-1, seed=2**32, objective=9,
                       timeout_seconds="Infinity")  # fmt: skip
    study.sampler.name = "annealing"
    found = bad(studies, study)
    for field in ("study.name", "study.n_trials", "study.max_parallel", "study.seed",
                  "study.objective", "study.timeout_seconds", "study.sampler.name"):  # fmt: skip
        assert field in found, (field, found)
    study = make_study("args")
    study.sampler.name = "tpe"
    study.sampler.args.update({"gamma": 0.5, "n_startup_trials": -1})
    found = bad(studies, study)
    assert "study.sampler.args.gamma" in found and "study.sampler.args.n_startup_trials" in found
    study = make_study("pruners")
    study.pruner.name = "median"
    study.pruner.args.update({"n_warmup_steps": -1, "eta": 2})
    found = bad(studies, study)
    assert "study.pruner.args.n_warmup_steps" in found and "study.pruner.args.eta" in found
    study.pruner.name = "successive_halving"
    study.pruner.args.Clear()
    study.pruner.args.update({"reduction_factor": 1})
    assert "from 2 to 100" in bad(studies, study)["study.pruner.args.reduction_factor"]
    study.pruner.name = "bandit"
    assert "unknown pruner" in bad(studies, study)["study.pruner.name"]
    study = make_study("nonfinite")  # JSON has no infinity: named, never INTERNAL
    study.sampler.args.update({"n_startup_trials": float("inf"), "": float("nan")})
    study.pruner.args.update({"n_warmup_steps": float("-inf")})
    study.search_space.add(path="n_epoch").categorical.values.add(number_value=float("inf"))
    found = bad(studies, study)
    assert "study.sampler.args.n_startup_trials" in found
    assert "no NaN or infinity" in found["study.search_space[3].categorical.values"]
    study = make_study("grid")  # a continuous range has no grid
    study.sampler.name = "grid"
    assert "grid needs" in bad(studies, study)["study.sampler"]
    study = make_study("nolabels")
    study.base_command.label_names[:] = ["no such label"]
    assert "study.base_command.label_names[0]" in bad(studies, study)
    study = make_study("nospace")
    del study.search_space[:]
    assert "study.search_space" in bad(studies, study)


def test_taken_names_and_owners(studies, gateway, channel) -> None:
    studies.CreateStudy(pb.CreateStudyRequest(study=make_study("mine", max_parallel=1)))
    err = expect_error(grpc.StatusCode.ALREADY_EXISTS, studies.CreateStudy,
                       pb.CreateStudyRequest(study=make_study("mine")))  # fmt: skip
    assert "mine" in err.details()
    # An attempt already named like a trial would be: refused up front.
    attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    attempts.Train(apb.TrainRequest(name="other-3", command=lenet_command()))
    err = expect_error(grpc.StatusCode.ALREADY_EXISTS, studies.CreateStudy,
                       pb.CreateStudyRequest(study=make_study("other")))  # fmt: skip
    assert "other-3" in err.details()
    writer = gateway.make_token("someone", "writer")
    reader = gateway.make_token("looker", "reader")
    with gateway.channel(writer) as ch:
        theirs = study_service_pb2_grpc.StudyServiceStub(ch)
        expect_error(grpc.StatusCode.PERMISSION_DENIED, theirs.StopStudy,
                     pb.StopStudyRequest(name="mine"))  # fmt: skip
        expect_error(grpc.StatusCode.PERMISSION_DENIED, theirs.DeleteStudy,
                     pb.DeleteStudyRequest(name="mine"))  # fmt: skip
    with gateway.channel(reader) as ch:
        looking = study_service_pb2_grpc.StudyServiceStub(ch)
        assert looking.GetStudy(pb.GetStudyRequest(name="mine")).study.name == "mine"
        expect_error(grpc.StatusCode.PERMISSION_DENIED, looking.CreateStudy,
                     pb.CreateStudyRequest(study=make_study("r")))  # fmt: skip
    with gateway.channel(None) as ch:
        expect_error(grpc.StatusCode.UNAUTHENTICATED,
                     study_service_pb2_grpc.StudyServiceStub(ch).ListStudies,
                     pb.ListStudiesRequest())  # fmt: skip


def test_stop_cancels_and_ends_then_delete(studies, channel) -> None:
    studies.CreateStudy(pb.CreateStudyRequest(study=make_study("stopme")))
    wait_trials(studies, "stopme", 2)
    err = expect_error(grpc.StatusCode.FAILED_PRECONDITION, studies.DeleteStudy,
                       pb.DeleteStudyRequest(name="stopme"))  # fmt: skip
    assert "stop it" in err.details()
    stopped = studies.StopStudy(pb.StopStudyRequest(name="stopme", cancel_running=True)).study
    assert stopped.state == pb.STUDY_STATE_DONE, stopped
    assert stopped.stop_reason.startswith("stopped by admin")
    assert all(t.state == pb.TRIAL_STATE_FAILED for t in stopped.trials)
    assert stopped.trials_made == 2  # asked no more
    # A done study watched: its snapshot, then it is finished.
    events = list(studies.WatchStudy(pb.WatchStudyRequest(name="stopme"), timeout=10))
    assert [e.WhichOneof("event") for e in events] == ["snapshot", "study_finished"]
    studies.DeleteStudy(pb.DeleteStudyRequest(name="stopme"))
    expect_error(grpc.StatusCode.NOT_FOUND, studies.GetStudy, pb.GetStudyRequest(name="stopme"))
    # Its trials stay as attempts.
    attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    assert attempts.GetAttempt(apb.GetAttemptRequest(name="stopme-0")).attempt.status == 8


def test_list_pages_newest_first(studies) -> None:
    for name in ("p1", "p2", "p3"):
        studies.CreateStudy(pb.CreateStudyRequest(study=make_study(name, max_parallel=1)))
    first = studies.ListStudies(pb.ListStudiesRequest(page_size=2))
    assert [s.name for s in first.studies] == ["p3", "p2"]
    second = studies.ListStudies(
        pb.ListStudiesRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [s.name for s in second.studies] == ["p1"] and not second.next_page_token
    for token in ("garbage", "eyJiIjogLTF9", "x" * 200):
        err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, studies.ListStudies,
                           pb.ListStudiesRequest(page_token=token))  # fmt: skip
        assert "page_token" in violations(err)


def test_a_gp_ask_runs_beside_the_gateway_never_in_it() -> None:
    """Optuna's GPSampler needs torch: its asks run in a spawned process, so the gateway's
    own process never imports torch; the same trials and seed ask the same."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import asyncio, sys
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from gateway.studies import asking
from learning.studies import sampling, space
lr = space.Parameter("optimizer.lr", ("optimizer", "lr"), FloatDistribution(1e-4, 0.1, log=True))
past = [sampling.PastTrial(k, {"optimizer.lr": v}, TrialState.COMPLETE, value)
        for k, (v, value) in enumerate([(1e-3, 0.9), (1e-2, 0.95), (3e-4, 0.7)])]
def ask():
    return asyncio.run(asking.ask_async("s", [lr], True, "gp", {"n_startup_trials": 2.0}, 1,
                                        past, {})).internal["optimizer.lr"]
first, second = ask(), ask()
assert 1e-4 <= first <= 0.1 and first == second, (first, second)
assert "torch" not in sys.modules
print("asked", first)
"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "asked" in done.stdout, done.stderr[-2000:]
