"""The learned pruner: stop a study's trial when the curve model says it will very
probably not beat the study's best so far.

A pure decision over a fixed model, so the same model, curve and best always give the
same answer (the studies' `Pruning` and the benchmark's replay both call it).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.curves.features import Run
from gateway.curves.model import CurveModel

# Defaults, chosen on the suite (bench/metalearning, BENCHMARKS.md).
MIN_EPOCH = 1
N_STARTUP_TRIALS = 1
MARGIN = 0.0


@dataclass(frozen=True)
class LearnedPruner:
    """Prune after epoch k >= min_epoch, once n_startup_trials trials have finished,
    when the model's upper quantile of the final accuracy + margin < the best so far."""

    min_epoch: int = MIN_EPOCH
    n_startup_trials: int = N_STARTUP_TRIALS
    margin: float = MARGIN

    def decide(
        self, curve_model: CurveModel, run: Run, k: int, best: float | None, finished: int
    ) -> str | None:
        """Why the run stops after epoch k (None: it goes on)."""
        if best is None or finished < self.n_startup_trials or k < self.min_epoch:
            return None
        if k >= run.n_epoch:
            return None  # nothing left to save
        found = curve_model.predict(run, k)
        if found is None or found.high + self.margin >= best:
            return None
        return (
            f"predicted to end at {found.median:.4f} (at most {found.high:.4f}), "
            f"below the study's best {best:.4f}"
        )
