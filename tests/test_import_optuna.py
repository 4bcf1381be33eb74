"""`metalearn import optuna` (issue 28): an Optuna RDB storage and a journal file, made by
Optuna itself with complete, pruned, failed, running and waiting trials, brought into
metalearn twice (nothing twice), then again once the running trial has ended."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from metalearn.importing.optuna import ORIGIN_ATTR, import_studies
from metalearn.optuna import Storage
from metalearn.v1 import attempt_pb2
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import attempt_service_pb2_grpc as agrpc
from metalearn.v1 import reporting_service_pb2 as rpb
from metalearn.v1 import reporting_service_pb2_grpc as rgrpc
from tests.harness import GatewayThread

ROOT = Path(__file__).resolve().parents[1]


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    for step in range(4):
        trial.report(x * x + (4 - step), step)
        if trial.number % 4 == 1 and step == 2:
            raise optuna.TrialPruned()
    if trial.number % 4 == 2:
        raise RuntimeError("diverged")
    return x * x + (1.0 if kind == "a" else 0.0)


def _populate(storage: str | JournalStorage) -> tuple[optuna.Study, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    single = optuna.create_study(study_name="search", storage=storage)
    single.set_user_attr("dataset", "digits")
    single.optimize(_objective, n_trials=8, catch=(RuntimeError,))
    running = single.ask()  # started, never told (yet)
    running.suggest_float("x", -5, 5)
    single.enqueue_trial({"x": 0.5, "kind": "b"})  # waiting
    multi = optuna.create_study(
        study_name="pareto", storage=storage, directions=["minimize", "maximize"]
    )
    multi.optimize(lambda t: (t.suggest_int("n", 1, 9), t.suggest_int("n2", 1, 3)), n_trials=3)
    return single, multi


def test_an_rdb_storage_is_imported_whole_and_only_once(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    single, _ = _populate(url)
    target = Storage(f"127.0.0.1:{gateway.port}", token=gateway.admin_token)

    first = import_studies(url, target)
    assert first.failed == 0
    by_name = {s.name: s for s in first.studies}
    assert by_name["search"].imported == 8 and by_name["search"].unfinished == 2
    assert by_name["pareto"].imported == 3

    held = optuna.load_study(study_name="search", storage=target)
    assert held.user_attrs == {"dataset": "digits"}
    source = {t.number: t for t in single.trials if t.state.is_finished()}
    mine = {t.system_attrs[ORIGIN_ATTR]["id"]: t for t in held.trials}
    assert len(mine) == 8
    states = set()
    for number, original in source.items():
        copied = mine[f"search/{number}"]
        states.add(copied.state)
        assert copied.state == original.state
        assert copied.params == original.params
        assert copied.distributions == original.distributions
        assert copied.values == original.values
        assert copied.intermediate_values == original.intermediate_values
        assert copied.datetime_start == original.datetime_start
        assert copied.datetime_complete == original.datetime_complete
    assert states == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    assert held.best_value == single.best_value
    pareto = optuna.load_study(study_name="pareto", storage=target)
    assert pareto.directions == [
        optuna.study.StudyDirection.MINIMIZE,
        optuna.study.StudyDirection.MAXIMIZE,
    ]
    assert len(pareto.best_trials) >= 1

    # Each trial is a claim: a reported attempt whose origin names the source.
    with gateway.channel(gateway.admin_token) as channel:
        listed = agrpc.AttemptServiceStub(channel).ListAttempts(
            apb.ListAttemptsRequest(filter='trial.study = "search"', page_size=50)
        )
        assert len(listed.attempts) == 8
        for attempt in listed.attempts:
            assert attempt.provenance == attempt_pb2.PROVENANCE_REPORTED
            assert attempt.reported.origin.system == "optuna"
            assert attempt.reported.origin.uri == url
            assert attempt.reported.origin.group == "search"
        pruned = next(a for a in listed.attempts if a.status == attempt_pb2.ATTEMPT_STATUS_PRUNED)
        history = rgrpc.ReportingServiceStub(channel).GetMetricHistory(
            rpb.GetMetricHistoryRequest(
                attempt_id=pruned.id, key="intermediate_value", after_step=-1
            )
        )
        assert list(history.steps) == [0, 1, 2]

    # Again: nothing new, nothing twice.
    second = import_studies(url, target)
    assert second.imported == 0 and second.failed == 0
    assert {s.name: s.already for s in second.studies} == {"search": 8, "pareto": 3}
    assert len(optuna.load_study(study_name="search", storage=target).trials) == 8

    # The running trial ends in the source: the next import brings it in.
    single.tell(next(t.number for t in single.trials if t.state == TrialState.RUNNING), 1.25)
    third = import_studies(url, target)
    assert third.imported == 1
    values = [t.value for t in optuna.load_study(study_name="search", storage=target).trials]
    assert any(v is not None and math.isclose(v, 1.25, abs_tol=0) for v in values)


def test_a_journal_file_through_the_cli(gateway: GatewayThread, tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    _populate(JournalStorage(JournalFileBackend(str(journal))))
    token = gateway.make_token("optuna-importer", "writer")
    env = {
        **os.environ,
        "METALEARN_GATEWAY": f"127.0.0.1:{gateway.port}",
        "METALEARN_TOKEN": token,
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "metalearn.cli", "import", "optuna", f"journal:{journal}",
         "--study", "search", "--study", "absent"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # One study named was not there: said so, and the exit code says something failed.
    assert done.returncode == 1, done.stderr
    assert "study absent: not imported: no such study in the source" in done.stdout
    assert "8 trials imported into 1 studies" in done.stdout
    target = Storage(f"127.0.0.1:{gateway.port}", token=token)
    held = optuna.load_study(study_name="search", storage=target)
    assert len(held.trials) == 8
    with pytest.raises(KeyError):
        target.get_study_id_from_name("pareto")
