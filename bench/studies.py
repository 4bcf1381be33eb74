"""Studies (issue 12), side by side in one run, on a gateway with two trainer processes
(one torch thread each, on this 2-core machine) over the digits:

(a) a 30-trial study of tiny trials against the same 30 commands queued directly with
    Train: trials per minute, and their ratio (`study_overhead_ratio`, goal >= 0.9),
    after a 2-trial study that started the gateway's worker processes
    (`first_study_seconds`);
(b) the same search with a pruner and without, for several seeds: epochs spent
    (`pruned_epochs_ratio`, pruned over unpruned, goal <= 0.5) and the best validation
    accuracy found (`best_accuracy_gap`, pruned minus unpruned, goal within 0.01);
What one pruning decision costs is measured apart, in studies of any size, by
bench/pruning.py.
  python bench/studies.py          # a table
  python bench/studies.py --json   # one JSON object
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.orchestration import DONE, command, wait_registered
from bench.report import print_figures
from bench.trainers import start_trainer
from gateway.config import GatewayConfig
from gateway.inprocess import GatewayThread
from metalearn import digits
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import (
    attempt_service_pb2_grpc,
    dataset_service_pb2_grpc,
    study_service_pb2_grpc,
)
from metalearn.v1 import study_service_pb2 as pb

TINY = command(n_epoch=1, label_names=["digit 0", "digit 1"], batch_size=64)


def study(
    name: str, base: Any, n_trials: int, seed: int, pruner: dict[str, Any] | None
) -> pb.Study:
    doc: dict[str, Any] = {
        "name": name,
        "base_command": json_format.MessageToDict(base, preserving_proto_field_name=True),
        "search_space": [
            {"path": "optimizer.lr", "float": {"low": 1e-5, "high": 0.1, "log": True}},
            {"path": "model.layers[7].out_features", "int": {"low": 16, "high": 256, "step": 16}},
        ],
        "n_trials": n_trials,
        "max_parallel": 2,
        "seed": seed,
        "sampler": {"name": "tpe"},
    }
    if pruner is not None:
        doc["pruner"] = pruner
    return json_format.ParseDict(doc, pb.Study())


def run_study(studies: Any, spec: pb.Study) -> tuple[pb.Study, float]:
    start = time.perf_counter()
    studies.CreateStudy(pb.CreateStudyRequest(study=spec))
    for event in studies.WatchStudy(pb.WatchStudyRequest(name=spec.name), timeout=3600):
        if event.WhichOneof("event") == "study_finished":
            return event.study_finished, time.perf_counter() - start
    raise RuntimeError(f"{spec.name} did not finish")


def direct(attempts: Any, commands: list[Any], prefix: str) -> float:
    """Seconds for these commands queued at once with Train, until all are trained."""
    start = time.perf_counter()
    names = [f"{prefix}-{i}" for i in range(len(commands))]
    for name, cmd in zip(names, commands, strict=True):
        attempts.Train(apb.TrainRequest(name=name, command=cmd))
    for name in names:
        while attempts.GetAttempt(apb.GetAttemptRequest(name=name)).attempt.status not in DONE:
            time.sleep(0.05)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--search-trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with scratch_postgres() as scratch:
        url, tmp = scratch.url, scratch.dir
        config = GatewayConfig(listen="127.0.0.1:0", database_url=url, dispatch_seconds=0.2)
        gateway = GatewayThread(url, config).start()
        trainers = []
        try:
            with gateway.channel() as channel:
                dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
                    digits.digit_uploads()
                )
                attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
                studies = study_service_pb2_grpc.StudyServiceStub(channel)
                trainers = [start_trainer(gateway, tmp / "cache", 1) for _ in range(2)]
                wait_registered(url, 2)
                direct(attempts, [TINY, TINY], "warm-up")  # both trainers' caches
                # The gateway's worker processes, spawned by the first CreateStudy: each
                # imports this script again (spawn), torch included; timed on its own.
                started = time.perf_counter()
                run_study(studies, study("warm-up-study", TINY, 2, 1, None))
                figures["first_study_seconds"] = time.perf_counter() - started
                # (a)
                done, study_seconds = run_study(studies, study("tiny", TINY, args.trials, 1, None))
                commands = [
                    attempts.GetAttempt(
                        apb.GetAttemptRequest(name=t.attempt_name)
                    ).attempt.training_commands
                    for t in done.trials
                ]
                direct_seconds = direct(attempts, commands, "direct")
                figures["study_trials_per_min"] = args.trials / study_seconds * 60
                figures["direct_trials_per_min"] = args.trials / direct_seconds * 60
                figures["study_overhead_ratio"] = direct_seconds / study_seconds
                # (b)
                base = command(n_epoch=args.epochs, batch_size=64)
                # Asynchronous successive halving: rungs at epochs 1 and 3, a third go on.
                pruner = {"name": "successive_halving",
                          "args": {"min_resource": 1, "reduction_factor": 3}}  # fmt: skip
                epochs = {"pruned": 0, "unpruned": 0}
                gaps = []
                for seed in range(1, args.seeds + 1):
                    best = {}
                    for arm, choice in (("unpruned", None), ("pruned", pruner)):
                        name = f"{arm}-{seed}"
                        result, _ = run_study(
                            studies, study(name, base, args.search_trials, seed, choice)
                        )
                        epochs[arm] += sum(t.epochs for t in result.trials)
                        best[arm] = result.best_trial.value
                    gaps.append(best["pruned"] - best["unpruned"])
                    figures[f"best_accuracy_seed{seed}_unpruned"] = best["unpruned"]
                    figures[f"best_accuracy_seed{seed}_pruned"] = best["pruned"]
                figures["epochs_unpruned"] = epochs["unpruned"]
                figures["epochs_pruned"] = epochs["pruned"]
                figures["pruned_epochs_ratio"] = epochs["pruned"] / epochs["unpruned"]
                figures["best_accuracy_gap"] = statistics.mean(gaps)
                figures["best_accuracy_gap_worst"] = min(gaps)
        finally:
            for proc, _ in trainers:
                proc.terminate()
                proc.wait(60)
            gateway.stop()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
