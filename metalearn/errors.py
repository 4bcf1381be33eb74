"""Domain errors: what the stores, servicers and the trainer raise, free of psycopg and gRPC.

psycopg errors become these in `gateway.store`; these become gRPC statuses in
`metalearn.status`. Nothing else translates errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# An INVALID_ARGUMENT travels in the call's trailers, which grpc refuses past 8 KiB by
# default: the client would then see a bare INTERNAL instead of its mistakes. So the
# violations kept, each field path and description, and the message are all bounded;
# `metalearn.status` also bounds the encoded details by bytes.
MAX_VIOLATIONS = 50
MAX_FIELD_CHARS = 160
MAX_DESCRIPTION_CHARS = 240
MAX_MESSAGE_CHARS = 300
# Where the count of violations left out is reported: the request as a whole.
OMITTED_FIELD = "request"


def clip(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` characters, an ellipsis showing where it was cut."""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "\u2026"


def some_of(names: Iterable[str], near: str = "", shown: int = 5) -> str:
    """A few of `names` for a description: those close to `near` (a misspelling) if any,
    else the first few, with an ellipsis and the total when some are left out. Whole
    vocabularies in every violation would push a status with many past grpc's limits."""
    every = sorted(names)
    # Case aside, so "Relu" finds "ReLU".
    folded = {name.casefold(): name for name in every}
    close = difflib.get_close_matches(near.casefold(), folded, n=shown, cutoff=0.6)
    picked = [folded[name] for name in close] or every[:shown]
    text = ", ".join(repr(n) for n in picked)
    return text if len(picked) == len(every) else f"{text}, \u2026 ({len(every)} in all)"


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


class Unauthenticated(DomainError):
    """The call carries no credential, or one that is unknown, expired or revoked."""


class PermissionDenied(DomainError):
    """The caller is known but its role (or ownership) does not allow the request."""


class ResourceExhausted(DomainError):
    """A limit of the server is reached (every slot busy, data too large)."""


class InvalidArgument(DomainError):
    """The request itself is wrong; `violations` names its bad fields.

    At most `MAX_VIOLATIONS` are kept, each clipped; `omitted` counts those left out.
    """

    def __init__(self, violations: Iterable[FieldViolation], omitted: int = 0) -> None:
        self.violations: list[FieldViolation] = []
        self.omitted = omitted
        for v in violations:  # an iterator of any length: only the kept ones are held
            if len(self.violations) < MAX_VIOLATIONS:
                self.violations.append(
                    FieldViolation(
                        clip(v.field, MAX_FIELD_CHARS), clip(v.description, MAX_DESCRIPTION_CHARS)
                    )
                )
            else:
                self.omitted += 1
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        # The count after the clip, so that it always shows.
        more = f"; {self.omitted} more left out" if self.omitted else ""
        super().__init__(clip(text, MAX_MESSAGE_CHARS - len(more)) + more)

    def __reduce__(self) -> tuple[Any, ...]:
        # Whole across a process boundary (gateway/workers.py): the default would call
        # __init__ with the message alone.
        return (type(self), (self.violations, self.omitted))

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        """An error about a single field."""
        return cls([FieldViolation(field, description)])


class Violations:
    """Collects field violations, so one answer names every mistake at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []
        # Counted, not kept: a hostile request can hold millions of mistakes.
        self.omitted = 0

    def add(self, field: str, description: str) -> None:
        if len(self.items) < MAX_VIOLATIONS:
            self.items.append(FieldViolation(field, description))
        else:
            self.omitted += 1

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items, self.omitted)
