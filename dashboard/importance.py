"""Hyperparameter importances of a study, as optuna-dashboard shows them: Optuna's own
`optuna.importance.get_param_importances` (fANOVA, seeded) over an in-memory Optuna study
rebuilt from the trials GetStudy returns (`metalearn.views.study_plots.rebuild`, the same one
`metalearn study plot` draws from). Nothing is stored: PostgreSQL stays the one source.

Optuna is imported on first use, in a worker thread (it takes a while), and each study's
answer is kept until its set of complete trials changes."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import OrderedDict
from typing import Any

from metalearn.v1 import study_service_pb2 as spb

# The fewest complete trials worth an importance (fANOVA needs variation to explain).
MIN_TRIALS = 3
# Answers kept, one per study (a study's entry is replaced when its trials change).
_CACHED = 256


def _complete(study: spb.Study) -> tuple[int, ...]:
    return tuple(
        sorted(
            t.number
            for t in study.trials
            if t.state == spb.TRIAL_STATE_COMPLETE and math.isfinite(t.value)
        )
    )


def compute(study: spb.Study) -> dict[str, Any]:
    """{"params": paths, most important first, "values": their importances (summing
    to 1), "note": why there are none}."""
    done = _complete(study)
    if len(study.search_space) < 2:
        return _none("one parameter: it has all the importance there is")
    if len(done) < MIN_TRIALS:
        return _none(f"shown once {MIN_TRIALS} trials are complete ({len(done)} so far)")
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    from metalearn.views.study_plots import rebuild

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rebuilt = rebuild(study, {})
    try:
        found = get_param_importances(rebuilt, evaluator=FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as err:  # e.g. no parameter varied
        return _none(f"Optuna could not compute them: {err}")
    return {
        "params": list(found),
        "values": [round(float(v), 4) for v in found.values()],
        "note": "",
    }


def _none(note: str) -> dict[str, Any]:
    return {"params": [], "values": [], "note": note}


class Importances:
    """The importances of studies, computed off the event loop, remembered per study
    until a trial completes."""

    def __init__(self) -> None:
        self._known: OrderedDict[int, tuple[tuple[int, ...], dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    async def of(self, study: spb.Study) -> dict[str, Any]:
        done = _complete(study)
        with self._lock:
            hit = self._known.get(study.id)
        if hit is not None and hit[0] == done:
            return hit[1]
        try:
            found = await asyncio.to_thread(compute, study)
        except Exception as err:  # a panel of the page, never the end of the page
            found = _none(f"could not be computed: {type(err).__name__}: {err}"[:300])
        with self._lock:
            self._known[study.id] = (done, found)
            self._known.move_to_end(study.id)
            while len(self._known) > _CACHED:
                self._known.popitem(last=False)
        return found
