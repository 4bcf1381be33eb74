"""PyTorch Lightning reporting its runs to metalearn (`pip install pytorch-lightning`).

    from metalearn.reporting.lightning import MetalearnCallback, MetalearnLogger

    logger = MetalearnLogger("digits-mlp", labels=[f"digit {d}" for d in range(10)], n_epoch=5)
    trainer = pl.Trainer(max_epochs=5, logger=logger, callbacks=[MetalearnCallback()])
    trainer.fit(model, train_loader, val_loader)
    print(logger.run.id)                       # the run's attempt id

Two parts, as Lightning splits them. `MetalearnLogger` is the run (`logger.run`). It
starts the run on first use, once training has begun, so that the model's
`save_hyperparameters()` become the run's params: the gateway takes them with the
start, and Lightning logs them only after asking for its loggers' `experiment` (which
therefore starts nothing, and is None until the run has started). Everything the model
`self.log`s reaches it as named metrics at Lightning's global step, and Lightning's end
of fit finishes the run (FINISHED, FAILED, or KILLED on Ctrl-C). `MetalearnCallback`
makes the epochs metalearn learns from: at each training epoch's end it reports epoch
`current_epoch + 1` with the mean training loss, the validation loss and accuracy, the
learning rate and the epoch's seconds; and it stops the Trainer (`trainer.should_stop`)
once metalearn asks (the run was cancelled, pruned, or is hopeless). The callback finds
the logger among the Trainer's loggers, so the two share one run without being wired
together.

`MetalearnLogger(..., test=True)` keeps the run open after `fit` for `trainer.test`:
its `test_acc` (or `test_accuracy`) and `test_loss` become the run's test result
(COMPLETE). Call `trainer.test` then, or the run lapses as lost.

Lightning is imported by this module only: `import metalearn` never needs it.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

try:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import Logger
    from pytorch_lightning.utilities import rank_zero_only
except ImportError as err:  # named here: the SDK itself never needs Lightning
    raise ImportError(
        "metalearn.reporting.lightning needs PyTorch Lightning: pip install pytorch-lightning"
    ) from err

import metalearn
from metalearn.reporting.run import Run

# Lightning's names for an epoch's metrics, and the names metalearn's epochs take; the
# first name found wins where several map to one.
TRAIN_METRICS = {"train_loss": "loss", "loss": "loss"}
VAL_METRICS = {"val_loss": "val_loss", "val_acc": "val_accuracy", "val_accuracy": "val_accuracy"}
# What `trainer.test` logs that becomes the run's test result (with `test=True`).
_TEST_ACCURACY = ("test_acc", "test_accuracy")
_TEST_LOSS = "test_loss"
# Lightning adds the epoch number to every metrics dict it logs; metalearn's epochs
# carry it already, so it is not kept as a metric of its own.
_LIGHTNING_EPOCH = "epoch"


def _json_like(value: Any) -> Any:
    """A hyperparameter as the run's params document holds it: JSON's values as they
    are, containers walked, anything else (a class, a tensor, a path) as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN or inf
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): _json_like(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_like(v) for v in value]
    return str(value)


