"""Hostile inputs: floods of mistakes, near-miss names, forged page tokens, database rows
in errors, endless upload streams. Each ends as a small, precise error the client gets."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.store.database import translate_db_errors
from metalearn import errors
from metalearn.client import InvalidRequest, MetalearnError, NotFoundError, translate
from metalearn.status import to_status
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import attempt_service_pb2_grpc
from metalearn.v1 import dataset_service_pb2 as dpb
from tests.harness import png
from tests.rpc import expect_error, violations
from tests.test_attempts import make_attempt

CODE = grpc.StatusCode
# Far below grpc's default 8 KiB limit on metadata, past which the client would get a
# bare INTERNAL instead of its violations.
TRAILER_BUDGET = 4500

MISSPELT_LAYERS = ["Conv2", "Linera", "Relu", "MaxPool", "Dropuot", "BatchNorm", "Flaten",
                   "Sigmod", "Softmx", "Tanhh", "AvgPool", "LSTMM"]  # fmt: skip


def trailer_bytes(err: grpc.RpcError) -> int:
    """What the status took in trailers, as sent (binary values base64-encoded)."""
    total = 0
    for key, value in err.trailing_metadata() or ():  # type: ignore[attr-defined]
        raw = base64.b64encode(value) if isinstance(value, bytes) else value.encode()
        total += len(key) + len(raw)
    message = err.details() or ""  # type: ignore[attr-defined]
    return total + 3 * len(message.encode())  # percent-encoded at worst


def misspelt(name: str) -> apb.CreateAttemptRequest:
    attempt = make_attempt(name)
    layers = attempt.training_commands.model.layers
    del layers[:]
    for layer in MISSPELT_LAYERS:
        layers.add().update({"name": layer})
    return apb.CreateAttemptRequest(attempt=attempt)


# 1. Many violations: bounded, and all the way to the client.


def test_twelve_misspelt_layers_reach_the_client_with_every_violation(attempts) -> None:
    err = expect_error(CODE.INVALID_ARGUMENT, attempts.CreateAttempt, misspelt("typos"))
    found = violations(err)
    fields = [f"attempt.training_commands.model.layers[{i}].name" for i in range(12)]
    assert set(found) == set(fields), found
    # Suggestions, not the whole vocabulary.
    assert "'Conv2d'" in found[fields[0]] and "\u2026" in found[fields[0]]
    assert "'Linear'" in found[fields[1]]
    assert all(len(d) < 160 for d in found.values()), found
    assert trailer_bytes(err) < TRAILER_BUDGET

    train = apb.TrainRequest(name="typos", command=misspelt("typos").attempt.training_commands)
    err = expect_error(CODE.INVALID_ARGUMENT, attempts.Train, train)
    assert {f"command.model.layers[{i}].name" for i in range(12)} <= set(violations(err))


def test_five_hundred_mistakes_are_capped_with_a_count(attempts, gateway) -> None:
    attempt = make_attempt("flood")
    for i in range(500):
        attempt.training_commands.transform[f"NoSuchTransform{i:03}"] = True
    err = expect_error(
        CODE.INVALID_ARGUMENT, attempts.CreateAttempt, apb.CreateAttemptRequest(attempt=attempt)
    )
    found = violations(err)
    assert 10 <= len(found) <= errors.MAX_VIOLATIONS + 1
    kept = len(found) - 1
    assert found[errors.OMITTED_FIELD] == f"{500 - kept} more violations left out"
    assert trailer_bytes(err) < TRAILER_BUDGET
    assert len(err.details()) <= errors.MAX_MESSAGE_CHARS  # type: ignore[attr-defined]

    # The SDK reads it like any other INVALID_ARGUMENT.
    with pytest.raises(InvalidRequest) as info:
        try:
            attempts.CreateAttempt(apb.CreateAttemptRequest(attempt=attempt))
        except grpc.RpcError as rpc_err:
            raise translate(rpc_err) from None
    assert info.value.violations == found


def test_non_ascii_mistakes_stay_small(attempts) -> None:
    """Four UTF-8 bytes a character, then base64 or percent-encoding: bounded by bytes."""
    attempt = make_attempt("emoji")
    for i in range(300):
        attempt.training_commands.transform[f"{i:03}" + "\U0001f600" * 60] = {"\U0001f600": 1}
    err = expect_error(
        CODE.INVALID_ARGUMENT, attempts.CreateAttempt, apb.CreateAttemptRequest(attempt=attempt)
    )
    assert errors.OMITTED_FIELD in violations(err)
    assert trailer_bytes(err) < TRAILER_BUDGET


def test_any_invalid_argument_is_bounded_where_it_becomes_a_status() -> None:
    """Also errors built without `Violations`, as the trainer's are: one boundary for all."""
    huge = errors.InvalidArgument(
        errors.FieldViolation(f"f{i}" + "x" * 5000, "\u00e9" * 10_000) for i in range(100_000)
    )
    assert len(huge.violations) == errors.MAX_VIOLATIONS
    assert huge.omitted == 100_000 - errors.MAX_VIOLATIONS
    status = to_status(huge)
    size = sum(len(k) + len(base64.b64encode(v) if isinstance(v, bytes) else v)
               for k, v in status.trailing_metadata) + 3 * len(status.details.encode())  # fmt: skip
    assert size < TRAILER_BUDGET
    detail = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    assert detail.details[0].Unpack(bad)
    last = bad.field_violations[-1]
    assert last.field == errors.OMITTED_FIELD
    assert last.description == f"{100_000 - len(bad.field_violations) + 1} more violations left out"

    v = errors.Violations()
    for i in range(1_000_000):  # memory: only the kept ones are held
        v.add(f"f{i}", "bad")
    assert len(v.items) == errors.MAX_VIOLATIONS and v.omitted == 1_000_000 - len(v.items)
    with pytest.raises(errors.InvalidArgument) as info:
        v.raise_if_any()
    assert info.value.omitted == v.omitted
    assert len(str(info.value)) <= errors.MAX_MESSAGE_CHARS


