"""Meta-learning from runs reported by users' own code (issue 27, part 4): a reported
run's task is its owner's declaration, profiled from it at once; the task distance
compares such partial profiles on the features they have; an external study warm-starts
from the params of its owner's reported runs on the nearest declared task, and another
writer's reports do not steer it; claims weigh less than evidence."""

from __future__ import annotations

import math
import time
import uuid

import grpc
import numpy as np
import pytest

from learning import provenance
from learning.curves import model as curve_model
from learning.curves.features import Run
from learning.curves.rules import Point
from learning.tasks import declared, similarity
from metalearn.v1 import attempt_pb2, task_pb2
from metalearn.v1 import reporting_service_pb2 as rpb
from metalearn.v1 import reporting_service_pb2_grpc as rgrpc
from metalearn.v1 import study_service_pb2 as spb
from metalearn.v1 import study_service_pb2_grpc as sgrpc
from metalearn.v1 import task_service_pb2 as pb
from metalearn.v1 import task_service_pb2_grpc as tgrpc
from tests.harness import GatewayThread
from tests.rpc import violations

# --- the pure parts ---------------------------------------------------------------


def test_a_declaration_gives_the_size_features_a_trainer_computes() -> None:
    found = declared.features(
        ["a", "b", "c", "d"], [3, 32, 32], 50_000, {"imbalance": 0.2, "bogus": 1.0}
    )
    assert found == {
        "log_classes": 2.0,
        "log_images": math.log10(50_000),
        "channels": 3.0,
        "log_pixels": 10.0,
        "imbalance": 0.2,
    }
    # One channel when the shape is H x W; nothing from what was not declared.
    assert declared.features([], [28, 28], 0, {}) == {
        "channels": 1.0,
        "log_pixels": math.log2(28 * 28),
    }
    assert declared.features(["a"], [], 0, {}) == {}


def test_declared_features_are_checked_by_name_and_value() -> None:
    why = dict(
        declared.problems({"log_classes": 3.0, "nope": 1.0, "pixel_std": math.nan, "sparsity": 0.5})
    )
    assert set(why) == {"log_classes", "nope", "pixel_std"}
    assert "derived" in why["log_classes"] and "finite" in why["pixel_std"]


def _distance() -> similarity.Distance:
    return similarity.Distance(
        "standardized", ("a", "b", "c", "d"), (0.0,) * 4, (1.0,) * 4, (1.0, 1.0, 2.0, 0.0)
    )


def test_a_partial_profile_counts_what_it_lacks_as_an_expected_difference() -> None:
    d = _distance()  # learned weights a 1, b 1, c 2, d 0; z-scores are the values here
    full = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 5.0}
    partial = {"a": 3.0, "c": 1.0}
    # With a partial profile every feature weighs 1 (the weights were learned on whole
    # ones): a 3^2; b and d lacked by `partial`: 0^2 + 1 and 5^2 + 1; c 1^2 (exact
    # arithmetic on small integers).
    assert d.between(full, partial) == pytest.approx(math.sqrt(9 + 1 + 1 + 26), rel=1e-12)
    # From the declared side, what it lacks tells candidates nothing apart: 0.
    assert d.between(partial, full) == pytest.approx(math.sqrt(9 + 1), rel=1e-12)
    # Two identical declarations are one place, nearer than any measured task.
    assert d.between(partial, dict(partial)) == 0.0
    # Two whole profiles: the learned weighted Euclidean distance.
    other = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}
    assert d.between(full, other) == pytest.approx(math.sqrt(1 + 1 + 2), rel=1e-12)
    # Sharing one feature exactly does not make a task known by that feature alone the
    # nearest: a task measured close on every feature comes first.
    known_by_class_count = {"a": 0.0}
    measured_close = {"a": 0.3, "b": 0.3, "c": 0.3, "d": 5.3}
    near = similarity.nearest(
        d, full, {"declared": known_by_class_count, "measured": measured_close}, 5
    )
    assert [t for t, _ in near] == ["measured", "declared"]
    assert near[1][1] == pytest.approx(math.sqrt(0 + 1 + 1 + 26), rel=1e-12)


