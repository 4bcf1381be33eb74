"""metalearn.Client against a real gateway: results as messages, errors as exceptions."""

from __future__ import annotations

import pytest

from metalearn import Client
from metalearn.client import (
    AlreadyExistsError,
    InvalidRequest,
    NotFoundError,
    UnavailableError,
    WrongStateError,
)
from tests.harness import png
from tests.test_attempts import make_attempt


def test_store_calls_and_their_errors(gateway) -> None:
    with Client(gateway.address, token=gateway.admin_token) as client:
        made = client.create(make_attempt("first"))
        assert client.get("first").id == made.id == client.get(made.id).id
        client.create(make_attempt("second", labels=("owl",)))
        assert [a.name for a in client.list()] == ["first", "second"]
        assert [a.name for a in client.list(label="owl")] == ["second"]
        with pytest.raises(AlreadyExistsError):
            client.create(make_attempt("first"))
        with pytest.raises(NotFoundError):
            client.get("nobody")
        with pytest.raises(InvalidRequest) as bad:
            client.create(make_attempt("bad name!"))
        assert "attempt.name" in bad.value.violations and bad.value.code == "INVALID_ARGUMENT"
        with pytest.raises(WrongStateError):
            client.test("first")  # never trained
        with pytest.raises(WrongStateError):
            client.cancel("first")  # nothing running
        reply = client.upload_images([("owl", png()), ("owl", b"not an image")])
        assert (reply.added, reply.rejected) == (1, 1)
        assert client.labels() == {"owl": 1}


def test_an_unreachable_gateway_is_unavailable() -> None:
    with Client("127.0.0.1:1", timeout=2) as client, pytest.raises(UnavailableError):
        client.get("x")
