"""The attempts behind a study's page, kept once their trials are at rest.

A study's page draws every trial's curve from its attempt (GetAttempt, FULL: every
epoch), and the page reloads its data after each trial event, at most once a second:
read whole each time, a study of 1,000 trials cost 1,000 calls a reload. A trial that
is complete, pruned or failed has all the epochs it will have (a test of its attempt
adds none), so its attempt is kept and only the running trials', and those that came to
rest since, are read again. A kept attempt whose trial reports another epoch count (a
retried attempt) is read again too.

Kept per token (a digest of it), never shared between viewers: each sees only what the
gateway let its own token read, and GetStudy, called with the token on every reload,
still decides whether the page is shown at all. Hand-written because what can be kept
follows from the study's own trial states, which no general cache knows.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as spb

# Attempts kept in all (a FULL attempt of 50 epochs is a few kilobytes).
MAX_KEPT = 20_000
_AT_REST = frozenset({spb.TRIAL_STATE_COMPLETE, spb.TRIAL_STATE_PRUNED, spb.TRIAL_STATE_FAILED})

Read = Callable[[str, list[int]], Awaitable[list[attempt_pb2.Attempt]]]


class StudyAttempts:
    """What each (token, study) read of trials at rest, least recently used dropped."""

    def __init__(self, read: Read, limit: int = MAX_KEPT) -> None:
        self._read = read
        self._limit = limit
        self._kept: OrderedDict[tuple[bytes, int], dict[int, attempt_pb2.Attempt]] = OrderedDict()
        self._count = 0
        # Attempts read from the gateway by the last call (what the cache saved shows).
        self.last_read = 0

    async def of(self, token: str, study: spb.Study) -> dict[int, attempt_pb2.Attempt]:
        """The study's trials' attempts by id (a deleted one is missing)."""
        key = (hashlib.sha256(token.encode()).digest(), study.id)
        kept = self._forget(key)
        at_rest = {
            t.attempt_id: t.epochs for t in study.trials if t.attempt_id and t.state in _AT_REST
        }
        ids = [t.attempt_id for t in study.trials if t.attempt_id]
        unread = [
            i for i in ids
            if i not in kept or i not in at_rest or len(kept[i].epochs) != at_rest[i]
        ]  # fmt: skip
        read = {a.id: a for a in await self._read(token, unread)}
        self.last_read = len(unread)
        found = {i: read[i] if i in read else kept[i] for i in ids if i in read or i in kept}
        keep = {i: a for i, a in found.items() if i in at_rest}
        self._forget(key)  # what an overlapping call (another tab) stored meanwhile
        self._kept[key] = keep
        self._count += len(keep)
        while self._count > self._limit and len(self._kept) > 1:
            _, dropped = self._kept.popitem(last=False)
            self._count -= len(dropped)
        return found

    def _forget(self, key: tuple[bytes, int]) -> dict[int, attempt_pb2.Attempt]:
        """What was kept for `key`, taken out (it is put back, up to date, after)."""
        kept = self._kept.pop(key, {})
        self._count -= len(kept)
        return kept
