"""`metalearn curves fit|show`: the learned curve model behind every prognosis and the
"learned" pruner, and `metalearn attempts hopeless`-style filters in words."""

from __future__ import annotations

import argparse
import math
from typing import Any

from metalearn import documents
from metalearn.cli.runs import answer, client_for
from metalearn.v1 import curve_service_pb2 as pb


def _figure(value: float) -> str:
    """A quality figure, or "n/a" where the store had nothing to measure it on (the
    gateway sends NaN: a proto3 double cannot be absent)."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def model_text(model: pb.CurveModel) -> str:
    """A fitted version in words: what it learnt from and how well it predicts."""
    q = model.quality
    fitted = model.fit_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    return "\n".join(
        [
            f"curve model v{model.version}, fitted {fitted} UTC in {model.seconds:.1f} s on"
            f" {model.attempts} finished attempts of {model.tasks} tasks",
            f"  on tasks it did not see ({q.folds} folds): error of the final validation"
            f" accuracy from 3 epochs {_figure(q.mae_at_3)} (the last value seen: "
            f"{_figure(q.baseline_mae_at_3)}); over every epoch {_figure(q.mae)}"
            f" ({_figure(q.baseline_mae)})",
            "  finals inside the predicted 80% interval: "
            + ("n/a" if math.isnan(q.interval_coverage) else f"{q.interval_coverage:.0%}"),
        ]
    )


def cmd_fit(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        model = client.fit_curve_model()
    return answer(args, documents.plain(model), model_text(model))


def cmd_show(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        model = client.curve_model()
    return answer(args, documents.plain(model), model_text(model))


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`curves fit|show` on the `metalearn` parser."""
    curves = sub.add_parser(
        "curves",
        help="the learned curve model behind every attempt's prognosis",
        description="From an attempt's first epochs, its command and its task's profile, the"
        " curve model predicts the final validation accuracy with an 80% interval: every"
        " attempt's prognosis shows it, `--stop-when-hopeless` acts on it, and a study's"
        ' "learned" pruner stops the trials it says will not beat the best. It is fitted'
        " from the store's finished attempts and refitted when enough new ones finished.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    fit = curves.add_parser(
        "fit",
        parents=[common],
        help="fit a new version now (admins; seconds to a minute)",
        description="Fits a new version from every finished attempt with a validation"
        " accuracy and prints it with its error on tasks it did not see. Exit status 1,"
        " saying how much data there is, when there is too little (30 finished attempts on"
        " 2 tasks are needed).",
    )
    fit.set_defaults(func=cmd_fit)
    show = curves.add_parser(
        "show",
        parents=[common],
        help="the newest version and its quality",
        description="Prints the newest fitted version; exit status 1 (with why) when none is.",
    )
    show.set_defaults(func=cmd_show)
