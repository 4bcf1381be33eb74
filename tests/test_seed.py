"""The prototype's document is our compatibility target: it must round-trip."""

from __future__ import annotations

import json

from metalearn import documents
from metalearn.v1 import attempt_pb2
from metalearn.v1 import attempt_service_pb2 as pb
from tests.conftest import SEED

SERVER_OWNED = {"id", "status", "training_losses", "accuracy"}


def assert_has(got: object, want: object, path: str) -> None:
    """Every field of `want` is in `got` with the same value (new fields may be added)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        for key, value in want.items():
            assert key in got, f"{path}.{key} is missing"
            assert_has(got[key], value, f"{path}.{key}")
    else:
        assert got == want and type(got) is type(want), f"{path}: {got!r} != {want!r}"


def test_seed_parses_as_attempt() -> None:
    attempt = documents.attempt_from_json(SEED.read_text())
    assert attempt.name == "american_dog_species_3"
    assert attempt.status == attempt_pb2.ATTEMPT_STATUS_COMPLETE
    assert len(attempt.training_losses) == 100
    layers = attempt.training_commands.model.layers
    assert layers[0]["name"] == "Conv2d" and layers[3]["in_channels"] == "auto"
    assert layers[-1]["out_features"] == "n_labels"
    assert attempt.training_commands.image_ops[0].resize.resample == "Image.ANTIALIAS"
    assert attempt.testing_commands.image_ops[1].convert.mode == "'RGB'"


def test_seed_round_trip_through_the_gateway(attempts) -> None:
    original = json.loads(SEED.read_text())
    created = attempts.CreateAttempt(
        pb.CreateAttemptRequest(attempt=documents.attempt_from_document(original))
    ).attempt
    assert created.id > 0
    fetched = attempts.GetAttempt(pb.GetAttemptRequest(name=original["name"])).attempt
    doc = documents.attempt_to_document(fetched)
    for field, value in original.items():
        if field in SERVER_OWNED:
            continue
        assert_has(doc[field], value, field)
    # Exactly the same JSON, integers included, for the commands.
    assert json.dumps(doc["training_commands"]["model"], sort_keys=True) == json.dumps(
        original["training_commands"]["model"], sort_keys=True
    )
    assert fetched.status == attempt_pb2.ATTEMPT_STATUS_INCOMPLETE
    assert fetched.create_time.seconds > 0


def test_document_errors_are_clear() -> None:
    import pytest

    with pytest.raises(documents.DocumentError, match="not JSON"):
        documents.attempt_from_json("{nope")
    with pytest.raises(documents.DocumentError, match="no_such_field"):
        documents.attempt_from_document({"name": "a", "no_such_field": 1})
