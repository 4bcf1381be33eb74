"""ImportAttempts: history recorded elsewhere comes in whole, marked imported, all or
nothing; the prototype's own document keeps its 100 losses and accuracy 0.165."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from metalearn import documents
from metalearn.v1 import attempt_pb2
from metalearn.v1 import attempt_service_pb2 as pb
from tests.conftest import SEED
from tests.harness import snapshot, upload_labels
from tests.rpc import expect_error, violations
from tests.test_attempts import make_attempt


def seed() -> attempt_pb2.Attempt:
    return documents.attempt_from_json(SEED.read_text())


def test_the_prototype_document_imports_with_its_history(attempts, gateway) -> None:
    original = json.loads(SEED.read_text())
    reply = attempts.ImportAttempts(pb.ImportAttemptsRequest(attempts=[seed()]))
    (stored,) = reply.attempts
    assert not reply.skipped
    got = attempts.GetAttempt(
        pb.GetAttemptRequest(name=original["name"], view=pb.ATTEMPT_VIEW_FULL)
    ).attempt
    assert list(got.training_losses) == original["training_losses"]
    assert len(got.training_losses) == 100
    assert got.accuracy == pytest.approx(0.165)
    assert got.status == attempt_pb2.ATTEMPT_STATUS_COMPLETE
    assert got.imported and got.owner.startswith("admin")
    assert got.current_epoch == 100 and [e.epoch for e in got.epochs] == list(range(1, 101))
    assert got.id == stored.id and got.id != original["id"]  # ids are ours
    # Its commands, as recorded.
    doc = documents.attempt_to_document(got)
    assert doc["training_commands"]["model"] == original["training_commands"]["model"]
    assert doc["testing_commands"]["limit"] == 200
    # Filterable and orderable like any attempt.
    found = attempts.ListAttempts(pb.ListAttemptsRequest(filter="imported = true")).attempts
    assert [a.name for a in found] == [original["name"]]
    # No weights came with it: a test needs training first.
    err = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, attempts.Test, pb.TestRequest(name=original["name"])
    )
    assert "imported without its weights" in err.details()


def test_many_at_once_keep_their_own_history(attempts) -> None:
    failed = make_attempt("failed-run")
    failed.status = attempt_pb2.ATTEMPT_STATUS_FAILED
    failed.error = "CUDA out of memory"
    detailed = make_attempt("detailed")
    for epoch, (loss, val) in enumerate([(2.0, 0.3), (1.5, 0.5), (float("nan"), 0.5)], 1):
        detailed.epochs.add(epoch=epoch, loss=loss, val_loss=loss, val_accuracy=val)
    detailed.create_time.FromJsonString("2024-01-02T03:04:05Z")
    plain = make_attempt("plain")  # no results: INCOMPLETE
    reply = attempts.ImportAttempts(pb.ImportAttemptsRequest(attempts=[failed, detailed, plain]))
    by_name = {a.name: a for a in reply.attempts}
    assert [a.name for a in reply.attempts] == ["failed-run", "detailed", "plain"]
    assert by_name["failed-run"].status == attempt_pb2.ATTEMPT_STATUS_FAILED
    assert by_name["failed-run"].error == "CUDA out of memory"
    assert by_name["detailed"].status == attempt_pb2.ATTEMPT_STATUS_TRAINED
    assert by_name["detailed"].create_time.ToJsonString() == "2024-01-02T03:04:05Z"
    assert by_name["plain"].status == attempt_pb2.ATTEMPT_STATUS_INCOMPLETE
    full = attempts.GetAttempt(
        pb.GetAttemptRequest(name="detailed", view=pb.ATTEMPT_VIEW_FULL)
    ).attempt
    assert [e.val_accuracy for e in full.epochs] == [0.3, 0.5, 0.5]
    assert full.epochs[2].loss != full.epochs[2].loss  # NaN kept: a diverged epoch is history
    # An export (GetAttempt FULL, as `attempts get --json` writes it) imports again as it was.
    copy = attempt_pb2.Attempt()
    copy.CopyFrom(full)
    copy.name = "detailed-copy"
    again = attempts.ImportAttempts(pb.ImportAttemptsRequest(attempts=[copy])).attempts[0]
    assert list(again.training_losses)[:2] == [2.0, 1.5]
    assert again.status == full.status and again.create_time == full.create_time


def test_imported_numbers_are_stored_bit_for_bit(attempts) -> None:
    """Epochs travel to the database as text (gateway/store/attempts.epoch_columns): every
    double reads back as the same double, extremes and a diverged loss included."""
    values = [0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, 2.5e-7, 0.0]
    run = make_attempt("exact")
    for epoch, value in enumerate(values, 1):
        same = dict.fromkeys(("loss", "learning_rate", "seconds", "samples_per_second"), value)
        run.epochs.add(epoch=epoch, val_loss=value, val_accuracy=min(value, 1.0), **same)
    run.epochs.add(epoch=len(values) + 1, loss=float("inf"))  # it diverged
    attempts.ImportAttempts(pb.ImportAttemptsRequest(attempts=[run]))
    got = attempts.GetAttempt(pb.GetAttemptRequest(name="exact", view=pb.ATTEMPT_VIEW_FULL))
    epochs = got.attempt.epochs
    assert [e.epoch for e in epochs] == list(range(1, len(values) + 2))
    for e, value in zip(epochs, values, strict=False):
        assert (e.loss, e.learning_rate, e.seconds, e.samples_per_second, e.val_loss) == (
            value,
            value,
            value,
            value,
            value,
        )  # exact: the same bits, no tolerance
        assert e.val_accuracy == min(value, 1.0)
    assert epochs[-1].loss == float("inf") and got.attempt.current_epoch == len(values) + 1


def test_taken_names_refuse_or_skip(attempts, gateway) -> None:
    attempts.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("taken")))
    before = snapshot(gateway.database_url)
    batch = [make_attempt("new-one"), make_attempt("taken")]
    err = expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        attempts.ImportAttempts,
        pb.ImportAttemptsRequest(attempts=batch),
    )
    assert "taken" in err.details() and "skip_existing" in err.details()
    assert snapshot(gateway.database_url) == before  # all or nothing
    reply = attempts.ImportAttempts(pb.ImportAttemptsRequest(attempts=batch, skip_existing=True))
    assert [a.name for a in reply.attempts] == ["new-one"] and list(reply.skipped) == ["taken"]


def test_a_retry_returns_what_the_first_call_stored(attempts) -> None:
    request = pb.ImportAttemptsRequest(
        attempts=[make_attempt("r1"), make_attempt("r2")], request_id=str(uuid.uuid4())
    )
    first = attempts.ImportAttempts(request)
    second = attempts.ImportAttempts(request)
    assert [a.id for a in second.attempts] == [a.id for a in first.attempts]
    assert len(attempts.ListAttempts(pb.ListAttemptsRequest()).attempts) == 2


def _import_error(attempts, batch: list[attempt_pb2.Attempt]) -> dict[str, str]:
    err = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        attempts.ImportAttempts,
        pb.ImportAttemptsRequest(attempts=batch),
    )
    return violations(err)


def test_bad_documents_are_named_and_nothing_is_stored(attempts, gateway) -> None:
    before = snapshot(gateway.database_url)
    live = make_attempt("live")
    live.status = attempt_pb2.ATTEMPT_STATUS_TRAINING
    wrong = make_attempt("wrong")
    wrong.accuracy = 1.5
    wrong.epochs.add(epoch=2, loss=1.0)
    wrong.epochs.add(epoch=1, loss=1.0)
    future = make_attempt("future")
    future.create_time.FromJsonString("2999-01-01T00:00:00Z")
    mismatch = make_attempt("mismatch")
    mismatch.epochs.add(epoch=1, loss=1.0)
    mismatch.training_losses.append(2.0)
    bad_test = make_attempt("bad-test")
    bad_test.test_result.confusion_matrix.extend([1, 2, 3])
    found = _import_error(
        attempts,
        [make_attempt("fine"), live, wrong, future, mismatch, bad_test, make_attempt("fine")],
    )
    assert "live state" in found["attempts[1].status"]
    # Epochs 2, 1: the first is already not epoch 1.
    assert "attempts[2].accuracy" in found and "attempts[2].epochs[0].epoch" in found
    assert "future" in found["attempts[3].create_time"]
    assert "attempts[4].training_losses" in found
    assert "attempts[5].test_result.confusion_matrix" in found
    assert "given twice" in found["attempts[6].name"]
    assert snapshot(gateway.database_url) == before
    assert "attempts" in _import_error(attempts, [])
    assert "attempts" in _import_error(attempts, [make_attempt(f"n{i}") for i in range(1001)])
    # A bad command is named the way CreateAttempt names it.
    bad_command = make_attempt("bad-command")
    bad_command.training_commands.batch_size = -1
    assert "attempts[0].training_commands.batch_size" in _import_error(attempts, [bad_command])


def test_retraining_an_import_makes_it_ours(attempts, gateway) -> None:
    imported = make_attempt("again")
    imported.status = attempt_pb2.ATTEMPT_STATUS_TRAINED
    imported.training_losses.extend([1.0, 0.5])
    attempts.ImportAttempts(pb.ImportAttemptsRequest(attempts=[imported]))
    upload_labels(gateway, imported.training_commands.label_names)
    queued = attempts.Train(
        pb.TrainRequest(name="again", command=imported.training_commands)
    ).attempt
    assert not queued.imported and not queued.training_losses
    assert queued.status == attempt_pb2.ATTEMPT_STATUS_QUEUED


def test_the_cli_imports_files_and_names_the_bad_document(gateway, tmp_path, capsys) -> None:
    from metalearn.cli import main

    base = ["--gateway", gateway.address, "--token", gateway.admin_token]
    many = tmp_path / "many.json"
    docs = [documents.attempt_to_document(make_attempt(f"m{i}")) for i in range(3)]
    many.write_text(json.dumps(docs))
    lines = tmp_path / "lines.ndjson"
    lines.write_text("\n".join(json.dumps(documents.attempt_to_document(make_attempt(n)))
                               for n in ("l1", "l2")))  # fmt: skip
    assert main([*base, "attempts", "import", str(SEED), str(many), str(lines)]) == 0
    out = capsys.readouterr().out
    assert "american_dog_species_3" in out and "100 epochs  accuracy 0.165" in out
    assert "imported 6" in out
    # Again: every name is taken; --skip-existing says so and stores nothing new.
    assert main([*base, "attempts", "import", "--skip-existing", "--json", str(many)]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply == {"imported": [], "skipped": ["m0", "m1", "m2"]}
    # A bad document is named by file and position, and nothing of its batch is stored.
    docs[1]["status"] = "Training"
    docs = [{**d, "name": d["name"] + "-new"} for d in docs]
    many.write_text(json.dumps(docs))
    assert main([*base, "attempts", "import", str(many)]) == 1
    err = capsys.readouterr().err
    assert f"{many}[1]: status: TRAINING is a live state" in err, err
    assert main([*base, "attempts", "list", "--order-by", "accuracy desc", "--filter",
                 "imported = true"]) == 0  # fmt: skip
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 7 and "american_dog_species_3" in listed[1]