def test_a_few_declared_profiles_do_not_take_features_from_the_distance() -> None:
    whole = {f"t{i}": {"a": float(i), "b": float(i * i), "c": 1.0 - i} for i in range(4)}
    declared_only = {"d0": {"a": 0.5}, "d1": {"a": 2.5}}
    fitted = similarity.standardized({**whole, **declared_only})
    assert fitted.features == ("a", "b", "c")
    # Each feature is scaled over the tasks that have it.
    assert fitted.means[1] == pytest.approx(np.mean([i * i for i in range(4)]), rel=1e-12)


def test_pair_weights_of_one_leave_the_learned_distance_as_it_was() -> None:
    """Half the tasks transfer by feature x, half by y: weighing one half's pairs down
    moves the learned weights towards the other half's feature."""
    rng = np.random.default_rng(3)
    profiles = {f"t{i}": {"x": float(rng.normal()), "y": float(rng.normal())} for i in range(12)}
    by = {t: ("x" if i < 6 else "y") for i, t in enumerate(profiles)}
    evaluations = {
        t: {f"c{j}": float(-abs(p[by[t]] - (j - 4) / 3) + 0.001 * j) for j in range(9)}
        for t, p in profiles.items()
    }
    plain = similarity.fit(profiles, evaluations)
    ones = similarity.fit(profiles, evaluations, similarity.RIDGE, dict.fromkeys(profiles, 1.0))
    assert plain.kind == "learned"
    # The same least-squares problem: the same solution to rounding.
    assert ones.weights == pytest.approx(plain.weights, abs=1e-9)
    x_down = similarity.fit(
        profiles, evaluations, similarity.RIDGE, {t: 0.05 if by[t] == "x" else 1.0 for t in by}
    )
    y_down = similarity.fit(
        profiles, evaluations, similarity.RIDGE, {t: 0.05 if by[t] == "y" else 1.0 for t in by}
    )
    # Measured here: x's weight 1.52 plain, 1.64 with y's tasks down, 0 with x's down;
    # the margins are far above the solver's rounding.
    assert x_down.weights[0] < plain.weights[0] - 0.5
    assert y_down.weights[0] > plain.weights[0] + 0.05


def test_a_claim_weighs_less_in_the_curve_model() -> None:
    assert provenance.weight("TRAINED", 0.5) == 1.0
    assert provenance.weight("REPORTED", 0.5) == provenance.weight("IMPORTED", 0.5) == 0.5

    def run(final: float, weight: float) -> Run:
        points = [Point(e, 1.0 / e, 1.0 / e, final * e / 4) for e in range(1, 5)]
        return Run(points=points, n_epoch=4, n_labels=2, weight=weight)

    _, _, ws, which = curve_model._rows([run(0.8, 1.0), run(0.6, 0.5)])
    assert len(ws) == len(which) and set(np.round(ws[which == 0] / ws[which == 1], 12)) == {2.0}


# --- through a real gateway (no trainer: declared profiles need none) ------------

LR_SPACE = [spb.SearchParameter(path="lr", float=spb.FloatRange(low=1e-4, high=1.0, log=True))]


def _declared(dataset: str, classes: int, shape: list[int], size: int) -> attempt_pb2.DeclaredTask:
    return attempt_pb2.DeclaredTask(
        dataset=dataset,
        labels=[f"class-{i}" for i in range(classes)],
        input_shape=shape,
        train_size=size,
    )


