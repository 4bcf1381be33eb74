"""What the worst filters a client may send cost, and the refusals no parse can avoid
(issue 25, findings 1 and 9), against a real gateway and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import grpc
import psycopg
import pytest
from psycopg import sql

from gateway.store import AttemptStore, ListQuery, open_pool
from gateway.store.filters import MAX_FILTER_CHARS, MAX_PATTERN_CHARS, MAX_WILDCARDS, Filter
from metalearn.errors import InvalidArgument
from metalearn.v1 import attempt_service_pb2 as pb
from tests.rpc import expect_error, violations

ROWS = 2000


@pytest.fixture()
def crowd(gateway) -> None:
    """ROWS attempts whose names, optimizer names and labels are long runs of one letter:
    the text a backtracking matcher does worst on."""
    with psycopg.connect(gateway.database_url) as conn:
        conn.execute(
            "INSERT INTO attempts (name, doc) SELECT repeat('a', 100) || g,"
            " jsonb_build_object('training_commands', jsonb_build_object("
            " 'optimizer', jsonb_build_object('name', repeat('a', 1000)),"
            " 'label_names', jsonb_build_array(repeat('a', 500), 'cat')))"
            " FROM generate_series(1, %s) g",
            (ROWS,),
        )


def listed(attempts, text: str) -> tuple[int, float]:
    """How many attempts a filter selects (every page of at most 1,000), and how long the
    listing took, which is reported, not asserted (the machine is shared)."""
    request = pb.ListAttemptsRequest(filter=text, page_size=1000)
    found, started = 0, time.monotonic()
    while True:
        # A deadline well past what any of these should take: the test fails, rather than
        # hangs, where a pattern is costly again.
        reply = attempts.ListAttempts(request, timeout=30)
        found += len(reply.attempts)
        if not reply.next_page_token:
            return found, time.monotonic() - started
        request.page_token = reply.next_page_token


@pytest.mark.parametrize(
    "path", ["name", "training_commands.optimizer.name", "training_commands.label_names"]
)
def test_the_worst_patterns_allowed_answer(attempts, crowd, path, capsys) -> None:
    start = f'{path} = "'
    stars = start + "*" * (MAX_FILTER_CHARS - len(start) - 1) + '"'
    # Wildcards around a letter every value holds, ending where none matches: each `%`
    # has many places to try, the way a backtracking matcher is slowest.
    spread = start + "*a" * MAX_WILDCARDS + 'b"'
    almost = start + "a*" * MAX_WILDCARDS + '"'
    # The longest literal allowed, failing at its end at every place it is tried: LIKE's
    # worst case, (value length x pattern length) steps per value.
    longest = start + "*" + "a" * (MAX_PATTERN_CHARS - 1) + 'b"'
    cases = ((stars, ROWS), (start + '*"', ROWS), (spread, 0), (almost, ROWS), (longest, 0))
    for text, expected in cases:
        found, seconds = listed(attempts, text)
        with capsys.disabled():
            print(f"\n{path} {text[len(start) : len(start) + 12]}… ({len(text)} chars):"
                  f" {found} of {ROWS} in {seconds:.3f} s")  # fmt: skip
        assert found == expected, text[:80]


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("*x" * (MAX_WILDCARDS + 1), f"at most {MAX_WILDCARDS} wildcards in one value"),
        ("x*" * (MAX_WILDCARDS + 1) + "x", f"at most {MAX_WILDCARDS} wildcards in one value"),
        ("*" + "x" * (MAX_PATTERN_CHARS + 1),
         f"a value with wildcards has at most {MAX_PATTERN_CHARS} other characters"),
    ],
)  # fmt: skip
def test_a_pattern_past_the_bounds_is_refused(attempts, gateway, value, what) -> None:
    for path in ("training_commands.optimizer.name", "name"):
        text = f'{path} = "{value}"'
        err = expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            attempts.ListAttempts,
            pb.ListAttemptsRequest(filter=text),
        )
        assert violations(err) == {"filter": f"at column {len(path) + 4}: {what}"}
    # At the bounds, and without wildcards (an equality, served by the index), it is fine.
    for value in ("*x" * MAX_WILDCARDS, "*" + "x" * MAX_PATTERN_CHARS, "x" * 1000):
        reply = attempts.ListAttempts(pb.ListAttemptsRequest(filter=f'name = "{value}"'))
        assert list(reply.attempts) == []


def test_bad_utf8_in_a_filter_is_refused_before_it_is_read(channel) -> None:
    """A lone surrogate as raw bytes (UTF-8's form of U+D800) never reaches the parser:
    protobuf refuses the message, so the gateway answers INVALID_ARGUMENT on the request
    as a whole. (Python's client cannot even encode it; the JSON escape "\\ud800" inside
    the filter text is the form that arrives, refused in tests/test_filters.py.)"""
    call = channel.unary_unary(
        "/metalearn.v1.AttemptService/ListAttempts",
        request_serializer=lambda body: body,
        response_deserializer=pb.ListAttemptsResponse.FromString,
    )
    field_10 = bytes([(10 << 3) | 2])  # ListAttemptsRequest.filter, length-delimited
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, call, field_10 + b"\x03\xed\xa0\x80")
    assert "UTF-8" in violations(err)["request"]


def test_a_value_the_database_refuses_is_the_filters(gateway) -> None:
    """The backstop behind the parser's checks: should PostgreSQL refuse a value of a
    filter (a data exception), ListAttempts answers on `filter`, with the value's column.
    No filter the parser accepts gets here any more, so the filter is built by hand (the
    old, unchecked form of a time) and the store is asked as ListAttempts asks it."""
    bad = Filter(
        text='create_time > "\'; select 1"',
        condition=sql.SQL("(a.created_at > %s::timestamptz)"),
        params=("'; select 1",),
        value_columns=(15,),
    )

    async def listing() -> InvalidArgument:
        async with open_pool(gateway.database_url, 1, 2) as pool:
            query = ListQuery(
                condition=bad.condition, condition_params=bad.params, filter_text=bad.text
            )
            with pytest.raises(InvalidArgument) as info:
                await AttemptStore(pool).list(query, None, 10)
            return info.value

    err = asyncio.run(listing())
    refused = bad.refusal(err)
    assert refused is not None, err
    assert [(v.field, v.description) for v in refused.violations] == [
        ("filter", "at column 15: the database refused a value")
    ]
    # Any other refusal is left as it was.
    assert bad.refusal(InvalidArgument.one("page_token", "forged")) is None
