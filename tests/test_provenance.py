"""Provenance (issue 25): a run trained here is evidence, an imported run a claim. What
learns from the store trusts runs trained here, admins' runs, the caller's own and the
owners the gateway names; another writer's imports cannot steer anyone's suggestion."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import psycopg_pool
import pytest
from google.protobuf import json_format

from gateway.config import GatewayConfig
from gateway.store.tasks import TaskStore
from gateway.tasks import learner as learner_module
from gateway.tasks.learner import Known, Learner
from gateway.tasks.profiler import FEATURES
from gateway.tasks.rankings import KeptRankings
from learning.tasks import transfer
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    task_pb2,
    task_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import task_service_pb2 as pb
from tests.harness import GatewayThread, upload_labels
from tests.test_attempts import make_attempt

SOURCE = ("digit 4", "digit 5")
TARGET = ("digit 4", "digit 6")
HONEST = {0.0001: 0.55, 0.003: 0.92, 0.02: 0.81}  # learning rate: best val accuracy
POISON = 1234.5


def _run(name: str, labels: tuple[str, ...], lr: float, accuracy: float) -> attempt_pb2.Attempt:
    """A finished run as ImportAttempts takes it: two epochs, the second its best."""
    attempt = make_attempt(name, labels)
    attempt.training_commands.n_epoch = attempt.n_epoch = 2
    attempt.training_commands.optimizer["lr"] = lr
    attempt.status = attempt_pb2.ATTEMPT_STATUS_TRAINED
    for epoch, val in ((1, accuracy / 2), (2, accuracy)):
        attempt.epochs.add(epoch=epoch, loss=1.0 / epoch, learning_rate=lr, val_accuracy=val)
    return attempt


def _fake_perfect(prefix: str, count: int = 20) -> list[attempt_pb2.Attempt]:
    """The attack: `count` imported "perfect" runs at an absurd learning rate."""
    runs = []
    for i in range(count):
        run = _run(f"{prefix}-{i}", SOURCE, POISON, 1.0)
        run.status = attempt_pb2.ATTEMPT_STATUS_COMPLETE
        run.accuracy = 1.0
        runs.append(run)
    return runs


def _as_trained_here(database_url: str, names: list[str]) -> None:
    """Makes imported runs what a trainer of this gateway would have left (no trainer runs
    in this module): the same epochs, without the `imported` mark."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, spec FROM attempts WHERE name = ANY(%s)", (names,)
        ).fetchall()
        for attempt_id, spec in rows:
            attempt = attempt_pb2.Attempt.FromString(spec)
            attempt.ClearField("imported")
            conn.execute(
                "UPDATE attempts SET spec = %s, doc = doc - 'imported' WHERE id = %s",
                (attempt.SerializeToString(), attempt_id),
            )


def _profile(gateway: GatewayThread, labels: tuple[str, ...], shift: float) -> None:
    """Stores a profile for the task as a trainer would (none runs here): every feature
    the same but one, `shift` apart, so tasks are as near as their shifts."""
    features = {name: 0.1 * (i + 1) for i, name in enumerate(sorted(FEATURES))}
    features["pixel_mean"] += shift
    profile = task_pb2.TaskProfile(
        features=features, images=2, classes=2, input_shape=[1, 8, 8], seconds=0.1
    )

    async def profiled() -> None:
        async with psycopg_pool.AsyncConnectionPool(gateway.database_url, min_size=1) as pool:
            tasks = TaskStore(pool)
            record = await tasks.ensure(list(labels), [])
            await tasks.profiled(record.id, profile.SerializeToString(), features)

    gateway.run(profiled())


