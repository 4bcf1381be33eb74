"""AttemptService against a real gateway and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2, json_format

from gateway.store import AttemptStore, EpochRecord
from metalearn.v1 import attempt_pb2
from metalearn.v1 import attempt_service_pb2 as pb
from tests.harness import snapshot
from tests.rpc import expect_error, violations

CODE = grpc.StatusCode


def make_attempt(
    name: str, labels: tuple[str, ...] = ("cat", "dog"), **tags: str
) -> attempt_pb2.Attempt:
    attempt = attempt_pb2.Attempt(name=name, n_epoch=3, tags=tags)
    json_format.ParseDict(
        {
            "label_names": list(labels),
            "batch_size": 8,
            "n_epoch": 3,
            "model": {
                "layers": [
                    {"name": "Flatten"},
                    {"name": "Linear", "in_features": "auto", "out_features": "n_labels"},
                ]
            },
            "optimizer": {"name": "Adam", "lr": 0.001},
        },
        attempt.training_commands,
    )
    return attempt


def create(stub, name: str, **kw) -> attempt_pb2.Attempt:
    return stub.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt(name, **kw))).attempt


def test_fifty_concurrent_creates_get_distinct_ids(attempts) -> None:
    with ThreadPoolExecutor(max_workers=50) as pool:
        made = list(pool.map(lambda i: create(attempts, f"concurrent-{i}"), range(50)))
    ids = [a.id for a in made]
    assert len(set(ids)) == 50
    assert attempts.GetLatestIndex(pb.GetLatestIndexRequest()).latest_index == max(ids)


def test_duplicate_name_is_already_exists(attempts, gateway) -> None:
    create(attempts, "twice")
    before = snapshot(gateway.database_url)
    err = expect_error(CODE.ALREADY_EXISTS, create, attempts, "twice")
    assert "twice" in err.details()
    assert snapshot(gateway.database_url) == before


def test_unknown_name_and_id_are_not_found(attempts) -> None:
    expect_error(CODE.NOT_FOUND, attempts.GetAttempt, pb.GetAttemptRequest(name="nobody"))
    expect_error(CODE.NOT_FOUND, attempts.GetAttempt, pb.GetAttemptRequest(id=424242))
    expect_error(CODE.NOT_FOUND, attempts.DeleteAttempt, pb.DeleteAttemptRequest(name="nobody"))
    mask = field_mask_pb2.FieldMask(paths=["n_epoch"])
    expect_error(
        CODE.NOT_FOUND,
        attempts.UpdateAttempt,
        pb.UpdateAttemptRequest(attempt=attempt_pb2.Attempt(name="nobody"), update_mask=mask),
    )


def test_get_by_id_and_name_agree(attempts) -> None:
    made = create(attempts, "both-ways")
    by_id = attempts.GetAttempt(pb.GetAttemptRequest(id=made.id)).attempt
    by_name = attempts.GetAttempt(pb.GetAttemptRequest(name="both-ways")).attempt
    assert by_id == by_name
    err = expect_error(CODE.INVALID_ARGUMENT, attempts.GetAttempt, pb.GetAttemptRequest())
    assert "key" in violations(err)


def test_create_ignores_output_only_fields(attempts) -> None:
    attempt = make_attempt("owned")
    attempt.id = 999
    attempt.status = attempt_pb2.ATTEMPT_STATUS_COMPLETE
    attempt.training_losses.extend([1.0, 2.0])
    attempt.accuracy = 0.9
    made = attempts.CreateAttempt(pb.CreateAttemptRequest(attempt=attempt)).attempt
    assert made.id != 999 and made.status == attempt_pb2.ATTEMPT_STATUS_INCOMPLETE
    assert list(made.training_losses) == [] and made.accuracy == 0.0


def test_bad_layer_names_the_field(attempts) -> None:
    attempt = make_attempt("bad-layer")
    attempt.training_commands.model.layers[1]["out_features"] = -3
    attempt.training_commands.model.layers.add().update({"name": "Teleport"})
    err = expect_error(
        CODE.INVALID_ARGUMENT, attempts.CreateAttempt, pb.CreateAttemptRequest(attempt=attempt)
    )
    found = violations(err)
    assert "attempt.training_commands.model.layers[1].out_features" in found
    assert "Teleport" in found["attempt.training_commands.model.layers[2].name"]


def test_update_writes_only_masked_fields(attempts) -> None:
    made = create(attempts, "upd")
    change = attempt_pb2.Attempt(name="upd", n_epoch=42, limit=7, tags={"team": "vision"})
    mask = field_mask_pb2.FieldMask(paths=["n_epoch", "tags"])
    updated = attempts.UpdateAttempt(
        pb.UpdateAttemptRequest(attempt=change, update_mask=mask)
    ).attempt
    assert updated.n_epoch == 42 and dict(updated.tags) == {"team": "vision"}
    assert updated.limit == 0  # not in the mask
    assert updated.training_commands == made.training_commands
    assert updated.update_time.ToDatetime() >= made.update_time.ToDatetime()


def test_update_refuses_server_owned_and_unknown_fields(attempts, gateway) -> None:
    create(attempts, "guarded")
    before = snapshot(gateway.database_url)
    mask = field_mask_pb2.FieldMask(paths=["n_epoch", "status", "training_losses", "bogus"])
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        attempts.UpdateAttempt,
        pb.UpdateAttemptRequest(attempt=attempt_pb2.Attempt(name="guarded"), update_mask=mask),
    )
    found = violations(err)
    assert "server" in found["update_mask.paths[1]"]
    assert "server" in found["update_mask.paths[2]"]
    assert "not a writable field" in found["update_mask.paths[3]"]
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        attempts.UpdateAttempt,
        pb.UpdateAttemptRequest(attempt=attempt_pb2.Attempt(name="guarded")),
    )
    assert "update_mask" in violations(err)
    assert snapshot(gateway.database_url) == before


def test_commands_of_a_running_attempt_cannot_change(attempts, gateway) -> None:
    import psycopg

    create(attempts, "busy")
    with psycopg.connect(gateway.database_url) as conn:
        conn.execute("UPDATE attempts SET status = 'TRAINING' WHERE name = 'busy'")
    mask = field_mask_pb2.FieldMask(paths=["training_commands"])
    expect_error(
        CODE.FAILED_PRECONDITION,
        attempts.UpdateAttempt,
        pb.UpdateAttemptRequest(attempt=make_attempt("busy"), update_mask=mask),
    )
    expect_error(
        CODE.FAILED_PRECONDITION, attempts.DeleteAttempt, pb.DeleteAttemptRequest(name="busy")
    )
    # Tags are not commands: they may change while it trains.
    mask = field_mask_pb2.FieldMask(paths=["tags"])
    attempts.UpdateAttempt(
        pb.UpdateAttemptRequest(
            attempt=attempt_pb2.Attempt(name="busy", tags={"a": "b"}), update_mask=mask
        )
    )


def test_delete_removes_attempt_and_epochs(attempts, gateway) -> None:
    import asyncio

    made = create(attempts, "doomed")
    training(gateway.database_url, made.id)

    async def add_epochs() -> None:
        from gateway.store import open_pool

        async with open_pool(gateway.database_url, 1, 2) as pool:
            store = AttemptStore(pool)
            for epoch in (1, 2):
                await store.append_epoch(made.id, 0, EpochRecord(epoch, 1.0 / epoch))

    asyncio.run(add_epochs())
    training(gateway.database_url, made.id, "TRAINED")
    got = attempts.GetAttempt(
        pb.GetAttemptRequest(name="doomed", view=pb.ATTEMPT_VIEW_FULL)
    ).attempt
    assert list(got.training_losses) == [1.0, 0.5] and [e.epoch for e in got.epochs] == [1, 2]
    attempts.DeleteAttempt(pb.DeleteAttemptRequest(id=made.id))
    expect_error(CODE.NOT_FOUND, attempts.GetAttempt, pb.GetAttemptRequest(id=made.id))
    assert snapshot(gateway.database_url)[1] == []
    # The index is the highest id ever given: deleting does not hand an id out twice.
    assert attempts.GetLatestIndex(pb.GetLatestIndexRequest()).latest_index == made.id


def test_list_pages_filters_and_orders(attempts, gateway) -> None:
    import psycopg

    for i in range(7):
        create(attempts, f"run-{i}", labels=("cat", "dog") if i % 2 else ("car",))
    create(attempts, "other")
    with psycopg.connect(gateway.database_url) as conn:
        for i, acc in ((1, 0.5), (3, 0.9), (5, 0.7)):
            conn.execute(
                "UPDATE attempts SET doc = doc || jsonb_build_object('accuracy', %s::float8),"
                " status = 'COMPLETE' WHERE name = %s",
                (acc, f"run-{i}"),
            )

    def all_pages(request: pb.ListAttemptsRequest) -> list[str]:
        names: list[str] = []
        while True:
            reply = attempts.ListAttempts(request)
            names += [a.name for a in reply.attempts]
            if not reply.next_page_token:
                return names
            request.page_token = reply.next_page_token

    assert all_pages(pb.ListAttemptsRequest(page_size=3)) == [f"run-{i}" for i in range(7)] + [
        "other"
    ]
    assert all_pages(pb.ListAttemptsRequest(page_size=2, name_prefix="run-", label_name="dog")) == [
        "run-1",
        "run-3",
        "run-5",
    ]
    assert all_pages(
        pb.ListAttemptsRequest(page_size=1, order_by=pb.ATTEMPT_ORDER_ACCURACY, min_accuracy=0.6)
    ) == ["run-3", "run-5"]
    by_acc = all_pages(pb.ListAttemptsRequest(page_size=2, order_by=pb.ATTEMPT_ORDER_ACCURACY))
    assert by_acc[:3] == ["run-3", "run-5", "run-1"] and len(by_acc) == 8
    statuses = [attempt_pb2.ATTEMPT_STATUS_COMPLETE]
    assert sorted(all_pages(pb.ListAttemptsRequest(statuses=statuses))) == [
        "run-1",
        "run-3",
        "run-5",
    ]
    attempts.UpdateAttempt(
        pb.UpdateAttemptRequest(
            attempt=attempt_pb2.Attempt(name="run-0", n_epoch=9),
            update_mask=field_mask_pb2.FieldMask(paths=["n_epoch"]),
        )
    )
    recent = all_pages(pb.ListAttemptsRequest(page_size=3, order_by=pb.ATTEMPT_ORDER_UPDATE_TIME))
    assert recent[0] == "run-0" and sorted(recent) == sorted(by_acc)


def test_page_token_must_match_the_request(attempts) -> None:
    for i in range(3):
        create(attempts, f"p-{i}")
    reply = attempts.ListAttempts(pb.ListAttemptsRequest(page_size=1))
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        attempts.ListAttempts,
        pb.ListAttemptsRequest(page_size=1, page_token=reply.next_page_token, name_prefix="p"),
    )
    assert "page_token" in violations(err)
    expect_error(
        CODE.INVALID_ARGUMENT,
        attempts.ListAttempts,
        pb.ListAttemptsRequest(page_token="not-a-token"),
    )
    expect_error(CODE.INVALID_ARGUMENT, attempts.ListAttempts, pb.ListAttemptsRequest(page_size=-1))


def training(database_url: str, attempt_id: int, status: str = "TRAINING") -> None:
    """Makes an attempt TRAINING under fencing token 0, as a claim would (or `status`)."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE attempts SET status = %s WHERE id = %s", (status, attempt_id))