class MetalearnLogger(Logger):
    """Reports a Lightning run to metalearn (see the module's docstring).

    `name`: the run's unique name (one is made when not given). `params`: parameters
    beside the model's hyperparameters. `test`: keep the run open for `trainer.test`.
    Everything else goes to `metalearn.start_run` (labels, dataset, n_epoch, tags,
    stop_when_hopeless, gateway, token, spool_dir...)."""

    def __init__(
        self,
        name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        test: bool = False,
        **start: Any,
    ) -> None:
        super().__init__()
        # Made here rather than by start_run: Lightning asks for `version` (checkpoint
        # folders, the progress bar) before the run needs to start.
        self._run_name = name or f"lightning-{uuid.uuid4().hex[:12]}"
        self._params: dict[str, Any] = dict(_json_like(dict(params or {})))
        self._start = start
        self._test = test
        self._test_result: dict[str, float] = {}
        self._run: Run | None = None
        self._finished = False
        self._dropped = False
        self._failure: BaseException | None = None

    @property
    def name(self) -> str:
        """Lightning's experiment name: checkpoints go to `metalearn/<run name>/`."""
        return "metalearn"

    @property
    def version(self) -> str:
        """The run's name (a string: Lightning uses it as the folder's name as it is)."""
        return self._run_name

    @property
    def experiment(self) -> Run | None:
        """The run once started (Lightning asks for it before it logs the hyperparameters,
        which the run needs at its start: `run` starts it)."""
        return self._run

    @property
    def run(self) -> Run:
        """The run, started on first use (with the hyperparameters logged until then)."""
        if self._run is None:
            self._run = metalearn.start_run(self._run_name, params=self._params, **self._start)
        return self._run

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        given = _json_like(params)
        if self._run is None:
            self._params.update(given)
        elif any(self._params.get(k) != v for k, v in given.items()):
            # The gateway takes a run's params with its start only.
            warnings.warn(
                f"metalearn: run {self._run_name!r} has started; hyperparameters logged"
                " since are not kept",
                stacklevel=2,
            )

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {k: v for k, v in metrics.items() if k != _LIGHTNING_EPOCH}
        for key in (*_TEST_ACCURACY, _TEST_LOSS):
            if key in values:
                self._test_result[key] = float(values[key])
        if self._finished:
            if not self._dropped:
                self._dropped = True
                warnings.warn(
                    f"metalearn: run {self._run_name!r} finished with fit; later metrics"
                    " are not kept (MetalearnLogger(test=True) keeps it open for test)",
                    stacklevel=2,
                )
            return
        if values:
            self.run.log(values, step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning's end of a stage: "success" (or "finished") finishes the run, "failed"
        fails it (KILLED when it was Ctrl-C), once."""
        if self._run is None or self._finished:
            return  # nothing was reported (it failed before training), or it has ended
        failure = self._failure
        if status in ("success", "finished"):
            tested = [self._test_result[k] for k in _TEST_ACCURACY if k in self._test_result]
            if self._test and not tested and not self._run.should_stop():
                return  # fit has ended; the run ends after `trainer.test`
            self._finished = True
            self._run.finish(
                test_accuracy=tested[0] if tested else None,
                test_loss=self._test_result.get(_TEST_LOSS),
            )
        elif status == "interrupted" or isinstance(failure, KeyboardInterrupt):
            self._finished = True
            self._run.finish("KILLED", error="interrupted")
        else:
            self._finished = True
            error = f"{type(failure).__name__}: {failure}" if failure else f"Lightning: {status}"
            self._run.finish("FAILED", error=error)


class MetalearnCallback(pl.Callback):
    """Reports each epoch to the Trainer's MetalearnLogger and stops the Trainer when
    metalearn asks (see the module's docstring).

    `train_metrics` / `val_metrics`: Lightning's names (what the model `self.log`s) to
    metalearn's (loss, val_loss, val_accuracy, or any other name, kept as a metric at
    step `epoch`), read when training and validation end. Log them with `on_epoch=True`
    so that they are the epoch's means."""

    def __init__(
        self,
        *,
        train_metrics: Mapping[str, str] = TRAIN_METRICS,
        val_metrics: Mapping[str, str] = VAL_METRICS,
    ) -> None:
        self._train_metrics = dict(train_metrics)
        self._val_metrics = dict(val_metrics)
        self._logger: MetalearnLogger | None = None
        self._started = 0.0
        self._lr: float | None = None
        # What was reported, by epoch (1, 2, ...), as metalearn's names have it.
        self.reported: dict[int, dict[str, float]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        found = [lg for lg in trainer.loggers if isinstance(lg, MetalearnLogger)]
        if len(found) != 1:
            raise ValueError(
                f"MetalearnCallback reports through one MetalearnLogger among the Trainer's"
                f" loggers; it has {len(found)}"
            )
        self._logger = found[0]

    def _run(self, trainer: pl.Trainer) -> Run | None:
        # Only the first process reports (Lightning's loggers do the same).
        return self._logger.run if self._logger and trainer.is_global_zero else None

    def _report(
        self, trainer: pl.Trainer, names: Mapping[str, str], known: dict[str, float]
    ) -> None:
        """Logs the current epoch's metrics found under `names` (besides `known`)."""
        run = self._run(trainer)
        if run is None or run.should_stop():
            return  # metalearn ended the run: nothing more is kept
        epoch = trainer.current_epoch + 1
        values = dict(known)
        for lightning_name, ours in names.items():
            if ours not in values and lightning_name in trainer.callback_metrics:
                values[ours] = float(trainer.callback_metrics[lightning_name])
        if "loss" in names.values() and "loss" not in values:
            raise ValueError(
                f"epoch {epoch}: none of {sorted(names)} in the Trainer's metrics: log the"
                " training loss (self.log('train_loss', loss, on_epoch=True))"
            )
        run.log(values, epoch=epoch)
        self.reported.setdefault(epoch, {}).update(values)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()
        groups = trainer.optimizers[0].param_groups if trainer.optimizers else []
        # The rate the epoch began with (an epoch's scheduler steps once it has ended).
        self._lr = float(groups[0]["lr"]) if groups and "lr" in groups[0] else None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Read here, not at the training epoch's end: the Trainer's metrics keep the last
        # validation's values through epochs without one.
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._report(trainer, self._val_metrics, {})

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        # A stop is heard within a batch where one process trains; several processes
        # agree on it once an epoch, below (a collective call each batch would slow them).
        run = self._run(trainer)
        if trainer.world_size == 1 and run is not None and run.should_stop():
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        known = {"seconds": time.monotonic() - self._started}
        if self._lr is not None:
            known["learning_rate"] = self._lr
        self._report(trainer, self._train_metrics, known)
        run = self._run(trainer)
        stop = run is not None and run.should_stop()
        if trainer.strategy.reduce_boolean_decision(stop, all=False):
            trainer.should_stop = True

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # Lightning's logger hears only "failed": the error (or Ctrl-C) is told here.
        if self._logger is not None:
            self._logger._failure = exception


__all__ = ["TRAIN_METRICS", "VAL_METRICS", "MetalearnCallback", "MetalearnLogger"]
