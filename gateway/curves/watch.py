"""Prognosis on the epoch path (gateway/epochs.py): each run's prognosis is made from
what is stored after its epochs, and a run that asked to stop once hopeless is stopped
when its prognosis says so."""

from __future__ import annotations

import asyncio
import math

from gateway.curves.live import Curves
from gateway.epochs import Run, RunWatch

# A run's prognosis is made at most this often (and after its last epoch).
PROGNOSIS_SECONDS = 1.0


class PrognosisWatcher:
    name = "prognosis"

    def __init__(self, curves: Curves, every_seconds: float = PROGNOSIS_SECONDS) -> None:
        self._curves = curves
        self._every = every_seconds

    async def watch(self, run: Run) -> RunWatch | None:
        return _RunPrognosis(self._curves, run, self._every)


class _RunPrognosis:
    def __init__(self, curves: Curves, run: Run, every_seconds: float) -> None:
        self._curves = curves
        self._run = run
        self._every = every_seconds
        self._made_at = -math.inf
        # The last stored epoch no prognosis was made after (None: none such).
        self._behind: int | None = None

    async def after_epoch(self, epoch: int) -> str | None:
        # Runs of short epochs get a prognosis a second (and one at their end): one an
        # epoch would cost a 0.1 s epoch 3 % of the machine. A run that stops once
        # hopeless is judged after every epoch.
        now = asyncio.get_running_loop().time()
        run = self._run
        if run.stop_when_hopeless or epoch >= run.n_epoch or now - self._made_at >= self._every:
            self._made_at, self._behind = now, None
            return await self._make(epoch)
        self._behind = epoch
        return None

    async def before_end(self) -> None:
        if self._behind is not None:  # the run ends before its last epoch: judge it now
            epoch, self._behind = self._behind, None
            await self._make(epoch)

    async def _make(self, epoch: int) -> str | None:
        found = await self._curves.update(self._run.attempt_id, self._run.fence)
        if found is None or not found.hopeless or not self._run.stop_when_hopeless:
            return None
        return f"stopped at epoch {epoch} as hopeless: {found.reason}"
