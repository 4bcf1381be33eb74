"""Rebuilds the learning-curve table: every grid command trained on every task of the
family, through metalearn (a scratch PostgreSQL, a gateway, trainer processes), then
read back from the store with GetAttempt and written as a compact file.

  python -m bench.metalearning.build_table            # the whole table (about 40 min here)
  python -m bench.metalearning.build_table --tasks digits-38 few --points 8   # a probe

The file holds, per task, per grid point: the validation accuracy, validation loss and
training loss of each epoch, and the seconds trained.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from bench.database import scratch_postgres
from bench.orchestration import wait_registered
from bench.trainers import start_trainer
from gateway.config import GatewayConfig
from gateway.inprocess import GatewayThread
from metalearn.examples import grid, tasks
from metalearn.examples.history import TABLE
from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc, dataset_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as pb

_DONE = {attempt_pb2.ATTEMPT_STATUS_TRAINED, attempt_pb2.ATTEMPT_STATUS_FAILED}


def attempt_name(task: tasks.Task, index: int) -> str:
    return f"table-{task.name}-{index:03d}"


def _row(attempt: attempt_pb2.Attempt) -> dict[str, Any]:
    epochs = sorted(attempt.epochs, key=lambda e: e.epoch)
    return {
        "val_accuracy": [round(e.val_accuracy, 4) for e in epochs],
        "val_loss": [round(e.val_loss, 4) for e in epochs],
        "loss": [round(e.loss, 4) for e in epochs],
        "seconds": round(sum(e.seconds for e in epochs), 3),
        "status": attempt_pb2.AttemptStatus.Name(attempt.status),
    }


def build(chosen: list[tasks.Task], n_points: int, n_trainers: int) -> dict[str, Any]:
    points = grid.points()[:n_points]
    with scratch_postgres() as scratch:
        config = GatewayConfig(listen="127.0.0.1:0", database_url=scratch.url, dispatch_seconds=0.2)
        gateway = GatewayThread(scratch.url, config).start()
        trainers = []
        try:
            with gateway.channel() as channel:
                datasets = dataset_service_pb2_grpc.DatasetServiceStub(channel)
                datasets.UploadImages(tasks.uploads(tuple(chosen)))
                stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
                trainers = [
                    start_trainer(gateway, scratch.dir / "cache", 1) for _ in range(n_trainers)
                ]
                wait_registered(scratch.url, n_trainers)
                start = time.monotonic()
                for task in chosen:
                    for i, point in enumerate(points):
                        command = json_format.ParseDict(
                            grid.command(task.labels, point), attempt_pb2.TrainCommand()
                        )
                        stub.Train(pb.TrainRequest(name=attempt_name(task, i), command=command))
                table_tasks = []
                for task in chosen:
                    rows = []
                    for i in range(len(points)):
                        name = attempt_name(task, i)
                        while True:
                            attempt = stub.GetAttempt(pb.GetAttemptRequest(name=name)).attempt
                            if attempt.status in _DONE:
                                break
                            time.sleep(0.5)
                        full = pb.GetAttemptRequest(name=name, view=pb.ATTEMPT_VIEW_FULL)
                        rows.append(_row(stub.GetAttempt(full).attempt))
                    table_tasks.append(
                        {"name": task.name, "labels": list(task.labels), "points": rows}
                    )
                    print(
                        f"{task.name}: done at {time.monotonic() - start:.0f} s",
                        file=sys.stderr,
                    )
        finally:
            for proc, _ in trainers:
                proc.terminate()
                proc.wait(60)
            gateway.stop()
    return {
        "space": grid.SPACE,
        "base_command": grid.base_command(["<labels>"]),
        "epochs": grid.EPOCHS,
        "points": points,
        "tasks": table_tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", nargs="*", help="task names (default: the whole family)")
    parser.add_argument("--points", type=int, default=len(grid.points()))
    parser.add_argument("--trainers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=TABLE)
    args = parser.parse_args()
    chosen = [t for t in tasks.FAMILY if not args.tasks or t.name in args.tasks]
    table = build(chosen, args.points, args.trainers)
    with gzip.open(args.out, "wt") as out:
        json.dump(table, out, separators=(",", ":"))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
