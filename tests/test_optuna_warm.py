"""`metalearn.optuna.warm_start` on a real gateway: an Optuna study's first trials are
the best settings of the tasks nearest its own, from runs that count as evidence for
its owner, mapped to the study's parameter names and kept within its ranges."""

from __future__ import annotations

import uuid

import optuna
import pytest

import metalearn.optuna
from metalearn.optuna.warm import WARM_KEY
from metalearn.v1 import reporting_service_pb2 as rpb
from metalearn.v1 import reporting_service_pb2_grpc as rgrpc
from metalearn.v1 import task_service_pb2 as pb
from metalearn.v1 import task_service_pb2_grpc as tgrpc
from tests.harness import GatewayThread
from tests.test_declared_tasks import _declared, _finished


def test_an_optuna_study_starts_from_the_nearest_tasks_best_runs(
    gateway: GatewayThread,
) -> None:
    tag = uuid.uuid4().hex[:8]
    alice = gateway.make_token(f"alice-{tag}", "writer")
    mallory = gateway.make_token(f"mallory-{tag}", "writer")
    target = _declared(f"target-{tag}", 10, [3, 32, 32], 50_000)
    near = _declared(f"near-{tag}", 10, [3, 32, 32], 40_000)
    far = _declared(f"far-{tag}", 2, [1, 8, 8], 100)
    with gateway.channel(alice) as channel:
        stub = rgrpc.ReportingServiceStub(channel)
        for lr, best in ((0.01, 0.9), (0.3, 0.5), (0.002, 0.7)):
            _finished(stub, f"near-{lr}-{tag}", near, lr, best)
        _finished(stub, f"far-{tag}", far, 0.5, 0.95)
        # The study's own task, declared by a run that has not reported yet.
        run = stub.StartRun(rpb.StartRunRequest(name=f"mine-{tag}", task=target)).attempt
        mine = tgrpc.TaskServiceStub(channel).FindSimilarTasks(
            pb.FindSimilarTasksRequest(attempt_id=run.id)
        )
    fingerprint = mine.target.fingerprint
    # Another writer's fake perfect runs on a task like the target: no source of alice's.
    with gateway.channel(mallory) as channel:
        stub = rgrpc.ReportingServiceStub(channel)
        poison = _declared(f"target-{tag}", 10, [3, 32, 32], 50_000)
        _finished(stub, f"poison-{tag}", poison, 0.77, 1.0)
    with gateway.channel() as channel:  # an admin refits the shared distance now
        tgrpc.TaskServiceStub(channel).FitTaskDistance(pb.FitTaskDistanceRequest())

    study = optuna.create_study(direction="maximize")
    # A first trial of its own declares the study's range of lr: 0.3 is outside it.
    study.enqueue_trial({"lr": 0.05})
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 0.1, log=True), n_trials=1)
    enqueued = metalearn.optuna.warm_start(
        study, fingerprint=fingerprint, params={"lr": "optimizer.lr"}, n_trials=2,
        neighbours=5, gateway=gateway.address, token=alice,
    )  # fmt: skip
    # The nearest task is `near` (same classes and shape): its best runs, best first;
    # lr 0.3 is out of the study's range, so it is the third run that comes second.
    assert enqueued == [{"lr": pytest.approx(0.01)}, {"lr": pytest.approx(0.002)}]
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 0.1, log=True), n_trials=2)
    warm = study.trials[1:]
    assert [t.params["lr"] for t in warm] == pytest.approx([0.01, 0.002])
    source = warm[0].user_attrs[WARM_KEY]
    assert source["attempt"] == f"near-0.01-{tag}" and source["owner"] == f"alice-{tag}"
    assert source["provenance"] == "PROVENANCE_REPORTED" and source["distance"] >= 0

    with pytest.raises(ValueError, match="one of"):
        metalearn.optuna.warm_start(study, gateway=gateway.address, token=alice)
