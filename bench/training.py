"""Benchmark of the trainer: its training throughput against a bare PyTorch loop, and its
data pipeline against the one most users write.

Digits: the same model (the LeNet example, built from the same resolved spec), the same
preprocessed digits, batch size and optimizer, in a plain loop in this process, then
through a real `TrainerService.Train` call (worker process, DataLoader, validation pass,
checkpoints, events). Interleaved rounds, medians, so machine noise hits both alike.

ImageFolder: a few hundred generated 500x500 JPEGs, 5 epochs of one small CNN, through
a real Train call with a cold cache (images fetched from the gateway, decoded once)
against torchvision's ImageFolder + DataLoader decoding every image every epoch, with
the same model, split sizes, batch size and torch threads, in the same run.
  python bench/training.py                     # a table
  python bench/training.py --json              # one JSON object, keys name the figures
  python bench/training.py --only imagefolder  # one part
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from google.protobuf import json_format
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import print_figures
from bench.trainers import start_trainer, stop_trainer
from gateway.inprocess import GatewayThread
from metalearn import digits
from metalearn.credentials import open_channel
from metalearn.errors import Violations
from metalearn.v1 import (
    attempt_pb2,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    trainer_service_pb2_grpc,
)
from metalearn.v1 import trainer_service_pb2 as pb
from trainer import model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_lenet.json"
# What the benchmark presents when it calls its trainer directly, as a gateway would.
CREDENTIAL = "bench-credential"


def bare_images_per_second(
    command: attempt_pb2.TrainCommand, images: int, epochs: int, validation: int = 0
) -> float:
    """The plainest loop: random 8x8 inputs of the digits' shape, no data pipeline.
    With `validation` images, each epoch ends as most hand-written loops' do: one
    no-grad pass over them for a loss and an accuracy (what a run's epoch reports)."""
    torch.manual_seed(0)
    v = Violations()
    spec = model.resolve(v, "model", command.model, (1, 8, 8), 10, 10**9)
    assert spec is not None
    net = model.build(spec)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.003)
    criterion = torch.nn.CrossEntropyLoss()
    x = torch.randn(images, 1, 8, 8)
    y = torch.randint(0, 10, (images,))
    x_val = torch.randn(validation, 1, 8, 8)
    y_val = torch.randint(0, 10, (validation,))
    batch = command.batch_size
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        order = torch.randperm(images)
        for i in range(0, images, batch):
            index = order[i : i + batch]
            optimizer.zero_grad()
            loss = criterion(net(x[index]), y[index])
            loss.backward()
            optimizer.step()
        if validation:
            net.eval()
            with torch.no_grad():
                scores = net(x_val)
                float(criterion(scores, y_val))
                float((scores.argmax(dim=1) == y_val).float().mean())
    return images * epochs / (time.perf_counter() - start)


def trainer_run(stub: Any, command: attempt_pb2.TrainCommand) -> dict[str, float]:
    start = time.perf_counter()
    seconds, samples, first_event = 0.0, 0, 0.0
    for event in stub.Train(pb.TrainerServiceTrainRequest(attempt_name="bench", command=command)):
        kind = event.WhichOneof("event")
        if kind == "started":
            first_event = time.perf_counter() - start
            samples = event.started.train_images
        elif kind == "epoch":
            seconds += event.epoch.seconds
    total = time.perf_counter() - start
    epochs = command.n_epoch
    return {
        "loop_images_per_s": samples * epochs / seconds,
        "call_images_per_s": samples * epochs / total,
        "started_after_s": first_event,
        "train_images": samples,
    }


# The ImageFolder comparison: labels, images per label, side, model input side, epochs.
JPEG_LABELS = ("circle", "square", "cross")
JPEGS_PER_LABEL = 100
JPEG_SIDE = 500
INPUT_SIDE = 64
JPEG_EPOCHS = 5
SMALL_CNN = {
    "layers": [
        {"name": "Conv2d", "in_channels": "auto", "out_channels": 16, "kernel_size": 3},
        {"name": "ReLU"},
        {"name": "MaxPool2d", "kernel_size": 2},
        {"name": "Conv2d", "in_channels": "auto", "out_channels": 32, "kernel_size": 3},
        {"name": "ReLU"},
        {"name": "MaxPool2d", "kernel_size": 2},
        {"name": "Flatten"},
        {"name": "Linear", "in_features": "auto", "out_features": "n_labels"},
    ]
}


