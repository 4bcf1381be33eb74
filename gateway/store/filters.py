"""`ListAttempts.filter`: an AIP-160 expression, parsed and turned into parameterized SQL.

    training_commands.optimizer.name = "Adam" AND training_commands.batch_size >= 32
    training_commands.model.layers.name : "Conv2d"          (any layer)
    (accuracy > 0.9 OR status = COMPLETE) AND NOT tags.team = "vision"
    owner IN ("alice", "bob")   name = "lenet-*"   tags.reviewed:*   accuracy IS NULL
    prognosis.flags = "AT_CHANCE"   prognosis.hopeless = true   prognosis:*

A document path becomes a SQL/JSON path over the stored `doc`, evaluated by PostgreSQL
(lax mode, so a path through a list matches if any element does, which is what "any
layer" means) with the `@@` and `@?` operators that the GIN index `attempts_doc_paths`
(jsonb_path_ops) serves. The path is one bound parameter whose keys and literals are
written with JSON's own escaping; nothing the client typed is ever spliced into SQL.
A value with `*` wildcards is a bounded LIKE pattern (a run of stars one `%`), never a
regex: LIKE compiles nothing, and its cost is linear in the value it reads.
Every value is checked here (numbers that fit a double, RFC 3339 times, strings without
NUL or lone surrogates), so that PostgreSQL never refuses one.
Columns (name, status, provenance, owner, id, times, counters) compare as columns; `prognosis.…`
paths read the prognosis's own JSON column the same way.

Written by hand: no maintained Python library parses AIP-160 into SQL for JSONB (the
grammar is small: a recursive-descent parser of ~150 lines is the whole of it).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from metalearn.errors import InvalidArgument
from metalearn.v1 import attempt_pb2

MAX_FILTER_CHARS = 2000
MAX_DEPTH = 32  # nesting of every kind: parentheses, NOT and `-`
MAX_TERMS = 100
# A value with wildcards is a LIKE pattern: a run of `*` is one `%`. PostgreSQL matches
# LIKE without compiling anything, in at most (value length x pattern characters) steps;
# bounding the pattern makes that linear in the value. (A regex of as many `.*` as stars,
# as before, took 7.5 s at 320 stars and ran past 30 s at 990.) That product is the
# worst case, met by a value that almost matches at every place (128 "a" then "b" after
# a `*`, on 2,000 values of 4,000 "a": ~2 s); wildcards do not multiply it.
MAX_WILDCARDS = 16
MAX_PATTERN_CHARS = 128  # besides its wildcards: as long as an attempt's name
_STARS = re.compile(r"\*+")
# What a value may not hold: a lone UTF-16 surrogate (JSON's "\ud800" decodes to one; no
# UTF-8 can carry it to PostgreSQL) or NUL (no PostgreSQL text or jsonb string holds it).
_UNSENDABLE = re.compile("[\x00\ud800-\udfff]")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op><=|>=|!=|=|<|>|:|\(|\)|,|\*|-)
      | (?P<word>[A-Za-z_][A-Za-z0-9_.\-]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL"}
_STATUSES = (
    "INCOMPLETE", "QUEUED", "TRAINING", "TRAINED", "TESTING", "COMPLETE", "FAILED", "CANCELLED",
    "PRUNED",
)  # fmt: skip
# Where an attempt's numbers come from (the generated `provenance` column).
_PROVENANCES = ("TRAINED", "IMPORTED", "REPORTED")
# `Attempt.best_val_accuracy`, kept in its column by the epoch writes (migration 0021,
# indexed both ways); NULL where no epoch was validated, as the API's 0 says.
_BEST_VAL = "a.best_val_accuracy"
# Fields kept in columns (or computed from them), and what they are.
_COLUMNS: dict[str, tuple[str, str]] = {
    "name": ("a.name", "text"),
    "owner": ("a.owner", "text"),
    "status": ("a.status", "status"),
    "provenance": ("a.provenance", "provenance"),
    "id": ("a.id", "number"),
    "current_epoch": ("a.current_epoch", "number"),
    "restart_count": ("a.restart_count", "number"),
    "best_val_accuracy": (_BEST_VAL, "number"),
    "create_time": ("a.created_at", "time"),
    "update_time": ("a.updated_at", "time"),
}
_COMPARE = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass(frozen=True)
class _Token:
    kind: str  # string, number, op, word, keyword, end
    text: str
    at: int  # 1-based column in the filter


def _tokens(text: str) -> list[_Token]:
    found, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            column = at + len(text[at:]) - len(text[at:].lstrip()) + 1
            raise _error(column, f"unexpected {text[column - 1]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        start = match.start(kind) + 1
        if kind == "word" and value.upper() in _KEYWORDS:
            found.append(_Token("keyword", value.upper(), start))
        else:
            found.append(_Token(kind, value, start))
        at = match.end()
    found.append(_Token("end", "", len(text) + 1))
    return found


def _error(column: int, what: str) -> InvalidArgument:
    return InvalidArgument.one("filter", f"at column {column}: {what}")


class _Parser:
    """Recursive descent over the tokens; builds SQL as it goes."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.terms = 0
        self.params: list[Any] = []
        self.value_columns: list[int] = []

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect(self, kind: str, text: str, what: str) -> _Token:
        token = self.take()
        if token.kind != kind or token.text != text:
            raise _error(token.at, f"expected {what}, found {_shown(token)}")
        return token

    def parse(self) -> sql.Composable:
        expr = self.expression(0)
        end = self.peek()
        if end.kind != "end":
            raise _error(end.at, f"expected AND, OR or the end, found {_shown(end)}")
        return expr

    def expression(self, depth: int) -> sql.Composable:
        terms = [self.conjunction(depth)]
        while self.peek().kind == "keyword" and self.peek().text == "OR":
            self.take()
            terms.append(self.conjunction(depth))
        return terms[0] if len(terms) == 1 else sql.SQL("({})").format(sql.SQL(" OR ").join(terms))

    def conjunction(self, depth: int) -> sql.Composable:
        terms = [self.unary(depth)]
        while True:
            token = self.peek()
            if token.kind == "keyword" and token.text == "AND":
                self.take()
            elif not (
                token.kind in ("word", "string")
                or (token.kind == "op" and token.text in ("(", "-"))
                or (token.kind == "keyword" and token.text == "NOT")
            ):
                break  # AIP-160: terms side by side are ANDed
            terms.append(self.unary(depth))
        return terms[0] if len(terms) == 1 else sql.SQL("({})").format(sql.SQL(" AND ").join(terms))

    def unary(self, depth: int) -> sql.Composable:
        token = self.peek()
        negation = (token.kind == "keyword" and token.text == "NOT") or (
            token.kind == "op" and token.text == "-"
        )
        # Every nesting operator counts: 490 NOTs in a row once made SQL too deep for
        # PostgreSQL's stack (an INTERNAL), though only parentheses were counted.
        if (negation or (token.kind == "op" and token.text == "(")) and depth >= MAX_DEPTH:
            raise _error(token.at, f"nested deeper than {MAX_DEPTH}")
        if negation:
            self.take()
            return sql.SQL("NOT COALESCE({}, false)").format(self.unary(depth + 1))
        if token.kind == "op" and token.text == "(":
            self.take()
            inner = self.expression(depth + 1)
            self.expect("op", ")", "')'")
            return inner
        return self.comparison()

    def comparison(self) -> sql.Composable:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _error(self.peek().at, f"more than {MAX_TERMS} comparisons")
        field = self.take()
        if field.kind != "word":
            raise _error(field.at, f"expected a field such as accuracy, found {_shown(field)}")
        path = field.text.split(".")
        if any(not part for part in path):
            raise _error(field.at, f"{field.text!r} is not a field path")
        unknown = unknown_field(path)
        if unknown:
            raise _error(field.at, unknown)
        op = self.take()
        if op.kind == "keyword" and op.text == "IS":
            negated = self.peek().kind == "keyword" and self.peek().text == "NOT"
            if negated:
                self.take()
            self.expect("keyword", "NULL", "NULL after IS")
            present = self.present(path)
            return present if negated else sql.SQL("NOT {}").format(present)
        if op.kind == "keyword" and op.text == "IN":
            self.expect("op", "(", "'(' after IN")
            values = [self.value()]
            while self.peek().kind == "op" and self.peek().text == ",":
                self.take()
                values.append(self.value())
            self.expect("op", ")", "')' closing the IN list")
            return sql.SQL("({})").format(
                sql.SQL(" OR ").join(self.compare(path, "=", v, field.at) for v in values)
            )
        if op.kind != "op" or op.text not in (*_COMPARE, ":"):
            raise _error(op.at, f"expected =, !=, <, <=, >, >=, :, IN or IS, found {_shown(op)}")
        if op.text == ":" and self.peek().kind == "op" and self.peek().text == "*":
            self.take()
            return self.present(path)
        value = self.value()
        after = self.peek()
        if after.kind == "op" and after.text == "*" and isinstance(value.value, str):
            raise _error(
                after.at, f'a wildcard goes inside quotes: {field.text} = "{value.value}*"'
            )
        return self.compare(path, "=" if op.text == ":" else op.text, value, field.at)

    def value(self) -> _Value:
        """The next token as a value, checked here so that PostgreSQL never refuses it."""
        token = self.take()
        self.value_columns.append(token.at)
        if token.kind == "string":
            try:
                text = json.loads(token.text) if token.text[0] == '"' else _single(token.text)
            except ValueError:
                raise _error(token.at, "a string literal that does not decode") from None
            if bad := _UNSENDABLE.search(text):
                what = "NUL (\\u0000)" if bad.group() == "\x00" else "a lone surrogate"
                raise _error(token.at, f"a string may not hold {what}")
            return _Value(text, token.at)
        if token.kind == "number":
            return _Value(_number(token), token.at)
        if token.kind == "word":
            lowered = token.text.lower()
            return _Value({"true": True, "false": False}.get(lowered, token.text), token.at)
        raise _error(token.at, f"expected a value, found {_shown(token)}")

    def present(self, path: list[str]) -> sql.Composable:
        if path[0] == "best_val_accuracy":  # the one column that may hold nothing
            return sql.SQL("({} IS NOT NULL)").format(sql.SQL(_BEST_VAL))
        if path[0] in _COLUMNS:
            return sql.SQL("true")
        column, path = _document(path)
        self.params.append(_jsonpath(path))
        return sql.SQL("({} @? %s::jsonpath)").format(column)

    def compare(self, path: list[str], op: str, value: _Value, at: int) -> sql.Composable:
        if path[0] in _COLUMNS:
            return self.compare_column(path, op, value, at)
        column, path = _document(path)
        if isinstance(value.value, str) and "*" in value.value and op in ("=", "!="):
            # Any string at the path (lax: each element of a list) matched with LIKE.
            self.params += [f'{_jsonpath(path)} ? (@.type() == "string")', _like(value)]
            match = sql.SQL(
                "EXISTS (SELECT FROM jsonb_path_query({}, %s::jsonpath) AS s(v)"
                " WHERE s.v #>> '{{}}' LIKE %s)"
            ).format(column)
            if op == "=":
                return match
            # Present and matching nowhere, as != without a wildcard.
            self.params.insert(-2, _jsonpath(path))
            return sql.SQL("({} @? %s::jsonpath AND NOT {})").format(column, match)
        literal = json.dumps(value.value)
        if op == "!=":
            # Present and not equal (a missing field is neither = nor != a value).
            self.params += [_jsonpath(path), f"{_jsonpath(path)} == {literal}"]
            return sql.SQL("({0} @? %s::jsonpath AND NOT {0} @@ %s::jsonpath)").format(column)
        self.params.append(f"{_jsonpath(path)} {_COMPARE[op]} {literal}")
        # The bare operator, so the GIN index serves it (NULL, "unknown", excludes the row
        # like false does; NOT wraps it in COALESCE).
        return sql.SQL("({} @@ %s::jsonpath)").format(column)

    def compare_column(self, path: list[str], op: str, given: _Value, at: int) -> sql.Composable:
        if len(path) > 1:
            raise _error(at, f"{path[0]} has no fields")
        column, kind = _COLUMNS[path[0]]
        sql_op = sql.SQL({"=": "=", "!=": "<>"}.get(op, op))
        value = given.value
        if kind == "status":
            status = str(value).upper().removeprefix("ATTEMPT_STATUS_")
            if status not in _STATUSES or op not in ("=", "!="):
                raise _error(at, f"status is compared with = or != to one of {list(_STATUSES)}")
            value = status
        elif kind == "provenance":
            found = str(value).upper().removeprefix("PROVENANCE_")
            if found not in _PROVENANCES or op not in ("=", "!="):
                raise _error(
                    at, f"provenance is compared with = or != to one of {list(_PROVENANCES)}"
                )
            value = found
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _error(at, f"{path[0]} is a number")
        elif kind == "time":
            if not isinstance(value, str):
                raise _error(
                    at, f'{path[0]} is compared with a time such as "2026-11-27T10:00:00Z"'
                )
            self.params.append(_time(value, given.at))
            return sql.SQL("({} {} %s)").format(sql.SQL(column), sql_op)
        elif not isinstance(value, str):
            value = str(value).lower() if isinstance(value, bool) else str(value)
        if kind == "text" and "*" in value and op in ("=", "!="):
            self.params.append(_like(_Value(value, given.at)))
            like = sql.SQL("({} LIKE %s)" if op == "=" else "({} NOT LIKE %s)")
            return like.format(sql.SQL(column))
        self.params.append(value)
        return sql.SQL("({} {} %s)").format(sql.SQL(column), sql_op)


