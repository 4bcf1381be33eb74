"""Domain errors: what the store and the servicers raise, free of psycopg and gRPC.

psycopg errors become these in `gateway.store`; these become gRPC statuses in
`gateway.status`. Nothing else translates errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One offending field, named by its path in the request."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a client can cause."""


class NotFound(DomainError):
    """The named thing does not exist."""


class AlreadyExists(DomainError):
    """The name is taken."""


class FailedPrecondition(DomainError):
    """The thing exists but its state forbids the request."""


class Unavailable(DomainError):
    """The database cannot be reached; the client may retry."""


class InvalidArgument(DomainError):
    """The request itself is wrong; `violations` names every bad field."""

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        """An error about a single field."""
        return cls([FieldViolation(field, description)])
