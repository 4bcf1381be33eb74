"""A warm start for any Optuna study: its first trials are the best settings metalearn
knows on the tasks most like the study's.

    study = optuna.create_study(direction="maximize", storage=metalearn.optuna.Storage())
    metalearn.optuna.warm_start(study, fingerprint=my_task, params={"lr": "optimizer.lr"})
    study.optimize(objective, n_trials=50)

FindSimilarTasks names the nearest tasks that have history and their best finished runs
(only runs that count as evidence for the caller: trained here, or claims of the caller,
an admin or an owner the gateway's admin trusts). Each run's settings are read under the
study's parameter names and enqueued (`study.enqueue_trial`), nearest task first, best
run first, distinct; the study's sampler takes over after them. Each enqueued trial
carries the user attribute WARM_KEY: which run it came from, its task and distance.

`params` maps a study parameter to where a past run holds it: a path into a command
metalearn trained ("optimizer.lr", "batch_size"), which is also looked for among a
reported run's own parameters, as is the parameter's own name. A value outside what the
study's trials so far declared for that parameter is left out (the sampler draws it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from google.protobuf import json_format
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from metalearn.credentials import find_token, open_channel
from metalearn.optuna.channel import gateway_address, gateway_tls
from metalearn.tls import ClientTls
from metalearn.v1 import attempt_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc

# Where a trained command holds what Optuna scripts usually call these.
DEFAULT_PARAMS: Mapping[str, str] = {
    "lr": "optimizer.lr",
    "learning_rate": "optimizer.lr",
    "optimizer": "optimizer.name",
    "momentum": "optimizer.momentum",
    "weight_decay": "optimizer.weight_decay",
    "batch_size": "batch_size",
}
WARM_KEY = "metalearn.warm_start"
_TIMEOUT_SECONDS = 60.0  # FindSimilarTasks may wait for the task's profile


def warm_start(
    study: optuna.Study,
    *,
    fingerprint: str | None = None,
    labels: Sequence[str] | None = None,
    attempt_id: int | None = None,
    params: Mapping[str, str] | None = None,
    n_trials: int = 3,
    neighbours: int = 5,
    gateway: str | None = None,
    token: str | None = None,
    tls: ClientTls | None = None,
) -> list[dict[str, Any]]:
    """Enqueues up to `n_trials` settings from the nearest tasks' best runs; what it
    enqueued, in order (empty: no similar task had a run whose settings map).

    The study's task is one of: `fingerprint` (a stored task's, e.g. the task a
    reported run declared), `labels` (classes whose images metalearn holds), or
    `attempt_id` (the task a stored attempt learns)."""
    named = [x is not None for x in (fingerprint, labels, attempt_id)]
    if sum(named) != 1:
        raise ValueError("name the study's task by one of fingerprint, labels, attempt_id")
    if n_trials < 1:
        raise ValueError("n_trials must be at least 1")
    request = task_service_pb2.FindSimilarTasksRequest(
        limit=min(max(neighbours, 1), 100), attempts_per_task=min(n_trials, 20)
    )
    if fingerprint is not None:
        request.fingerprint = fingerprint
    elif labels is not None:
        request.task.CopyFrom(task_pb2.TaskKey(label_names=list(labels)))
    else:
        request.attempt_id = int(attempt_id or 0)
    mapping = dict(DEFAULT_PARAMS if params is None else params)
    known = _distributions(study)
    with open_channel(gateway_address(gateway), find_token(token), gateway_tls(tls)) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        found = stub.FindSimilarTasks(request, timeout=_TIMEOUT_SECONDS)
    enqueued: list[dict[str, Any]] = []
    for similar in found.tasks:
        for attempt in similar.best_attempts:
            values = _values(attempt, mapping, known)
            if not values or values in enqueued:
                continue
            study.enqueue_trial(values, user_attrs={WARM_KEY: _source(attempt, similar)})
            enqueued.append(values)
            if len(enqueued) == n_trials:
                return enqueued
    return enqueued


def _distributions(study: optuna.Study) -> dict[str, BaseDistribution]:
    found: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        found.update(trial.distributions)
    return found


def _lookup(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _values(
    attempt: attempt_pb2.Attempt, mapping: Mapping[str, str], known: Mapping[str, BaseDistribution]
) -> dict[str, Any]:
    """The run's settings under the study's names (those it holds, within range)."""
    if attempt.HasField("reported"):
        reported = json_format.MessageToDict(attempt.reported.params)
        # Its own parameter by the study's name first, then at the command's path.
        sources = [(reported, "{name}"), (reported, "{path}")]
    else:
        command = json_format.MessageToDict(
            attempt.training_commands, preserving_proto_field_name=True
        )
        sources = [(command, "{path}")]
    values: dict[str, Any] = {}
    for name, path in mapping.items():
        for tree, key in sources:
            value = _lookup(tree, key.format(name=name, path=path))
            if value is not None:
                break
        value = _fitted(value, known.get(name))
        if value is not None:
            values[name] = value
    return values


def _fitted(value: Any, distribution: BaseDistribution | None) -> Any:
    """`value` as the parameter takes it, or None when it is no value of it."""
    if not isinstance(value, int | float | str | bool):
        return None
    if (
        isinstance(value, float)
        and value.is_integer()
        and isinstance(distribution, IntDistribution)
    ):
        value = int(value)
    if distribution is None:
        return value
    if isinstance(distribution, CategoricalDistribution):
        return value if value in distribution.choices else None
    try:
        inside = distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return None
    return value if inside else None


def _source(attempt: attempt_pb2.Attempt, similar: task_service_pb2.SimilarTask) -> dict[str, Any]:
    return {
        "attempt": attempt.name,
        "attempt_id": attempt.id,
        "provenance": attempt_pb2.Provenance.Name(attempt.provenance),
        "owner": attempt.owner,
        "task": similar.task.fingerprint,
        "distance": round(similar.distance, 6),
    }
