"""How many calls one principal may have in flight: no single token takes the service.

The pool has a few connections and the process one event loop; a caller that sends
many slow calls at once would otherwise hold them all while every other caller waits.
Each principal gets its own small share instead:

- unary calls: at most `calls` at once; one more waits its turn (in memory, holding
  nothing) up to `wait_seconds`, then is refused with RESOURCE_EXHAUSTED;
- streams (watches, reads, uploads, downloads), which live long: at most `streams`
  open at once, one more is refused at once;
- report streams (`REPORT_STREAMS`: a run of users' own code reporting its epochs),
  which live as long as a training run and are idle most of it: at most `reports` open
  at once, counted apart, so that a team's hundred training jobs on one token neither
  take its watches' share nor are refused for them. Each holds one batch at a time,
  bounded by its method's request budget (gateway/request_sizes.py).

Admins are the operator (a stolen admin token has lost the service already); they are
not counted, so an operator's bulk tooling keeps its full speed.

Hand-written: the semaphores of asyncio are the whole mechanism; what is ours is only
keying them by principal and dropping a principal's entry once it is idle, so a flood
of principals cannot grow the table (the table holds only principals with calls in
flight, which the authenticated tokens already bound).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from gateway.auth.roles import Principal, Role
from metalearn import errors

# Streams counted as reports: open for a whole training run, idle most of it.
REPORT_STREAMS = frozenset({"/metalearn.v1.ReportingService/ReportRun"})


@dataclass
class _Share:
    calls: asyncio.Semaphore
    streams: int = 0
    reports: int = 0
    users: int = 0  # calls and streams holding or awaiting this entry


@dataclass
class PrincipalBudget:
    """Per-principal limits on calls in flight (see the module's docstring)."""

    calls: int = 8
    streams: int = 64
    wait_seconds: float = 5.0
    reports: int = 1024
    _shares: dict[str, _Share] = field(default_factory=dict)

    def _share(self, principal: Principal) -> _Share:
        share = self._shares.get(principal.name)
        if share is None:
            share = _Share(asyncio.Semaphore(self.calls))
            self._shares[principal.name] = share
        return share

    @contextlib.asynccontextmanager
    async def _entry(self, principal: Principal) -> AsyncIterator[_Share | None]:
        """The principal's share while a call uses it (None for an admin: not counted);
        dropped once no call holds or awaits it."""
        if principal.role is Role.ADMIN:
            yield None
            return
        share = self._share(principal)
        share.users += 1
        try:
            yield share
        finally:
            share.users -= 1
            if share.users == 0:
                self._shares.pop(principal.name, None)

    @contextlib.asynccontextmanager
    async def call(self, principal: Principal) -> AsyncIterator[None]:
        """Holds one of the principal's unary slots for the call's duration."""
        async with self._entry(principal) as share:
            if share is None:
                yield
                return
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await share.calls.acquire()
            except TimeoutError:
                raise errors.ResourceExhausted(
                    f"{principal.name!r} has {self.calls} calls in flight, the most one"
                    " token may have at once: wait for them, or send fewer at a time"
                ) from None
            try:
                yield
            finally:
                share.calls.release()

    @contextlib.asynccontextmanager
    async def stream(self, principal: Principal) -> AsyncIterator[None]:
        """Holds one of the principal's stream slots while the stream is open."""
        async with self._entry(principal) as share:
            if share is None:
                yield
                return
            if share.streams >= self.streams:
                raise errors.ResourceExhausted(
                    f"{principal.name!r} has {self.streams} streams open, the most one"
                    " token may have at once: close some first"
                )
            share.streams += 1
            try:
                yield
            finally:
                share.streams -= 1

    @contextlib.asynccontextmanager
    async def report(self, principal: Principal) -> AsyncIterator[None]:
        """Holds one of the principal's report-stream slots while the stream is open."""
        async with self._entry(principal) as share:
            if share is None:
                yield
                return
            if share.reports >= self.reports:
                raise errors.ResourceExhausted(
                    f"{principal.name!r} has {self.reports} runs reporting at once, the most"
                    " one token may have: finish some first"
                )
            share.reports += 1
            try:
                yield
            finally:
                share.reports -= 1
