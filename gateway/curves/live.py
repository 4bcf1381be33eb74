"""The gateway's side of curves: a prognosis after every stored epoch, the learned
pruner's decisions, and the curve model's fits (on request, and in the background when
enough new runs have finished).

One per gateway. Replicas share the model through the store: each loads the newest
version when it appears (checked every few seconds, not per epoch).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from gateway.store.curves import CurveRow, CurveStore, ModelRow
from learning import provenance
from learning.curves import chance, rules
from learning.curves import model as curve_model
from learning.curves.features import Run
from learning.curves.prognosis import Assessment, assess
from learning.curves.pruner import LearnedPruner, ceiling
from metalearn import errors
from metalearn.v1 import attempt_pb2, curve_service_pb2

log = logging.getLogger(__name__)

# How often a replica looks for a newer model version (besides being told of each fit:
# see `forget`), and for enough new runs to refit.
_RECHECK_SECONDS = 5.0
REFIT_CHECK_SECONDS = 30.0
# Refit once this many runs finished since the last fit (or a quarter more, if larger).
REFIT_NEW_RUNS = 20
# Attempts from before prognoses given one per batch.
_BACKFILL = 200
_BACKFILL_BATCHES = 50

_KINDS = {
    "NON_FINITE": attempt_pb2.CURVE_FLAG_KIND_NON_FINITE,
    "AT_CHANCE": attempt_pb2.CURVE_FLAG_KIND_AT_CHANCE,
    "DIVERGING": attempt_pb2.CURVE_FLAG_KIND_DIVERGING,
    "OVERFITTING": attempt_pb2.CURVE_FLAG_KIND_OVERFITTING,
}


def _number(x: Any, default: float = math.nan) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else default


def _counts(values: Any) -> list[int]:
    """A repeated int64 as proto JSON writes it (strings), or [] when it is not one."""
    if not isinstance(values, list):
        return []
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return []


def chance_of(dataset: Mapping[str, Any], n_labels: int) -> chance.Chance:
    """What learning nothing scores on a run's data, from the DatasetFingerprint its
    trainer reported (as JSON; {}: not reported, even classes)."""
    return chance.of(
        n_labels,
        _counts(dataset.get("validation_images_per_label")),
        _counts(dataset.get("images_per_label")),
    )


def run_of(
    command: Mapping[str, Any],
    n_epoch: int,
    points: list[rules.Point],
    profile: Mapping[str, float],
    learning_rate: float = math.nan,
    dataset: Mapping[str, Any] | None = None,
) -> Run:
    """A run as the model reads it, from a command as documents hold it (JSON), and the
    data its trainer reported training on."""
    optimizer = command.get("optimizer") or {}
    labels = command.get("label_names") or []
    n_labels = int(_number(command.get("n_labels"), 0)) or len(labels)
    lr = _number(optimizer.get("lr"), learning_rate)
    return Run(
        points=points,
        n_epoch=n_epoch or int(_number(command.get("n_epoch"), 0)) or len(points),
        n_labels=n_labels,
        learning_rate=lr,
        optimizer=str(optimizer.get("name") or ""),
        batch_size=int(_number(command.get("batch_size"), 0)),
        momentum=_number(optimizer.get("momentum"), 0.0),
        profile={k: float(v) for k, v in profile.items() if isinstance(v, int | float)},
        chance=chance_of(dataset or {}, n_labels),
    )


def points_of(epochs: Iterable[tuple[int, float, float, float]]) -> list[rules.Point]:
    """(epoch, loss, val_loss, val_accuracy) rows as the rules read them; a run without a
    validation split stores 0 and 0 for its validation metrics, which mean "not measured"
    here."""
    found = []
    for epoch, loss, val_loss, val_accuracy in epochs:
        measured = not (val_loss == 0 and val_accuracy == 0)
        found.append(
            rules.Point(
                epoch,
                loss,
                val_loss if measured else math.nan,
                val_accuracy if measured else math.nan,
            )
        )
    return found


def run_of_row(row: CurveRow) -> Run:
    rates = [x for x in row.learning_rates if x > 0]
    epochs = zip(row.epochs, row.losses, row.val_losses, row.val_accuracies, strict=True)
    return run_of(row.command, row.n_epoch, points_of(epochs), row.features,
                  rates[0] if rates else math.nan, row.dataset)  # fmt: skip


def _assess_all(rows: Sequence[CurveRow], loaded: Loaded | None) -> list[tuple[Assessment, bool]]:
    """Each row's assessment, as `Curves.update` makes it (in one thread for a batch),
    and whether its run has reached its last epoch."""
    found = []
    for row in rows:
        run = run_of_row(row)
        below = _number(row.command.get("hopeless_below"), 0.0)
        ended = len(run.points) >= run.n_epoch
        predictor = loaded.model if loaded is not None and not ended else None
        assessment = assess(run, len(run.points), predictor, row.task_best, below=below)
        found.append((assessment, ended))
    return found


def as_proto(found: Assessment, version: int, note: str) -> attempt_pb2.Prognosis:
    p = attempt_pb2.Prognosis(
        epoch=found.epoch,
        hopeless=found.hopeless,
        hopeless_reason=found.reason,
        model_version=version if found.prediction is not None else 0,
    )
    for flag in found.flags:
        p.flags.add(kind=_KINDS[flag.kind], since_epoch=flag.since_epoch, detail=flag.detail)
    if found.prediction is not None:
        p.predicted = True
        p.final_val_accuracy = found.prediction.median
        p.final_val_accuracy_low = found.prediction.low
        p.final_val_accuracy_high = found.prediction.high
    else:
        p.note = note
    return p


def filter_form(p: attempt_pb2.Prognosis) -> dict[str, Any]:
    """What ListAttempts filters read (migration 0011 names the keys)."""
    doc: dict[str, Any] = {
        "epoch": p.epoch,
        "flags": [
            attempt_pb2.CurveFlagKind.Name(f.kind).removeprefix("CURVE_FLAG_KIND_") for f in p.flags
        ],
        "hopeless": p.hopeless,
    }
    if p.predicted:
        doc["final_val_accuracy"] = p.final_val_accuracy
        doc["final_val_accuracy_low"] = p.final_val_accuracy_low
        doc["final_val_accuracy_high"] = p.final_val_accuracy_high
    return doc


def of_history(
    epochs: list[tuple[int, float, float, float]],
    command: Mapping[str, Any],
    dataset: Mapping[str, Any] | None = None,
) -> attempt_pb2.Prognosis:
    """The rules' prognosis of an imported run, from its (epoch, loss, val_loss,
    val_accuracy) rows: its end is recorded, so the model has nothing to predict. A
    prototype document has only training losses (0 validation metrics: not measured)."""
    points = points_of(epochs)
    found = assess(run_of(command, len(points), points, {}, dataset=dataset), len(points), None)
    if all(math.isnan(p.val_accuracy) for p in points):
        return as_proto(found, 0, "the document records no validation accuracy to predict from")
    return as_proto(found, 0, "imported history: its end is recorded, nothing to predict")


def model_proto(row: ModelRow) -> curve_service_pb2.CurveModel:
    q = row.quality
    found = curve_service_pb2.CurveModel(
        version=row.version,
        attempts=row.attempts,
        tasks=row.tasks,
        seconds=row.seconds,
        quality=curve_service_pb2.CurveModelQuality(
            mae_at_3=q.get("mae_at_k", math.nan),
            baseline_mae_at_3=q.get("baseline_mae_at_k", math.nan),
            mae=q.get("mae", math.nan),
            baseline_mae=q.get("baseline_mae", math.nan),
            interval_coverage=q.get("coverage", math.nan),
            folds=int(q.get("folds", 0)),
        ),
    )
    found.fit_time.FromDatetime(row.fitted_at)
    return found


@dataclass(frozen=True)
class Loaded:
    row: ModelRow
    model: curve_model.CurveModel


class Curves:
    def __init__(self, store: CurveStore, claim_weight: float = 1.0) -> None:
        self._store = store
        self._claim_weight = claim_weight
        self._loaded: Loaded | None = None
        self._checked = -math.inf
        self._note = ""
        self._fit_lock = asyncio.Lock()
        # The finished-run count at the last fit attempt that found too little data.
        self._too_little_at: int | None = None
        self._too_little_why = ""  # what that fit said

    def forget(self) -> None:
        """A model was fitted (here or on another replica): the next use looks for it, so
        a trial pruned just after a fit is judged by that fit on every replica."""
        self._checked = -math.inf

    async def current(self) -> Loaded | None:
        """The newest fitted model (looked for at most every few seconds)."""
        now = time.monotonic()
        if now - self._checked < _RECHECK_SECONDS:
            return self._loaded
        self._checked = now
        version = await self._store.newest_version()
        if version is None:
            self._loaded = None
            finished = await self._store.count_finished()
            if finished == self._too_little_at:
                # A fit was tried on these runs: say what it found (runs without a
                # validation accuracy, or all on one task, count above but not there).
                self._note = f"no curve model fitted yet: {self._too_little_why}"
            else:
                self._note = (
                    f"no curve model fitted yet ({finished} finished"
                    f" {'run' if finished == 1 else 'runs'} in the store; it needs "
                    f"{curve_model.MIN_RUNS} with a validation accuracy on"
                    f" {curve_model.MIN_TASKS} tasks)"
                )
            return None
        if self._loaded is None or self._loaded.row.version != version:
            row = await self._store.newest_model()
            if row is None or row.model is None:
                return self._loaded
            found = await asyncio.to_thread(curve_model.CurveModel.loads, row.model)
            if found is None:
                self._note = "the stored curve model is from another version: refit it"
                self._loaded = None
                return None
            self._loaded = Loaded(row, found)
        return self._loaded

    async def update(self, attempt_id: int, fence: int | None) -> Assessment | None:
        """Makes and keeps the attempt's prognosis from what is stored; the assessment
        (None: the attempt is gone, has no epochs, or the lease moved on)."""
        return (await self.update_many([(attempt_id, fence)])).get(attempt_id)

    async def update_many(
        self, attempts: Sequence[tuple[int, int | None]]
    ) -> dict[int, Assessment]:
        """`update` for (attempt id, fence) pairs at once: one read of their curves, one
        thread for the assessments, one statement to keep them. The assessments kept."""
        rows = [r for r in await self._store.curves([a for a, _ in attempts]) if r.epochs]
        if not rows:
            return {}
        fences = dict(attempts)
        loaded = await self.current()
        # The model's predictions are a few milliseconds of CPU, after every epoch of
        # every run and for every attempt the backfill finds: off the event loop.
        found = await asyncio.to_thread(_assess_all, rows, loaded)
        made = []
        for row, (assessment, ended) in zip(rows, found, strict=True):
            note = self._note
            if ended:
                note = "its last epoch is in: nothing left to predict"
            elif loaded is not None and assessment.prediction is None:
                note = "this run measures no validation accuracy to predict from"
            proto = as_proto(assessment, loaded.row.version if loaded else 0, note)
            made.append((row.attempt_id, fences.get(row.attempt_id), proto.SerializeToString(),
                         filter_form(proto)))  # fmt: skip
        kept = await self._store.save_prognoses(made)
        return {row.attempt_id: a for row, (a, _) in zip(rows, found, strict=True)
                if row.attempt_id in kept}  # fmt: skip

    async def prune(
        self, attempt_id: int, pruner: LearnedPruner, best: float | None, finished: int
    ) -> str | None:
        """The learned pruner's decision for a study's running trial."""
        loaded = await self.current()
        if loaded is None:
            return None  # no model yet: trials run on (the prognosis says why)
        row = await self._store.curve(attempt_id)
        if row is None or not row.epochs:
            return None
        run = run_of_row(row)
        return pruner.decide(loaded.model, run, len(run.points), best, finished)

    async def forecast(
        self, run: Run, pruner: LearnedPruner, best: float | None, finished: int
    ) -> curve_service_pb2.ForecastCurveResponse:
        """The newest model's forecast for a curve the caller holds, and the learned
        pruner's verdict when `best` is given."""
        loaded = await self.current()
        if loaded is None:
            return curve_service_pb2.ForecastCurveResponse(note=self._note)
        k = len(run.points)
        # A few milliseconds of CPU: off the event loop, as every prediction here.
        found, why = await asyncio.to_thread(_forecast, loaded.model, run, pruner, best, finished)
        reply = curve_service_pb2.ForecastCurveResponse(model_version=loaded.row.version)
        if k >= run.n_epoch:
            reply.note = "its last epoch is in: nothing left to predict"
        elif found is None:
            reply.note = "the model could not predict from this curve"
        else:
            reply.predicted = True
            reply.final_val_accuracy = found.median
            reply.final_val_accuracy_low = found.low
            reply.final_val_accuracy_high = found.high
            reply.final_val_accuracy_ceiling = ceiling(found)
        if why is not None:
            reply.prune = True
            reply.prune_reason = why
        return reply

    async def fit(self) -> ModelRow:
        """Fits and stores a new version; FailedPrecondition with too little data. A
        version another replica fitted on the same runs while this call waited for it is
        the answer (no second fit of the same data)."""
        asked = dt.datetime.now(dt.UTC)
        async with self._fit_lock, self._store.fitting(wait=True):
            newest = await self._store.newest_model(with_model=False)
            if newest is not None and newest.fitted_at >= asked:
                finished = await self._store.count_finished()
                if int(newest.quality.get("finished_runs", -1)) == finished:
                    return newest
            return await self._fit_now()

    async def backfill(self, limit: int = 200) -> int:
        """Prognoses for attempts at rest that have epochs and none (stored before
        prognoses existed); how many were made."""
        made = 0
        for attempt_id in await self._store.without_prognosis(limit):
            made += await self.update(attempt_id, None) is not None
        return made

    async def _fit_now(self) -> ModelRow:
        finished = await self._store.count_finished()
        rows = await self._store.finished()
        runs = [
            dataclasses.replace(
                run_of_row(r), weight=provenance.weight(r.provenance, self._claim_weight)
            )
            for r in rows
        ]
        tasks = [r.task_key for r in rows]
        start = time.perf_counter()
        try:
            fitted, quality = await asyncio.to_thread(_fit, runs, tasks)
        except curve_model.TooLittleData as err:
            self._too_little_at, self._too_little_why = finished, str(err)
            raise errors.FailedPrecondition(str(err)) from None
        seconds = time.perf_counter() - start
        saved = await self._store.save_model(
            fitted.dumps(),
            fitted.runs,
            fitted.tasks,
            {**quality.as_dict(), "finished_runs": float(finished)},
            seconds,
        )
        self._checked = -math.inf  # load it at the next look
        log.info("curve model %s fitted on %s runs in %.1f s", saved.version, fitted.runs,
                 seconds)  # fmt: skip
        return saved

    async def newest(self) -> ModelRow:
        row = await self._store.newest_model(with_model=False)
        if row is None:
            await self.current()
            self._checked = -math.inf
            raise errors.NotFound(self._note or "no curve model fitted yet")
        return row

    async def refit_if_due(self) -> ModelRow | None:
        """Refits when enough runs finished since the last fit (or for the first time)."""
        # Decided and done under the locks FitCurveModel takes: this replica's, and the
        # store's (another replica fitting now is left to it).
        async with self._fit_lock, self._store.fitting(wait=False) as held:
            if not held or not await self._due():
                return None
            try:
                return await self._fit_now()
            except errors.FailedPrecondition:
                return None

    async def _due(self) -> bool:
        finished = await self._store.count_finished()
        newest = await self._store.newest_model(with_model=False)
        if newest is None:
            return finished >= curve_model.MIN_RUNS and finished != self._too_little_at
        before = int(newest.quality.get("finished_runs", newest.attempts))
        return finished - before >= max(REFIT_NEW_RUNS, before // 4)

    async def run(self) -> None:
        """The background refit loop (one per gateway)."""
        while True:
            try:
                await self.refit_if_due()
                # A full batch made: there may be more (a store from before prognoses).
                for _ in range(_BACKFILL_BATCHES):
                    if await self.backfill(_BACKFILL) < _BACKFILL:
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("curve model refit")
            await asyncio.sleep(REFIT_CHECK_SECONDS)


def _forecast(
    model: curve_model.CurveModel,
    run: Run,
    pruner: LearnedPruner,
    best: float | None,
    finished: int,
) -> tuple[curve_model.Prediction | None, str | None]:
    """The prediction after the curve's last epoch, and the pruner's reason (None: the
    trial goes on), as one thread's work."""
    k = len(run.points)
    with threadpool_limits(limits=1):
        found = model.predict(run, k) if k < run.n_epoch else None
    # The verdict reads the same prediction (one prediction a call).
    if best is None or not pruner.applies(run, k, finished):
        return found, None
    return found, pruner.verdict(found, best)


def _fit(runs: list[Run], tasks: list[str]) -> tuple[curve_model.CurveModel, curve_model.Quality]:
    # One thread: a fit must not take every core from the gateway's calls, and OpenMP
    # threads beside a busy event loop (and trainers) are slower than one.
    with threadpool_limits(limits=1):
        fitted = curve_model.fit(runs, tasks)
        return fitted, curve_model.assess(runs, tasks)