@pytest.mark.parametrize(
    "fence,status,expected", [(0, "TRAINING", True), (1, "TRAINING", None), (0, "CANCELLED", None)]
)
def test_epochs_are_appended_once_and_fenced(attempts, gateway, fence, status, expected) -> None:
    """An epoch is stored once, and only under the current claim of a training attempt:
    not after another claim, and not after a cancellation."""
    import asyncio

    from gateway.store import open_pool
    from metalearn import errors

    made = create(attempts, "fenced")
    training(gateway.database_url, made.id, status)

    async def run() -> list[bytes | None]:
        async with open_pool(gateway.database_url, 1, 2) as pool:
            store = AttemptStore(pool)
            return [await store.append_epoch(made.id, fence, EpochRecord(1, 0.5)) for _ in range(2)]

    if expected is None:
        with pytest.raises(errors.FailedPrecondition):
            asyncio.run(run())
        assert snapshot(gateway.database_url)[1] == []
    else:
        stored, replayed = asyncio.run(run())
        assert replayed is None  # the replay is a no-op
        # What was stored, as the hub hands it to this replica's watchers.
        assert stored is not None
        epochs = attempt_pb2.Attempt.FromString(stored).epochs
        assert [(e.epoch, e.loss) for e in epochs] == [(1, 0.5)]
        got = attempts.GetAttempt(pb.GetAttemptRequest(name="fenced")).attempt
        assert list(got.training_losses) == [0.5] and got.current_epoch == 1


