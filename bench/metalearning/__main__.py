"""The meta-learning benchmark (issue 13): how much metalearn's history is worth.

  python -m bench.metalearning           # a table of figures
  python -m bench.metalearning --json    # one JSON object
  python -m bench.metalearning --no-live # only the replays, profiles from profiles.json
  python -m bench.metalearning --no-live --no-curves  # without issue 14's (seconds)

1. A real stack (scratch PostgreSQL, a gateway, one trainer process) profiles every task
   of both suites with ProfileTask: (d) seconds per profile.
2. Leave-one-task-out over the learning-curve table (`table.json.gz`, made through
   metalearn by `build_table`), several seeds, with the gateway's own code:
   (a) median trials until normalized regret <= 0.05: warm start (the k most similar
       tasks' portfolio first, then TPE with their trials as priors) vs cold TPE vs
       random search, and their ratio `warm_cold_trials_ratio` (goal <= 0.2);
   (b) the suggested command's regret: `knn_suggest_good_fraction` of tasks within
       0.05 (goal >= 0.7);
   (c) Spearman correlation between the learned distance and transfer regret, pooled
       (`distance_regret_spearman`, goal >= 0.5) and per left-out task, averaged
       (`knn_distance_regret_spearman_per_task`), beside the standardized distance's.
   (Issue 29's transfer figures below use the unprefixed names.)
   And issue 14's learning from curves (bench/metalearning/curves.py), over both
   suites' stored runs (the classic table and the wide one, 4,288 runs), one curve
   model per left-out FAMILY fitted on the other families' runs:
   (a) pruning: searches of 32 of a task's 64 commands (5 seeds) replaying its stored
       curves epoch by epoch, under no pruning, Optuna's median, percentile, successive
       halving, Hyperband and Wilcoxon pruners, a top-k-after-one-epoch baseline and the
       learned pruner: `epochs_ratio_<pruner>` against no pruning, `regret_ok_<pruner>`
       (share of searches whose regret is <= 0.01), `learned_epochs_ratio` (goal <= 0.5
       with `learned_regret_ok_fraction` >= 0.95), and each pruner's fewest epochs at
       that regret over a few settings (`epochs_at_goal_<pruner>`);
   (b) bad runs called hopeless by epoch 3 (chance: the largest class's share of the
       validation split), each family under the verdict chosen on the other families:
       `bad_run_precision` (goal >= 0.95) and `bad_run_recall` (goal >= 0.90), per
       family, and under the gateway's own verdict (`*_default`);
   (c) the final validation accuracy predicted from 3 epochs: `curve_mae_3` against
       `last_value_mae_3`.
   And issue 29's transfer figures (bench/metalearning/transfer.py) on the wide suite
   (43 tasks, 8 families; the headline) and the classic one (`classic_*`),
   leave-one-FAMILY-out first and leave-one-task-out beside it (`loto_*`): mean
   normalized regret after 1, 3, 5 and 10 trials of random search, cold TPE, the static
   portfolio, the similarity-weighted portfolio, the learned ranking, the warm start as
   the gateway makes it, and RGPE on BoTorch (a published transfer method, one seed);
   `gap_closed_first_trial`, `suggest_good_fraction`,
   `distance_regret_spearman_per_task`, `static_gap_share` (tasks where the best static
   default is 0.10 below the task's best), and each figure per family
   (`family_<family>_*`).
3. End to end, on two tasks kept out of the table: the table imported as history
   (ImportAttempts), then a warm-started study and a cold one of the same budget on
   each, trained for real: each study's first trial and best value.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from bench.database import scratch_postgres
from bench.metalearning import curves, evaluate, transfer
from bench.orchestration import wait_registered
from bench.report import print_figures
from bench.trainers import start_trainer
from gateway.config import GatewayConfig
from gateway.inprocess import GatewayThread
from gateway.tasks.learner import DEFAULT_ZERO_SHOT
from metalearn.examples import grid, tasks
from metalearn.examples.history import CLASSIC, WIDE, history
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import (
    attempt_service_pb2_grpc,
    dataset_service_pb2_grpc,
    study_service_pb2_grpc,
    task_pb2,
    task_service_pb2_grpc,
)
from metalearn.v1 import study_service_pb2 as spb
from metalearn.v1 import task_service_pb2 as kpb

PROFILES = Path(__file__).with_name("profiles.json")
# Figures both issue 13's leave-one-task-out replay and issue 29's transfer figures make.
SHARED = ("tasks", "seeds", "suggest_good_fraction", "distance_regret_spearman_per_task")


def profile_all(
    channel: Any, chosen: list[tasks.Task]
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Each task's profile through ProfileTask, and the seconds each call took."""
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    profiles, seconds = {}, []
    for task in chosen:
        start = time.perf_counter()
        found = stub.ProfileTask(
            kpb.ProfileTaskRequest(task=task_pb2.TaskKey(label_names=task.labels), wait=True),
            timeout=120,
        ).task
        seconds.append(time.perf_counter() - start)
        if found.state != task_pb2.TASK_STATE_READY:
            raise RuntimeError(f"{task.name}: not profiled: {found.error}")
        profiles[task.name] = dict(found.profile.features)
    return profiles, seconds


