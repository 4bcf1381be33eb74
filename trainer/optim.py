"""Optimizer, loss and learning-rate scheduler of a command: allowlisted, arguments checked.

Each is tried once on a throwaway parameter when the command is checked, so torch's own
value checks (a negative learning rate, a bad `reduction`) fail the request up front
with the field named, not an epoch later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from google.protobuf import struct_pb2
from torch import nn

from metalearn import vocabulary
from metalearn.errors import Violations
from metalearn.structs import plain_struct
from trainer.model import keyword_params

# The prototype's defaults.
DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "SGD", "lr": 0.001, "momentum": 0.9}
DEFAULT_CRITERION: dict[str, Any] = {"name": "CrossEntropyLoss"}
DEFAULT_SCHEDULER: dict[str, Any] = {"name": "ReduceLROnPlateau"}

# Schedulers stepped after every batch rather than every epoch.
_PER_BATCH = frozenset({"OneCycleLR"})
# Arguments that are tensors in torch and lists in a command.
_TENSOR_ARGS = frozenset({"weight", "pos_weight"})
# Arguments that change what the loop sees, not what the loss computes.
_FIXED_LOSS_ARGS = frozenset({"size_average", "reduce"})
# Arguments the trainer sets itself (or that only concern how torch runs the update).
OPTIMIZER_SKIP = frozenset({"params", "foreach", "fused", "capturable", "differentiable"})
SCHEDULER_SKIP = frozenset({"optimizer", "verbose"})
CRITERION_SKIP = _FIXED_LOSS_ARGS


class Target(Enum):
    """What a loss wants as the label: a class index, or a one-hot vector."""

    INDEX = "index"
    ONE_HOT = "one_hot"


_INDEX_LOSSES = frozenset({"CrossEntropyLoss", "NLLLoss", "MultiMarginLoss"})


@dataclass(frozen=True)
class Named:
    """An allowlisted torch class and its checked keyword arguments."""

    name: str
    kwargs: dict[str, Any]


def _named(
    v: Violations,
    path: str,
    struct: struct_pb2.Struct,
    default: dict[str, Any],
    allowed: frozenset[str],
    module: Any,
    skip: frozenset[str],
) -> Named | None:
    raw = plain_struct(struct) if len(struct.fields) else dict(default)
    name = raw.pop("name", default["name"])
    if not isinstance(name, str) or name not in allowed or not hasattr(module, name):
        v.add(f"{path}.name", f"unknown name {name!r}; allowed: {sorted(allowed)}")
        return None
    params = keyword_params(getattr(module, name), skip)
    kwargs: dict[str, Any] = {}
    ok = True
    for arg, value in raw.items():
        if arg not in params:
            v.add(f"{path}.{arg}", f"{name} takes no argument {arg!r}; it takes {sorted(params)}")
            ok = False
            continue
        default_value = params[arg].default
        if isinstance(value, float) and not math.isfinite(value):
            v.add(f"{path}.{arg}", "must be a finite number")
            ok = False
        elif (
            isinstance(value, float)
            and isinstance(default_value, int)
            and not isinstance(default_value, bool)
            and value.is_integer()
        ):
            kwargs[arg] = int(value)
        elif isinstance(value, list) and arg in _TENSOR_ARGS:
            try:
                kwargs[arg] = torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError):
                v.add(f"{path}.{arg}", "must be a list of numbers")
                ok = False
        elif isinstance(value, list):
            kwargs[arg] = tuple(value)
        else:
            kwargs[arg] = value
    return Named(name, kwargs) if ok else None


def _probe_parameter() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(2))]


def check_optimizer(v: Violations, path: str, struct: struct_pb2.Struct) -> Named | None:
    """The optimizer of a command, constructed once to let torch check its values."""
    spec = _named(
        v, path, struct, DEFAULT_OPTIMIZER, vocabulary.OPTIMIZERS, torch.optim,
        OPTIMIZER_SKIP,
    )  # fmt: skip
    if spec is not None:
        try:
            # A step too: some values are only used (and found wrong) when stepping.
            probe = _probe_parameter()
            optimizer = make_optimizer(spec, probe)
            probe[0].grad = torch.ones(2)
            optimizer.step()
        except Exception as err:  # torch's own value checks
            v.add(path, f"{spec.name}: {err}")
            return None
    return spec


def make_optimizer(spec: Named, parameters: Any) -> torch.optim.Optimizer:
    optimizer: torch.optim.Optimizer = getattr(torch.optim, spec.name)(parameters, **spec.kwargs)
    return optimizer


def check_criterion(v: Violations, path: str, struct: struct_pb2.Struct) -> Named | None:
    """The loss of a command; its reduction must give one number per batch."""
    spec = _named(v, path, struct, DEFAULT_CRITERION, vocabulary.CRITERIA, nn, _FIXED_LOSS_ARGS)
    if spec is None:
        return None
    if spec.kwargs.get("reduction", "mean") not in ("mean", "sum"):
        v.add(f"{path}.reduction", "must be 'mean' or 'sum': training needs one number per batch")
        return None
    try:
        make_criterion(spec)
    except Exception as err:  # torch's own value checks
        v.add(path, f"{spec.name}: {err}")
        return None
    return spec


def make_criterion(spec: Named) -> nn.Module:
    criterion: nn.Module = getattr(nn, spec.name)(**spec.kwargs)
    return criterion


# A score every loss takes: a probability (BCELoss), a logit and a log-probability alike.
_PROBE_SCORE = 0.5


def check_criterion_for(v: Violations, path: str, spec: Named, n_labels: int) -> bool:
    """The loss once the number of labels is known: per-label weights of the right length,
    and the loss computed once on a batch of that shape, so values torch accepts when the
    loss is made and refuses when it is used (`label_smoothing` 1.5) are the command's
    named mistake, not an error an epoch later."""
    ok = True
    for arg in sorted(_TENSOR_ARGS & spec.kwargs.keys()):
        weight = spec.kwargs[arg]
        if not isinstance(weight, torch.Tensor):
            continue  # None: the loss's default, no weights (a fuzzer's finding)
        # Index losses weigh each class; one-hot ones broadcast over (batch, labels).
        lengths = (n_labels,) if spec.name in _INDEX_LOSSES else (1, n_labels)
        if weight.dim() != 1 or weight.shape[0] not in lengths:
            wanted = " or ".join(str(n) for n in lengths)
            v.add(
                f"{path}.{arg}",
                f"has {weight.numel()} values; give {wanted} (the command has {n_labels} labels)",
            )
            ok = False
    if not ok:
        return False
    scores = torch.full((2, n_labels), _PROBE_SCORE)
    if target_kind(spec) is Target.INDEX:
        targets = torch.zeros(2, dtype=torch.int64)
    else:
        targets = torch.zeros(2, n_labels)
    try:
        make_criterion(spec)(scores, targets)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:  # torch's value checks
        v.add(path, f"{spec.name}: {err}")
        return False
    return True


def target_kind(criterion: Named) -> Target:
    """Class indices for classification losses, one-hot vectors for regression ones."""
    return Target.INDEX if criterion.name in _INDEX_LOSSES else Target.ONE_HOT


def check_scheduler(
    v: Violations, path: str, struct: struct_pb2.Struct, epochs: int, steps_per_epoch: int
) -> Named | None:
    """The learning-rate scheduler; OneCycleLR gets its step count from the run."""
    spec = _named(
        v, path, struct, DEFAULT_SCHEDULER, vocabulary.SCHEDULERS, torch.optim.lr_scheduler,
        SCHEDULER_SKIP,
    )  # fmt: skip
    if spec is None:
        return None
    probe_steps = 2
    if spec.name == "OneCycleLR":
        needed = max(1, epochs * steps_per_epoch)
        if not {"total_steps", "epochs"} & spec.kwargs.keys():
            spec = Named(spec.name, {**spec.kwargs, "total_steps": needed})
        given = spec.kwargs.get("total_steps") or (
            _int(spec.kwargs.get("epochs")) * _int(spec.kwargs.get("steps_per_epoch"))
        )
        if _int(given) < needed:
            v.add(path, f"OneCycleLR needs at least {needed} steps (epochs x batches), not {given}")
            return None
        probe_steps = min(probe_steps, _int(given) - 1)
    try:
        # Stepped as well: StepLR takes step_size="x" and fails only at its first step.
        optimizer = make_optimizer(Named("SGD", {"lr": 0.1}), _probe_parameter())
        scheduler = make_scheduler(spec, optimizer)
        for _ in range(probe_steps):
            optimizer.step()  # (no gradients: changes nothing, keeps torch's order)
            scheduler.step(1.0) if spec.name == "ReduceLROnPlateau" else scheduler.step()
    except Exception as err:  # torch's own value checks
        v.add(path, f"{spec.name}: {err}")
        return None
    return spec


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def make_scheduler(spec: Named, optimizer: torch.optim.Optimizer) -> Any:
    return getattr(torch.optim.lr_scheduler, spec.name)(optimizer, **spec.kwargs)


def steps_per_batch(spec: Named) -> bool:
    """Whether the scheduler steps after each batch (else after each epoch)."""
    return spec.name in _PER_BATCH