def _names(prefix: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {who: f"{prefix}-{who}-{suffix}" for who in ("alice", "mallory", "reader")}


def _tokens(gateway: GatewayThread, names: dict[str, str]) -> dict[str, str]:
    roles = {"alice": "writer", "mallory": "writer", "reader": "reader"}
    return {who: gateway.make_token(name, roles[who]) for who, name in names.items()}


def _import(gateway: GatewayThread, token: str, runs: list[attempt_pb2.Attempt]) -> None:
    with gateway.channel(token) as channel:
        attempt_service_pb2_grpc.AttemptServiceStub(channel).ImportAttempts(
            apb.ImportAttemptsRequest(attempts=runs)
        )


def _suggest(gateway: GatewayThread, token: str) -> pb.SuggestCommandResponse:
    with gateway.channel(token) as channel:
        return task_service_pb2_grpc.TaskServiceStub(channel).SuggestCommand(
            pb.SuggestCommandRequest(task=task_pb2.TaskKey(label_names=TARGET)), timeout=30
        )


def _command(response: pb.SuggestCommandResponse) -> dict[str, Any]:
    return json_format.MessageToDict(response.command, preserving_proto_field_name=True)


@pytest.fixture()
def history(gateway: GatewayThread) -> dict[str, str]:
    """Tokens for two writers and a reader; alice's three runs on digits 4/5, trained
    here; the tasks 4/5 and 4/6 profiled, near each other. Returns the secrets (and the
    principals' names under "name:<who>")."""
    names = _names("prov")
    secrets = _tokens(gateway, names)
    upload_labels(gateway, sorted({*SOURCE, *TARGET}))
    runs = [_run(f"honest-{lr}", SOURCE, lr, acc) for lr, acc in HONEST.items()]
    _import(gateway, secrets["alice"], runs)
    _as_trained_here(gateway.database_url, [r.name for r in runs])
    _profile(gateway, SOURCE, 0.0)
    _profile(gateway, TARGET, 0.05)
    return {**secrets, **{f"name:{who}": name for who, name in names.items()}}


def test_another_writers_fake_imports_leave_a_readers_suggestion_unchanged(
    gateway: GatewayThread, history: dict[str, str]
) -> None:
    before = _suggest(gateway, history["reader"])
    assert not before.fallback, before.reason
    assert before.command.optimizer["lr"] == pytest.approx(0.003)  # the best honest run
    source = before.sources[0]
    assert source.attempt_name == "honest-0.003"
    # Where the evidence came from: trained here, alice's run (another writer's).
    assert source.provenance == attempt_pb2.PROVENANCE_TRAINED
    assert source.owner == history["name:alice"]
    assert "trained here" in before.reason
    assert list(before.trusted_owners) == [history["name:reader"]]

    _import(gateway, history["mallory"], _fake_perfect("fake"))

    after = _suggest(gateway, history["reader"])
    assert _command(after) == _command(before)
    assert [(s.attempt_name, s.owner) for s in after.sources] == [
        (s.attempt_name, s.owner) for s in before.sources
    ]
    # Nor do they show among the similar task's best attempts.
    with gateway.channel(history["reader"]) as channel:
        similar = task_service_pb2_grpc.TaskServiceStub(channel).FindSimilarTasks(
            pb.FindSimilarTasksRequest(task=task_pb2.TaskKey(label_names=TARGET)), timeout=30
        )
    best = [a for t in similar.tasks for a in t.best_attempts]
    assert best and all(a.provenance == attempt_pb2.PROVENANCE_TRAINED for a in best)
    assert not any(a.name.startswith("fake-") for a in best)

    # Mallory's own claims count for mallory, and say whose they are.
    own = _suggest(gateway, history["mallory"])
    assert own.command.optimizer["lr"] == pytest.approx(POISON)
    assert own.sources[0].provenance == attempt_pb2.PROVENANCE_IMPORTED
    assert own.sources[0].owner == history["name:mallory"]
    assert f"imported by {history['name:mallory']}" in own.reason


def test_a_trusted_owners_imports_count_for_everyone(
    gateway: GatewayThread, history: dict[str, str]
) -> None:
    mallory = history["name:mallory"]
    _import(gateway, history["mallory"], _fake_perfect("claimed"))
    assert _suggest(gateway, history["reader"]).command.optimizer["lr"] == pytest.approx(0.003)
    config = GatewayConfig(
        listen="127.0.0.1:0", database_url=gateway.database_url, trusted_owners=(mallory,)
    )
    trusting = GatewayThread(gateway.database_url, config).start()
    try:
        response = _suggest(trusting, history["reader"])
    finally:
        trusting.stop()
    assert response.command.optimizer["lr"] == pytest.approx(POISON)
    assert sorted(response.trusted_owners) == sorted([history["name:reader"], mallory])
    assert response.sources[0].owner == mallory


def test_admins_imports_count_for_everyone(gateway: GatewayThread, history: dict[str, str]) -> None:
    # The admin decides whom to trust, and imports the example history.
    _import(gateway, "admin", _fake_perfect("by-admin", 3))
    response = _suggest(gateway, history["reader"])
    assert response.command.optimizer["lr"] == pytest.approx(POISON)
    assert response.sources[0].provenance == attempt_pb2.PROVENANCE_IMPORTED


def test_provenance_follows_the_document(gateway: GatewayThread) -> None:
    upload_labels(gateway, ["cat", "dog"])
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        made = stub.CreateAttempt(apb.CreateAttemptRequest(attempt=make_attempt("made"))).attempt
        assert made.provenance == attempt_pb2.PROVENANCE_TRAINED
        (imported,) = stub.ImportAttempts(
            apb.ImportAttemptsRequest(attempts=[_run("brought", ("cat", "dog"), 0.01, 0.7)])
        ).attempts
        assert imported.provenance == attempt_pb2.PROVENANCE_IMPORTED and imported.imported

        def column() -> dict[str, str]:
            with psycopg.connect(gateway.database_url) as conn:
                return dict(conn.execute("SELECT name, provenance FROM attempts").fetchall())

        assert column() == {"made": "TRAINED", "brought": "IMPORTED"}
        # Training it again here makes it evidence: the claim is gone with its history.
        command = make_attempt("brought").training_commands
        stub.Train(apb.TrainRequest(name="brought", command=command))
        got = stub.GetAttempt(apb.GetAttemptRequest(name="brought")).attempt
        assert got.provenance == attempt_pb2.PROVENANCE_TRAINED and not got.imported
        assert column()["brought"] == "TRAINED"
        # A client cannot claim a provenance: the field is output only.
        forged = make_attempt("forged")
        forged.provenance = attempt_pb2.PROVENANCE_TRAINED
        (stored,) = stub.ImportAttempts(apb.ImportAttemptsRequest(attempts=[forged])).attempts
        assert stored.provenance == attempt_pb2.PROVENANCE_IMPORTED


def test_trusted_owners_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALEARN_TRUSTED_OWNERS", " lab-b, lab-a,,lab-b ")
    assert GatewayConfig.from_args(None, None, None).trusted_owners == ("lab-a", "lab-b")
    flagged = GatewayConfig.from_args(None, None, None, trusted_owners=["x"])
    assert flagged.trusted_owners == ("x",)


def _warm_study(gateway: GatewayThread, token: str, name: str) -> Any:
    """A study on digits 4/6 over the learning rate, warm-started from the one most
    similar task with one zero-shot trial; waits for its first trial."""
    import time

    from metalearn.v1 import study_service_pb2 as spb
    from metalearn.v1 import study_service_pb2_grpc

    base = make_attempt(name, TARGET).training_commands
    study = spb.Study(name=name, base_command=base, n_trials=2, max_parallel=1, seed=3)
    study.search_space.append(
        json_format.ParseDict(
            {"path": "optimizer.lr", "float": {"low": 1e-4, "high": 3e-2, "log": True}},
            spb.SearchParameter(),
        )
    )
    study.warm_start.similar_tasks = 1
    study.warm_start.zero_shot_trials = 1
    with gateway.channel(token) as channel:
        stub = study_service_pb2_grpc.StudyServiceStub(channel)
        stub.CreateStudy(spb.CreateStudyRequest(study=study))
        deadline = time.monotonic() + 30
        while True:
            got = stub.GetStudy(spb.GetStudyRequest(name=name)).study
            if got.trials or time.monotonic() > deadline:
                return got
            time.sleep(0.2)


def test_a_warm_start_draws_on_what_its_owner_may_trust(
    gateway: GatewayThread, history: dict[str, str]
) -> None:
    # Fakes inside the study's range, so only their provenance can keep them out.
    fakes = _fake_perfect("in-range", 5)
    for fake in fakes:
        fake.training_commands.optimizer["lr"] = 0.0299
    _import(gateway, history["mallory"], fakes)
    with psycopg.connect(gateway.database_url) as conn:
        ids = dict(conn.execute("SELECT name, id FROM attempts").fetchall())

    alices = _warm_study(gateway, history["alice"], "warm-alice")
    assert alices.warm_start_report.state == "ready", alices.warm_start_report
    first = alices.trials[0]
    assert first.params["optimizer.lr"] == pytest.approx(0.003)
    assert first.seeded_by_attempt_id == ids["honest-0.003"]

    # Mallory's study starts from mallory's own claims: they are hers to trust.
    mallorys = _warm_study(gateway, history["mallory"], "warm-mallory")
    assert mallorys.trials[0].params["optimizer.lr"] == pytest.approx(0.0299)
    assert mallorys.trials[0].seeded_by_attempt_id in {ids[f.name] for f in fakes}


def test_the_shared_distance_learns_from_no_callers_own_claims(gateway: GatewayThread) -> None:
    names = _names("dist")
    secrets = _tokens(gateway, names)
    tasks = [(f"d{i} a", f"d{i} b") for i in range(4)]
    upload_labels(gateway, sorted({label for t in (*tasks, TARGET) for label in t}))
    # Three commands on each of four tasks: 4 x 3 task pairs to fit the distance on.
    runs = [
        _run(f"claim-{i}-{lr}", labels, lr, acc + 0.01 * i)
        for i, labels in enumerate(tasks)
        for lr, acc in HONEST.items()
    ]
    _import(gateway, secrets["mallory"], runs)
    for i, labels in enumerate(tasks):
        _profile(gateway, labels, 0.3 * (i + 1))
    _profile(gateway, TARGET, 0.0)

    own = _suggest(gateway, secrets["mallory"])  # no distance kept yet: this fits one
    assert not own.fallback and own.sources[0].owner == names["mallory"]
    assert own.distance.pairs == 0  # the fit everyone shares ignored mallory's claims

    config = GatewayConfig(
        listen="127.0.0.1:0", database_url=gateway.database_url, trusted_owners=(names["mallory"],)
    )
    trusting = GatewayThread(gateway.database_url, config).start()
    try:
        with trusting.channel() as channel:
            fitted = task_service_pb2_grpc.TaskServiceStub(channel).FitTaskDistance(
                pb.FitTaskDistanceRequest()
            )
    finally:
        trusting.stop()
    assert fitted.distance.pairs == 12 and fitted.distance.tasks == 4


def test_callers_without_claims_of_their_own_share_what_is_read_for_everyone(
    gateway: GatewayThread, history: dict[str, str]
) -> None:
    """A ranking's first fit is a minute of reads and CPU at a million attempts: a caller
    whose own claims change nothing (most callers: they train here) reuses what was read
    and fitted for every caller; one with claims of its own reads, and fits, its own."""
    reader, alice, mallory = (history[f"name:{who}"] for who in ("reader", "alice", "mallory"))

    async def learned() -> tuple[dict[str, Known], bool]:
        async with psycopg_pool.AsyncConnectionPool(gateway.database_url, min_size=1) as pool:
            learner = Learner(TaskStore(pool), trusted_owners=("lab",))
            found = {who: await learner.known(who) for who in (reader, alice, mallory)}
            ranked = [await learner.transfer(found[who], False) for who in (reader, alice)]
            return found, ranked[0] is ranked[1]

    before, shared = gateway.run(learned())
    assert shared  # one ranking fitted for both callers
    for who in (reader, alice, mallory):
        assert before[who].counted == ("lab",)
        assert before[who].trusted == tuple(sorted(("lab", who)))  # what the answer shows
        assert before[who].history == before[reader].history

    _import(gateway, history["mallory"], _fake_perfect("own", 3))
    after, _ = gateway.run(learned())
    assert after[mallory].counted == tuple(sorted(("lab", mallory)))
    assert {h for h in after[mallory].history} == {h for h in after[reader].history}
    assert after[mallory].history != after[reader].history  # her claims count for her
    assert after[reader].counted == ("lab",)
    assert after[reader].history == before[reader].history  # and for no one else


def test_the_shared_ranking_is_fitted_before_the_first_caller_asks(
    gateway: GatewayThread,
) -> None:
    """What the gateway runs beside the server (`KeptRankings`) fits the ranking every
    caller without claims of its own shares, once enough past tasks have runs."""
    names = _names("kept")
    secrets = _tokens(gateway, names)
    tasks = [(f"k{i} a", f"k{i} b") for i in range(transfer.MIN_TASKS + 1)]
    upload_labels(gateway, sorted({label for t in tasks for label in t}))
    few = [_run(f"few-{lr}", tasks[0], lr, acc) for lr, acc in HONEST.items()]
    _import(gateway, secrets["alice"], few)
    _as_trained_here(gateway.database_url, [r.name for r in few])
    for i, labels in enumerate(tasks):
        _profile(gateway, labels, 0.1 * i)

    async def kept() -> tuple[list[bool], bool]:
        async with psycopg_pool.AsyncConnectionPool(gateway.database_url, min_size=1) as pool:
            learner = Learner(TaskStore(pool))
            kinds = await KeptRankings(learner).once()
            if not kinds:
                return kinds, False
            fitted = await learner.transfer(await learner.known(), False)
            asked = await learner.transfer(await learner.known(names["reader"]), False)
            return kinds, asked is fitted

    assert gateway.run(kept()) == ([], False)  # one task with runs: nothing to rank from
    runs = [
        _run(f"more-{i}-{lr}", labels, lr, acc + 0.01 * i)
        for i, labels in enumerate(tasks[1:])
        for lr, acc in HONEST.items()
    ]
    _import(gateway, secrets["alice"], runs)
    _as_trained_here(gateway.database_url, [r.name for r in runs])
    assert gateway.run(kept()) == ([False], True)


def test_many_claimants_never_push_out_what_every_caller_shares(
    gateway: GatewayThread, history: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers cycling through tokens with a claim each fill the learner's per-claimant
    readings and rankings; what every caller shares stays (else everyone's next call
    would read and fit again: a minute at a million attempts)."""
    monkeypatch.setattr(learner_module, "MAX_KEPT_CLAIMANTS", 2)
    claimants = [f"claimant-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    for i, name in enumerate(claimants):
        _import(gateway, gateway.make_token(name, "writer"), _fake_perfect(f"c{i}", 2))

    async def shared_stays() -> bool:
        async with psycopg_pool.AsyncConnectionPool(gateway.database_url, min_size=1) as pool:
            learner = Learner(TaskStore(pool))
            reader = history["name:reader"]
            shared = await learner.transfer(await learner.known(reader), False)
            for name in claimants:
                known = await learner.known(name)
                assert known.counted == (name,)
                assert await learner.transfer(known, False) is not shared
            return await learner.transfer(await learner.known(reader), False) is shared

    assert gateway.run(shared_stays())


def test_own_claims_are_runs_counted_only_for_their_owner_or_tasks_of_its_own(
    gateway: GatewayThread, history: dict[str, str]
) -> None:
    """`TaskStore.own_claims`: what makes a caller's reads differ from everyone's."""
    mallory, reader = history["name:mallory"], history["name:reader"]
    sampler = f"sampler-{uuid.uuid4().hex[:6]}"

    async def claims(*who: str, trusted: tuple[str, ...] = ()) -> list[bool]:
        async with psycopg_pool.AsyncConnectionPool(gateway.database_url, min_size=1) as pool:
            tasks = TaskStore(pool)
            return [await tasks.own_claims(name, trusted) for name in who]

    assert gateway.run(claims(mallory, reader, sampler, "admin")) == [False] * 4
    _import(gateway, history["mallory"], _fake_perfect("mine", 1))
    _import(gateway, "admin", _fake_perfect("admins", 1))
    with psycopg.connect(gateway.database_url) as conn:  # a sample it sent, profiled
        conn.execute(
            "INSERT INTO tasks (fingerprint, key, label_names, image_ops, state, source, owner,"
            " sample) VALUES (%s, %s, '[\"a\", \"b\"]', '[]', 'READY', 'SAMPLE', %s, '\\x00')",
            (uuid.uuid4().hex, f"sample {sampler}", sampler),
        )
    assert gateway.run(claims(mallory, reader, sampler, "admin")) == [True, False, True, False]
    # A trusted owner's claims count for everyone already.
    assert gateway.run(claims(mallory, trusted=(mallory,))) == [False]
