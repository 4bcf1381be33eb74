"""The learned pruner: stop a study's trial when the curve model says it will very
probably not beat the study's best so far.

A pure decision over a fixed model, so the same model, curve and best always give the
same answer (the studies' `Pruning` and the benchmark's replay both call it).

It reads the model's CEILING (the 99th percentile of the final accuracy), not its
interval: pruning the trial that would have won loses the whole study, pruning a poor one
late loses a few epochs. A trial whose ceiling only ties the best is stopped too (it
cannot improve the study). Defaults, from the suite's replay (bench/metalearning,
BENCHMARKS.md: 24 tasks, leave-one-task-out, 5 searches of 32 trials each): from epoch 2
(epoch 1 alone says too little about slow starters), after one finished trial, no margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from learning.curves.features import Run
from learning.curves.model import CurveModel, Prediction

MIN_EPOCH = 2
N_STARTUP_TRIALS = 1
MARGIN = 0.0


@dataclass(frozen=True)
class LearnedPruner:
    """Prune after epoch k >= min_epoch, once n_startup_trials trials have finished,
    when the model's ceiling of the final accuracy + margin <= the best so far (a
    positive margin keeps more trials, a negative one asks a trial to be able to beat
    the best by that much)."""

    min_epoch: int = MIN_EPOCH
    n_startup_trials: int = N_STARTUP_TRIALS
    margin: float = MARGIN

    def decide(
        self, curve_model: CurveModel, run: Run, k: int, best: float | None, finished: int
    ) -> str | None:
        """Why the run stops after epoch k (None: it goes on)."""
        if best is None or not self.applies(run, k, finished):
            return None
        return self.verdict(curve_model.predict(run, k), best)

    def applies(self, run: Run, k: int, finished: int) -> bool:
        """Whether a trial is judged after epoch k: from min_epoch, once n_startup_trials
        finished, and not after its last epoch (nothing left to save)."""
        return finished >= self.n_startup_trials and self.min_epoch <= k < run.n_epoch

    def verdict(self, found: Prediction | None, best: float) -> str | None:
        """Why a trial with this prediction stops, against the best so far (None: it goes
        on; no prediction never stops it)."""
        if found is None or ceiling(found) + self.margin > best:
            return None
        return (
            f"predicted to end at {found.median:.4f} (at most {ceiling(found):.4f}), "
            f"not above the study's best {best:.4f}"
        )


def ceiling(p: Prediction) -> float:
    """The 99th percentile (the upper quantile of a model fitted without it)."""
    return p.ceiling if math.isfinite(p.ceiling) else p.high
