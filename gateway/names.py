"""One rule for the names of every resource: attempts, studies, tokens (principals).

Letters, digits, '.', '_' and '-', 1 to 128 of them: safe in a URL, a file name, a shell
and a filter without quoting. A name the gateway derives from another stays within the
same rule, so the one it derives from leaves room: a study's trials are attempts named
"<study>-<number>", so a study's name is shorter by the longest such suffix.
"""

from __future__ import annotations

import re

from metalearn.errors import InvalidArgument, Violations

MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def problem(name: str, most: int = MAX_NAME) -> str | None:
    """What is wrong with `name` as a resource's name (None: nothing)."""
    if not name:
        return "is required"
    if len(name) > most or not _NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        return f"{shown!r} must be 1-{most} letters, digits, '.', '_' or '-'"
    return None


def check_name(v: Violations, field: str, name: str, most: int = MAX_NAME) -> None:
    """Adds the violation of `name` on `field`, if it has one."""
    found = problem(name, most)
    if found is not None:
        v.add(field, found)


def require_name(field: str, name: str, most: int = MAX_NAME) -> str:
    """`name`, or INVALID_ARGUMENT on `field`."""
    found = problem(name, most)
    if found is not None:
        raise InvalidArgument.one(field, found)
    return name
