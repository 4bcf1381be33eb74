"""A warm-started study's plan, made once when its task is profiled (the study driver
asks for it before the study's first trial and keeps it with the study)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gateway.attempts.convert import image_ops_json
from gateway.store.tasks import TaskRecord, TaskStore
from gateway.tasks import declaring
from gateway.tasks.learner import Learner, warm_plan
from learning.studies import space
from metalearn import errors
from metalearn.v1 import study_service_pb2 as pb

# Samplers that model the history and so take past trials as priors.
PRIOR_SAMPLERS = frozenset({"tpe", "gp"})


def _cold(why: str) -> dict[str, Any]:
    return {"state": f"cold: {why}", "sources": [], "zero_shot": [], "priors": []}


class WarmStarter:
    def __init__(self, tasks: TaskStore, learner: Learner) -> None:
        self._tasks = tasks
        self._learner = learner

    async def register(self, study: pb.Study, owner: str = "") -> None:
        """Makes sure the study's task is known, so a trainer profiles it now."""
        await self._target(study, owner)

    async def _target(self, study: pb.Study, owner: str) -> TaskRecord | None:
        """The study's task: its base command's labels on images held here, or the task
        an external study declares (None: it declares none)."""
        if study.HasField("external"):
            return await declaring.declare(self._tasks, owner, study.external.task)
        return await self._tasks.ensure(
            list(study.base_command.label_names), image_ops_json(study.base_command.image_ops)
        )

    async def plan(
        self, study: pb.Study, params: Sequence[space.Parameter], owner: str = ""
    ) -> dict[str, Any] | None:
        """The plan, or None while the study's task waits for its profile. It draws on
        what the study's `owner` may learn from (its own imports and reports count for
        it), and only on runs of its kind: an external study's workers run code of their
        own, so its past trials are reported runs' params, never our commands."""
        try:
            target = await self._target(study, owner)
        except errors.FailedPrecondition as err:
            return _cold(str(err))
        if target is not None and target.state == "PENDING":
            return None
        warm = study.warm_start
        known = await self._learner.known(owner or None)
        external = study.HasField("external")
        runs = await self._learner.runs(owner or None)
        evaluations = [e for e in runs if (e.provenance == "REPORTED") == external]
        if warm.studies:
            try:
                chosen = await self._tasks.study_keys(list(warm.studies))
            except errors.NotFound as err:
                return _cold(str(err))
            ids = {i for found in chosen.values() for i in found}
            evaluations = [e for e in evaluations if e.attempt_id in ids]
        fitted = await self._learner.distance(known)
        # Seconds of model fits at most (the learned ranking): off the event loop.
        plan = await asyncio.to_thread(
            warm_plan,
            known,
            fitted.distance,
            target if target is not None and target.state == "READY" else None,
            evaluations,
            params,
            similar_tasks=warm.similar_tasks,
            zero_shot=warm.zero_shot_trials,
            n_trials=study.n_trials,
            with_priors=(study.sampler.name or "tpe") in PRIOR_SAMPLERS,
        )
        if target is not None and target.state == "FAILED" and plan["state"] == "ready":
            plan["state"] = (
                f"ready, sources weighted equally: the task has no profile ({target.error})"
            )
        return plan
