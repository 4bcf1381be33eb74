"""metalearn's learned pruner for any Optuna study (its storage metalearn's or not).

    pruner = metalearn.optuna.LearnedPruner(n_epoch=20, n_labels=10)
    study = optuna.create_study(direction="maximize", pruner=pruner, ...)

    def objective(trial):
        ...
        for epoch in range(1, 21):
            accuracy = train_one_epoch_and_validate()
            pruner.report(trial, epoch, accuracy, loss=train_loss)  # or trial.report
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

The gateway's curve model (fitted on every finished run it holds) forecasts where the
trial's validation accuracy will end, from its curve so far, its learning rate,
optimizer and batch size (read from the trial's parameters by their usual names), its
task's profile when `task_fingerprint` names one, and what chance is on its validation
split (`validation_images_per_label`: the largest class's share; 1/n_labels when not
given); the trial is pruned when even the forecast's 99th percentile does not beat the
study's best (ForecastCurve, the same decision as a metalearn study's "learned" pruner).
The objective's value and its intermediate values must be validation accuracies, in
[0, 1], maximized.

A curve reported with `trial.report` alone is read from its accuracies (the model learnt
such curves too); `pruner.report` also gives the training loss, which the model reads
when every epoch has one. With no model fitted yet, or the gateway out of reach, trials
run on (a warning says why, once): a pruner must not fail the study it serves.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import grpc
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState

from metalearn.credentials import find_token, open_channel
from metalearn.optuna.channel import gateway_address, gateway_tls
from metalearn.tls import ClientTls
from metalearn.v1 import curve_service_pb2 as cpb
from metalearn.v1 import curve_service_pb2_grpc as cpb_grpc

log = logging.getLogger(__name__)

# The trial parameters each of the model's inputs is looked for under, in order.
PARAM_NAMES: Mapping[str, Sequence[str]] = {
    "learning_rate": ("lr", "learning_rate", "learning-rate"),
    "optimizer": ("optimizer", "optimizer_name"),
    "batch_size": ("batch_size", "batch-size", "batch"),
    "momentum": ("momentum",),
}
# The system attribute that says why a trial was pruned.
REASON_KEY = "metalearn.pruned"
_TIMEOUT_SECONDS = 10.0
# Losses kept for this many trials (a long study's earliest are long finished).
_KEPT_TRIALS = 1024
_OUT_OF_REACH = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class LearnedPruner(BasePruner):
    """Prune a trial when metalearn's curve model says it will not beat the study's best.

    `n_epoch`: the epochs (reported steps) a trial that is not pruned runs; `n_labels`:
    the classes of the task. `gateway`, `token`, `tls` as `metalearn.optuna.Storage`
    takes them. `params` maps an input (learning_rate, optimizer, batch_size, momentum)
    to the trial parameter that holds it, where PARAM_NAMES' usual names do not.
    `min_epoch`, `n_startup_trials`, `margin`: as a metalearn study's learned pruner
    (prune from epoch min_epoch, once that many trials finished, when the ceiling +
    margin <= the best).
    """

    def __init__(
        self,
        n_epoch: int,
        n_labels: int,
        *,
        gateway: str | None = None,
        token: str | None = None,
        tls: ClientTls | None = None,
        task_fingerprint: str = "",
        params: Mapping[str, str] | None = None,
        min_epoch: int = 2,
        n_startup_trials: int = 1,
        margin: float = 0.0,
        validation_images_per_label: Sequence[int] = (),
    ) -> None:
        if n_epoch < 1 or n_labels < 2:
            raise ValueError("n_epoch must be at least 1 and n_labels at least 2")
        if validation_images_per_label and len(validation_images_per_label) != n_labels:
            raise ValueError("validation_images_per_label: one count per class (n_labels)")
        unknown = set(params or {}) - set(PARAM_NAMES)
        if unknown:
            raise ValueError(f"params: unknown inputs {sorted(unknown)} (of {list(PARAM_NAMES)})")
        self._address = gateway_address(gateway)
        self._channel = open_channel(self._address, find_token(token), gateway_tls(tls))
        self._stub = cpb_grpc.CurveServiceStub(self._channel)
        self._n_epoch = n_epoch
        self._n_labels = n_labels
        self._task = task_fingerprint
        self._params = {k: (params[k],) if params and k in params else v
                        for k, v in PARAM_NAMES.items()}  # fmt: skip
        self._min_epoch = min_epoch
        self._n_startup_trials = n_startup_trials
        self._margin = margin
        # The validation split's images per class: chance is the largest's share.
        self._class_counts = [int(c) for c in validation_images_per_label]
        self._lock = threading.Lock()
        # trial number -> step -> (loss, val_loss), from `report`.
        self._losses: OrderedDict[int, dict[int, tuple[float, float | None]]] = OrderedDict()
        self._warned: set[str] = set()

    def report(
        self,
        trial: Trial,
        step: int,
        val_accuracy: float,
        *,
        loss: float | None = None,
        val_loss: float | None = None,
    ) -> None:
        """`trial.report(val_accuracy, step)`, keeping the epoch's losses for the
        forecast (in this process: the trial is pruned where it runs)."""
        trial.report(val_accuracy, step)
        if loss is None:
            return
        with self._lock:
            kept = self._losses.setdefault(trial.number, {})
            self._losses.move_to_end(trial.number)
            kept[step] = (float(loss), None if val_loss is None else float(val_loss))
            while len(self._losses) > _KEPT_TRIALS:
                self._losses.popitem(last=False)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if study._is_multi_objective() or study.direction != StudyDirection.MAXIMIZE:
            raise ValueError(
                "the learned pruner forecasts a validation accuracy: a study of one "
                "objective, maximized, whose values are accuracies in [0, 1]"
            )
        steps = sorted(trial.intermediate_values)
        if not steps or len(steps) >= self._n_epoch or len(steps) < self._min_epoch:
            return False
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        values = [t.value for t in finished if t.value is not None]
        if len(values) < self._n_startup_trials or not values:
            return False
        request = self._request(trial, steps, max(values), len(values))
        try:
            reply = self._stub.ForecastCurve(request, timeout=_TIMEOUT_SECONDS)
        except grpc.RpcError as err:
            call: grpc.Call = err  # type: ignore[assignment]
            if call.code() not in _OUT_OF_REACH:
                raise
            self._warn_once("reach", f"metalearn gateway {self._address} out of reach "
                            f"({call.code().name}): trials are not pruned")  # fmt: skip
            return False
        if not reply.predicted and reply.note:
            self._warn_once(reply.note, f"the learned pruner does not prune: {reply.note}")
        if reply.prune:
            study._storage.set_trial_system_attr(trial._trial_id, REASON_KEY, reply.prune_reason)
        return reply.prune

    def _request(
        self, trial: FrozenTrial, steps: list[int], best: float, finished: int
    ) -> cpb.ForecastCurveRequest:
        accuracies = [trial.intermediate_values[s] for s in steps]
        if not all(0.0 <= a <= 1.0 for a in [*accuracies, best]):
            raise ValueError(
                "the learned pruner reads validation accuracies in [0, 1]: report them "
                f"(trial {trial.number} reported {accuracies[-1]}; the best value is {best})"
            )
        with self._lock:
            losses = dict(self._losses.get(trial.number, {}))
        request = cpb.ForecastCurveRequest(
            n_epoch=self._n_epoch,
            n_labels=self._n_labels,
            task_fingerprint=self._task,
            best=best,
            finished=finished,
            min_epoch=self._min_epoch,
            n_startup_trials=self._n_startup_trials,
            margin=self._margin,
            validation_images_per_label=self._class_counts,
        )
        every = all(s in losses and math.isfinite(losses[s][0]) for s in steps)
        for s, accuracy in zip(steps, accuracies, strict=True):
            point = request.epochs.add(val_accuracy=accuracy)
            if every:
                point.loss = losses[s][0]
                val_loss = losses[s][1]
                if val_loss is not None and math.isfinite(val_loss):
                    point.val_loss = val_loss
        found = self._param(trial, "learning_rate")
        if isinstance(found, int | float) and not isinstance(found, bool) and found > 0:
            request.learning_rate = float(found)
        found = self._param(trial, "momentum")
        if isinstance(found, int | float) and not isinstance(found, bool) and 0 <= found <= 1:
            request.momentum = float(found)
        found = self._param(trial, "batch_size")
        if isinstance(found, int) and not isinstance(found, bool) and found > 0:
            request.batch_size = found
        found = self._param(trial, "optimizer")
        if isinstance(found, str):
            request.optimizer = found[:64]
        return request

    def _param(self, trial: FrozenTrial, name: str) -> object:
        for key in self._params[name]:
            if key in trial.params:
                return trial.params[key]
        return None

    def _warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message)

    def close(self) -> None:
        self._channel.close()
