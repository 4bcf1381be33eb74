"""The epoch path (gateway/epochs.py): every epoch is stored once, fenced, then judged by
the watchers registered with the path, in order; a consumer plugs in as a watcher and
nothing else changes. Against the real store (the embedded PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.epochs import EpochPath, Run, RunWatch
from gateway.events import EventHub
from gateway.store import AttemptStore, EpochRecord, open_pool
from metalearn import errors
from tests.test_attempts import create, training


class Recorder:
    """A per-epoch consumer as a new feature would write one."""

    def __init__(self, name: str, stop_at: int | None = None, fail: bool = False) -> None:
        self.name = name
        self.stop_at = stop_at
        self.fail = fail
        self.seen: list[tuple[str, int]] = []

    async def watch(self, run: Run) -> RunWatch | None:
        if run.study_trial:  # "nothing to do with this run"
            return None
        return _Watch(self)


class _Watch:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def after_epoch(self, epoch: int) -> str | None:
        self.recorder.seen.append(("epoch", epoch))
        if self.recorder.fail:
            raise RuntimeError("a consumer's bug")
        return f"stop at {epoch}" if epoch == self.recorder.stop_at else None

    async def before_end(self) -> None:
        self.recorder.seen.append(("end", 0))


def _path_run(database_url: str, attempt_id: int, run: Run, watchers, epochs):  # type: ignore[no-untyped-def]
    async def go() -> list[str | None]:
        async with open_pool(database_url, 1, 2) as pool:
            store = AttemptStore(pool)
            hub = EventHub(database_url, store, lambda _id: asyncio.sleep(0, b""))
            path = EpochPath(store, hub, watchers)
            opened = await path.open(run)
            reasons = [await opened.record(EpochRecord(e, 1.0 / e)) for e in epochs]
            await opened.ending()
            await opened.ending()  # once only
            return reasons

    return asyncio.run(go())


def test_watchers_judge_each_new_epoch_in_order_and_the_first_reason_wins(
    attempts, gateway
) -> None:
    made = create(attempts, "epoch-path-order")
    training(gateway.database_url, made.id)
    first, second, third = Recorder("first"), Recorder("second", stop_at=2), Recorder("third")
    run = Run(made.id, made.name, 0, 5)
    # Epoch 1 twice: a retried batch is stored once and judged once.
    reasons = _path_run(gateway.database_url, made.id, run, [first, second, third], [1, 1, 2])
    assert reasons == [None, None, "stop at 2"]
    assert first.seen == [("epoch", 1), ("epoch", 2), ("end", 0)]
    assert second.seen == [("epoch", 1), ("epoch", 2), ("end", 0)]
    # Not asked once an earlier watcher stopped the run; still told that it ends.
    assert third.seen == [("epoch", 1), ("end", 0)]


def test_a_failing_watcher_never_fails_the_run(attempts, gateway, caplog) -> None:
    made = create(attempts, "epoch-path-failing")
    training(gateway.database_url, made.id)
    broken, after = Recorder("broken", fail=True), Recorder("after")
    run = Run(made.id, made.name, 0, 5)
    with caplog.at_level(logging.ERROR, logger="gateway.epochs"):
        reasons = _path_run(gateway.database_url, made.id, run, [broken, after], [1, 2])
    assert reasons == [None, None]
    assert after.seen == [("epoch", 1), ("epoch", 2), ("end", 0)]
    assert "broken after epoch 1" in caplog.text


def test_a_watcher_follows_only_the_runs_it_wants(attempts, gateway) -> None:
    made = create(attempts, "epoch-path-trial")
    training(gateway.database_url, made.id)
    picky = Recorder("picky", stop_at=1)
    run = Run(made.id, made.name, 0, 5, study_trial=True)
    assert _path_run(gateway.database_url, made.id, run, [picky], [1]) == [None]
    assert picky.seen == []


def test_an_epoch_under_a_lost_claim_is_refused_and_judged_by_nobody(attempts, gateway) -> None:
    made = create(attempts, "epoch-path-fenced")
    training(gateway.database_url, made.id)
    watcher = Recorder("w")
    stale = Run(made.id, made.name, 7, 5)  # another claim's fence
    with pytest.raises(errors.FailedPrecondition):
        _path_run(gateway.database_url, made.id, stale, [watcher], [1])
    assert watcher.seen == []


def test_the_dispatcher_knows_nothing_of_curves_or_studies() -> None:
    import ast
    from pathlib import Path

    source = (Path(__file__).resolve().parent.parent / "gateway" / "dispatcher.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    features = ("gateway.curves", "gateway.studies", "learning")
    assert not [m for m in imported if m.startswith(features)]
