"""Issue 25, finding 8 and provenance: the curve model fits on any store, however odd its
runs, and writes no NaN (FitCurveModel once failed with "refused by the database" on a
NaN quality figure, and so did every background refit); and it learns from evidence
(runs trained here, admins' and trusted owners' imports), not from any writer's claims.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import grpc
import numpy as np
import psycopg
import pytest
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from gateway.config import GatewayConfig
from gateway.store import open_pool
from gateway.store.curves import CurveStore
from learning.curves import features, model, rules
from metalearn.v1 import attempt_pb2
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import curve_service_pb2 as cpb
from tests.harness import GatewayThread
from tests.test_curves import _attempt, _made_up, _stubs

NAN, INF = math.nan, math.inf


@pytest.fixture(autouse=True)
def _one_thread():
    """Fits here as the gateway makes them (gateway.curves.live._fit): OpenMP's threads
    on a busy machine make a second's fit take a minute."""
    with threadpool_limits(limits=1):
        yield


def _short(runs: list[features.Run], n: int) -> list[features.Run]:
    return [features.Run(r.points[:n], n, r.n_labels, r.learning_rate, "SGD", 32) for r in runs]


def test_a_figure_nothing_measured_is_left_out_not_nan() -> None:
    # No run reaches epoch 3 beyond its last: nothing to quote at epoch 3.
    runs, tasks = _made_up()
    quality = model.assess(_short(runs, 3), tasks)
    assert math.isnan(quality.mae_at_k)  # the finding's figure
    stored = quality.as_dict()
    assert "mae_at_k" not in stored and "mae" in stored
    json.dumps(stored, allow_nan=False)  # what PostgreSQL's JSON takes


def test_runs_too_short_to_learn_from_are_too_little_data_not_a_crash() -> None:
    runs, tasks = _made_up()
    with pytest.raises(model.TooLittleData, match="of 0 task"):
        model.fit(_short(runs, 1), tasks)  # was scikit-learn's ValueError: INTERNAL


def test_odd_numbers_make_finite_features_and_predictions() -> None:
    huge = features.Run(
        [
            rules.Point(1, 1e300, -1e300, 42.0),  # a store from before imports were checked
            rules.Point(2, NAN, INF, NAN),
            rules.Point(3, -1e300, 1e300, 0.5),
        ],
        6,
        10,
        INF,
        "SGD",
        32,
    )
    for k in (1, 2, 3):
        found = np.asarray(features.row(huge, k))
        assert not np.isinf(found).any() and np.nanmax(np.abs(found)) <= 1e6
    assert features.row(huge, 1)[features.NAMES.index("va_last")] != 42.0
    runs, tasks = _made_up()
    fitted = model.fit(runs + [huge] * 3, tasks + ["odd"] * 3)
    predicted = fitted.predict(huge, 3)
    assert predicted is not None and all(math.isfinite(x) for x in vars(predicted).values())
    assert fitted.predict(huge, 1) is None  # 42 is no accuracy to predict from


def _odd_store() -> list[attempt_pb2.Attempt]:
    """A store shaped like the one that failed: imports of 3 epochs or fewer (nothing at
    epoch 3 to quote), losses that diverged (NaN, inf) or are huge, a task with a single
    run and runs of one epoch."""
    runs, tasks = _made_up()
    found = []
    for i, (run, task) in enumerate(zip(runs, tasks, strict=True)):
        points = list(run.points[: 1 + i % 3])
        if i % 7 == 0:
            points[-1] = rules.Point(points[-1].epoch, NAN, INF, points[-1].val_accuracy)
        if i % 11 == 0:
            points[0] = rules.Point(1, 1e300, -1e300, points[0].val_accuracy)
        short = features.Run(points, len(points), run.n_labels, run.learning_rate, "SGD", 32)
        found.append(_attempt(f"{task}{i}", short))
    lonely = features.Run(runs[0].points[:3], 3, 7, 0.01, "Adam", 16)
    found.append(_attempt("z-lonely", lonely))  # its own 7 labels: a task of one run
    return found


def _no_nan(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        bad = conn.execute(
            "SELECT (SELECT count(*) FROM curve_models WHERE quality::text ~ 'NaN|Infinity'),"
            " (SELECT count(*) FROM attempts WHERE prognosis::text ~ 'NaN|Infinity')"
        ).fetchone()
    assert bad == (0, 0)


def test_a_fit_on_a_store_of_odd_runs_succeeds_and_writes_no_nan(gateway: GatewayThread) -> None:
    with gateway.channel() as ch:
        attempts, curves = _stubs(ch)
        attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=_odd_store()))
        # And what a store from before the checks may hold, written past them.
        with psycopg.connect(gateway.database_url) as conn:
            conn.execute(
                "UPDATE attempt_epochs SET val_accuracy = 42 WHERE epoch = 2 AND attempt_id IN"
                " (SELECT id FROM attempts WHERE name LIKE 'a%')"
            )
            conn.execute(
                "UPDATE attempt_epochs SET val_accuracy = 'NaN' WHERE epoch = 1 AND"
                " attempt_id IN (SELECT id FROM attempts WHERE name LIKE 'b%')"
            )
        fitted = curves.FitCurveModel(cpb.FitCurveModelRequest()).model
        assert fitted.attempts >= 30 and fitted.tasks >= 2
        # Nothing at epoch 3 to quote: said as NaN on the wire (proto3 has no "absent"
        # for a double), kept out of the stored JSON.
        assert math.isnan(fitted.quality.mae_at_3) and math.isfinite(fitted.quality.mae)
        _no_nan(gateway.database_url)
        # The background refit takes the same path: it succeeds too.
        assert gateway.run(gateway.background.curves._fit_now()).version > fitted.version
        _no_nan(gateway.database_url)


