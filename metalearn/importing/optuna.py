"""`metalearn import optuna URL`: the studies of another Optuna storage, brought in.

The source is read through Optuna's own storage classes (`optuna.storages.get_storage`
for an RDB URL, `JournalStorage` for a journal file), and each study is written through
`metalearn.optuna.Storage`, Optuna's protocol on the gateway: a study keeps its name,
directions and attributes, and each finished trial is sent whole (Optuna's template
trial: state, pruned included, parameters with their distributions, values,
intermediate values, attributes, times). Each trial becomes an attempt with provenance
REPORTED whose origin names the source (its URL without credentials, the study and the
trial's number there): a claim, never evidence trained here.

Running again brings in only what is new: a trial already brought in (found by the
origin kept in its system attribute `metalearn.origin`) is skipped, and one that was
still running or waiting last time comes in once it has finished. A trial or study the
gateway refuses is counted with its reason; the import goes on.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import optuna
from optuna.storages import BaseStorage
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial

# The system attribute naming where a trial came from (gateway/optuna/checks.py).
ORIGIN_ATTR = "metalearn.origin"
JOURNAL_PREFIX = "journal:"


@dataclass
class StudySummary:
    name: str
    created: bool = False
    imported: int = 0
    already: int = 0
    unfinished: int = 0
    before_since: int = 0
    refused: list[str] = field(default_factory=list)


@dataclass
class Summary:
    source: str
    studies: list[StudySummary] = field(default_factory=list)
    # Studies the gateway would not take at all: (name, why).
    refused_studies: list[tuple[str, str]] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return sum(s.imported for s in self.studies)

    @property
    def failed(self) -> int:
        return len(self.refused_studies) + sum(len(s.refused) for s in self.studies)


def source_storage(url: str) -> BaseStorage:
    """Optuna's storage for `url`: an RDB URL (sqlite:///..., postgresql://..., mysql://...),
    or `journal:PATH` (or the path of an existing journal file) for a JournalStorage."""
    if url.startswith(JOURNAL_PREFIX) or ("://" not in url and os.path.isfile(url)):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix(JOURNAL_PREFIX)
        if not os.path.isfile(path):
            raise ValueError(f"no journal file at {path}")
        return JournalStorage(JournalFileBackend(path))
    return optuna.storages.get_storage(url)


def public_url(url: str) -> str:
    """`url` without its password (what the attempts' origin keeps)."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2].split('?')[0]}"


def _origin_of(trial: FrozenTrial) -> str | None:
    text = trial.system_attrs.get(ORIGIN_ATTR)
    return text.get("id") if isinstance(text, dict) else None


def _template(trial: FrozenTrial, origin: dict[str, str]) -> FrozenTrial:
    sent = copy.copy(trial)
    sent.system_attrs = {**trial.system_attrs, ORIGIN_ATTR: origin}
    return sent


def _reason(err: Exception) -> str:
    if isinstance(err, grpc.RpcError):
        call: Any = err
        return f"{call.code().name}: {call.details()}"
    return f"{type(err).__name__}: {err}"


def import_studies(
    url: str,
    target: BaseStorage,
    names: Sequence[str] = (),
    since: dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    """Brings the studies of the storage at `url` (all, or those named) into `target`
    (a metalearn.optuna.Storage); trials started before `since` stay out."""
    source = source_storage(url)
    shown = public_url(url)
    summary = Summary(shown)
    wanted = set(names)
    studies = [s for s in source.get_all_studies() if not wanted or s.study_name in wanted]
    missing = wanted - {s.study_name for s in studies}
    summary.refused_studies.extend((name, "no such study in the source") for name in missing)
    for number, study in enumerate(studies, start=1):
        done = StudySummary(study.study_name)
        try:
            study_id, done.created = _study_in(target, study)
        except (grpc.RpcError, ValueError) as err:
            summary.refused_studies.append((study.study_name, _reason(err)))
            continue
        summary.studies.append(done)
        there = {_origin_of(t) for t in target.get_all_trials(study_id, deepcopy=False)}
        for trial in source.get_all_trials(study._study_id, deepcopy=False):
            key = f"{study.study_name}/{trial.number}"
            if not trial.state.is_finished():
                done.unfinished += 1
            elif (
                since is not None
                and trial.datetime_start is not None
                and (trial.datetime_start.astimezone() < since)
            ):
                done.before_since += 1
            elif key in there:
                done.already += 1
            else:
                origin = {"system": "optuna", "id": key, "uri": shown, "group": study.study_name}
                try:
                    target.create_new_trial(study_id, _template(trial, origin))
                    done.imported += 1
                except grpc.RpcError as err:
                    done.refused.append(f"trial {trial.number}: {_reason(err)}")
        if progress is not None:
            progress(
                f"[{number}/{len(studies)}] {study.study_name}: {done.imported} trials"
                f" imported, {done.already} there already, {done.unfinished} unfinished"
            )
    return summary


def _study_in(target: BaseStorage, study: FrozenStudy) -> tuple[int, bool]:
    """The target's study of the same name (made now when there is none, with the same
    directions), its attributes brought up to date; whether it was made."""
    created = False
    try:
        study_id = target.get_study_id_from_name(study.study_name)
    except KeyError:
        study_id = target.create_new_study(study.directions, study.study_name)
        created = True
    if target.get_study_directions(study_id) != list(study.directions):
        raise ValueError(
            f"study {study.study_name!r} exists with other directions: import it under another name"
        )
    for key, value in study.user_attrs.items():
        target.set_study_user_attr(study_id, key, value)
    for key, value in study.system_attrs.items():
        target.set_study_system_attr(study_id, key, value)
    return study_id, created


def describe(summary: Summary) -> str:
    """The summary as people read it: what came in, what did not and why."""
    lines = [f"from {summary.source}:"]
    for s in summary.studies:
        made = " (new)" if s.created else ""
        lines.append(
            f"  study {s.name}{made}: {s.imported} trials imported, {s.already} there already,"
            f" {s.unfinished} still running or waiting (imported once finished)"
            + (f", {s.before_since} before --since" if s.before_since else "")
            + (f", {len(s.refused)} refused" if s.refused else "")
        )
        lines.extend(f"    refused {why}" for why in s.refused[:20])
        if len(s.refused) > 20:
            lines.append(f"    ... {len(s.refused) - 20} more refused")
    for name, why in summary.refused_studies:
        lines.append(f"  study {name}: not imported: {why}")
    lines.append(
        f"{summary.imported} trials imported into {len(summary.studies)} studies;"
        f" {summary.failed} refused"
    )
    return "\n".join(lines)


def summary_json(summary: Summary) -> str:
    return json.dumps(
        {
            "source": summary.source,
            "imported": summary.imported,
            "failed": summary.failed,
            "studies": [vars(s) for s in summary.studies],
            "refused_studies": [{"study": n, "reason": r} for n, r in summary.refused_studies],
        },
        indent=2,
    )
