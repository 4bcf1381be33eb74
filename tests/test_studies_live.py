"""Studies with real trainers: every trial trains as an attempt with its params and
epochs, max_parallel holds at every moment, the best trial is tested at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from google.protobuf import json_format

from gateway.config import GatewayConfig
from gateway.store.studies import StudyStore
from metalearn.v1 import attempt_pb2, study_service_pb2_grpc
from metalearn.v1 import study_service_pb2 as pb
from tests.harness import GatewayThread, watch_workers
from tests.test_orchestration import Stack
from tests.trainer_harness import lenet_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(
    digits_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    config = GatewayConfig(
        listen="127.0.0.1:0", database_url=digits_gateway.database_url, dispatch_seconds=0.2,
        study_tick_seconds=0.5,
    )  # fmt: skip
    fast = GatewayThread(digits_gateway.database_url, config).start()
    stack = Stack(fast, tmp_path_factory.mktemp("studies-live"))
    stack.ensure_trainers(2)
    try:
        yield stack
    finally:
        stack.close()
        fast.stop()


def tiny_study(name: str, n_trials: int, sampler: str = "tpe") -> pb.Study:
    base = lenet_command(n_epoch=2, batch_size=64, label_names=["digit 0", "digit 1", "digit 2"])
    study = pb.Study(name=name, base_command=base, n_trials=n_trials, max_parallel=2, seed=3,
                     test_best=True)  # fmt: skip
    study.sampler.name = sampler
    for param in (
        {"path": "optimizer.lr", "float": {"low": 1e-4, "high": 3e-2, "log": True}},
        {"path": "model.layers[7].out_features", "int": {"low": 16, "high": 128, "step": 16}},
    ):
        study.search_space.append(json_format.ParseDict(param, pb.SearchParameter()))
    return study


def median_pruned(name: str, n_trials: int, sampler: str, seed: int, n_epoch: int) -> pb.Study:
    """One trial at a time over a good learning rate (0.003) and one that stays at chance
    (1e-7), judged by the median pruner from the first epoch of the second trial on."""
    study = tiny_study(name, n_trials, sampler=sampler)
    study.base_command.n_epoch = n_epoch
    study.seed, study.max_parallel, study.test_best = seed, 1, False
    del study.search_space[:]
    study.search_space.append(
        json_format.ParseDict(
            {"path": "optimizer.lr", "categorical": {"values": [0.003, 1e-7]}},
            pb.SearchParameter(),
        )
    )
    study.pruner.name = "median"
    study.pruner.args.update({"n_startup_trials": 1, "n_warmup_steps": 0})
    return study


def test_a_tpe_study_trains_every_trial_within_max_parallel(live: Stack) -> None:
    studies = study_service_pb2_grpc.StudyServiceStub(live.channel)
    studies.CreateStudy(pb.CreateStudyRequest(study=tiny_study("tpe", 12)))
    deadline = time.monotonic() + 300
    most_at_once = 0
    while True:
        study = studies.GetStudy(pb.GetStudyRequest(name="tpe")).study
        most_at_once = max(
            most_at_once, sum(t.state == pb.TRIAL_STATE_RUNNING for t in study.trials)
        )
        if study.state == pb.STUDY_STATE_DONE:
            break
        assert time.monotonic() < deadline, study
        time.sleep(0.2)
    assert most_at_once <= 2
    assert study.trials_made == 12 and len(study.trials) == 12
    assert [t.attempt_name for t in study.trials] == [f"tpe-{k}" for k in range(12)]
    for trial in study.trials:
        assert trial.state == pb.TRIAL_STATE_COMPLETE, trial
        assert trial.epochs == 2 and 0 <= trial.value <= 1
        attempt = live.get(trial.attempt_name)
        assert len(attempt.epochs) == 2 and attempt.tags["study"] == "tpe"
        assert max(e.val_accuracy for e in attempt.epochs) == pytest.approx(trial.value)
    best = study.best_trial
    assert best.value == max(t.value for t in study.trials)
    # A list of studies says who won too (without the trials themselves).
    (listed,) = [s for s in studies.ListStudies(pb.ListStudiesRequest()).studies if s.name == "tpe"]
    assert listed.best_trial == best and not listed.trials
    # Chosen on validation data, tested at the end: an honest number.
    tested = live.wait_status(best.attempt_name, {attempt_pb2.ATTEMPT_STATUS_COMPLETE}, 120)
    assert tested.HasField("test_result") and 0 <= tested.accuracy <= 1


def test_the_median_pruner_stops_hopeless_trials_after_an_epoch(
    live: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A learning rate of 1e-7 stays at chance; with seed 11 the random sampler gives
    good, bad, bad, bad, good, bad (checked offline), one trial at a time. Every
    decision is made on the study kept between decisions (gateway/studies/decisions.py):
    none rebuilds it from every epoch of every trial in a worker process."""
    sent = watch_workers(monkeypatch)
    studies = study_service_pb2_grpc.StudyServiceStub(live.channel)
    study = median_pruned("pruned", 6, "random", seed=11, n_epoch=4)
    studies.CreateStudy(pb.CreateStudyRequest(study=study))
    # Followed live to the end: every trial started, each epoch once and in order, each
    # pruned or finished once, the bests, then the finished study.
    events = [
        (e.WhichOneof("event"), e)
        for e in studies.WatchStudy(pb.WatchStudyRequest(name="pruned"), timeout=300)
    ]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "study_finished", kinds
    done = events[-1][1].study_finished
    started = [e.trial_started.number for k, e in events if k == "trial_started"]
    started += [t.number for t in events[0][1].snapshot.trials]
    assert sorted(started) == list(range(6))
    for trial in done.trials:
        seen = [e.trial_epoch.epoch.epoch for k, e in events
                if k == "trial_epoch" and e.trial_epoch.trial == trial.number]  # fmt: skip
        assert seen == list(range(1, trial.epochs + 1)), (trial.number, seen)
        ended = [k for k, e in events if k in ("trial_pruned", "trial_finished") and
                 getattr(e, k).number == trial.number]  # fmt: skip
        assert ended == ["trial_pruned" if trial.state == pb.TRIAL_STATE_PRUNED
                         else "trial_finished"], ended  # fmt: skip
    assert "new_best" in kinds
    states = [t.state for t in done.trials]
    C, P = pb.TRIAL_STATE_COMPLETE, pb.TRIAL_STATE_PRUNED
    assert states == [C, P, P, P, C, P], done.trials
    for trial in done.trials:
        attempt = live.get(trial.attempt_name)
        if trial.state == P:
            assert attempt.status == attempt_pb2.ATTEMPT_STATUS_PRUNED
            assert attempt.error.startswith("pruned at epoch 1 by the median pruner"), attempt.error
            assert trial.error == attempt.error
            # Stopped within a batch of the decision: its first epoch kept, few after.
            assert 1 <= len(attempt.epochs) <= 2 and trial.value == attempt.epochs[0].val_accuracy
        else:
            assert len(attempt.epochs) == 4
    assert done.best_trial.number in (0, 4)
    assert "decide" not in sent and "propose" in sent, sent


