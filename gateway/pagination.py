"""Opaque page tokens (AIP-158): the keyset position plus a hash of the request's filters."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
from typing import Any, TypeGuard

from gateway.store import AttemptRecord, ListQuery, Order
from metalearn.errors import InvalidArgument


def _fingerprint(query: ListQuery) -> str:
    blob = json.dumps(
        [sorted(query.statuses), query.label_name, query.name_prefix, query.min_accuracy,
         query.order.value, query.owner, query.filter_text, query.sort_text]
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def position(record: AttemptRecord, order: Order) -> list[Any]:
    """The keyset values of `record` under `order`."""
    if order is Order.ID:
        return [record.id]
    if order is Order.ACCURACY:
        return [record.accuracy_key, record.id]
    if order is Order.FIELD:
        return [record.sort_key, record.id]
    return [record.updated_at.isoformat(), record.id]


def encode(query: ListQuery, record: AttemptRecord) -> str:
    """The token of the page after `record`."""
    payload = {"f": _fingerprint(query), "k": position(record, query.order)}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


# Our tokens are under 150 characters; a bound far above that refuses huge ones before
# any decoding, which also caps how deeply a forged token's JSON can nest.
MAX_TOKEN_CHARS = 512
# `attempts.id` is a positive bigint: anything else was not issued by us.
_MAX_ID = 2**63 - 1


def _bad(description: str = "is not a token this service issued") -> InvalidArgument:
    return InvalidArgument.one("page_token", description)


def _position(order: Order, key: Any) -> tuple[Any, ...]:
    """The keyset values of a decoded token, checked to be exactly what `position` writes;
    ValueError otherwise. A forged value must never reach the SQL, where PostgreSQL would
    refuse it as a violation of the whole request (or a bug)."""
    expected_len = 1 if order is Order.ID else 2
    if not isinstance(key, list) or len(key) != expected_len:
        raise ValueError("wrong shape")
    last = key[-1]
    if not isinstance(last, int) or isinstance(last, bool) or not 0 < last <= _MAX_ID:
        raise ValueError("not an attempt id")
    if order is Order.ACCURACY:
        first = key[0]
        # Finite, not within [0, 1]: a token must still page past an accuracy stored
        # before trainers' reports were checked.
        if isinstance(first, bool) or not isinstance(first, int | float):
            raise ValueError("not an accuracy")
        if not math.isfinite(first):
            raise ValueError("not a finite accuracy")
        return (float(first), last)
    if order is Order.FIELD:
        # A number, or null: the rows holding none come last.
        value = key[0]
        if value is None:
            return (None, last)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("not a number")
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return (float(value), last)
    if order is Order.UPDATE_TIME:
        if not isinstance(key[0], str):
            raise ValueError("not a time")
        when = dt.datetime.fromisoformat(key[0])
        if when.tzinfo is None:
            raise ValueError("a time without its zone")
        # In UTC as we write it: PostgreSQL refuses some offsets Python accepts (+20:00).
        # Near the ends of the calendar, OverflowError.
        return (when.astimezone(dt.UTC).isoformat(), last)
    return (last,)


def decode(query: ListQuery, token: str) -> tuple[Any, ...] | None:
    """The keyset position in `token`; INVALID_ARGUMENT if it is not one of ours."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise _bad(
            f"is not a token this service issued (those are under {MAX_TOKEN_CHARS} characters)"
        )
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        if not isinstance(payload, dict):
            raise ValueError("not an object")
        fingerprint, key = payload["f"], payload["k"]
        if not isinstance(fingerprint, str):
            raise ValueError("no fingerprint")
        after = _position(query.order, key)
    # RecursionError: JSON nested deeper than the parser's stack, should the bound allow it.
    except (ValueError, KeyError, TypeError, UnicodeError, OverflowError, RecursionError) as err:
        raise _bad() from err
    if fingerprint != _fingerprint(query):
        raise _bad("was issued for other filters or another order; start without it")
    return after


def before_token(row_id: int) -> str:
    """A page token of a list ordered by id, newest first: the last id sent."""
    return base64.urlsafe_b64encode(json.dumps({"b": row_id}).encode()).decode()


def before_id(token: str) -> int | None:
    """The id a `before_token` holds (None for the first page); INVALID_ARGUMENT
    naming `page_token` for anything this service did not issue."""
    if not token:
        return None
    before = _small_payload(token).get("b")
    if not _is_id(before, 1):
        raise _bad()
    return before


def _small_payload(token: str) -> dict[str, Any]:
    """The JSON object in one of the small tokens below; INVALID_ARGUMENT naming
    `page_token` for anything else (they are under 128 characters)."""
    if len(token) > 128:
        raise _bad()
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error, RecursionError) as err:
        raise _bad() from err
    if not isinstance(payload, dict):
        raise _bad()
    return payload


def _is_id(value: Any, least: int) -> TypeGuard[int]:
    """Whether a token's value is an integer from `least` to the largest bigint."""
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= _MAX_ID


def _request_print(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def after_token(parts: Any, row_id: int, taken: int = 0) -> str:
    """A page token of a list ordered by id, oldest first: the last id read, how many
    entries the pages so far answered (for a `limit` over all of them), and a hash of
    the request's other fields (`parts`, JSON), so that a token is refused for another
    selection."""
    payload = {"a": row_id, "n": taken, "f": _request_print(parts)}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def after_position(parts: Any, token: str) -> tuple[int, int]:
    """The id and count an `after_token` holds ((0, 0) for the first page);
    INVALID_ARGUMENT naming `page_token` for anything this service did not issue, or
    issued for other fields."""
    if not token:
        return (0, 0)
    payload = _small_payload(token)
    after, taken = payload.get("a"), payload.get("n")
    if not _is_id(after, 1) or not _is_id(taken, 0):
        raise _bad()
    if payload.get("f") != _request_print(parts):
        raise _bad("was issued for another selection; start without it")
    return (after, taken)