@dataclass(frozen=True)
class _Value:
    """A value of the filter and its column, for errors found where it is used."""

    value: Any
    at: int


def _number(token: _Token) -> int | float:
    """A number token: an integer exactly, anything else as a double; refused where it
    does not fit a double (1e400 became "Infinity", which no SQL/JSON path reads)."""
    try:
        if not any(c in token.text for c in ".eE"):
            number: int | float = int(token.text)
            float(number)  # OverflowError past a double's range
            return number
        number = float(token.text)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _error(token.at, f"{token.text[:40]} does not fit a double")
    return int(number) if number.is_integer() and "." not in token.text else number


def _like(value: _Value) -> str:
    """A LIKE pattern (backslash escapes) for a value with `*` wildcards: a run of stars
    is one `%`; at most MAX_WILDCARDS of them and MAX_PATTERN_CHARS characters else."""
    parts = _STARS.split(value.value)
    if len(parts) - 1 > MAX_WILDCARDS:
        raise _error(value.at, f"at most {MAX_WILDCARDS} wildcards in one value")
    if sum(map(len, parts)) > MAX_PATTERN_CHARS:
        raise _error(
            value.at, f"a value with wildcards has at most {MAX_PATTERN_CHARS} other characters"
        )
    escaped = (p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for p in parts)
    return "%".join(escaped)


