"""Domain errors: what the stores, servicers and the trainer raise, free of psycopg and gRPC.

psycopg errors become these in `gateway.store`; these become gRPC statuses in
`metalearn.status`. Nothing else translates errors.
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


class Aborted(DomainError):
    """The work stopped part way (its process died); running it again may succeed."""


class ResourceExhausted(DomainError):
    """A limit of the server is reached (every slot busy, data too large)."""


class InvalidArgument(DomainError):
    """The request itself is wrong; `violations` names every bad field."""

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        """An error about a single field."""
        return cls([FieldViolation(field, description)])


class Violations:
    """Collects field violations, so one answer names every mistake at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
