"""Rebuilds a learning-curve table: every grid command trained on every task of a suite,
through metalearn (a scratch PostgreSQL, a gateway, trainer processes), then read back
from the store with GetAttempt and written as a compact file.

  python -m bench.metalearning.build_table                # the classic table (about 40 min)
  python -m bench.metalearning.build_table --suite wide   # the wide one (about 50 min)
  python -m bench.metalearning.build_table --tasks digits-38 few --points 8   # a probe

It can be stopped and run again: each finished task is appended to `<out>.partial` as it
is read back, and a later run trains only the tasks not there yet (with the same seed and
data a run's curve does not depend on when or beside what it trained).

  python -m bench.metalearning.build_table --suite classic --counts-only  # add the counts

The file holds, per task: its labels, how many of its images each label has in the
train split and in the validation part of it the trainer holds out (from the gateway's
and the trainer's own split functions: chance is the largest class's share of the
validation split), and per grid point the validation accuracy, validation loss and training
loss of each epoch, and the seconds trained.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
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
from gateway.datasets.imaging import in_test_split
from gateway.inprocess import GatewayThread
from metalearn.examples import grid, history, tasks
from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc, dataset_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as pb
from trainer.data import TEST_FRACTION, in_validation

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


def split_counts(task: tasks.Task, seed: int) -> tuple[list[int], list[int]]:
    """Each label's images in the train split a run with this seed reads (the gateway's
    function), and in the validation part of it the trainer holds out (its own): what
    a trainer reports as `images_per_label` and `validation_images_per_label`."""
    train, validation = [], []
    for label in task.labels:
        variant, klass = label.split("/", 1)
        n_train = n_validation = 0
        for pixels in tasks.class_images(variant, klass):
            digest = hashlib.sha256(tasks.png(pixels)).digest()
            if not in_test_split(digest, seed, TEST_FRACTION):
                n_train += 1
                n_validation += in_validation(digest.hex(), seed)
        train.append(n_train)
        validation.append(n_validation)
    return train, validation


def with_counts(table: dict[str, Any], suite: history.Suite) -> dict[str, Any]:
    """The table with each task's split counts (a table from before they were kept
    gains them without training anything again)."""
    by_name = {t.name: t for t in suite.tasks}
    for entry in table["tasks"]:
        task = by_name[entry["name"]]
        seed = int(suite.grid.base_command(task.labels)["seed"])
        entry["images_per_label"], entry["validation_per_label"] = split_counts(task, seed)
    table.setdefault("grid", suite.grid.name)
    return table


def _finished(partial: Path) -> dict[str, dict[str, Any]]:
    if not partial.exists():
        return {}
    done = {}
    for line in partial.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            done[entry["name"]] = entry
    return done


def build(
    suite: history.Suite,
    chosen: list[tasks.Task],
    n_points: int,
    n_trainers: int,
    partial: Path,
) -> dict[str, Any]:
    points = suite.grid.points()[:n_points]
    done = _finished(partial)
    todo = [t for t in chosen if t.name not in done]
    if todo:
        _train(suite.grid, todo, points, n_trainers, partial)
        done = _finished(partial)
    return {
        "grid": suite.grid.name,
        "space": suite.grid.space,
        "base_command": suite.grid.base_command(["<labels>"]),
        "epochs": grid.EPOCHS,
        "points": points,
        "tasks": [done[t.name] for t in chosen],
    }


def _train(
    commands: grid.Grid,
    chosen: list[tasks.Task],
    points: list[dict[str, Any]],
    n_trainers: int,
    partial: Path,
) -> None:
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
                            commands.command(task.labels, point), attempt_pb2.TrainCommand()
                        )
                        stub.Train(pb.TrainRequest(name=attempt_name(task, i), command=command))
                for task in chosen:
                    rows = []
                    reported: list[attempt_pb2.DatasetFingerprint] = []
                    for i in range(len(points)):
                        name = attempt_name(task, i)
                        while True:
                            attempt = stub.GetAttempt(pb.GetAttemptRequest(name=name)).attempt
                            if attempt.status in _DONE:
                                break
                            time.sleep(0.5)
                        full = pb.GetAttemptRequest(name=name, view=pb.ATTEMPT_VIEW_FULL)
                        attempt = stub.GetAttempt(full).attempt
                        rows.append(_row(attempt))
                        reported.append(attempt.dataset)
                    seed = int(commands.base_command(task.labels)["seed"])
                    train, validation = split_counts(task, seed)
                    for dataset in reported:
                        # The counts kept are the ones every trainer reported.
                        said = (list(dataset.images_per_label),
                                list(dataset.validation_images_per_label))  # fmt: skip
                        if said[1] and said != (train, validation):
                            raise RuntimeError(f"{task.name}: a trainer reported {said}")
                    entry = {
                        "name": task.name,
                        "labels": list(task.labels),
                        "images_per_label": train,
                        "validation_per_label": validation,
                        "points": rows,
                    }
                    with partial.open("a") as out:
                        out.write(json.dumps(entry, separators=(",", ":")) + "\n")
                    print(
                        f"{task.name}: done at {time.monotonic() - start:.0f} s",
                        file=sys.stderr,
                    )
        finally:
            for proc, _ in trainers:
                proc.terminate()
                proc.wait(60)
            gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=sorted(history.SUITES), default="classic")
    parser.add_argument("--tasks", nargs="*", help="task names (default: the whole suite)")
    parser.add_argument("--points", type=int, help="only the first N grid points")
    parser.add_argument("--trainers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="default: the suite's pinned table")
    parser.add_argument(
        "--counts-only", action="store_true", help="add the split counts to the pinned table"
    )
    args = parser.parse_args()
    suite = history.SUITES[args.suite]
    out_path: Path = args.out or suite.path
    if args.counts_only:
        table = with_counts(history.table(suite.path), suite)
        with gzip.open(out_path, "wt") as out:
            json.dump(table, out, separators=(",", ":"))
        print(f"wrote {out_path}", file=sys.stderr)
        return
    chosen = [t for t in suite.tasks if not args.tasks or t.name in args.tasks]
    n_points = args.points or len(suite.grid.points())
    partial = out_path.with_name(out_path.name + ".partial")
    table = build(suite, chosen, n_points, args.trainers, partial)
    with gzip.open(out_path, "wt") as out:
        json.dump(table, out, separators=(",", ":"))
    partial.unlink()
    print(f"wrote {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
