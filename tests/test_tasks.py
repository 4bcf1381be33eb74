"""Tasks without trainers: registration and fingerprints, listing, validation, the
state a call sees while no trainer has profiled a task yet, the stated fallback of
SuggestCommand, warm-start validation, and the learning code (distance, portfolio,
priors) on hand-made numbers."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import json_format

from gateway.tasks.learner import params_of, signature
from learning.studies import space
from learning.tasks import defaults, similarity, warmstart
from metalearn.errors import Violations
from metalearn.v1 import study_service_pb2 as spb
from metalearn.v1 import study_service_pb2_grpc, task_pb2, task_service_pb2_grpc
from metalearn.v1 import task_service_pb2 as pb
from tests.harness import GatewayThread, upload_labels
from tests.rpc import violations as field_violations
from tests.test_studies_live import tiny_study


def _stub(gateway: GatewayThread) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(gateway.channel())


def _key(*labels: str) -> task_pb2.TaskKey:
    return task_pb2.TaskKey(label_names=list(labels))


def test_a_task_is_registered_once_whatever_the_label_order(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["t-a", "t-b"])
    stub = _stub(gateway)
    first = stub.ProfileTask(pb.ProfileTaskRequest(task=_key("t-a", "t-b"))).task
    again = stub.ProfileTask(pb.ProfileTaskRequest(task=_key("t-b", "t-a"))).task
    assert first.fingerprint == again.fingerprint and len(first.fingerprint) == 64
    assert first.state == task_pb2.TASK_STATE_PENDING  # no trainer to profile it
    assert list(first.label_names) == ["t-a", "t-b"]
    listed = stub.ListTasks(pb.ListTasksRequest()).tasks
    assert [t.fingerprint for t in listed] == [first.fingerprint]


def test_new_images_make_a_new_task_version(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["v-a"])
    stub = _stub(gateway)
    before = stub.ProfileTask(pb.ProfileTaskRequest(task=_key("v-a"))).task
    import io

    from PIL import Image

    from metalearn.v1 import dataset_service_pb2, dataset_service_pb2_grpc

    buf = io.BytesIO()
    Image.new("L", (8, 8), 200).save(buf, format="PNG")
    dataset_service_pb2_grpc.DatasetServiceStub(gateway.channel()).UploadImages(
        iter([dataset_service_pb2.UploadImagesRequest(label="v-a", data=buf.getvalue())])
    )
    after = stub.ProfileTask(pb.ProfileTaskRequest(task=_key("v-a"))).task
    assert after.fingerprint != before.fingerprint
    # One row per task, its newest version; every version when asked.
    assert [t.fingerprint for t in stub.ListTasks(pb.ListTasksRequest()).tasks] == [
        after.fingerprint
    ]
    every = stub.ListTasks(pb.ListTasksRequest(all_versions=True)).tasks
    assert [t.fingerprint for t in every] == [after.fingerprint, before.fingerprint]


def test_a_task_whose_images_came_back_is_listed_once_not_as_failed(
    gateway: GatewayThread,
) -> None:
    # The README's flow: a task's label deleted (the sweep then records "labels without
    # images" for it), the same images imported again (the same version as before).
    import psycopg_pool

    from gateway.store.tasks import TaskStore

    upload_labels(gateway, ["m-a", "m-b"])
    stub = _stub(gateway)
    task = stub.ProfileTask(pb.ProfileTaskRequest(task=_key("m-a", "m-b"))).task

    async def labels_were_missing() -> None:
        async with psycopg_pool.AsyncConnectionPool(gateway.database_url, min_size=1) as pool:
            await TaskStore(pool).unprofilable(["m-a", "m-b"], [], "labels without images: m-b")

    gateway.run(labels_were_missing())
    again = stub.ProfileTask(pb.ProfileTaskRequest(task=_key("m-a", "m-b"))).task
    assert again.fingerprint == task.fingerprint  # the same images: the same version
    listed = stub.ListTasks(pb.ListTasksRequest()).tasks
    assert [(t.fingerprint, t.state) for t in listed] == [
        (task.fingerprint, task_pb2.TASK_STATE_PENDING)
    ]
    every = stub.ListTasks(pb.ListTasksRequest(all_versions=True)).tasks
    assert sorted(t.state for t in every) == [
        task_pb2.TASK_STATE_PENDING,
        task_pb2.TASK_STATE_FAILED,
    ]


def test_the_profiler_registers_a_new_version_when_images_change(gateway: GatewayThread) -> None:
    """Nobody asks again: the upload marks the task stale and the gateway's own sweep
    registers the new version (which a trainer would then profile)."""
    import time

    upload_labels(gateway, ["w-a"])
    stub = _stub(gateway)
    first = stub.ProfileTask(pb.ProfileTaskRequest(task=_key("w-a"))).task
    _upload_another(gateway, "w-a")
    deadline = time.monotonic() + 20
    while len(listed := stub.ListTasks(pb.ListTasksRequest(all_versions=True)).tasks) < 2:
        assert time.monotonic() < deadline, "no new version"
        time.sleep(0.2)
    assert listed[0].fingerprint != first.fingerprint
    assert list(listed[0].label_names) == ["w-a"]


def _upload_another(gateway: GatewayThread, label: str) -> None:
    import io

    from PIL import Image

    from metalearn.v1 import dataset_service_pb2, dataset_service_pb2_grpc

    buf = io.BytesIO()
    Image.new("L", (8, 8), 201).save(buf, format="PNG")
    dataset_service_pb2_grpc.DatasetServiceStub(gateway.channel()).UploadImages(
        iter([dataset_service_pb2.UploadImagesRequest(label=label, data=buf.getvalue())])
    )


def test_image_ops_are_part_of_the_task(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["o-a"])
    stub = _stub(gateway)
    plain = stub.ProfileTask(pb.ProfileTaskRequest(task=_key("o-a"))).task
    resized = _key("o-a")
    resized.image_ops.add().resize.size.extend([16, 16])
    bigger = stub.ProfileTask(pb.ProfileTaskRequest(task=resized)).task
    assert plain.fingerprint != bigger.fingerprint
    assert bigger.image_ops[0].resize.size == [16, 16]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ProfileTaskRequest(), "task.label_names"),
        (pb.ProfileTaskRequest(task=_key("x", "x")), "task.label_names[1]"),
        (pb.ProfileTaskRequest(task=_key("")), "task.label_names[0]"),
        (pb.ProfileTaskRequest(task=_key("never-uploaded")), "task.label_names[0]"),
    ],
)
def test_bad_task_keys_are_named(
    gateway: GatewayThread, request_: pb.ProfileTaskRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _stub(gateway).ProfileTask(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(err.value)


def test_an_image_op_is_checked_as_a_commands(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["op-a"])
    key = _key("op-a")
    key.image_ops.add().resize.size.extend([0, 5, 7])
    with pytest.raises(grpc.RpcError) as err:
        _stub(gateway).ProfileTask(pb.ProfileTaskRequest(task=key))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task.image_ops[0].resize.size" in field_violations(err.value)


def test_bounds_and_fingerprints_of_the_other_calls(gateway: GatewayThread) -> None:
    stub = _stub(gateway)
    for call, request_, field in (
        (stub.FindSimilarTasks, pb.FindSimilarTasksRequest(fingerprint="ab", limit=101), "limit"),
        (stub.FindSimilarTasks,
         pb.FindSimilarTasksRequest(fingerprint="ab", attempts_per_task=-1), "attempts_per_task"),
        (stub.FindSimilarTasks, pb.FindSimilarTasksRequest(), "task"),
        (stub.SuggestCommand, pb.SuggestCommandRequest(neighbours=51), "neighbours"),
        (stub.SuggestCommand, pb.SuggestCommandRequest(), "task"),
        (stub.ListTasks, pb.ListTasksRequest(page_size=-1), "page_size"),
        (stub.ListTasks, pb.ListTasksRequest(page_token="nonsense"), "page_token"),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            call(request_)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in field_violations(err.value)
    with pytest.raises(grpc.RpcError) as err:
        stub.FindSimilarTasks(pb.FindSimilarTasksRequest(fingerprint="0" * 64))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_similar_tasks_of_an_unprofiled_task_say_to_call_again(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["u-a"])
    with pytest.raises(grpc.RpcError) as err:
        _stub(gateway).FindSimilarTasks(pb.FindSimilarTasksRequest(task=_key("u-a")), timeout=2)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_with_no_history_the_suggestion_is_the_stated_default(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["s-a", "s-b"])
    response = _stub(gateway).SuggestCommand(
        pb.SuggestCommandRequest(task=_key("s-a", "s-b")), timeout=3
    )
    assert response.fallback
    assert "default" in response.reason
    command = json_format.MessageToDict(response.command, preserving_proto_field_name=True)
    expected = defaults.command(["s-a", "s-b"], [])
    assert command["label_names"] == ["s-a", "s-b"]
    assert command["optimizer"] == expected["optimizer"]
    assert not response.sources


def test_only_admins_refit_the_distance(gateway: GatewayThread) -> None:
    token = gateway.make_token("reader-k", "reader")
    stub = task_service_pb2_grpc.TaskServiceStub(gateway.channel(token))
    stub.ListTasks(pb.ListTasksRequest())
    with pytest.raises(grpc.RpcError) as err:
        stub.FitTaskDistance(pb.FitTaskDistanceRequest())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        stub.ProfileTask(pb.ProfileTaskRequest(task=_key("x")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    fitted = _stub(gateway).FitTaskDistance(pb.FitTaskDistanceRequest()).distance
    assert fitted.kind == "standardized"  # nothing to learn from yet


def test_warm_start_is_checked_at_create(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["digit 0", "digit 1", "digit 2"])
    studies = study_service_pb2_grpc.StudyServiceStub(gateway.channel())
    for warm, field in (
        (spb.WarmStart(), "study.warm_start"),
        (spb.WarmStart(similar_tasks=21), "study.warm_start.similar_tasks"),
        (spb.WarmStart(similar_tasks=2, studies=["x"]), "study.warm_start"),
        (spb.WarmStart(studies=["no-such-study"]), "study.warm_start.studies[0]"),
        (spb.WarmStart(studies=["bad name!"]), "study.warm_start.studies[0]"),
        (spb.WarmStart(similar_tasks=3, zero_shot_trials=-2), "study.warm_start.zero_shot_trials"),
    ):
        study = tiny_study("warm-bad", 4)
        study.warm_start.CopyFrom(warm)
        with pytest.raises(grpc.RpcError) as err:
            studies.CreateStudy(spb.CreateStudyRequest(study=study))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, warm
        assert field in field_violations(err.value), warm


def test_a_warm_study_waits_for_its_tasks_profile(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["digit 0", "digit 1", "digit 2"])
    studies = study_service_pb2_grpc.StudyServiceStub(gateway.channel())
    study = tiny_study("warm-waits", 4)
    study.warm_start.similar_tasks = 3
    created = studies.CreateStudy(spb.CreateStudyRequest(study=study)).study
    assert created.warm_start.similar_tasks == 3
    assert created.warm_start_report.state == "waiting for the task's profile"
    got = studies.GetStudy(spb.GetStudyRequest(name="warm-waits")).study
    assert got.trials_made == 0  # no trainer: no profile, no first trial
    tasks = _stub(gateway).ListTasks(pb.ListTasksRequest()).tasks
    assert sorted(tasks[0].label_names) == ["digit 0", "digit 1", "digit 2"]  # registered


# The learning code on hand-made numbers.


def test_quantiles_rank_within_a_task() -> None:
    assert warmstart.quantiles({"a": 0.5, "b": 0.9, "c": 0.7}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert warmstart.quantiles({"a": 0.3}) == {"a": 1.0}
    assert warmstart.quantiles({"a": 0.3, "b": 0.3}) == {"a": 0.5, "b": 0.5}


def test_the_portfolio_prefers_a_command_good_on_every_close_task() -> None:
    evaluations = {
        "near": {"steady": 0.90, "spiky": 0.95, "other": 0.5, "bad": 0.1},
        "near2": {"steady": 0.90, "spiky": 0.2, "other": 0.5, "bad": 0.1},
    }
    ranked = warmstart.portfolio(evaluations, {"near": 0.5, "near2": 0.5})
    assert ranked[0].command == "steady"
    # With one neighbour only its best comes first.
    assert warmstart.portfolio(evaluations, {"near": 1.0})[0].command == "spiky"


def test_neighbour_weights_favour_the_nearest() -> None:
    weights = warmstart.neighbour_weights([("a", 0.1), ("b", 1.0), ("c", 3.0)])
    assert math.isclose(sum(weights.values()), 1.0)
    assert weights["a"] > weights["b"] > weights["c"]
    copy = warmstart.neighbour_weights([("a", 0.0), ("b", 0.0)])
    assert copy == {"a": 0.5, "b": 0.5}


def test_priors_are_pulled_to_the_middle_by_distance_and_mapped_on_own_values() -> None:
    found = warmstart.priors({"a": {"x": 1.0, "y": 0.0}, "b": {"x": 1.0, "y": 0.0}},
                             {"a": 0.8, "b": 0.2})  # fmt: skip
    by = {(p.task, p.command): p.goodness for p in found}
    assert by[("a", "x")] == 1.0 and by[("a", "y")] == 0.0
    assert 0.5 < by[("b", "x")] < 1.0 and 0.0 < by[("b", "y")] < 0.5
    assert warmstart.on_own_scale(0.75, [], True) == 0.75
    assert warmstart.on_own_scale(0.75, [], False) == 0.25
    assert warmstart.on_own_scale(1.0, [0.2, 0.6], True) == 0.6


def test_the_learned_distance_finds_the_feature_that_matters() -> None:
    # Tasks whose best command transfers are those with the same "kind"; "noise" is
    # irrelevant and larger in scale. The learned distance must weigh "kind" more.
    import random

    rng = random.Random(1)
    profiles, evaluations = {}, {}
    for i in range(16):
        kind = i % 2
        profiles[f"t{i}"] = {"kind": float(kind) + rng.gauss(0, 0.05), "noise": rng.gauss(0, 3)}
        # Each kind has its own three good commands; the rest are middling or bad.
        values = {f"{c}{k}": 0.5 + rng.random() * 0.01 for c in "ab" for k in range(3)}
        values.update({f"{'ab'[kind]}{k}": 0.9 + rng.random() * 0.01 for k in range(3)})
        evaluations[f"t{i}"] = {**values, "c": 0.1}
    learned = similarity.fit(profiles, evaluations)
    assert learned.kind == "learned"
    weights = dict(zip(learned.features, learned.weights, strict=True))
    assert weights["kind"] > weights["noise"]
    assert learned.spearman > learned.standardized_spearman
    near = similarity.nearest(learned, profiles["t0"], {k: v for k, v in profiles.items()
                                                        if k != "t0"}, 3)  # fmt: skip
    assert all(int(k[1:]) % 2 == 0 for k, _ in near)


def test_distances_to_many_tasks_at_once_are_each_ones_distance() -> None:
    """`nearest` scores every candidate in one array operation (issue 30: 2,000 tasks took
    33 ms one by one); each is `between`'s answer, whole or partial profiles alike. The
    tolerance: the sums are the same terms added in another order (a few ulps)."""
    import random

    rng = random.Random(3)
    features = ("a", "b", "c", "d")
    distance = similarity.Distance(
        "learned", features, (0.1, -2.0, 5.0, 0.0), (1.0, 0.5, 3.0, 2.0), (0.0, 1.5, 0.3, 2.0),
        tasks=8, pairs=28, spearman=0.5, standardized_spearman=0.4,
    )  # fmt: skip

    def profile() -> dict[str, float]:  # some features missing, as a declared task's
        return {f: rng.gauss(0, 3) for f in features if rng.random() < 0.8}

    for target in (profile(), {f: 1.0 for f in features}, {}):
        others = [profile() for _ in range(200)]
        many = distance.to_many(target, others)
        one = [distance.between(target, b) for b in others]
        assert many.tolist() == pytest.approx(one, rel=1e-12, abs=1e-12)
    assert distance.to_many({"a": 1.0}, []).shape == (0,)


def test_too_little_history_keeps_the_standardized_distance() -> None:
    profiles = {"a": {"f": 1.0}, "b": {"f": 2.0}}
    fitted = similarity.fit(profiles, {"a": {"x": 1.0}, "b": {"x": 0.5}})
    assert fitted.kind == "standardized" and fitted.weights == (1.0,)


def test_past_commands_are_read_at_the_studys_paths() -> None:
    study = tiny_study("paths", 4)
    v = Violations()
    params = space.parse(v, "s", space.command_json(study.base_command), study.search_space)
    command = space.command_json(study.base_command)
    command["optimizer"]["lr"] = 0.003
    command["model"]["layers"][7]["out_features"] = 48.0  # as a Struct holds it
    assert params_of(command, params) == {"optimizer.lr": 0.003,
                                          "model.layers[7].out_features": 48}  # fmt: skip
    command["optimizer"]["lr"] = 0.5  # outside the range
    assert params_of(command, params) is None
    del command["optimizer"]["lr"]
    assert params_of(command, params) is None


def test_a_commands_signature_leaves_out_the_task_and_the_seed() -> None:
    a = {"label_names": ["x"], "seed": 1, "optimizer": {"lr": 0.1}, "n_labels": 1}
    b = {"label_names": ["y", "z"], "seed": 2, "optimizer": {"lr": 0.1}}
    assert signature(a) == signature(b)
    assert signature(a) != signature({**b, "optimizer": {"lr": 0.2}})


def test_a_trainers_profile_is_checked_before_it_is_stored() -> None:
    from gateway.tasks.profiler import FEATURES, profile_problem

    good = task_pb2.TaskProfile(features={name: 0.5 for name in FEATURES}, images=10,
                                classes=2, input_shape=[1, 8, 8], seconds=0.4)  # fmt: skip
    assert profile_problem(good) == ""
    for change in (
        {"features": {**good.features, "log_images": math.nan}},
        {"features": {**good.features, "secret": 1.0}},
        {"features": {"log_images": 1.0}},
        {"features": {**good.features, "pixel_mean": 1e300}},
        {"seconds": math.inf},
        {"images": -1},
    ):
        bad = task_pb2.TaskProfile()
        bad.CopyFrom(good)
        for field, value in change.items():
            if field == "features":
                bad.features.clear()
                bad.features.update(value)  # type: ignore[arg-type]
            else:
                setattr(bad, field, value)
        assert profile_problem(bad), change


def test_sizes_after_the_image_ops_are_checked_as_a_commands(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["big-a"])
    key = _key("big-a")
    key.image_ops.add().resize.size.extend([4000, 4000])
    with pytest.raises(grpc.RpcError) as err:
        _stub(gateway).ProfileTask(pb.ProfileTaskRequest(task=key))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f.startswith("task.image_ops") for f in field_violations(err.value))
    with pytest.raises(grpc.RpcError) as err:
        _stub(gateway).FindSimilarTasks(pb.FindSimilarTasksRequest(fingerprint="a\x00" * 32))
    assert "fingerprint" in field_violations(err.value)


def test_a_profile_that_is_not_finite_never_reaches_the_database(postgres_url: str) -> None:
    """A trainer-token holder's profile with a NaN feature is refused before it is stored
    (it was written as JSON NaN, which PostgreSQL refuses: the task stayed claimed with no
    word why) and another trainer is asked, the reason kept on the task."""
    import time
    from concurrent import futures
    from typing import Any

    import psycopg

    from gateway.config import GatewayConfig
    from gateway.tasks.profiler import FEATURES
    from metalearn.v1 import trainer_service_pb2, trainer_service_pb2_grpc
    from tests.harness import fresh_database
    from tests.test_lying_trainer import FakeTrainer, five_images_each, register

    class NaNProfiler(FakeTrainer):
        def ProfileTask(self, request: Any, context: grpc.ServicerContext) -> Any:
            features = {name: 0.5 for name in FEATURES}
            features["pixel_skew"] = math.nan
            profile = task_pb2.TaskProfile(features=features, images=10, classes=2,
                                           input_shape=[1, 8, 8], seconds=0.1)  # fmt: skip
            return trainer_service_pb2.TrainerServiceProfileTaskResponse(profile=profile)

    url = fresh_database(postgres_url, "nanprofile")
    gateway = GatewayThread(url, GatewayConfig(listen="127.0.0.1:0", database_url=url)).start()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(NaNProfiler(), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        five_images_each(gateway)
        register(gateway, address)
        task = _stub(gateway).ProfileTask(pb.ProfileTaskRequest(task=_key("0", "1"))).task
        deadline = time.monotonic() + 20
        while "impossible profile" not in task.error and time.monotonic() < deadline:
            time.sleep(0.2)
            task = _stub(gateway).ProfileTask(pb.ProfileTaskRequest(task=_key("0", "1"))).task
        assert "impossible profile: feature pixel_skew = nan" in task.error, task
        assert task.state == task_pb2.TASK_STATE_PENDING and not task.profile.features
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM tasks WHERE features IS NOT NULL")
            assert stored.fetchone() == (0,)
    finally:
        server.stop(1)
        gateway.stop()


def test_what_learning_reads_is_kept_until_the_store_moves(gateway: GatewayThread) -> None:
    """Issue 30: the learner reads every finished run once, then keeps it while the
    store's learning stamp stands still (FindSimilarTasks and SuggestCommand each need
    it, and reading it is a row per run); a run that finishes is seen at once."""
    import asyncio

    from gateway.store import open_pool
    from gateway.store.tasks import TaskStore
    from gateway.tasks.learner import Learner
    from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc
    from metalearn.v1 import attempt_service_pb2 as apb
    from tests.test_attempts import make_attempt

    def finished(name: str) -> None:
        attempt = make_attempt(name)
        attempt.status = attempt_pb2.ATTEMPT_STATUS_TRAINED
        attempt.epochs.add(epoch=1, loss=1.0, val_accuracy=0.7)
        with gateway.channel() as channel:
            attempt_service_pb2_grpc.AttemptServiceStub(channel).ImportAttempts(
                apb.ImportAttemptsRequest(attempts=[attempt])
            )

    async def check() -> None:
        async with open_pool(gateway.database_url, 1, 2) as pool:
            learner = Learner(TaskStore(pool))
            finished("learnt-1")
            first = await learner.known()
            assert [h.runs for h in first.history.values()] == [1]
            assert await learner.known() is first  # nothing moved: the same reading
            (key,) = first.history
            tried = await learner.with_tried(first, [key])
            ((_, one),) = tried.tried[key].items()
            assert (one.best_attempt.name, one.runs) == ("learnt-1", 1)
            finished("learnt-2")
            second = await learner.known()
            assert second.history[key].runs == 2
            assert second.history[key].version != first.history[key].version
            again = await learner.with_tried(second, [key])
            ((_, both),) = again.tried[key].items()  # the same command, run twice
            assert both.runs == 2
            assert [r.name for r in await learner.runs()] == ["learnt-1", "learnt-2"]

    asyncio.run(check())
