"""A plain PyTorch training loop on scikit-learn's handwritten digits, reported to metalearn.

    python examples/report_pytorch.py --name digits-torch-1 --epochs 5

Offline (the digits ship inside scikit-learn) and a few seconds on a laptop's CPU. The
gateway and token are found as the CLI finds them (METALEARN_GATEWAY, METALEARN_TOKEN,
...). Each step's loss is a metric of its own (`train/loss`); each epoch reports its
mean loss, validation loss and accuracy, learning rate and pace; the run stops early
when metalearn asks (cancelled, pruned, or hopeless), and ends with its test accuracy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from sklearn.datasets import load_digits
from torch import nn

import metalearn

LABELS = [f"digit {d}" for d in range(10)]  # as `metalearn images import-digits` names them


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy on (x, y)."""
    with torch.no_grad():
        logits = model(x)
        return (nn.functional.cross_entropy(logits, y).item(),
                (logits.argmax(1) == y).float().mean().item())  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="the run's unique name (default: one is made)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).flatten(1)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y))
    train, val, test = order[:1200], order[1200:1500], order[1500:]
    hidden, lr, batch_size = 32, 0.01, 64
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    params = {"hidden": hidden, "lr": lr, "batch_size": batch_size}

    with metalearn.start_run(
        args.name, labels=LABELS, dataset="digits", params=params, n_epoch=args.epochs,
        input_shape=[1, 8, 8], train_size=len(train),
    ) as run:  # fmt: skip
        for epoch in range(1, args.epochs + 1):
            started, losses = time.monotonic(), []
            for batch in train[torch.randperm(len(train))].split(batch_size):
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                run.log({"train/loss": losses[-1]})  # at the next step: 0, 1, 2, ...
            seconds = time.monotonic() - started
            val_loss, val_accuracy = evaluate(model, x[val], y[val])
            run.log(epoch=epoch, loss=sum(losses) / len(losses), val_loss=val_loss,
                    val_accuracy=val_accuracy, lr=lr, seconds=seconds,
                    samples_per_second=len(train) / seconds)  # fmt: skip
            print(f"epoch {epoch}: loss={sum(losses) / len(losses):.4f} val_loss={val_loss:.4f}"
                  f" val_accuracy={val_accuracy:.4f}")  # fmt: skip
            if run.should_stop():
                print(f"stopped by metalearn: {run.stop_reason}")
                break
        else:
            test_loss, test_accuracy = evaluate(model, x[test], y[test])
            run.finish(test_accuracy=test_accuracy, test_loss=test_loss)
            print(f"test_accuracy={test_accuracy:.4f}")
    print(f"run {run.name}: attempt {run.id}")


if __name__ == "__main__":
    main()
