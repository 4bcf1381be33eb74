"""A PyTorch Lightning model on scikit-learn's handwritten digits, reported to metalearn.

    pip install pytorch-lightning            # beside metalearn's client
    python examples/report_lightning.py --name digits-lightning-1 --epochs 5

Offline (the digits ship inside scikit-learn) and a few seconds on a laptop's CPU. The
gateway and token are found as the CLI finds them (METALEARN_GATEWAY, METALEARN_TOKEN,
...). The run's epochs come from MetalearnCallback, the model's hyperparameters and
every `self.log` from MetalearnLogger, its test accuracy from `trainer.test`.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from metalearn.reporting.lightning import MetalearnCallback, MetalearnLogger

LABELS = [f"digit {d}" for d in range(10)]  # as `metalearn images import-digits` names them


class DigitsMLP(pl.LightningModule):
    def __init__(self, hidden: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()  # they become the run's params
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 10))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def _loss(self, batch: Sequence[torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        # on_epoch: the epoch's mean is what MetalearnCallback reports; on_step (training
        # only): every step's loss as a metric of its own, `train_loss_step`.
        self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True)
        if stage != "train":
            acc = (logits.argmax(1) == y).float().mean()
            self.log(f"{stage}_acc", acc, on_epoch=True)
        return loss

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._loss(batch, "train")

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._loss(batch, "val")

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._loss(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


def loaders(batch_size: int = 64) -> tuple[DataLoader[Any], DataLoader[Any], DataLoader[Any]]:
    """The 1,797 digits split 1,200 / 300 / 297, the same way every time."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    parts = (order[:1200], order[1200:1500], order[1500:])
    sets = [TensorDataset(x[p], y[p]) for p in parts]
    return (DataLoader(sets[0], batch_size, shuffle=True), DataLoader(sets[1], batch_size),
            DataLoader(sets[2], batch_size))  # fmt: skip


def train(
    name: str | None, epochs: int, callbacks: Sequence[pl.Callback] = (), **start: Any
) -> tuple[MetalearnLogger, MetalearnCallback, pl.Trainer]:
    """Fits and tests the model, reporting the run; `callbacks` run after metalearn's,
    `start` goes to metalearn.start_run (gateway, token, ...)."""
    pl.seed_everything(0, verbose=False)
    # The digits are in memory: loader worker processes would only add start-up time.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    train_loader, val_loader, test_loader = loaders()
    logger = MetalearnLogger(
        name, labels=LABELS, dataset="digits", input_shape=[1, 8, 8], train_size=1200,
        n_epoch=epochs, test=True, **start,
    )  # fmt: skip
    reporter = MetalearnCallback()
    trainer = pl.Trainer(
        max_epochs=epochs, logger=logger, callbacks=[reporter, *callbacks],
        log_every_n_steps=5, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    model = DigitsMLP()
    trainer.fit(model, train_loader, val_loader)
    if not logger.run.should_stop():
        trainer.test(model, test_loader, verbose=False)
    return logger, reporter, trainer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="the run's unique name (default: one is made)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    logger, reporter, _ = train(args.name, args.epochs)
    run = logger.run
    for epoch, values in reporter.reported.items():
        print(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(values.items())))
    print(f"run {run.name}: attempt {run.id}" + (f", stopped ({run.stop_reason})"
                                                if run.should_stop() else ""))  # fmt: skip


if __name__ == "__main__":
    main()
