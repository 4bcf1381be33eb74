"""An Optuna study through `metalearn.optuna.Storage`, beside Optuna's own RDBStorage on
sqlite and on the same PostgreSQL, in one run (bench/imports.py's Optuna figures).

The setting is the issue's: `study.optimize` of a trivial objective (one float from a
RandomSampler, 3 intermediate values reported), TRIALS trials (1,000), n_jobs=4, one
process. Each storage is given as its users give it: metalearn's as
`metalearn.optuna.Storage()` to a gateway in its own process (bench/store.py's
GatewayProcess) on an embedded PostgreSQL; Optuna's as the URL string a script passes
(`storage="sqlite:///..."`, `storage="postgresql+psycopg://..."`), which Optuna opens
with its own cache (`optuna.storages.get_storage`). Optuna's logging is at WARNING for
all three (at INFO it would print, and read the best trial, once per trial). Each
storage gets a fresh, empty study; trials/s is trials over the wall time of `optimize`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.store import GatewayProcess


def _objective(trial: Any) -> float:
    x: float = trial.suggest_float("x", -10.0, 10.0)
    for step in range(3):
        trial.report(x * x + (3 - step), step)
    return x * x


def trials_per_s(storage: Any, name: str, trials: int) -> float:
    import optuna

    study = optuna.create_study(
        storage=storage, study_name=name, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    start = time.perf_counter()
    study.optimize(_objective, n_trials=trials, n_jobs=4)
    seconds = time.perf_counter() - start
    assert len(study.trials) == trials
    return trials / seconds


def _sqlalchemy_url(url: str, database: str) -> str:
    """The embedded server's URL for SQLAlchemy's psycopg dialect (a socket directory as
    host goes in the query)."""
    params = conninfo_to_dict(url)
    host = params.get("host", "127.0.0.1")
    user = params.get("user", "postgres")
    port = params.get("port", "5432")
    if str(host).startswith("/"):
        return f"postgresql+psycopg://{user}@/{database}?host={host}&port={port}"
    return f"postgresql+psycopg://{user}@{host}:{port}/{database}"


def optuna_storage(server_url: str, tmp: Path, trials: int) -> dict[str, Any]:
    """`optuna_storage_vs_sqlite` and `optuna_storage_vs_postgres`, with the trials/s of
    each storage."""
    import optuna

    from metalearn.optuna import Storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench_metalearn_optuna")
        conn.execute("CREATE DATABASE bench_optuna_rdb")
    metalearn_url = psycopg.conninfo.make_conninfo(server_url, dbname="bench_metalearn_optuna")
    gateway = GatewayProcess(metalearn_url, tmp / "optuna-gateway")
    try:
        storage = Storage(gateway.address, token=gateway.token)
        # Each storage first runs a small study of its own: connections, caches and
        # tables are made before the clock starts, for all three alike.
        trials_per_s(storage, "warm-up", 20)
        ours = trials_per_s(storage, "bench", trials)
    finally:
        gateway.stop()
    sqlite_url = f"sqlite:///{tmp / 'optuna.db'}"
    trials_per_s(sqlite_url, "warm-up", 20)
    sqlite = trials_per_s(sqlite_url, "bench", trials)
    postgres_url = _sqlalchemy_url(server_url, "bench_optuna_rdb")
    trials_per_s(postgres_url, "warm-up", 20)
    postgres = trials_per_s(postgres_url, "bench", trials)
    return {
        "optuna_storage_vs_sqlite": round(ours / sqlite, 3),
        "optuna_storage_vs_postgres": round(ours / postgres, 3),
        "optuna_metalearn_trials_per_s": round(ours, 1),
        "optuna_sqlite_trials_per_s": round(sqlite, 1),
        "optuna_postgres_trials_per_s": round(postgres, 1),
        "optuna_trials": trials,
    }
