"""Benchmark of the trainer: its training throughput against a bare PyTorch loop.

The same model (the LeNet example, built from the same resolved spec), the same
preprocessed digits, batch size and optimizer, in a plain loop in this process, then
through a real `TrainerService.Train` call (worker process, DataLoader, validation pass,
checkpoints, events). Interleaved rounds, medians, so machine noise hits both alike.
  python bench/training.py          # a table
  python bench/training.py --json   # one JSON object, keys name the figures
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import print_figures
from gateway.inprocess import GatewayThread
from metalearn import digits
from metalearn.credentials import open_channel
from metalearn.errors import Violations
from metalearn.v1 import attempt_pb2, dataset_service_pb2_grpc, trainer_service_pb2_grpc
from metalearn.v1 import trainer_service_pb2 as pb
from trainer import model
from trainer.config import TrainerConfig
from trainer.server import create_server

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_lenet.json"


def bare_images_per_second(command: attempt_pb2.TrainCommand, images: int, epochs: int) -> float:
    """The plainest loop: random 8x8 inputs of the digits' shape, no data pipeline."""
    torch.manual_seed(0)
    v = Violations()
    spec = model.resolve(v, "model", command.model, (1, 8, 8), 10, 10**9)
    assert spec is not None
    net = model.build(spec)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.003)
    criterion = torch.nn.CrossEntropyLoss()
    x = torch.randn(images, 1, 8, 8)
    y = torch.randint(0, 10, (images,))
    batch = command.batch_size
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(images)
        for i in range(0, images, batch):
            index = order[i : i + batch]
            optimizer.zero_grad()
            loss = criterion(net(x[index]), y[index])
            loss.backward()
            optimizer.step()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    command = json_format.ParseDict(json.loads(EXAMPLE.read_text()), attempt_pb2.TrainCommand())
    command.n_epoch = args.epochs
    bare, loop, call, started = [], [], [], []
    with scratch_postgres() as scratch:
        tmp = scratch.dir
        gateway = GatewayThread(scratch.url).start()
        # Called directly, as its gateway would (a fixed credential); reading images with
        # the admin token (a trainer token reads only the work it holds).
        config = TrainerConfig(
            listen="127.0.0.1:0",
            gateway=gateway.address,
            cache_dir=tmp,
            token=gateway.admin_token,
            gateway_credential="bench-credential",
        )
        server, port, _, _ = create_server(config)
        server.start()
        try:
            with gateway.channel() as channel:
                dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
                    digits.digit_uploads()
                )
            with open_channel(f"127.0.0.1:{port}", "bench-credential") as channel:
                stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
                trainer_run(stub, command)  # fills the cache: later runs decode nothing
                for _ in range(args.rounds):
                    run = trainer_run(stub, command)
                    loop.append(run["loop_images_per_s"])
                    call.append(run["call_images_per_s"])
                    started.append(run["started_after_s"])
                    bare.append(
                        bare_images_per_second(command, int(run["train_images"]), args.epochs)
                    )
        finally:
            server.stop(5).wait()
            gateway.stop()
    figures = {
        "bare_images_per_s": statistics.median(bare),
        "trainer_epoch_images_per_s": statistics.median(loop),
        "trainer_call_images_per_s": statistics.median(call),
        "trainer_epoch_ratio": statistics.median(loop) / statistics.median(bare),
        "trainer_call_ratio": statistics.median(call) / statistics.median(bare),
        "trainer_started_after_s": statistics.median(started),
    }
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