def _time(text: str, at: int) -> datetime:
    """An RFC 3339 time (UTC where it names no zone), read here: PostgreSQL's own reading
    took any text it was handed and refused it with a DataError."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _error(at, f'{text[:40]!r} is not a time such as "2026-11-27T10:00:00Z"') from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# Messages below which any key may be stored: a layer's or optimizer's arguments, tags.
_FREE_FORM = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}


def unknown_field(path: list[str]) -> str | None:
    """Why a document path names no field of an Attempt (with the nearest name, as a
    misspelt command field is told), or None when it does. Without this a misspelt
    `acuracy > 0.9` matched nothing, silently. Columns and `prognosis.…` paths are
    checked where they are read; keys under a free-form field (tags, a layer's or an
    optimizer's arguments) are the user's own."""
    if path[0] in _COLUMNS or path[0] == "prognosis":
        return None
    message: Any = attempt_pb2.Attempt.DESCRIPTOR
    for depth, key in enumerate(path):
        found = message.fields_by_name.get(key) or next(
            (f for f in message.fields if f.json_name == key), None
        )
        where = ".".join(path[:depth]) or "an attempt"
        if found is None:
            names = sorted(message.fields_by_name) + ([] if depth else sorted(_COLUMNS))
            near = [".".join([*path[:depth], n]) for n in difflib.get_close_matches(key, names, 1)]
            # A field of that name further down (batch_size: training_commands.batch_size).
            deeper = [p for p in _paths(message, ".".join(path[:depth])) if p.endswith("." + key)]
            hint = f'; did you mean "{(deeper or near)[0]}"?' if deeper or near else ""
            return f"{where} has no field {key!r}{hint}"
        kind = found.message_type
        if kind is not None and (kind.full_name in _FREE_FORM or kind.GetOptions().map_entry):
            return None
        if kind is None or kind.full_name.startswith("google.protobuf."):
            # A number, a string or a time in the document: the path ends here.
            if depth + 1 < len(path):
                return f"{'.'.join(path[: depth + 1])} has no fields"
            return None
        message = kind
    return None


def _paths(message: Any, prefix: str, depth: int = 0) -> list[str]:
    """Every field path below `message` (the proto's own messages, breadth first)."""
    found, below = [], []
    for field in message.fields:
        path = f"{prefix}.{field.name}" if prefix else field.name
        found.append(path)
        kind = field.message_type
        own = kind is not None and not kind.full_name.startswith("google.protobuf.")
        if own and depth < 3 and not kind.GetOptions().map_entry:
            below.append((kind, path))
    for kind, path in below:
        found += _paths(kind, path, depth + 1)
    return found


def _single(text: str) -> str:
    """A single-quoted literal, read with the double-quoted one's escapes."""
    body = text[1:-1].replace('\\"', '"').replace('"', '\\"').replace("\\'", "'")
    return str(json.loads(f'"{body}"'))


def _shown(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text[:40])


def _document(path: list[str]) -> tuple[sql.Composable, list[str]]:
    """The JSON column a path reads, and the path within it: `prognosis.…` reads the
    prognosis's filter form (migration 0011), anything else the document."""
    if path[0] == "prognosis" and len(path) > 1:
        return sql.SQL("a.prognosis"), path[1:]
    if path[0] == "prognosis":
        return sql.SQL("a.prognosis"), []
    return sql.SQL("a.doc"), path


def _jsonpath(path: list[str]) -> str:
    """A lax SQL/JSON path with every key quoted (JSON escaping is jsonpath's)."""
    return "$" + "".join("." + json.dumps(key) for key in path)


@dataclass(frozen=True)
class Filter:
    """A parsed filter: its SQL condition (on `attempts a`) and the parameters."""

    text: str
    condition: sql.Composable
    params: tuple[Any, ...]
    value_columns: tuple[int, ...] = ()

    def refusal(self, err: InvalidArgument) -> InvalidArgument | None:
        """`err` on `filter` where the database refused a value of this filter, else None.

        The backstop: values are checked as they are parsed so that PostgreSQL refuses
        none; should it refuse one anyway (a data exception, class 22), that is the
        filter's value, not the request's as a whole, and not the server's fault.
        """
        if not isinstance(err.__cause__, psycopg.DataError):
            return None
        columns = self.value_columns or (1,)
        which = "" if len(columns) == 1 else f" (one of those at {', '.join(map(str, columns))})"
        return InvalidArgument.one(
            "filter", f"at column {columns[0]}: the database refused a value{which}"
        )


def parse(text: str) -> Filter | None:
    """The filter, or None for an empty one; INVALID_ARGUMENT on `filter` otherwise."""
    if not text.strip():
        return None
    if len(text) > MAX_FILTER_CHARS:
        raise InvalidArgument.one("filter", f"at most {MAX_FILTER_CHARS} characters")
    if "\x00" in text:
        raise InvalidArgument.one("filter", "must not contain NUL characters")
    parser = _Parser(text)
    condition = parser.parse()
    return Filter(text, condition, tuple(parser.params), tuple(parser.value_columns))


# `ListAttempts.order_by_field`: numeric columns, as numbers PostgreSQL orders directly.
_NUMERIC_COLUMNS = {
    "id": "a.id::float8",
    "current_epoch": "a.current_epoch::float8",
    "restart_count": "a.restart_count::float8",
    "best_val_accuracy": _BEST_VAL,
    "create_time": "extract(epoch FROM a.created_at)::float8",
    "update_time": "extract(epoch FROM a.updated_at)::float8",
}
_ORDER_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*")
MAX_ORDER_CHARS = 300


@dataclass(frozen=True)
class FieldOrder:
    """A parsed `order_by_field`: a float8 expression on `attempts a` (NULL where the
    field holds no number), its parameters, and the direction."""

    text: str
    key: sql.Composable
    params: tuple[Any, ...]
    descending: bool


def parse_order(text: str) -> FieldOrder | None:
    """`order_by_field` ("path [asc|desc]"), or None for an empty one; INVALID_ARGUMENT
    on `order_by_field` otherwise."""
    if not text.strip():
        return None

    def bad(what: str) -> InvalidArgument:
        return InvalidArgument.one("order_by_field", what)

    if len(text) > MAX_ORDER_CHARS:
        raise bad(f"at most {MAX_ORDER_CHARS} characters")
    if "," in text:
        raise bad("one field (optionally followed by desc): ordering by several is not supported")
    words = text.split()
    if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
        raise bad(f'expected a field optionally followed by "asc" or "desc", got {text[:60]!r}')
    field = words[0]
    descending = len(words) == 2 and words[1].lower() == "desc"
    if not _ORDER_FIELD.fullmatch(field):
        raise bad(f"{field[:60]!r} is not a field path such as training_commands.optimizer.lr")
    unknown = unknown_field(field.split("."))
    if unknown:
        raise bad(unknown)
    if field in _NUMERIC_COLUMNS:
        return FieldOrder(text, sql.SQL(_NUMERIC_COLUMNS[field]), (), descending)
    if field in _COLUMNS:
        raise bad(f"{field} is not a number: order by a numeric field")
    # The first number at the path (lax: through lists too); NULL where there is none.
    path = f'{_jsonpath(field.split("."))} ? (@.type() == "number")'
    key = sql.SQL("(jsonb_path_query_first(a.doc, %s::jsonpath))::float8")
    return FieldOrder(text, key, (path,), descending)
