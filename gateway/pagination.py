"""Opaque page tokens (AIP-158): the keyset position plus a hash of the request's filters."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

from gateway.store import AttemptRecord, ListQuery, Order
from metalearn.errors import InvalidArgument


def _fingerprint(query: ListQuery) -> str:
    blob = json.dumps(
        [sorted(query.statuses), query.label_name, query.name_prefix, query.min_accuracy,
         query.order.value]
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def position(record: AttemptRecord, order: Order) -> list[Any]:
    """The keyset values of `record` under `order`."""
    if order is Order.ID:
        return [record.id]
    if order is Order.ACCURACY:
        return [record.accuracy_key, record.id]
    return [record.updated_at.isoformat(), record.id]


def encode(query: ListQuery, record: AttemptRecord) -> str:
    """The token of the page after `record`."""
    payload = {"f": _fingerprint(query), "k": position(record, query.order)}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def decode(query: ListQuery, token: str) -> tuple[Any, ...] | None:
    """The keyset position in `token`; INVALID_ARGUMENT if it is not one of ours."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        fingerprint, key = payload["f"], payload["k"]
        expected_len = 1 if query.order is Order.ID else 2
        if not isinstance(key, list) or len(key) != expected_len:
            raise ValueError(key)
        if not isinstance(key[-1], int) or isinstance(key[-1], bool):
            raise ValueError(key)
        if query.order is Order.ACCURACY and not isinstance(key[0], int | float):
            raise ValueError(key)
        if query.order is Order.UPDATE_TIME:
            dt.datetime.fromisoformat(key[0])  # TypeError or ValueError if forged
    except (ValueError, KeyError, TypeError, UnicodeError) as err:
        raise InvalidArgument.one("page_token", "is not a token this service issued") from err
    if fingerprint != _fingerprint(query):
        raise InvalidArgument.one(
            "page_token", "was issued for other filters or another order; start without it"
        )
    return tuple(key)
