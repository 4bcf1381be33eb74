"""Tasks with real trainers: a task is profiled once, automatically when it is trained,
deterministically; the nearest task to a near-copy of a past one is that one; a warm
study's first trial repeats the neighbour's best command and says so; a suggestion
comes from the history, with its reasons."""

from __future__ import annotations

import io
from collections.abc import Iterator

import grpc
import pytest
from PIL import Image

from gateway.config import GatewayConfig
from metalearn.v1 import (
    attempt_pb2,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    study_service_pb2_grpc,
    task_pb2,
    task_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import study_service_pb2 as spb
from metalearn.v1 import task_service_pb2 as pb
from tests.harness import GatewayThread
from tests.test_orchestration import Stack
from tests.test_studies_live import tiny_study
from tests.trainer_harness import lenet_command

pytestmark = pytest.mark.slow

DIGITS = ["digit 0", "digit 1", "digit 2"]
COPY = ["copy 0", "copy 1", "copy 2"]
NOISE = ["noise a", "noise b", "noise c"]
DONE = {attempt_pb2.ATTEMPT_STATUS_TRAINED}
LRS = (0.0001, 0.003, 0.02)


def _upload(gateway: GatewayThread) -> None:
    """A near-copy of digits 0-2 (every image brightened a little) and a task of noise."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(0)
    uploads = []
    for digit, name in enumerate(COPY):
        for pixels in data.images[data.target == digit][:120]:
            image = np.clip(pixels * (255 / 16) + 6, 0, 255).astype("uint8")
            uploads.append((name, Image.fromarray(image, mode="L")))
    for name in NOISE:
        for _ in range(60):
            uploads.append((name, Image.fromarray(rng.integers(0, 255, (8, 8), dtype="uint8"))))
    requests = []
    for name, image in uploads:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        requests.append(dataset_service_pb2.UploadImagesRequest(label=name, data=buf.getvalue()))
    with gateway.channel() as channel:
        dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(iter(requests))


@pytest.fixture(scope="module")
def live(
    digits_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    config = GatewayConfig(listen="127.0.0.1:0", database_url=digits_gateway.database_url,
                           dispatch_seconds=0.2, study_tick_seconds=0.5,
                           stale_profile_check_seconds=0.5)  # fmt: skip
    fast = GatewayThread(digits_gateway.database_url, config).start()
    _upload(fast)
    stack = Stack(fast, tmp_path_factory.mktemp("tasks-live"))
    stack.ensure_trainers(2)
    # History: the digits 0-2 tried at three learning rates, the noise task at one.
    for lr in LRS:
        command = lenet_command(n_epoch=2, batch_size=32, label_names=DIGITS,
                                optimizer={"name": "Adam", "lr": lr})  # fmt: skip
        command.model.layers[7]["out_features"] = 64  # on the warm study's grid
        stack.stub.Train(apb.TrainRequest(name=f"hist-{lr}", command=command))
    noise = lenet_command(n_epoch=1, batch_size=32, label_names=NOISE)
    stack.stub.Train(apb.TrainRequest(name="hist-noise", command=noise))
    try:
        for name in [f"hist-{lr}" for lr in LRS] + ["hist-noise"]:
            stack.wait_status(name, DONE, 240)
        yield stack
    finally:
        stack.close()
        fast.stop()


def _tasks(stack: Stack) -> task_service_pb2_grpc.TaskServiceStub:
    return task_service_pb2_grpc.TaskServiceStub(stack.channel)


def _best_lr(stack: Stack) -> tuple[float, int]:
    runs = [stack.get(f"hist-{lr}") for lr in LRS]
    best = max(runs, key=lambda a: (max(e.val_accuracy for e in a.epochs), -a.id))
    return float(best.training_commands.optimizer["lr"]), best.id


def test_a_trained_task_is_profiled_once_and_deterministically(live: Stack) -> None:
    stub = _tasks(live)
    key = task_pb2.TaskKey(label_names=DIGITS)
    first = stub.ProfileTask(pb.ProfileTaskRequest(task=key, wait=True), timeout=60).task
    assert first.state == task_pb2.TASK_STATE_READY, first.error
    # Trained before it was asked for: the profiler found it by itself.
    assert first.attempts == len(LRS)
    profile = first.profile
    assert profile.images > 0 and profile.classes == 3 and list(profile.input_shape) == [1, 8, 8]
    assert {"log_images", "landmark_1nn", "pixel_mean"} <= set(profile.features)
    again = stub.ProfileTask(pb.ProfileTaskRequest(task=key, wait=True), timeout=60).task
    assert again.fingerprint == first.fingerprint
    assert again.profile_time == first.profile_time  # kept, not recomputed
    # The same images under other labels: another task, the same profile.
    copy_of_nothing = stub.ProfileTask(
        pb.ProfileTaskRequest(task=task_pb2.TaskKey(label_names=NOISE), wait=True), timeout=60
    ).task
    assert copy_of_nothing.profile.features != profile.features


def test_a_near_copy_finds_its_original_first(live: Stack) -> None:
    response = _tasks(live).FindSimilarTasks(
        pb.FindSimilarTasksRequest(task=task_pb2.TaskKey(label_names=COPY), limit=5),
        timeout=90,
    )
    assert response.target.state == task_pb2.TASK_STATE_READY
    ranked = [sorted(t.task.label_names) for t in response.tasks]
    assert ranked[0] == DIGITS, ranked
    assert NOISE in ranked
    nearest = response.tasks[0]
    assert nearest.distance < response.tasks[1].distance
    _, best_id = _best_lr(live)
    assert nearest.best_attempts[0].id == best_id  # its best attempts, best first
    assert response.distance.kind in ("learned", "standardized")


def test_a_suggestion_comes_from_the_nearest_history(live: Stack) -> None:
    response = _tasks(live).SuggestCommand(
        pb.SuggestCommandRequest(task=task_pb2.TaskKey(label_names=COPY)), timeout=90
    )
    assert not response.fallback, response.reason
    lr, best_id = _best_lr(live)
    assert list(response.command.label_names) == COPY
    assert response.command.optimizer["lr"] == pytest.approx(lr)
    assert response.sources[0].attempt_id == best_id
    assert sorted(response.sources[0].task.label_names) == DIGITS
    # Two past tasks are too few to judge a learned ranking: the static portfolio's
    # first, and the nearest task that ran it.
    assert response.ranking == pb.SUGGESTION_RANKING_STATIC
    assert "static portfolio" in response.reason and "nearest task" in response.reason


def test_a_warm_study_starts_with_the_neighbours_best(live: Stack) -> None:
    studies = study_service_pb2_grpc.StudyServiceStub(live.channel)
    study = tiny_study("warm-copy", 3)
    study.base_command.label_names[:] = COPY
    study.base_command.optimizer["name"] = "Adam"
    study.warm_start.similar_tasks = 1
    study.warm_start.zero_shot_trials = 1
    studies.CreateStudy(spb.CreateStudyRequest(study=study))
    lr, best_id = _best_lr(live)
    live.wait_for(
        lambda: (
            studies.GetStudy(spb.GetStudyRequest(name="warm-copy")).study.state
            == spb.STUDY_STATE_DONE
        ),
        300,
        "the warm study to end",
    )
    got = studies.GetStudy(spb.GetStudyRequest(name="warm-copy")).study
    report = got.warm_start_report
    assert report.state == "ready", report
    assert sorted(report.sources[0].label_names) == DIGITS
    assert report.zero_shot_trials == 1 and report.priors == len(LRS)
    first = got.trials[0]
    assert first.params["optimizer.lr"] == pytest.approx(lr)
    assert first.seeded_by_attempt_id == best_id
    assert live.get(first.attempt_name).trial.seeded_by_attempt_id == best_id
    assert all(t.seeded_by_attempt_id == 0 for t in got.trials[1:])


def test_a_reported_runs_sample_is_profiled_and_finds_the_task_it_shows(live: Stack) -> None:
    """A run of users' own code declares its task (other class names, its real size) and
    sends a sample of its images: a trainer profiles the sample, the profile keeps the
    declared size, and the nearest task with history is the one the images show."""
    import math

    import numpy as np
    from sklearn.datasets import load_digits

    from metalearn.v1 import reporting_service_pb2 as rpb
    from metalearn.v1 import reporting_service_pb2_grpc

    reporting = reporting_service_pb2_grpc.ReportingServiceStub(live.channel)
    declared = ["two", "zero", "one"]  # index order: digit 2, 0, 1
    run = reporting.StartRun(
        rpb.StartRunRequest(
            name="reported-digits",
            task=attempt_pb2.DeclaredTask(dataset="my-digits", labels=declared, train_size=5000),
        )
    ).attempt
    data = load_digits()
    sample = task_pb2.TaskSample()
    for index, digit in enumerate((2, 0, 1)):
        for pixels in data.images[data.target == digit][110:170]:
            buf = io.BytesIO()
            Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L").save(buf, "PNG")
            sample.images.add(label=index, data=buf.getvalue())
    made = reporting.UploadTaskSample(
        rpb.UploadTaskSampleRequest(attempt_id=run.id, sample=sample)
    ).task
    assert made.source == task_pb2.TASK_SOURCE_SAMPLE and made.dataset == "my-digits"
    assert sorted(made.label_names) == sorted(declared)
    tasks = _tasks(live)

    seen: list[pb.FindSimilarTasksResponse] = []

    def profiled() -> bool:
        try:
            found = tasks.FindSimilarTasks(
                pb.FindSimilarTasksRequest(attempt_id=run.id, limit=3), timeout=60
            )
        except grpc.RpcError:
            return False
        seen.append(found)
        return found.target.source == task_pb2.TASK_SOURCE_SAMPLE

    live.wait_for(profiled, 120, "the sample's profile")
    response = seen[-1]
    target = response.target
    assert target.state == task_pb2.TASK_STATE_READY, target.error
    assert target.profile.images == 180 and target.profile.classes == 3
    # The sample's size is not the task's: the declared training set's is (exact: the
    # gateway writes log10 of the declared integer).
    assert target.profile.features["log_images"] == pytest.approx(math.log10(5000), abs=1e-12)
    assert {"landmark_1nn", "probe_fisher", "pixel_mean"} <= set(target.profile.features)
    ranked = [sorted(t.task.label_names) for t in response.tasks]
    assert ranked[0] == DIGITS, ranked
    # The same sample again makes nothing new.
    again = reporting.UploadTaskSample(
        rpb.UploadTaskSampleRequest(attempt_id=run.id, sample=sample)
    ).task
    assert again.fingerprint == made.fingerprint


def test_a_profile_made_before_a_feature_existed_is_made_again(live: Stack) -> None:
    """A store profiled by an older trainer (no view landmarkers, say) has its READY
    tasks profiled again while no task waits; the task stays READY with its old profile
    until the new one, and the new one is what a trainer computes today."""
    import time

    import psycopg

    from learning.tasks import declared

    stub = _tasks(live)
    key = task_pb2.TaskKey(label_names=DIGITS)
    first = stub.ProfileTask(pb.ProfileTaskRequest(task=key, wait=True), timeout=60).task
    assert first.state == task_pb2.TASK_STATE_READY, first.error
    assert set(first.profile.features) == declared.PROFILE_FEATURES
    old = ["centre_1nn", "grey_linear"]
    with psycopg.connect(live.gateway.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE tasks SET features = features - %s::text[] WHERE fingerprint = %s",
            (old, first.fingerprint),
        )
        deadline = time.monotonic() + 90
        while True:
            row = conn.execute(
                "SELECT state, features, profiled_at FROM tasks WHERE fingerprint = %s",
                (first.fingerprint,),
            ).fetchone()
            assert row is not None and row[0] == "READY"  # never taken from its users
            if set(old) <= set(row[1]):
                break
            assert time.monotonic() < deadline, "the stale profile was not made again"
            time.sleep(0.2)
    again = stub.ProfileTask(pb.ProfileTaskRequest(task=key), timeout=10).task
    assert again.fingerprint == first.fingerprint
    assert again.profile_time.ToDatetime() > first.profile_time.ToDatetime()
    # Profiles are deterministic: the same images give the same numbers.
    assert dict(again.profile.features) == dict(first.profile.features)