def test_long_vocabularies_are_shortened() -> None:
    assert errors.some_of(["b", "a"]) == "'a', 'b'"
    shown = errors.some_of([f"n{i}" for i in range(40)])
    assert shown.endswith(", \u2026 (40 in all)") and shown.count("'") == 10
    assert errors.some_of(["Linear", "Conv2d", "ReLU"], near="linear").startswith("'Linear'")


# 1b. The client never crashes on a status it cannot read.


class _Liar(attempt_service_pb2_grpc.AttemptServiceServicer):
    """Answers GetAttempt with whatever status trailers a test sets."""

    trailers: tuple[tuple[str, Any], ...] = ()
    message = ""

    def GetAttempt(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.set_trailing_metadata(self.trailers)
        context.abort(CODE.INVALID_ARGUMENT, self.message)


@pytest.fixture()
def liar() -> Iterator[tuple[_Liar, attempt_service_pb2_grpc.AttemptServiceStub]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = _Liar()
    attempt_service_pb2_grpc.add_AttemptServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield servicer, attempt_service_pb2_grpc.AttemptServiceStub(channel)
    finally:
        server.stop(None)


def _status(code: int, message: str, *details: any_pb2.Any) -> bytes:
    return status_pb2.Status(code=code, message=message, details=details).SerializeToString()


def _garbage_bad_request() -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest())
    detail.value = b"\xff\xff\xff\xff"
    return detail


def _unknown_detail() -> any_pb2.Any:
    return any_pb2.Any(type_url="type.googleapis.com/no.such.Thing", value=b"\x01\x02")


@pytest.mark.parametrize(
    ("details_bin", "message"),
    [
        (b"\xff\x00 not a status \x81", "garbage"),
        (_status(code_pb2.NOT_FOUND, "mismatch"), "mismatch"),  # disagrees with the call
        (_status(code_pb2.INVALID_ARGUMENT, "other message"), "the message"),
        (_status(code_pb2.INVALID_ARGUMENT, "bad detail", _garbage_bad_request()), "bad detail"),
        (_status(code_pb2.INVALID_ARGUMENT, "odd", _unknown_detail()), "odd"),
        (None, "no details"),
        (None, ""),
    ],
)
def test_the_client_survives_statuses_it_cannot_read(liar, details_bin, message) -> None:
    servicer, stub = liar
    servicer.message = message
    servicer.trailers = (("grpc-status-details-bin", details_bin),) if details_bin else ()
    with pytest.raises(grpc.RpcError) as info:
        stub.GetAttempt(apb.GetAttemptRequest(name="x"))
    error = translate(info.value)
    assert isinstance(error, InvalidRequest)
    assert error.code == "INVALID_ARGUMENT"
    assert error.message == (message or "INVALID_ARGUMENT")
    assert error.violations == {}


def test_the_client_keeps_every_problem_of_one_field(liar) -> None:
    servicer, stub = liar
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="name", description="is required")
    bad.field_violations.add(field="name", description="is too short")
    detail = any_pb2.Any()
    detail.Pack(bad)
    servicer.message = "two problems"
    servicer.trailers = (
        ("grpc-status-details-bin", _status(code_pb2.INVALID_ARGUMENT, "two problems", detail)),
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.GetAttempt(apb.GetAttemptRequest(name="x"))
    assert translate(info.value).violations == {"name": "is required; is too short"}


# 2. Patterns match whole strings.


def test_a_trailing_newline_is_never_a_valid_name(attempts) -> None:
    attempts.CreateAttempt(apb.CreateAttemptRequest(attempt=make_attempt("keep")))
    for call, request, field in (
        (attempts.GetAttempt, apb.GetAttemptRequest(name="keep\n"), "name"),
        (attempts.DeleteAttempt, apb.DeleteAttemptRequest(name="keep\n"), "name"),
        (attempts.CreateAttempt, apb.CreateAttemptRequest(attempt=make_attempt("new\n")),
         "attempt.name"),
    ):  # fmt: skip
        err = expect_error(CODE.INVALID_ARGUMENT, call, request)
        assert field in violations(err)

    attempt = make_attempt("whole")
    attempt.tags["key\n"] = "v"
    cmd = attempt.training_commands
    cmd.optimizer["lr\n"] = 0.1
    cmd.transform["RandomRotation"] = {"degrees\n": 10}
    err = expect_error(
        CODE.INVALID_ARGUMENT, attempts.CreateAttempt, apb.CreateAttemptRequest(attempt=attempt)
    )
    found = violations(err)
    assert "attempt.tags['key\\n']" in found
    assert found["attempt.training_commands.optimizer.lr\n"] == "is not a valid argument name"
    assert "attempt.training_commands.transform.RandomRotation.degrees\n" in found

    named = make_attempt("architecture")
    del named.training_commands.model.layers[:]
    named.training_commands.model.name = "resnet18\n"
    err = expect_error(
        CODE.INVALID_ARGUMENT, attempts.CreateAttempt, apb.CreateAttemptRequest(attempt=named)
    )
    assert "attempt.training_commands.model.name" in violations(err)


# 3. Errors never echo a database row.


def test_database_errors_name_the_constraint_not_the_row(postgres_url) -> None:
    secret = "s3cret-of-another-row"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TEMP TABLE hostile (name text CONSTRAINT hostile_name_key UNIQUE,"
            " n integer CONSTRAINT hostile_n_positive CHECK (n > 0), short varchar(3))"
        )
        conn.execute("INSERT INTO hostile (name, n) VALUES (%s, 1)", (secret,))
        cases: list[tuple[str, tuple[Any, ...], type[errors.DomainError], str]] = [
            ("INSERT INTO hostile (name, n) VALUES (%s, 2)", (secret,),
             errors.AlreadyExists, "table hostile, constraint hostile_name_key"),
            ("INSERT INTO hostile (name, n) VALUES (%s, -1)", (secret + "2",),
             errors.InvalidArgument, "table hostile, constraint hostile_n_positive"),
            ("SELECT %s::integer", (secret,), errors.InvalidArgument, "InvalidTextRepresentation"),
            ("INSERT INTO hostile (short) VALUES (%s)", (secret,),
             errors.InvalidArgument, "StringDataRightTruncation"),
        ]  # fmt: skip
        for statement, params, kind, named in cases:
            with pytest.raises(kind) as info, translate_db_errors():
                conn.execute(statement, params)
            text = str(info.value)
            assert named in text, text
            assert "s3cret" not in text and "Failing row" not in text and "Key (" not in text


def test_a_taken_name_says_so_without_the_row(attempts) -> None:
    attempts.CreateAttempt(apb.CreateAttemptRequest(attempt=make_attempt("twice")))
    err = expect_error(
        CODE.ALREADY_EXISTS,
        attempts.CreateAttempt,
        apb.CreateAttemptRequest(attempt=make_attempt("twice")),
    )
    message = err.details()  # type: ignore[attr-defined]
    assert "twice" in message and "Key (" not in message and "DETAIL" not in message


# 4. Forged page tokens.


def _token(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.fixture()
def three(attempts) -> None:
    for i in range(3):
        attempts.CreateAttempt(apb.CreateAttemptRequest(attempt=make_attempt(f"page-{i}")))


def _real_token(attempts, **filters: Any) -> str:
    """The token of a first page of one, under `filters`."""
    reply = attempts.ListAttempts(apb.ListAttemptsRequest(page_size=1, **filters))
    assert reply.next_page_token
    return reply.next_page_token


def _fingerprint(token: str) -> str:
    found: str = json.loads(base64.urlsafe_b64decode(token))["f"]
    return found


def expect_bad_token(attempts, token: str, **filters: Any) -> None:
    request = apb.ListAttemptsRequest(page_token=token, **filters)
    err = expect_error(CODE.INVALID_ARGUMENT, attempts.ListAttempts, request)
    assert set(violations(err)) == {"page_token"}, violations(err)


def test_forged_page_tokens_are_invalid_page_tokens(attempts, three) -> None:
    fp = _fingerprint(_real_token(attempts))
    deep = 100_000
    for token in (
        base64.urlsafe_b64encode(bytes(range(256))).decode(),  # random bytes
        "!!not base64 at all!!",
        "\u00e9\u00e9\u00e9\u00e9",
        "A" * 1_000_001,  # huge
        _token({"f": fp, "k": json.loads("[" * 500 + "]" * 500)}),
        base64.urlsafe_b64encode(b'{"f": "' + fp.encode() + b'", "k": ' + b"[" * deep +
                                 b"]" * deep + b"}").decode(),  # nested 100,000 deep
        base64.urlsafe_b64encode(b"[" * 180 + b"]" * 180).decode(),  # nested, within bounds
        _token([fp, [1]]),
        _token("just a string"),
        _token(None),
        _token({"f": fp}),
        _token({"f": 5, "k": [1]}),
        _token({"f": fp, "k": "1"}),
        _token({"f": fp, "k": [True]}),
        _token({"f": fp, "k": [1.5]}),
        _token({"f": fp, "k": [0]}),
        _token({"f": fp, "k": [-(2**63)]}),
        _token({"f": fp, "k": [2**63]}),
        _token({"f": fp, "k": [2**200]}),
        _token({"f": fp, "k": [1, 2]}),
        _token({"f": fp, "k": [{"id": 1}]}),
        base64.urlsafe_b64encode(b'{"f": "' + fp.encode() + b'", "k": [' + b"9" * 300 + b"]}")
        .decode(),
    ):  # fmt: skip
        expect_bad_token(attempts, token)
    # Wrong types in the other orders' keys.
    for order, key in (
        (apb.ATTEMPT_ORDER_ACCURACY, [float("nan"), 1]),
        (apb.ATTEMPT_ORDER_ACCURACY, [float("inf"), 1]),
        (apb.ATTEMPT_ORDER_ACCURACY, ["0.5", 1]),
        (apb.ATTEMPT_ORDER_ACCURACY, [True, 1]),
        (apb.ATTEMPT_ORDER_ACCURACY, [0.5, None]),
        (apb.ATTEMPT_ORDER_UPDATE_TIME, ["yesterday", 1]),
        (apb.ATTEMPT_ORDER_UPDATE_TIME, [1_700_000_000, 1]),
        (apb.ATTEMPT_ORDER_UPDATE_TIME, ["2024-01-01T00:00:00", 1]),  # no zone
        (apb.ATTEMPT_ORDER_UPDATE_TIME, ["0001-01-01T00:00:00+05:00", 1]),  # before year 1
    ):
        real = _fingerprint(_real_token(attempts, order_by=order))
        expect_bad_token(attempts, _token({"f": real, "k": key}), order_by=order)


def test_a_token_for_other_filters_is_an_invalid_page_token(attempts, three) -> None:
    token = _real_token(attempts)
    expect_bad_token(attempts, token, order_by=apb.ATTEMPT_ORDER_ACCURACY)
    expect_bad_token(attempts, token, name_prefix="page-")
    # Its own filters: the next page.
    reply = attempts.ListAttempts(apb.ListAttemptsRequest(page_size=1, page_token=token))
    assert [a.name for a in reply.attempts] == ["page-1"]


def test_a_forged_but_well_formed_token_only_moves_the_position(attempts, three) -> None:
    """Tokens carry no secret: a made-up position is a valid one, and PostgreSQL never
    sees a value it would refuse (an offset Python accepts and PostgreSQL does not)."""
    token = _real_token(attempts, order_by=apb.ATTEMPT_ORDER_UPDATE_TIME)
    forged = _token({"f": _fingerprint(token), "k": ["9999-12-31T23:59:59+20:00", 2**63 - 1]})
    request = apb.ListAttemptsRequest(
        page_token=forged, order_by=apb.ATTEMPT_ORDER_UPDATE_TIME, page_size=10
    )
    assert len(attempts.ListAttempts(request).attempts) == 3
    token = _real_token(attempts, order_by=apb.ATTEMPT_ORDER_ACCURACY)
    forged = _token({"f": _fingerprint(token), "k": [42.0, 1]})
    request = apb.ListAttemptsRequest(
        page_token=forged, order_by=apb.ATTEMPT_ORDER_ACCURACY, page_size=10
    )
    assert len(attempts.ListAttempts(request).attempts) == 3


# 5. Uploads and label lists stay bounded.


def test_an_upload_of_many_bad_images_keeps_counts_and_a_few_reasons(datasets) -> None:
    n = 5000

    def stream() -> Iterator[dpb.UploadImagesRequest]:
        for i in range(n):
            # Cheap to refuse (no label), so the stream is long but the test quick.
            yield dpb.UploadImagesRequest(label="", data=b"x", filename=f"bad-{i}.png")
        yield dpb.UploadImagesRequest(label="owl", data=png(), filename="good.png")

    reply = datasets.UploadImages(stream())
    assert (reply.added, reply.rejected, reply.duplicates) == (1, n, 0)
    assert len(reply.rejections) == 100
    assert [r.index for r in reply.rejections] == list(range(100))
    assert reply.rejections[0].filename == "bad-0.png" and reply.rejections[0].reason


def test_label_lists_are_bounded(datasets, gateway) -> None:
    max_labels = gateway.config.limits.max_labels
    too_many = [f"label-{i}" for i in range(max_labels + 1)]
    blank = [""] * (max_labels + 1)  # one violation for the list, not one per label
    for labels in (too_many, blank):
        err = expect_error(
            CODE.INVALID_ARGUMENT,
            lambda r: list(datasets.ReadImages(r)),
            dpb.ReadImagesRequest(label_names=labels),
        )
        assert set(violations(err)) == {"label_names"}
        err = expect_error(
            CODE.INVALID_ARGUMENT,
            datasets.DeleteImages,
            dpb.DeleteImagesRequest(label_names=labels),
        )
        assert set(violations(err)) == {"label_names"}
    # At the bound itself: a plain answer (no such labels, nothing to read or delete).
    assert list(datasets.ReadImages(dpb.ReadImagesRequest(label_names=too_many[:-1]))) == []
    assert datasets.DeleteImages(dpb.DeleteImagesRequest(label_names=too_many[:-1])).deleted == 0


def test_not_found_stays_not_found(attempts) -> None:
    """The bounds change nothing for an ordinary miss."""
    expect_error(CODE.NOT_FOUND, attempts.GetAttempt, apb.GetAttemptRequest(name="nobody"))
    with pytest.raises(grpc.RpcError) as info:
        attempts.GetAttempt(apb.GetAttemptRequest(name="nobody"))
    error = translate(info.value)
    assert isinstance(error, NotFoundError) and isinstance(error, MetalearnError)


def test_a_command_of_many_long_labels_is_stored(attempts) -> None:
    """Issue 25: its task key outgrew a B-tree entry and the database refused the row,
    which reached the client as UNAVAILABLE. The key's indexes are hash indexes now."""
    # Random, so that compression cannot shrink the key below the limit.
    labels = tuple(f"{i:04d} {secrets.token_hex(20)}" for i in range(600))
    created = attempts.CreateAttempt(
        apb.CreateAttemptRequest(attempt=make_attempt("many-labels", labels))
    )
    got = attempts.GetAttempt(apb.GetAttemptRequest(name=created.attempt.name)).attempt
    assert len(got.training_commands.label_names) == 600


def test_a_value_past_a_database_limit_is_invalid_argument(postgres_url) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TEMP TABLE t (v text)")
        conn.execute("CREATE INDEX ON t (v)")
        with pytest.raises(errors.InvalidArgument) as err, translate_db_errors():
            conn.execute("INSERT INTO t VALUES (%s)", (secrets.token_hex(8000),))
    assert "too large for the database" in str(err.value)
