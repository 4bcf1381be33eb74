"""RGPE on BoTorch: the published transfer baseline of issue 29's benchmark.

The ranking-weighted Gaussian process ensemble (Feurer, Letham & Bakshy, "Scalable
meta-learning for Bayesian optimization", 2018; BoTorch's RGPE tutorial): one GP per
past task (BoTorch's SingleTaskGP on that task's every command), one on the new task's
trials so far, and an ensemble whose weight on each GP is the share of posterior samples
in which it ranks the new task's observed pairs best (the new task's own GP judged
leave-one-out). The next trial is the untried command of highest expected improvement
under the ensemble (BoTorch's LogExpectedImprovement). It searches the same discrete grid
as every other method in bench/metalearning/transfer.py, from the same history.

Written here rather than imported: BoTorch ships RGPE as a tutorial, not a class; the
GPs, their fitting and the acquisition are BoTorch's, what is written here is the
ensemble's weights and posterior, as the tutorial writes them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.exceptions.warnings import BotorchWarning, InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.operators import DiagLinearOperator

from learning.studies import space

# Posterior samples the ranking weights are estimated from (the tutorial's 256).
SAMPLES = 256
# The new task's own GP joins the ensemble once it has this many trials: its weight is
# judged leave-one-out, on GPs of one trial fewer, and a GP on one point has no scale.
TARGET_MIN = 3
DTYPE = torch.double


def encode(points: Sequence[Mapping[str, Any]], params: Sequence[space.Parameter]) -> torch.Tensor:
    """Each grid point as numbers in [0, 1]: an ordered choice (numbers, or two values)
    as its index over the count less one, an unordered one of more values one-hot."""
    columns: list[list[float]] = []
    for p in params:
        choices = list(p.distribution.choices)  # type: ignore[attr-defined]
        index = [choices.index(space.internal_value(p, point[p.path])) for point in points]
        numeric = all(_is_number(c) for c in choices)
        if numeric or len(choices) <= 2:
            # Numbers keep their order (the grid lists them sorted: a learning rate's
            # index is its log scale); two values are one bit either way.
            columns.append([i / max(len(choices) - 1, 1) for i in index])
        else:
            for k in range(len(choices)):
                columns.append([float(i == k) for i in index])
    return torch.tensor(list(zip(*columns, strict=True)), dtype=DTYPE)


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def fit_gp(x: torch.Tensor, y: torch.Tensor) -> SingleTaskGP:
    """BoTorch's GP on one task's (command, value) pairs, its values standardized."""
    with quiet():
        model = SingleTaskGP(x, y.unsqueeze(-1), outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


@contextmanager
def quiet() -> Iterator[None]:
    """BoTorch's warnings about its inputs silenced: the values come standardized (it
    warns that they are), and repeat (a stuck run scores the same everywhere), and it
    fits all the same."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=InputDataWarning)
        warnings.simplefilter("ignore", category=BotorchWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def _standardized(y: torch.Tensor) -> torch.Tensor:
    spread = y.std() if len(y) > 1 else torch.tensor(1.0, dtype=DTYPE)
    return (y - y.mean()) / (spread if spread > 1e-9 else 1.0)


class Ensemble(Model):
    """The weighted GPs as one model: mean the weighted means, variance the weighted
    variances (weights squared), each GP on its own task's standardized scale."""

    def __init__(self, models: Sequence[Model], weights: torch.Tensor) -> None:
        super().__init__()
        self.models = list(models)
        self.weights = weights

    @property
    def num_outputs(self) -> int:
        return 1

    def posterior(  # type: ignore[override]  # BoTorch's options are not used here
        self, X: torch.Tensor, **_: Any
    ) -> GPyTorchPosterior:
        mean = torch.zeros(X.shape[:-1], dtype=DTYPE)
        variance = torch.zeros(X.shape[:-1], dtype=DTYPE)
        for model, w in zip(self.models, self.weights, strict=True):
            if w <= 0:
                continue
            posterior = model.posterior(X)
            assert isinstance(posterior, GPyTorchPosterior)
            mean = mean + w * posterior.mean.squeeze(-1)
            variance = variance + w**2 * posterior.variance.squeeze(-1)
        return GPyTorchPosterior(
            MultivariateNormal(mean, DiagLinearOperator(variance.clamp_min(1e-9)))
        )


def _misranked(samples: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample (rows of `samples`), the observed pairs whose order it gets wrong."""
    wrong = (samples.unsqueeze(-1) < samples.unsqueeze(-2)) ^ (y.unsqueeze(-1) < y.unsqueeze(-2))
    return wrong.sum(dim=(-1, -2))


def ranking_weights(
    base: Sequence[Model],
    target: SingleTaskGP | None,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The share of SAMPLES posterior draws in which each model (the past tasks', then
    the new task's if any) misranks fewest of the observed pairs; ties shared at random.
    With fewer than two observations nothing is ranked: every past task weighs alike."""
    count = len(base) + (target is not None)
    if len(y) < 2:
        weights = torch.zeros(count, dtype=DTYPE)
        weights[: len(base)] = 1.0 / len(base)
        return weights
    losses = []
    with torch.no_grad():
        for model in base:
            draws = model.posterior(x).rsample(torch.Size([SAMPLES])).squeeze(-1)
            losses.append(_misranked(draws, y))
        if target is not None:
            losses.append(_leave_one_out_losses(target, x, y))
    loss = torch.stack(losses)  # models x samples
    # Ties broken at random: a tiny random offset below one misranked pair.
    jitter = torch.rand(loss.shape, generator=generator, dtype=DTYPE) * 0.5
    best = torch.argmin(loss.to(DTYPE) + jitter, dim=0)
    return torch.bincount(best, minlength=count).to(DTYPE) / SAMPLES


def _leave_one_out_losses(target: SingleTaskGP, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The new task's GP judged on points it did not see: for each observation, the
    GP (its fitted hyperparameters) on the others, sampled there (the tutorial's LOO)."""
    n = len(y)
    draws = torch.empty(SAMPLES, n, dtype=DTYPE)
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        with quiet():
            loo = SingleTaskGP(x[keep], y[keep].unsqueeze(-1), outcome_transform=Standardize(m=1))
        loo.load_state_dict(target.state_dict(), strict=False)
        loo.eval()
        draws[:, i] = loo.posterior(x[i : i + 1]).rsample(torch.Size([SAMPLES])).reshape(-1)
    return _misranked(draws, y)


def search(
    values: Mapping[str, float],
    base: Sequence[Model],
    x_all: torch.Tensor,
    keys: Sequence[str],
    budget: int,
    seed: int,
) -> list[float]:
    """The values RGPE finds on a task in `budget` trials: the first the command of best
    mean under the past tasks' equal-weight ensemble, each next one the untried command
    of highest expected improvement under the ranking-weighted ensemble."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the GPs' posterior draws
    tried: list[int] = []
    found: list[float] = []
    for _ in range(budget):
        x = x_all[tried]
        y = _standardized(torch.tensor(found, dtype=DTYPE))
        target = fit_gp(x, y) if len(tried) >= TARGET_MIN else None
        models = [*base, target] if target is not None else list(base)
        weights = ranking_weights(base, target, x, y, generator)
        ensemble = Ensemble(models, weights)
        left = [i for i in range(len(keys)) if i not in tried]
        with torch.no_grad():
            if not tried:
                score = ensemble.posterior(x_all[left]).mean.reshape(-1)
            else:
                best_f = ensemble.posterior(x).mean.reshape(-1).max()
                score = LogExpectedImprovement(ensemble, best_f=best_f)(
                    x_all[left].unsqueeze(-2)
                ).reshape(-1)
        # Ties to the smaller key, as the gateway breaks them (candidates in key order).
        pick = left[int(torch.argmax(score))]
        tried.append(pick)
        found.append(values[keys[pick]])
    return found


def base_models(
    evaluations: Mapping[str, Mapping[str, float]],
    x_all: torch.Tensor,
    keys: Sequence[str],
    cache: dict[str, Model],
) -> list[Model]:
    """One GP per past task on every command it ran (fitted once per task: a past task's
    GP does not depend on which task is left out)."""
    out = []
    for name in sorted(evaluations):
        if name not in cache:
            vals = evaluations[name]
            ran = [i for i, k in enumerate(keys) if k in vals and math.isfinite(vals[k])]
            y = _standardized(torch.tensor([vals[keys[i]] for i in ran], dtype=DTYPE))
            cache[name] = fit_gp(x_all[ran], y)
            cache[name].eval()
        out.append(cache[name])
    return out
