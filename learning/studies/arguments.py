"""Keyword arguments of an Optuna sampler or pruner as a client sends them: a Struct, in
which every number is a double. Each name takes a known set, each of a kind and, for a
number, within the range a real study needs: every value an ask or a pruning decision
loops over is bounded here, or one CreateStudy could buy minutes of the gateway's CPU
(TPE's n_ei_candidates was once taken up to 2^31-1: 4,000,000 froze the gateway for
30 s per ask). What the bounds allow is converted; the rest (group without
multivariate) is left to Optuna's own constructor, whose refusal is said as it is."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from metalearn.errors import Violations

# Kinds: how a value is checked, what it is said to be, and how it is converted.
WHOLE, NUMBER, FLAG, CHOICE = "whole", "number", "flag", "choice"
# A bound that depends on the gateway: the most trials a study may have, the most
# epochs a command may have (a pruner's steps and resources are epochs).
Scaled = Literal["trials", "epochs"]


@dataclass(frozen=True)
class Scale:
    """What the scaled bounds stand for on this gateway."""

    trials: int
    epochs: int

    def of(self, bound: float | Scaled) -> float:
        if bound == "trials":
            return self.trials
        if bound == "epochs":
            return self.epochs
        return bound


@dataclass(frozen=True)
class Arg:
    """One argument: its kind and, for numbers, the range [low, high] it is taken in."""

    kind: str
    low: float | Scaled = 0
    high: float | Scaled = 0
    choices: tuple[str, ...] = ()


def whole(low: float | Scaled, high: float | Scaled) -> Arg:
    return Arg(WHOLE, low, high)


def number(low: float, high: float) -> Arg:
    return Arg(NUMBER, low, high)


def choice(*choices: str) -> Arg:
    return Arg(CHOICE, choices=choices)


FLAG_ARG = Arg(FLAG)


def _ok(arg: Arg, value: Any, scale: Scale) -> bool:
    if arg.kind == FLAG:
        return isinstance(value, bool)
    if arg.kind == CHOICE:
        return isinstance(value, str) and value in arg.choices
    if not (isinstance(value, float) and math.isfinite(value)):
        return False
    if arg.kind == WHOLE and not value.is_integer():
        return False
    return scale.of(arg.low) <= value <= scale.of(arg.high)


def _said(arg: Arg, scale: Scale) -> str:
    if arg.kind == FLAG:
        return "true or false"
    if arg.kind == CHOICE:
        return f"one of {list(arg.choices)}"
    low, high = scale.of(arg.low), scale.of(arg.high)
    what = "a whole number" if arg.kind == WHOLE else "a number"
    return f"{what} from {low:g} to {high:g}"


def check(
    v: Violations,
    field: str,
    name: str,
    args: dict[str, Any],
    allowed: Mapping[str, Arg],
    scale: Scale,
) -> bool:
    """Names each argument `name` does not take or whose value is not of its kind and in
    its range; True when there was none."""
    ok = True
    for key, value in args.items():
        arg = allowed.get(key)
        if arg is None:
            v.add(f"{field}.args.{key[:40]}", f"{name} takes {sorted(allowed) or 'no arguments'}")
            ok = False
        elif not _ok(arg, value, scale):
            v.add(f"{field}.args.{key}", _said(arg, scale))
            ok = False
    return ok


def convert(args: dict[str, Any], allowed: Mapping[str, Arg]) -> dict[str, Any]:
    """Checked arguments as Optuna takes them (whole numbers as ints)."""
    return {k: int(v) if allowed[k].kind == WHOLE else v for k, v in args.items()}