def test_a_trial_claimed_before_its_study_links_it_is_still_pruned(
    live: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver links a trial to its attempt just after queueing it; a replica may
    claim the attempt in between. Here every link waits until its attempt is training:
    the pruner must still judge the trial once the link lands."""
    import asyncio

    import psycopg

    link = StudyStore.trial_queued  # every replica's driver (both here run one)

    def training(attempt_id: int) -> bool:
        with psycopg.connect(live.gateway.database_url) as conn:
            row = conn.execute("SELECT status FROM attempts WHERE id = %s", (attempt_id,))
            found = row.fetchone()
        return found is not None and found[0] == "TRAINING"

    async def late(store: StudyStore, study_id: int, number: int, attempt_id: int) -> None:
        for _ in range(600):
            if await asyncio.to_thread(training, attempt_id):
                break
            await asyncio.sleep(0.01)
        await link(store, study_id, number, attempt_id)

    monkeypatch.setattr(StudyStore, "trial_queued", late)
    studies = study_service_pb2_grpc.StudyServiceStub(live.channel)
    # Seed 1: the good rate first (the grid's seeded order), then one that stays at chance.
    study = median_pruned("linked-late", 2, "grid", seed=1, n_epoch=6)
    studies.CreateStudy(pb.CreateStudyRequest(study=study))
    live.wait_for(
        lambda: (
            studies.GetStudy(pb.GetStudyRequest(name="linked-late")).study.state
            == pb.STUDY_STATE_DONE
        ),
        240,
        "the study to finish",
    )
    trials = studies.GetStudy(pb.GetStudyRequest(name="linked-late")).study.trials
    by_lr = {t.params["optimizer.lr"]: t for t in trials}
    assert by_lr[0.003].state == pb.TRIAL_STATE_COMPLETE, by_lr[0.003]
    slow = by_lr[1e-7]
    assert slow.state == pb.TRIAL_STATE_PRUNED, slow
    assert "by the median pruner" in live.get(slow.attempt_name).error