def test_train_refuses_what_the_trainer_would_before_queueing(attempts, gateway) -> None:
    """Argument names are checked against torch's signatures (metalearn/signatures.py)."""
    before = snapshot(gateway.database_url)
    command = make_attempt("x").training_commands
    command.model.layers[1].update({"out_featurez": 3})
    command.model.layers.add().update({"name": "Conv2d", "in_channels": 1, "out_channels": 2})
    command.optimizer.update({"learning_rate": 0.1})
    command.transform.update({"Normalize": {"mean": [0.5], "sd": [0.5]}})
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        attempts.Train,
        pb.TrainRequest(name="never-queued", command=command),
    )
    found = violations(err)
    assert "takes no argument 'out_featurez'" in found["command.model.layers[1].out_featurez"]
    assert "needs ['kernel_size']" in found["command.model.layers[2]"]
    assert "command.optimizer.learning_rate" in found
    assert "needs ['std']" in found["command.transform.Normalize"]
    assert snapshot(gateway.database_url) == before


def _batch(*attempts_: attempt_pb2.Attempt, request_id: str = "") -> pb.BatchCreateAttemptsRequest:
    return pb.BatchCreateAttemptsRequest(
        requests=[pb.CreateAttemptRequest(attempt=a) for a in attempts_], request_id=request_id
    )