def study_on(task: tasks.Task, name: str, n_trials: int, warm: bool) -> spb.Study:
    doc: dict[str, Any] = {
        "name": name,
        "base_command": grid.base_command(task.labels),
        "search_space": grid.SPACE,
        "n_trials": n_trials,
        "max_parallel": 1,
        "seed": 1,
        "sampler": {"name": "tpe"},
    }
    if warm:
        doc["warm_start"] = {"similar_tasks": 5}
    return json_format.ParseDict(doc, spb.Study())


def run_study(studies: Any, spec: spb.Study) -> spb.Study:
    studies.CreateStudy(spb.CreateStudyRequest(study=spec))
    for event in studies.WatchStudy(spb.WatchStudyRequest(name=spec.name), timeout=3600):
        if event.WhichOneof("event") == "study_finished":
            found: spb.Study = studies.GetStudy(spb.GetStudyRequest(name=spec.name)).study
            return found
    raise RuntimeError(f"{spec.name} did not finish")


def live(table: dict[str, Any], n_trials: int, run_studies: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with scratch_postgres() as scratch:
        config = GatewayConfig(listen="127.0.0.1:0", database_url=scratch.url,
                               dispatch_seconds=0.2, study_tick_seconds=0.5)  # fmt: skip
        gateway = GatewayThread(scratch.url, config).start()
        trainers = []
        try:
            with gateway.channel() as channel:
                datasets = dataset_service_pb2_grpc.DatasetServiceStub(channel)
                known = list(
                    {t.name: t for t in tasks.FAMILY + tasks.HELD_OUT + tasks.WIDE}.values()
                )
                datasets.UploadImages(tasks.uploads(tuple(known)))
                trainers = [start_trainer(gateway, scratch.dir / "cache", 1)]
                wait_registered(scratch.url, 1)
                profiles, seconds = profile_all(channel, known)
                figures["profiles"] = profiles
                figures["profile_seconds_median"] = statistics.median(seconds)
                figures["profile_seconds_max"] = max(seconds)
                if not run_studies:
                    return figures
                stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
                documents = history(table)
                for start in range(0, len(documents), 500):
                    stub.ImportAttempts(
                        apb.ImportAttemptsRequest(attempts=documents[start : start + 500])
                    )
                trainers.append(start_trainer(gateway, scratch.dir / "cache", 1))
                wait_registered(scratch.url, 2)
                studies = study_service_pb2_grpc.StudyServiceStub(channel)
                for task in tasks.HELD_OUT:
                    for arm in ("cold", "warm"):
                        done = run_study(studies, study_on(task, f"{arm}-{task.name}", n_trials,
                                                           arm == "warm"))  # fmt: skip
                        values = [t.value for t in done.trials]
                        figures[f"live_{task.name}_{arm}_first_trial"] = values[0]
                        figures[f"live_{task.name}_{arm}_best"] = max(values)
                        figures[f"live_{task.name}_{arm}_best_of_3"] = max(values[:3])
                        if arm == "warm":
                            report = done.warm_start_report
                            figures[f"live_{task.name}_warm_sources"] = [
                                "/".join(s.label_names[:1]) for s in report.sources
                            ]
        finally:
            for proc, _ in trainers:
                proc.terminate()
                proc.wait(60)
            gateway.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-live", action="store_true",
                        help="replay only, with the profiles kept in profiles.json")  # fmt: skip
    parser.add_argument("--no-studies", action="store_true",
                        help="profile for real, but skip the end-to-end studies")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--neighbours", type=int, default=5)
    parser.add_argument("--zero-shot", type=int, default=None,
                        help="zero-shot trials (default: the gateway's, min(k, 8))")  # fmt: skip
    parser.add_argument("--live-trials", type=int, default=6)
    parser.add_argument("--no-transfer", action="store_true",
                        help="skip issue 29's transfer figures (minutes)")  # fmt: skip
    parser.add_argument("--transfer-seeds", type=int, default=5,
                        help="seeds of each search in the transfer figures")  # fmt: skip
    parser.add_argument("--no-curves", action="store_true",
                        help="skip issue 14's curve figures (minutes of model fits)")  # fmt: skip
    parser.add_argument("--curve-seeds", type=int, default=curves.SEARCH_SEEDS,
                        help="pruning searches per task")  # fmt: skip
    parser.add_argument("--curve-trials", type=int, default=curves.SEARCH_TRIALS,
                        help="trials per pruning search (of the grid's 64)")  # fmt: skip
    args = parser.parse_args()
    with gzip.open(CLASSIC.path, "rt") as f:
        table = json.load(f)
    with gzip.open(WIDE.path, "rt") as f:
        wide = json.load(f)
    figures: dict[str, Any] = {}
    if args.no_live:
        profiles = json.loads(PROFILES.read_text())
    else:
        found = live(table, args.live_trials, not args.no_studies)
        profiles = found.pop("profiles")
        PROFILES.write_text(json.dumps(profiles, indent=1, sort_keys=True) + "\n")
        figures.update(found)
    start = time.perf_counter()
    knn = evaluate.leave_one_out(
        evaluate.load(table),
        profiles,
        seeds=args.seeds,
        neighbours=args.neighbours,
        zero_shot=min(args.neighbours, DEFAULT_ZERO_SHOT)
        if args.zero_shot is None
        else args.zero_shot,
    )
    # Issue 13's figures; those issue 29's transfer figures name too are kept as knn_*.
    figures.update({(f"knn_{k}" if k in SHARED else k): v for k, v in knn.items()})
    figures["replay_seconds"] = time.perf_counter() - start
    figures.update(evaluate.ablation(evaluate.load(table), profiles, args.neighbours))
    if not args.no_transfer:
        start = time.perf_counter()
        # The wide suite's figures are the headline (unprefixed), the classic suite's
        # beside them (classic_*); leave-one-family-out first, leave-one-task-out
        # beside it (loto_*).
        for suite, loaded_table, prefix in ((CLASSIC, table, "classic_"), (WIDE, wide, "")):
            loaded = evaluate.load(loaded_table)
            for by_family, kind in ((True, ""), (False, "loto_")):
                found = transfer.evaluate(
                    loaded, profiles, by_family=by_family, seeds=args.transfer_seeds,
                    commands=suite.grid,
                )  # fmt: skip
                figures.update({f"{prefix}{kind}{k}": v for k, v in found.items()})
        figures["transfer_seconds"] = time.perf_counter() - start
    if not args.no_curves:
        figures.update(curves.figures([table, wide], profiles, args.curve_seeds, args.curve_trials))
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