def make_jpegs(root: Path, seed: int = 0) -> None:
    """root/<label>/<i>.jpg: noisy 500x500 photos-to-be of a shape per label, at random
    places and colours (so the model has something to learn and JPEG something to do)."""
    rng = random.Random(seed)
    noise = torch.Generator().manual_seed(seed)
    for label in JPEG_LABELS:
        (root / label).mkdir(parents=True)
        for i in range(JPEGS_PER_LABEL):
            pixels = torch.randint(0, 256, (JPEG_SIDE, JPEG_SIDE, 3), generator=noise)
            image = Image.fromarray(pixels.to(torch.uint8).numpy()).filter(
                ImageFilter.GaussianBlur(2)
            )
            draw = ImageDraw.Draw(image)
            r = rng.randint(60, 150)
            x, y = rng.randint(r, JPEG_SIDE - r), rng.randint(r, JPEG_SIDE - r)
            fill = tuple(rng.randint(0, 255) for _ in range(3))
            if label == "circle":
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
            elif label == "square":
                draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
            else:
                draw.rectangle((x - r, y - r // 4, x + r, y + r // 4), fill=fill)
                draw.rectangle((x - r // 4, y - r, x + r // 4, y + r), fill=fill)
            image.save(root / label / f"{i}.jpg", quality=90)


def jpeg_command() -> attempt_pb2.TrainCommand:
    return json_format.ParseDict(
        {
            "label_names": list(JPEG_LABELS),
            "batch_size": 32,
            "n_epoch": JPEG_EPOCHS,
            "seed": 1,
            "model": SMALL_CNN,
            "optimizer": {"name": "Adam", "lr": 0.003},
            "criterion": {"name": "CrossEntropyLoss"},
            "image_ops": [{"resize": {"size": [INPUT_SIDE, INPUT_SIDE]}}],
            "transform": {"ToTensor": True, "Normalize": {"mean": [0.5], "std": [0.5]}},
        },
        attempt_pb2.TrainCommand(),
    )


def trainer_timed(stub: Any, command: attempt_pb2.TrainCommand) -> dict[str, Any]:
    """One Train call: seconds to `started` (listing, fetching, decoding), each epoch's
    wall seconds as the events arrive, and the whole call."""
    start = time.perf_counter()
    marks: list[float] = []
    figures: dict[str, Any] = {}
    for event in stub.Train(pb.TrainerServiceTrainRequest(attempt_name="bench", command=command)):
        kind = event.WhichOneof("event")
        if kind == "started":
            figures["started"] = event.started
            marks.append(time.perf_counter())
        elif kind == "epoch":
            marks.append(time.perf_counter())
            figures["accuracy"] = event.epoch.val_accuracy
    figures["total"] = time.perf_counter() - start
    figures["prepare"] = marks[0] - start
    figures["epochs"] = [b - a for a, b in itertools.pairwise(marks)]
    return figures


def timed(loader: DataLoader[Any], waits: list[float]) -> Iterator[Any]:
    """The loader's batches; the seconds spent waiting for them added to `waits[0]`."""
    batches = iter(loader)
    while True:
        asked = time.perf_counter()
        batch = next(batches, None)
        waits[0] += time.perf_counter() - asked
        if batch is None:
            return
        yield batch


def imagefolder_timed(
    root: Path, command: attempt_pb2.TrainCommand, train_n: int, val_n: int, workers: int
) -> dict[str, Any]:
    """What most users write: ImageFolder + DataLoader, decoding and resizing every image
    every epoch, training and validating the same model on splits of the same sizes."""
    start = time.perf_counter()
    torch.manual_seed(command.seed)
    preprocess = transforms.Compose(
        [
            transforms.Resize((INPUT_SIDE, INPUT_SIDE)),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    images = datasets.ImageFolder(str(root), transform=preprocess)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).tolist()
    train = DataLoader(
        Subset(images, order[:train_n]), batch_size=command.batch_size, shuffle=True,
        num_workers=workers, persistent_workers=workers > 0,
    )  # fmt: skip
    val = DataLoader(
        Subset(images, order[train_n : train_n + val_n]), batch_size=command.batch_size,
        num_workers=workers, persistent_workers=workers > 0,
    )  # fmt: skip
    v = Violations()
    spec = model.resolve(
        v, "model", command.model, (3, INPUT_SIDE, INPUT_SIDE), len(JPEG_LABELS), 10**9
    )
    assert spec is not None
    net = model.build(spec)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.003)
    criterion = torch.nn.CrossEntropyLoss()
    epochs, waiting = [], []
    accuracy = 0.0
    for _ in range(command.n_epoch):
        epoch_start, waits = time.perf_counter(), [0.0]
        net.train()
        for x, y in timed(train, waits):
            optimizer.zero_grad()
            criterion(net(x), y).backward()
            optimizer.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for x, y in timed(val, waits):
                correct += int((net(x).argmax(1) == y).sum())
        accuracy = correct / max(val_n, 1)
        epochs.append(time.perf_counter() - epoch_start)
        waiting.append(waits[0])
    return {
        "total": time.perf_counter() - start,
        "epochs": epochs,
        "waiting": waiting,
        "accuracy": accuracy,
    }


def imagefolder_figures(rounds: int, threads: int) -> dict[str, float]:
    """The trainer (cold cache each round) against ImageFolder, rounds interleaved."""
    command = jpeg_command()
    runs: dict[str, list[dict[str, Any]]] = {"trainer": [], "imagefolder": [], "workers": []}
    with scratch_postgres() as scratch:
        root = scratch.dir / "jpegs"
        make_jpegs(root)
        gateway = GatewayThread(scratch.url).start()
        try:
            with gateway.channel() as channel:
                dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
                    dataset_service_pb2.UploadImagesRequest(
                        label=path.parent.name, data=path.read_bytes()
                    )
                    for path in sorted(root.glob("*/*.jpg"))
                )
            torch.set_num_threads(threads)
            # A daemon that has run before (its forkserver has imported torch), with a
            # cache emptied before every round: each run fetches and decodes every image.
            cache = scratch.dir / "cache"
            proc, address = start_trainer(gateway, cache, threads, credential=CREDENTIAL)
            try:
                with open_channel(address, CREDENTIAL) as channel:
                    stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
                    warm_up = jpeg_command()
                    warm_up.n_epoch = 1
                    trainer_timed(stub, warm_up)
                    for _ in range(rounds):
                        shutil.rmtree(cache)
                        run = trainer_timed(stub, command)
                        runs["trainer"].append(run)
                        sizes = (run["started"].train_images, run["started"].validation_images)
                        runs["imagefolder"].append(imagefolder_timed(root, command, *sizes, 0))
                        runs["workers"].append(imagefolder_timed(root, command, *sizes, 2))
            finally:
                stop_trainer(proc)
        finally:
            gateway.stop()

    def median(side: str, pick: Any) -> float:
        return float(statistics.median(pick(run) for run in runs[side]))

    trainer_total = median("trainer", lambda r: r["total"])
    baseline = {side: median(side, lambda r: r["total"]) for side in ("imagefolder", "workers")}
    return {
        "jpegs": float(len(JPEG_LABELS) * JPEGS_PER_LABEL),
        "trainer_5_epochs_s": trainer_total,
        "imagefolder_5_epochs_s": baseline["imagefolder"],
        "imagefolder_2_workers_5_epochs_s": baseline["workers"],
        # Against the faster of the two ways users write it.
        "imagefolder_speedup": min(baseline.values()) / trainer_total,
        "imagefolder_speedup_0_workers": baseline["imagefolder"] / trainer_total,
        "trainer_prepare_s": median("trainer", lambda r: r["prepare"]),
        "trainer_epoch_1_s": median("trainer", lambda r: r["epochs"][0]),
        "trainer_later_epoch_s": median("trainer", lambda r: statistics.median(r["epochs"][1:])),
        "imagefolder_epoch_1_s": median("imagefolder", lambda r: r["epochs"][0]),
        "imagefolder_later_epoch_s": median(
            "imagefolder", lambda r: statistics.median(r["epochs"][1:])
        ),
        "imagefolder_data_epoch_1_s": median("imagefolder", lambda r: r["waiting"][0]),
        "imagefolder_data_later_epoch_s": median(
            "imagefolder", lambda r: statistics.median(r["waiting"][1:])
        ),
        "trainer_val_accuracy": median("trainer", lambda r: r["accuracy"]),
        "imagefolder_val_accuracy": median("imagefolder", lambda r: r["accuracy"]),
    }


def digits_figures(rounds: int, epochs: int) -> dict[str, float]:
    command = json_format.ParseDict(json.loads(EXAMPLE.read_text()), attempt_pb2.TrainCommand())
    command.n_epoch = epochs
    bare, loop, call, started = [], [], [], []
    with scratch_postgres() as scratch:
        gateway = GatewayThread(scratch.url).start()
        # A checkpoint at epoch 5, as a trainer makes by default.
        proc, address = start_trainer(
            gateway, scratch.dir / "cache", checkpoint_every_epochs=5, credential=CREDENTIAL
        )
        try:
            with gateway.channel() as channel:
                dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
                    digits.digit_uploads()
                )
            with open_channel(address, CREDENTIAL) as channel:
                stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
                trainer_run(stub, command)  # fills the cache: later runs decode nothing
                for _ in range(rounds):
                    run = trainer_run(stub, command)
                    loop.append(run["loop_images_per_s"])
                    call.append(run["call_images_per_s"])
                    started.append(run["started_after_s"])
                    bare.append(bare_images_per_second(command, int(run["train_images"]), epochs))
        finally:
            stop_trainer(proc)
            gateway.stop()
    return {
        "bare_images_per_s": statistics.median(bare),
        "trainer_epoch_images_per_s": statistics.median(loop),
        "trainer_call_images_per_s": statistics.median(call),
        "trainer_epoch_ratio": statistics.median(loop) / statistics.median(bare),
        "trainer_call_ratio": statistics.median(call) / statistics.median(bare),
        "trainer_started_after_s": statistics.median(started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="of the digits runs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", choices=("digits", "imagefolder"))
    args = parser.parse_args()
    figures: dict[str, float] = {}
    if args.only in (None, "digits"):
        figures |= digits_figures(args.rounds, args.epochs)
    if args.only in (None, "imagefolder"):
        figures |= imagefolder_figures(args.rounds, args.threads)
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