def test_a_batch_creates_every_attempt_in_order(attempts) -> None:
    """Issue 30: BatchCreateAttempts (AIP-233) stores many attempts in one call, each as
    CreateAttempt would have, in the order asked."""
    made = attempts.BatchCreateAttempts(
        _batch(make_attempt("b-1"), make_attempt("b-2", ("x", "y")), make_attempt("b-3"))
    ).attempts
    assert [a.name for a in made] == ["b-1", "b-2", "b-3"]
    assert made[0].id < made[1].id < made[2].id
    alone = create(attempts, "single")
    for a in made:
        got = attempts.GetAttempt(pb.GetAttemptRequest(id=a.id)).attempt
        assert got == a
        assert got.status == alone.status and got.owner == alone.owner
    assert list(made[1].training_commands.label_names) == ["x", "y"]
    # A retry carrying the batch's request_id gets the same attempts, not a refusal.
    request = _batch(make_attempt("r-1"), make_attempt("r-2"), request_id="batch-retry-1")
    first = attempts.BatchCreateAttempts(request).attempts
    again = attempts.BatchCreateAttempts(request).attempts
    assert [a.id for a in again] == [a.id for a in first]


def test_a_batch_is_stored_whole_or_not_at_all(attempts, gateway) -> None:
    create(attempts, "taken")
    before = snapshot(gateway.database_url)
    err = expect_error(
        CODE.ALREADY_EXISTS,
        attempts.BatchCreateAttempts,
        _batch(make_attempt("fresh-1"), make_attempt("taken"), make_attempt("fresh-2")),
    )
    assert "taken" in err.details()
    bad = make_attempt("bad")
    bad.training_commands.batch_size = -1
    twice = pb.CreateAttemptRequest(attempt=make_attempt("dup"), request_id="own-id")
    request = _batch(make_attempt("dup"), bad)
    request.requests.append(twice)
    err = expect_error(CODE.INVALID_ARGUMENT, attempts.BatchCreateAttempts, request)
    named = violations(err)
    assert {"requests[2].attempt.name", "requests[2].request_id"} <= set(named), named
    assert any(f.startswith("requests[1].attempt.training_commands") for f in named), named
    err = expect_error(CODE.INVALID_ARGUMENT, attempts.BatchCreateAttempts, _batch())
    assert "requests" in violations(err)
    assert snapshot(gateway.database_url) == before
