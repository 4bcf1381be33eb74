"""Attempts as people read them, in the CLI and the dashboard alike: a status and a
prognosis in words, loss curves as PNG files, and side-by-side comparisons."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metalearn import documents
from metalearn.v1 import attempt_pb2


def status_text(value: int) -> str:
    """ATTEMPT_STATUS_TRAINING -> "training", as people read it."""
    name: str = attempt_pb2.AttemptStatus.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("ATTEMPT_STATUS_").lower()


def _flag_name(kind: int) -> str:
    return attempt_pb2.CurveFlagKind.Name(kind).removeprefix("CURVE_FLAG_KIND_")  # type: ignore[arg-type]


def prognosis_short(p: attempt_pb2.Prognosis | None) -> str:
    """A prognosis in a table cell: flags, hopeless, and the predicted final accuracy."""
    if p is None:
        return "-"
    parts = [_flag_name(f.kind).lower().replace("_", "-") for f in p.flags]
    if p.hopeless:
        parts.append("hopeless")
    if p.predicted:
        parts.append(f"->{p.final_val_accuracy:.3f}")
    # Nothing fired and nothing predicted is not "ok" (the dashboard's table agrees).
    return " ".join(parts) or "-"


def prognosis_text(p: attempt_pb2.Prognosis) -> str:
    """A prognosis in words: the predicted final validation accuracy with its interval
    (or why there is none), each rule that fired, and whether it is hopeless."""
    if p.predicted:
        said = (
            f"final val accuracy {p.final_val_accuracy:.3f} (80% {p.final_val_accuracy_low:.3f}"
            f"-{p.final_val_accuracy_high:.3f}, curve model v{p.model_version})"
        )
    else:
        # The note says why there is none ("no curve model fitted yet (...)").
        said = p.note or "no prediction"
    flags = [f"{_flag_name(f.kind).lower().replace('_', ' ')} since epoch {f.since_epoch}"
             for f in p.flags]  # fmt: skip
    hopeless = [f"HOPELESS: {p.hopeless_reason}"] if p.hopeless else []
    return f"prognosis after epoch {p.epoch}: " + "; ".join([said, *flags, *hopeless])


def plot_curves(attempts: Sequence[attempt_pb2.Attempt], path: str | Path) -> Path:
    """Training and validation loss of each attempt (FULL view) on one chart, as a PNG."""
    import matplotlib  # imported late: only plotting needs it

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    from matplotlib import pyplot as plt

    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for attempt in attempts:
        epochs = [e.epoch for e in attempt.epochs] or list(
            range(1, len(attempt.training_losses) + 1)
        )
        train = [e.loss for e in attempt.epochs] or list(attempt.training_losses)
        (line,) = losses.plot(epochs, train, label=f"{attempt.name} train")
        if any(e.val_loss for e in attempt.epochs):
            val = [e.val_loss for e in attempt.epochs]
            losses.plot(
                epochs,
                val,
                linestyle="--",
                color=line.get_color(),
                label=f"{attempt.name} validation",
            )
            accuracy.plot(
                epochs,
                [e.val_accuracy for e in attempt.epochs],
                color=line.get_color(),
                label=attempt.name,
            )
    losses.set(xlabel="epoch", ylabel="loss", title="loss", yscale="log")
    accuracy.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy", ylim=(0, 1))
    losses.legend(fontsize="small")
    accuracy.legend(fontsize="small")
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    plt.close(figure)
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def as_text(value: Any) -> str:
    """A setting for people: 120, not 120.0; 0.003162, not 0.0031622776601683794 (JSON
    output keeps every digit)."""
    if isinstance(value, float) and not value.is_integer():
        return format(value, ".4g")
    return value if isinstance(value, str) else json.dumps(documents.integral(value))


def command_fields(attempts: Sequence[attempt_pb2.Attempt]) -> list[dict[str, Any]]:
    """Each attempt's training command as flat `path: value` settings (whole numbers
    as integers, as the command was written)."""
    return [flatten(documents.integral(documents.plain(a.training_commands))) for a in attempts]


def differing(attempts: Sequence[attempt_pb2.Attempt]) -> dict[str, list[Any]]:
    """The training-command settings that differ between attempts, each value as the
    command holds it (None where an attempt has none)."""
    return differing_in(command_fields(attempts))


def differing_in(flat: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """`differing` over commands already flattened by `command_fields`."""
    keys = sorted(set().union(*flat)) if flat else []
    return {
        key: [f.get(key) for f in flat]
        for key in keys
        if key != "model_name" and len({json.dumps(f.get(key), sort_keys=True) for f in flat}) > 1
    }


def differences(attempts: Sequence[attempt_pb2.Attempt]) -> dict[str, list[str]]:
    """The training-command settings that differ between attempts, each value as text."""
    return {
        key: ["-" if v is None else as_text(v) for v in values]
        for key, values in differing(attempts).items()
    }


def result_values(attempt: attempt_pb2.Attempt) -> dict[str, Any]:
    """What an attempt achieved, as numbers (None: not known)."""
    losses = attempt.training_losses
    return {
        "name": attempt.name,
        "status": documents.STATUS_SPELLING[attempt.status],
        "epochs": len(losses),
        "final_loss": losses[-1] if losses else None,
        "best_val_accuracy": max(e.val_accuracy for e in attempt.epochs)
        if attempt.epochs
        else None,
        "test_accuracy": attempt.accuracy if attempt.HasField("test_result") else None,
        "training_seconds": sum(e.seconds for e in attempt.epochs) if attempt.epochs else None,
    }


def results(attempt: attempt_pb2.Attempt) -> dict[str, str]:
    """What an attempt achieved, as text for a table."""
    r = result_values(attempt)

    def shown(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    return {
        "status": status_text(attempt.status),
        "epochs": str(r["epochs"]),
        "final loss": shown(r["final_loss"], ".4f"),
        "best val accuracy": shown(r["best_val_accuracy"], ".3f"),
        "test accuracy": shown(r["test_accuracy"], ".3f"),
        "training time": "-" if r["training_seconds"] is None else f"{r['training_seconds']:.1f} s",
    }


def comparison_table(attempts: Sequence[attempt_pb2.Attempt]) -> str:
    """Differences of command, then results, one column per attempt."""
    rows: list[tuple[str, list[str]]] = [("", [a.name for a in attempts])]
    rows += list(differences(attempts).items())
    rows.append(("", ["" for _ in attempts]))
    per = [results(a) for a in attempts]
    rows += [(key, [r[key] for r in per]) for key in per[0]] if per else []
    width = max(len(k) for k, _ in rows)
    cols = [max(len(row[1][i]) for row in rows) for i in range(len(attempts))]
    lines = []
    for key, values in rows:
        cells = "  ".join(v[:40].rjust(min(c, 40)) for v, c in zip(values, cols, strict=True))
        lines.append(f"{key:<{width}}  {cells}".rstrip())
    return "\n".join(lines)