def _writer(gateway: GatewayThread) -> tuple[str, str]:
    name = f"claimer-{uuid.uuid4().hex[:8]}"
    return name, gateway.make_token(name, "writer")


def test_the_model_learns_from_evidence_not_from_another_writers_claims(
    gateway: GatewayThread,
) -> None:
    name, token = _writer(gateway)
    with gateway.channel(token) as ch:
        attempts, _ = _stubs(ch)
        attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=_fake_history()))
    with gateway.channel() as ch:  # the admin, who may fit
        _, curves = _stubs(ch)
        with pytest.raises(grpc.RpcError) as err:
            curves.FitCurveModel(cpb.FitCurveModelRequest())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "the store has 0 on 0" in err.value.details()
    # A gateway whose admin trusts that writer learns from her imports.
    config = GatewayConfig(
        listen="127.0.0.1:0", database_url=gateway.database_url, trusted_owners=(name,)
    )
    trusting = GatewayThread(gateway.database_url, config).start()
    try:
        with trusting.channel() as ch:
            _, curves = _stubs(ch)
            assert curves.FitCurveModel(cpb.FitCurveModelRequest()).model.attempts == 60
    finally:
        trusting.stop()


def _fake_history() -> list[attempt_pb2.Attempt]:
    runs, tasks = _made_up()
    return [_attempt(f"fake-{t}{i}", r) for i, (r, t) in enumerate(zip(runs, tasks, strict=True))]


def test_a_tasks_best_is_evidence_or_the_runs_own_owners(gateway: GatewayThread) -> None:
    """The prognosis holds a run to half its task's best: a writer's fake perfect import
    on a task must not make everyone's real runs there look hopeless."""
    runs, _ = _made_up(1)
    real = features.Run(runs[0].points, len(runs[0].points), runs[0].n_labels, 0.01, "SGD", 32)
    perfect = features.Run(
        [rules.Point(p.epoch, p.loss, p.val_loss, 1.0) for p in real.points],
        real.n_epoch,
        real.n_labels,
        0.01,
        "SGD",
        32,
    )
    name, token = _writer(gateway)
    with gateway.channel(token) as ch:
        attempts, _ = _stubs(ch)
        attempts.ImportAttempts(
            apb.ImportAttemptsRequest(
                attempts=[_attempt("a-fake", perfect), _attempt("a-own", real)]
            )
        )
    with gateway.channel() as ch:
        attempts, _ = _stubs(ch)
        admins = [_attempt("a-other", real), _attempt("a-other-2", real)]
        attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=admins))
    with psycopg.connect(gateway.database_url) as conn:
        ids = dict(conn.execute("SELECT name, id FROM attempts").fetchall())

    async def bests(trusted: tuple[str, ...]) -> dict[str, float | None]:
        async with open_pool(gateway.database_url, 1, 2) as pool:
            store = CurveStore(pool, trusted)
            found = {}
            for who in ("a-other", "a-own"):
                row = await store.curve(ids[who])
                assert row is not None
                found[who] = row.task_best
            return found

    final = real.points[-1].val_accuracy
    # Another's run: the claim does not count (the admin's runs do: an admin decides
    # what is trusted anyway). The claimer's own run: her own claims are her bar.
    assert asyncio.run(bests(())) == {"a-other": final, "a-own": 1.0}
    assert asyncio.run(bests((name,)))["a-other"] == 1.0


@pytest.mark.slow  # builds stores of huge task keys: 7 s
def test_tasks_of_huge_keys_cost_the_assessment_no_more_than_small_ones() -> None:
    """Found by bench/hostile.py: a task's key holds every label (10,000 of 256
    characters at most), and the assessment made an array of the keys of every row,
    as wide as the longest key times every row: 20 GB of a 22 GB gateway before it was
    killed. Tasks are counted by small integers now (and the store sends a digest)."""
    import tracemalloc

    runs, small = _made_up()
    huge = [name * 500_000 for name in small]  # 500,000 characters a key
    tracemalloc.start()
    try:
        model.assess(runs, huge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 60 runs of 10 epochs: the old array alone was 540 rows x 2 MB = 1 GB. What an
    # assessment needs otherwise is a few MB; 100 MB leaves room for any library.
    assert peak < 100 * 1024 * 1024, peak


def test_a_fit_learns_from_every_task_not_only_the_busiest(gateway: GatewayThread) -> None:
    """Issue 30: a fit takes at most MAX_RUNS runs, one of each task, then another of
    each: a busy recent study cannot crowd an older task out of the sample."""
    runs, _ = _made_up(1)
    with gateway.channel() as ch:
        attempts, _ = _stubs(ch)
        older = [_attempt(f"b{i}", runs[0]) for i in range(2)]
        busy = [_attempt(f"a{i}", runs[0]) for i in range(6)]
        attempts.ImportAttempts(apb.ImportAttemptsRequest(attempts=older + busy))
    with psycopg.connect(gateway.database_url) as conn:
        names = {i: n for n, i in conn.execute("SELECT name, id FROM attempts").fetchall()}

    async def sample(limit: int) -> list[str]:
        async with open_pool(gateway.database_url, 1, 2) as pool:
            return [names[r.attempt_id] for r in await CurveStore(pool).finished(limit)]

    # The newest four runs would all be task a's: two of each task instead.
    four = asyncio.run(sample(4))
    assert sorted(n[0] for n in four) == ["a", "a", "b", "b"], four
    assert asyncio.run(sample(4)) == four  # the same sample every time
    assert len(asyncio.run(sample(100))) == 8
