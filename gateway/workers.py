"""CPU work in processes of their own: checking a CreateStudy's space (a whole Train
check of a command for every choice), asking a study's sampler (every candidate scored
against every past trial), rebuilding a study for a pruning decision, checking an
ImportAttempts call's documents (every command, epoch and result walked).

Not on the event loop, where one CreateStudy froze every call for seconds; and not in a
thread either: a thread of pure-Python work holds the GIL, which the event loop then
waits for at every turn (measured: two CreateStudy checks of the largest space in
threads took other calls from 1 ms to 95 ms at the median, 284 ms at the 99th
percentile; in these processes they are not slowed). The functions sent here live in
modules that import neither grpc servers nor the stores' pools (studies/checks.py,
studies/asking.py, studies/pruners.py, attempts/importing.py), so a worker stays small
(~65 MB for studies, ~150 MB once it checked an import, whose prognoses import
scikit-learn; GP asks import torch in one, as they did beside the gateway). What they
raise comes back as raised (metalearn.errors pickle whole)."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from metalearn import errors

T = TypeVar("T")

# Two: a study's asks go on while a CreateStudy is checked; CreateStudy itself takes at
# most servicer.MAX_CONCURRENT_CHECKS of them at a time.
WORKERS = 2

_pool: ProcessPoolExecutor | None = None
_pool_made = threading.Lock()


def _end_with_parent() -> None:
    """A worker's initializer: it ends when its gateway does, even killed (-9): its
    pipes would not tell it, the executor's writer end being in the worker too."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def wait() -> None:
        parent.join()  # returns when the parent's sentinel closes: it is gone
        os._exit(0)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _pool_made:  # every gateway of a process (the tests run several) shares it
        if _pool is None:
            # Spawned, not forked: a fork of a gateway would copy its threads' locks.
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(WORKERS, mp_context=context, initializer=_end_with_parent)
        return _pool


def _forget(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_made:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


async def run(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in a worker process: fn a module-level function, args and result
    picklable. Unavailable if the worker died (killed for memory): a new one serves the
    next call."""
    pool = _executor()
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))
    except BrokenProcessPool as err:
        _forget(pool)
        raise errors.Unavailable("a worker process died: try again") from err
