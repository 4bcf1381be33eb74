"""What CreateStudy checks, and what a trial's command is: every field of a study, its
space against the base command, and the command at each choice and bound of the space,
checked as Train checks a command. Imports nothing of the gateway's servers or pools:
a worker process (gateway/workers.py) imports this module.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from gateway import names
from gateway.attempts.validation import check_trainable
from gateway.config import Limits
from gateway.names import MAX_NAME, check_name
from gateway.reporting.checks import check_declared_task
from gateway.studies import model, pruners
from learning.studies import arguments, sampling, space
from metalearn import errors
from metalearn.errors import Violations
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as pb

MAX_TRIALS = 1000
# Its trials are attempts named "<study>-<number>", within the one rule for names.
MAX_STUDY_NAME = MAX_NAME - len(f"-{MAX_TRIALS}")
MAX_PARALLEL = 256
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600.0
# CreateStudy builds and checks a command for every choice and range bound (_corners),
# each a whole Train check: about 3 ms for a 256-layer command. 32 parameters of 100
# choices each (3,200 commands) once took 26 s on the event loop; 400 take 1.3 s, in a
# worker process, at most MAX_CONCURRENT_CHECKS at a time. 400 covers a real space (a
# dozen parameters of 30 choices each).
MAX_CORNERS = 400
MAX_CONCURRENT_CHECKS = 2
# A warm start draws from at most this many tasks or studies.
MAX_WARM_SOURCES = 20


def trial_command(
    study: pb.Study,
    params: Sequence[space.Parameter],
    values: dict[str, Any],
    base: dict[str, Any] | None = None,
) -> attempt_pb2.TrainCommand:
    """The base command with `values` set; json_format.ParseError if it is no command.
    `base`: the base command as JSON, when the caller made it once for many values."""
    if base is None:
        base = space.command_json(study.base_command)
    document = space.apply(base, values, params)
    return json_format.ParseDict(document, attempt_pb2.TrainCommand())


# An external study's parameter: a name its workers' code reads (dots nest it).
_EXTERNAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
DEFAULT_TRIAL_HEARTBEAT = 120
# What pruners that need a trial's maximum epoch take when an external study gives none.
EXTERNAL_EPOCHS = 100


def base_of(study: pb.Study) -> dict[str, Any]:
    """The document a study's paths address: its base command, or, for an external
    study, the objects its dotted names imply (its parameters are names, not places)."""
    if not study.HasField("external"):
        return space.command_json(study.base_command)
    base: dict[str, Any] = {}
    for parameter in study.search_space:
        if not _EXTERNAL_NAME.fullmatch(parameter.path):
            continue  # named by the check of its name
        node = base
        for key in parameter.path.split(".")[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                break
            node = child
    return base


def trial_epochs(study: pb.Study) -> int:
    """The epochs a trial means to run, as pruners need it."""
    if study.HasField("external"):
        return study.external.n_epoch or EXTERNAL_EPOCHS
    return study.base_command.n_epoch


def parameters(study: pb.Study) -> list[space.Parameter]:
    """The search space of a stored study (checked when it was created)."""
    v = errors.Violations()
    found = space.parse(v, "search_space", base_of(study), study.search_space)
    assert not v.items, v.items
    return found


def command_problem(
    study: pb.Study,
    params: Sequence[space.Parameter],
    values: dict[str, Any],
    limits: Limits,
    base: dict[str, Any] | None = None,
) -> str:
    """Why a sampled command cannot be trained ('' if it can), as Train would say."""
    try:
        command = trial_command(study, params, values, base)
    except json_format.ParseError as err:
        return f"INVALID_ARGUMENT: {err}"
    v = errors.Violations()
    check_trainable(v, "command", command, limits)
    return "; ".join(f"{i.field}: {i.description}" for i in v.items)


def _corners(v: Violations, study: pb.Study, params: list[space.Parameter], limits: Limits) -> None:
    """The command at each bound and choice, checked as Train checks it, so that a space
    whose corner makes no command is refused now rather than failing trials later."""
    corners = space.corners(params)
    if len(corners) > MAX_CORNERS:
        v.add("study.search_space", f"at most {MAX_CORNERS} values to check in all (each"
              " choice, 2 for an int range, 3 for a float range); this space has"
              f" {len(corners)}")  # fmt: skip
        return
    base = space.command_json(study.base_command)
    for i, values in corners:
        parameter = params[i]
        field = f"study.search_space[{i}]"
        shown = json.dumps(values[parameter.path])[:80]
        try:
            command = trial_command(study, params, values, base)
        except json_format.ParseError as err:
            v.add(field, f"with {parameter.path} = {shown} the command does not parse: {err}")
            continue
        found = Violations()
        check_trainable(found, "command", command, limits)
        for item in found.items[:3]:
            v.add(field, f"with {parameter.path} = {shown}, {item.field}: {item.description}")


def problems(study: pb.Study, limits: Limits) -> Violations:
    """Every problem of a study as CreateStudy is given it, each named by its field.
    Seconds of CPU for the largest space allowed: run in a worker process (gateway/workers.py),
    which hands back the violations (an InvalidArgument does not survive pickling)."""
    v = Violations()
    check_name(v, "study.name", study.name, MAX_STUDY_NAME)
    external = study.HasField("external")
    base_problems = Violations()
    if external:
        _check_external(v, study, limits)
    else:
        if not study.HasField("base_command"):
            v.add("study.base_command", "give the command every trial starts from")
        check_trainable(base_problems, "study.base_command", study.base_command, limits)
    for item in base_problems.items:
        v.add(item.field, item.description)
    # Paths are checked against a base command that is sound, or not at all.
    params = (
        [] if base_problems.items else space.parse(v, "study.search_space", base_of(study),
                                                   study.search_space)
    )  # fmt: skip
    if study.objective not in pb.Objective.values():
        v.add("study.objective", f"unknown objective {study.objective}")
    if not 1 <= study.n_trials <= MAX_TRIALS:
        v.add("study.n_trials", f"between 1 and {MAX_TRIALS}")
    if not 0 <= study.max_parallel <= MAX_PARALLEL:
        v.add("study.max_parallel", f"between 0 (the live trainers' slots) and {MAX_PARALLEL}")
    if not (math.isfinite(study.timeout_seconds) and
            0 <= study.timeout_seconds <= MAX_TIMEOUT_SECONDS):  # fmt: skip
        v.add("study.timeout_seconds", f"between 0 (none) and {MAX_TIMEOUT_SECONDS:g}")
    if not 0 <= study.seed <= sampling.MAX_SEED:
        v.add("study.seed", f"between 0 and {sampling.MAX_SEED}")
    # plain_struct, not MessageToDict: that raises on NaN and infinity, which are the
    # client's mistakes to be named.
    sampler_args = plain_struct(study.sampler.args)
    scale = arguments.Scale(trials=MAX_TRIALS, epochs=limits.max_epochs)
    sampling.check_sampler(
        v, "study.sampler", study.sampler.name or "tpe", sampler_args, params, scale
    )
    pruners.check(
        v,
        "study.pruner",
        study.pruner.name or "none",
        plain_struct(study.pruner.args),
        trial_epochs(study),
        scale,
        model.maximize(study),
    )
    if study.HasField("warm_start"):
        _check_warm(v, study)
    if not v.items and not external:  # each value is checked in a command otherwise sound
        _corners(v, study, params, limits)
    return v


def _check_external(v: Violations, study: pb.Study, limits: Limits) -> None:
    """An external study: no base command, parameters by name, its trials' task."""
    field = "study.external"
    if study.HasField("base_command"):
        v.add("study.base_command", "an external study's trials run its workers' own code:"
              " give no base command")  # fmt: skip
    for i, parameter in enumerate(study.search_space):
        if not _EXTERNAL_NAME.fullmatch(parameter.path):
            v.add(f"study.search_space[{i}].path", "a name such as lr or model.depth"
                  " (letters, digits, '_', and '.' between names)")  # fmt: skip
    external = study.external
    check_declared_task(v, f"{field}.task", external.task, limits)
    if not 0 <= external.n_epoch <= limits.max_epochs:
        v.add(f"{field}.n_epoch", f"between 0 and {limits.max_epochs}")
    if external.heartbeat_seconds and not 10 <= external.heartbeat_seconds <= 86_400:
        v.add(f"{field}.heartbeat_seconds", "0 (120) or between 10 and 86400")


def _check_warm(v: Violations, study: pb.Study) -> None:
    warm, field = study.warm_start, "study.warm_start"
    if bool(warm.similar_tasks) == bool(warm.studies):
        v.add(field, "give similar_tasks (k) or studies (names), one of them")
    if not 0 <= warm.similar_tasks <= MAX_WARM_SOURCES:
        v.add(f"{field}.similar_tasks", f"between 1 and {MAX_WARM_SOURCES}")
    if len(warm.studies) > MAX_WARM_SOURCES:
        v.add(f"{field}.studies", f"at most {MAX_WARM_SOURCES} studies")
    for i, name in enumerate(warm.studies[:MAX_WARM_SOURCES]):
        if names.problem(name, MAX_STUDY_NAME) is not None:
            v.add(f"{field}.studies[{i}]", "a study's name")
        elif name == study.name:
            v.add(f"{field}.studies[{i}]", "a study cannot warm-start from itself")
    if not -1 <= warm.zero_shot_trials <= study.n_trials:
        v.add(f"{field}.zero_shot_trials", "between -1 (none) and n_trials (0: the default)")
