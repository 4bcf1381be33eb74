"""Asking the sampler for a study's next trials, in a worker process (gateway/workers.py): the
study's driver reads where the study stands, sends it here, and stores what comes back
under the study's lock if the study still stands there. Imports nothing of the
gateway's servers or pools: a worker imports this module.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

from gateway import workers
from gateway.config import Limits
from gateway.store.studies import StudyRecord, TrialRecord
from gateway.studies import model
from gateway.studies.checks import command_problem, parameters
from learning.studies import sampling, space
from metalearn.structs import plain_struct
from metalearn.v1 import study_service_pb2 as pb

# A pass asks for about this much CPU time's worth of trials, then stores and queues
# them, and another pass comes at once for the rest: one ask of a large study is seconds
# (sampling.py), and 256 slots asked at once would keep every other study waiting.
ASK_SECONDS = 1.0


@dataclass(frozen=True)
class Proposed:
    """A trial asked before the study's lock was taken."""

    number: int
    values: dict[str, Any]
    internal: dict[str, Any]
    trial_state: dict[str, Any]
    # The sampler's study state after this ask.
    study_state: dict[str, Any]
    error: str
    seeded_by: int | None


def propose(
    limits: Limits,
    record: StudyRecord,
    study: pb.Study,
    trials: Sequence[TrialRecord],
    plan: dict[str, Any] | None,
    wanted: int,
    seconds: float = ASK_SECONDS,
) -> list[Proposed]:
    """Up to `wanted` new trials, each asked with the ones before it running, for about
    `seconds` (at least one)."""
    deadline = time.monotonic() + seconds
    params = parameters(study)
    external = study.HasField("external")
    base = {} if external else space.command_json(study.base_command)
    past = [past_trial(study, t) for t in trials]
    sampler_state = dict(record.sampler_state)
    zero_shot = (plan or {}).get("zero_shot", [])
    found: list[Proposed] = []
    while len(found) < wanted and (not found or time.monotonic() < deadline):
        number = record.trials_made + len(found)
        seeded_by = None
        if number < len(zero_shot):
            first = zero_shot[number]
            asked = sampling.Asked(dict(first["internal"]), {}, sampler_state)
            seeded_by = int(first["attempt_id"])
        else:
            asked = sampling.ask(
                record.name,
                params,
                model.maximize(study),
                study.sampler.name or "tpe",
                plain_struct(study.sampler.args),
                study.seed,
                past,
                sampler_state,
                priors(study, plan, past),
            )
        values = {p.path: p.value(asked.internal[p.path]) for p in params}
        # An external trial runs its worker's code: there is no command to check.
        error = "" if external else command_problem(study, params, values, limits, base)
        found.append(Proposed(number, values, asked.internal, asked.trial_state,
                              asked.study_state, error, seeded_by))  # fmt: skip
        past.append(
            sampling.PastTrial(
                number,
                asked.internal,
                TrialState.FAIL if error else TrialState.RUNNING,
                None,
                asked.trial_state,
            )
        )
        sampler_state = asked.study_state
    return found


def priors(
    study: pb.Study, plan: dict[str, Any] | None, past: Sequence[sampling.PastTrial]
) -> list[tuple[dict[str, Any], float]]:
    """The warm start's past trials on this study's scale, as its own values stand."""
    if not plan or not plan.get("priors"):
        return []
    from learning.tasks import warmstart  # scipy: only a warm-started study needs it

    maximize = model.maximize(study)
    own = [t.value for t in past if t.state == TrialState.COMPLETE and t.value is not None]
    return [(dict(p["internal"]), warmstart.on_own_scale(p["goodness"], own, maximize))
            for p in plan["priors"]]  # fmt: skip


def past_trial(study: pb.Study, trial: TrialRecord) -> sampling.PastTrial:
    o = model.outcome(study, trial)
    return sampling.PastTrial(trial.number, trial.internal, o.state, o.value,
                              trial.sampler_state, model.curve(study, trial))  # fmt: skip


async def ask_async(
    study_name: str,
    params: Sequence[space.Parameter],
    maximize: bool,
    sampler_name: str,
    sampler_args: dict[str, Any],
    seed: int,
    trials: Sequence[sampling.PastTrial],
    study_state: dict[str, Any],
    priors: Sequence[tuple[dict[str, Any], float]] = (),
) -> sampling.Asked:
    """`ask` in a worker process (gateway/workers.py): an ask scores every candidate against
    every past trial, seconds of CPU for a large study; and Optuna's GPSampler imports
    torch (2 s, hundreds of MB) at its first real ask, which the gateway never loads."""
    return await workers.run(sampling.ask, study_name, params, maximize, sampler_name, sampler_args,
                             seed, list(trials), study_state, list(priors))  # fmt: skip
