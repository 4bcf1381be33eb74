"""Benchmark of bringing other systems' history in (`metalearn import ...`).

Against a real embedded PostgreSQL and a real gateway in its own process, both started
here, as bench/reporting.py does:
- mlflow: a local MLflow sqlite store, written by MLflow's own client (RUNS runs of
  METRICS metrics of STEPS steps each: 50 x 4 x 1,000 = 200,000 points by default), then
  imported end to end (`metalearn.importing.mlflow.import_mlflow`, what `metalearn
  import mlflow` runs) into the fresh gateway: metric points a second, timed from the
  import's start (the MLflow client opened on the store, the runs listed) to its end
  (every run finished on the gateway). Python importing the `mlflow` package itself
  (about 3 s, once per process) happens before the clock starts: it is not per point.

- optuna: `study.optimize` through `metalearn.optuna.Storage` beside Optuna's own
  RDBStorage on sqlite and on the same PostgreSQL (bench/optuna_storage.py says how):
  `optuna_storage_vs_sqlite`, `optuna_storage_vs_postgres`.

Each measurement is a function returning its figures; `main` collects them into one
JSON object (`python bench/imports.py --json`).

  python bench/imports.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.optuna_storage import optuna_storage
from bench.report import print_figures
from bench.store import GatewayProcess
from metalearn.credentials import open_channel
from metalearn.v1 import token_service_pb2, token_service_pb2_grpc


def _writer_token(gateway: GatewayProcess) -> str:
    """A writer's token: an importer reports runs as a writer does."""
    with gateway.channel() as channel:
        reply = token_service_pb2_grpc.TokenServiceStub(channel).CreateToken(
            token_service_pb2.CreateTokenRequest(
                name="bench-importer", role=token_service_pb2.ROLE_WRITER
            )
        )
    return str(reply.secret)


def populate_mlflow(uri: str, runs: int, metrics: int, steps: int) -> int:
    """An MLflow store written by MLflow's client: `runs` finished runs with a few
    params and `metrics` metrics of `steps` steps each; the points written."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("bench-import")
    now = int(time.time() * 1000) - 3_600_000
    for r in range(runs):
        run = client.create_run(experiment, run_name=f"bench-{r}")
        run_id = run.info.run_id
        params = [Param("lr", str(0.001 * (r + 1))), Param("optimizer", "adam")]
        client.log_batch(run_id, params=params)
        for m in range(metrics):
            for first in range(0, steps, 1000):  # MLflow takes 1,000 metrics a call
                batch = [
                    Metric(f"metric_{m}", 1.0 / (s + 1 + m), now + s, s)
                    for s in range(first, min(steps, first + 1000))
                ]
                client.log_batch(run_id, metrics=batch)
        client.set_terminated(run_id, "FINISHED")
    return runs * metrics * steps


def mlflow_import(runs: int, metrics: int, steps: int) -> dict[str, Any]:
    """`mlflow_import_points_per_s` and what it was measured on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's own deprecation notes
        import mlflow  # noqa: F401 - imported before the clock starts (see the docstring)

        from metalearn.importing.mlflow import Options, import_mlflow

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        points = populate_mlflow(uri, runs, metrics, steps)
        with scratch_postgres() as scratch:
            gateway = GatewayProcess(scratch.url, scratch.dir / "gateway")
            try:
                channel = open_channel(gateway.address, _writer_token(gateway))
                try:
                    start = time.perf_counter()
                    summary = import_mlflow(Options(uri=uri), channel, progress=None)
                    seconds = time.perf_counter() - start
                finally:
                    channel.close()
            finally:
                gateway.stop()
    if summary.failed or summary.points != points or summary.finished != runs:
        raise RuntimeError(f"the import was not whole: {summary.as_dict()}")
    return {
        "mlflow_import_points_per_s": points / seconds,
        "mlflow_points": points,
        "mlflow_runs": runs,
        "mlflow_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes (tests)")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    figures.update(mlflow_import(runs=5 if args.quick else 50, metrics=4, steps=1000))
    with scratch_postgres() as scratch:
        figures.update(optuna_storage(scratch.url, scratch.dir, 50 if args.quick else 1000))
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