def _finished(
    stub: rgrpc.ReportingServiceStub, name: str, task: attempt_pb2.DeclaredTask,
    lr: float, best: float,
) -> int:  # fmt: skip
    """A reported run of `lr` on `task` whose best validation accuracy is `best`."""
    start = rpb.StartRunRequest(name=name, task=task, n_epoch=2)
    start.params.update({"lr": lr})
    run = stub.StartRun(start).attempt
    batch = rpb.ReportBatch(
        sequence=1,
        epochs=[
            rpb.ReportedEpoch(epoch=1, loss=0.9, val_accuracy=best / 2),
            rpb.ReportedEpoch(epoch=2, loss=0.5, val_accuracy=best),
        ],
    )
    replies = list(stub.ReportRun(iter([rpb.ReportRunRequest(attempt_id=run.id),
                                        rpb.ReportRunRequest(batch=batch)])))  # fmt: skip
    assert replies and replies[-1].WhichOneof("kind") == "acknowledged", replies
    stub.FinishRun(rpb.FinishRunRequest(attempt_id=run.id, end=rpb.RUN_END_FINISHED, last_epoch=2))
    return int(run.id)


def test_a_reported_runs_task_is_its_owners_declaration(gateway: GatewayThread) -> None:
    tag = uuid.uuid4().hex[:8]
    alice = gateway.make_token(f"alice-{tag}", "writer")
    bob = gateway.make_token(f"bob-{tag}", "writer")
    task = _declared(f"cifar-{tag}", 10, [3, 32, 32], 50_000)
    task.features["imbalance"] = 0.25
    seen = {}
    for who, token in (("alice", alice), ("bob", bob)):
        with gateway.channel(token) as channel:
            start = rpb.StartRunRequest(name=f"{who}-{tag}", task=task)
            run = rgrpc.ReportingServiceStub(channel).StartRun(start).attempt
            found = tgrpc.TaskServiceStub(channel).FindSimilarTasks(
                pb.FindSimilarTasksRequest(attempt_id=run.id)
            )
            seen[who] = found.target
    target = seen["alice"]
    assert target.state == task_pb2.TASK_STATE_READY
    assert target.source == task_pb2.TASK_SOURCE_DECLARED
    assert (target.owner, target.dataset) == (f"alice-{tag}", f"cifar-{tag}")
    assert dict(target.profile.features) == pytest.approx(
        {"log_classes": math.log2(10), "log_images": math.log10(50_000), "channels": 3.0,
         "log_pixels": 10.0, "imbalance": 0.25}, rel=1e-12)  # fmt: skip
    # The same declaration by another owner is another task: no one changes the profile
    # that another owner's runs are compared by.
    assert seen["bob"].owner == f"bob-{tag}"
    assert seen["bob"].fingerprint != target.fingerprint
    with gateway.channel(alice) as channel:
        stub = rgrpc.ReportingServiceStub(channel)
        bad = rpb.StartRunRequest(name=f"bad-{tag}", task=task)
        bad.task.features["log_classes"] = 3.0
        bad.task.features["pixel_std"] = math.inf
        with pytest.raises(grpc.RpcError) as err:
            stub.StartRun(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        named = violations(err.value)
        assert {"task.features[log_classes]", "task.features[pixel_std]"} <= set(named), named


def test_an_external_study_warm_starts_from_its_owners_reports_on_the_nearest_task(
    gateway: GatewayThread,
) -> None:
    tag = uuid.uuid4().hex[:8]
    alice = gateway.make_token(f"alice-{tag}", "writer")
    mallory = gateway.make_token(f"mallory-{tag}", "writer")
    target = _declared(f"target-{tag}", 10, [3, 32, 32], 50_000)
    near = _declared(f"near-{tag}", 10, [3, 32, 32], 40_000)
    far = _declared(f"far-{tag}", 2, [1, 8, 8], 100)
    with gateway.channel(alice) as channel:
        stub = rgrpc.ReportingServiceStub(channel)
        honest = {0.01: 0.9, 0.3: 0.5}
        for lr, best in honest.items():
            _finished(stub, f"near-{lr}-{tag}", near, lr, best)
        _finished(stub, f"far-{tag}", far, 0.5, 0.95)
    # Another writer's fake perfect runs on a copy of the target's declaration.
    with gateway.channel(mallory) as channel:
        stub = rgrpc.ReportingServiceStub(channel)
        poison = _declared(f"target-{tag}", 10, [3, 32, 32], 50_000)
        for i in range(5):
            _finished(stub, f"poison-{i}-{tag}", poison, 0.77, 1.0)
    with gateway.channel() as channel:  # an admin refits the shared distance now
        tgrpc.TaskServiceStub(channel).FitTaskDistance(pb.FitTaskDistanceRequest())
    with gateway.channel(alice) as channel:
        studies = sgrpc.StudyServiceStub(channel)
        study = spb.Study(
            name=f"ext-warm-{tag}",
            external=spb.ExternalTrials(task=target, n_epoch=2),
            search_space=LR_SPACE,
            n_trials=3,
            seed=1,
            warm_start=spb.WarmStart(similar_tasks=1, zero_shot_trials=1),
        )
        studies.CreateStudy(spb.CreateStudyRequest(study=study))
        trial = None
        for _ in range(100):  # the driver makes the plan within a tick or two
            asked = studies.AskTrial(spb.AskTrialRequest(name=study.name, worker="w"))
            if asked.HasField("trial"):
                trial = asked.trial
                break
            assert asked.wait_seconds > 0
            time.sleep(0.2)
        assert trial is not None, "no trial was handed out"
        got = studies.GetStudy(spb.GetStudyRequest(name=study.name)).study
    # The nearest task with history is alice's `near` (same classes and shape), and its
    # best params come first; mallory's perfect runs on a copy of the target are no
    # source of alice's study (an untrusted writer's claims).
    assert trial.params["lr"] == pytest.approx(0.01, rel=1e-9)
    assert trial.seeded_by_attempt_id > 0
    report = got.warm_start_report
    assert report.state == "ready", report
    assert len(report.sources) == 1 and report.zero_shot_trials == 1
    assert sorted(report.sources[0].label_names) == sorted(near.labels)


def test_a_declaration_adds_to_what_the_owners_runs_declared(gateway: GatewayThread) -> None:
    """A run that declares less takes nothing away from its task's profile; a feature
    declared again takes its newest value."""
    tag = uuid.uuid4().hex[:8]
    with gateway.channel() as channel:
        reporting = rgrpc.ReportingServiceStub(channel)
        tasks = tgrpc.TaskServiceStub(channel)
        first = _declared(f"merge-{tag}", 4, [3, 32, 32], 1_000)
        first.features["imbalance"] = 0.5
        runs = [reporting.StartRun(rpb.StartRunRequest(name=f"m1-{tag}", task=first)).attempt]
        less = attempt_pb2.DeclaredTask(dataset=first.dataset, labels=first.labels)
        less.features["imbalance"] = 0.25
        runs.append(reporting.StartRun(rpb.StartRunRequest(name=f"m2-{tag}", task=less)).attempt)
        profiles = [
            dict(tasks.FindSimilarTasks(pb.FindSimilarTasksRequest(attempt_id=r.id)).target
                 .profile.features)
            for r in runs
        ]  # fmt: skip
    assert profiles[1] == pytest.approx(
        {"log_classes": 2.0, "log_images": 3.0, "channels": 3.0, "log_pixels": 10.0,
         "imbalance": 0.25}, rel=1e-12)  # fmt: skip
    # Channels last is refused, named, with the shape it meant.
    with gateway.channel() as channel:
        bad = rpb.StartRunRequest(name=f"m3-{tag}", task=_declared("x", 2, [32, 32, 3], 10))
        with pytest.raises(grpc.RpcError) as err:
            rgrpc.ReportingServiceStub(channel).StartRun(bad)
    assert "[3, 32, 32]" in violations(err.value)["task.input_shape"]
