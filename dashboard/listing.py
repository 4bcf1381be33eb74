"""The attempts table's query (filter, statuses, sort, mine, page) as the URL carries it,
and the same table as CSV: every matching attempt up to `MAX_CSV_ROWS`, read from the
gateway a page at a time and streamed out as it comes."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dashboard import views
from dashboard.gateway import Ui
from metalearn.v1 import attempt_service_pb2

apb = attempt_service_pb2
# Filter expressions longer than this are refused here (the gateway bounds them too).
MAX_FILTER = 4000
# The most rows one CSV export holds (the link says so), and the page it reads at once.
MAX_CSV_ROWS = 10_000
CSV_PAGE = 500
CSV_COLUMNS = (
    "id", "name", "status", "owner", "epochs", "n_epoch", "last_loss", "best_loss",
    "best_val_accuracy", "test_accuracy", "prognosis", "labels", "tags", "study",
    "imported", "updated",
)  # fmt: skip


def list_request(
    request: Request, page_size: int
) -> tuple[apb.ListAttemptsRequest, dict[str, Any]]:
    """The ListAttempts request the page's query string asks for, and that query."""
    q = request.query_params
    state: dict[str, Any] = {
        "filter": q.get("filter", "").strip(),
        "sort": q.get("sort", "updated"),
        "status": [s for s in q.getlist("status") if s in views.STATUSES],
        "page_token": q.get("page_token", ""),
        "mine": q.get("mine") == "1",
    }
    if state["sort"] not in views.SORTS:
        state["sort"] = "updated"
    req = apb.ListAttemptsRequest(
        page_size=page_size,
        page_token=state["page_token"],
        filter=state["filter"][:MAX_FILTER],
        view=apb.ATTEMPT_VIEW_BASIC,
        statuses=[views.STATUSES.index(s) + 1 for s in state["status"]],  # type: ignore[misc]
        **views.SORTS[state["sort"]][1],
    )
    return req, state


def query(state: dict[str, Any], **change: Any) -> str:
    """The query string of the table with `change` applied ('' when it is the default)."""
    s = {**state, **change}
    pairs: list[tuple[str, str]] = []
    if s["filter"]:
        pairs.append(("filter", s["filter"]))
    if s["sort"] != "updated":
        pairs.append(("sort", s["sort"]))
    pairs += [("status", x) for x in s["status"]]
    if s.get("mine"):
        pairs.append(("mine", "1"))
    if s.get("page_token"):
        pairs.append(("page_token", s["page_token"]))
    return "?" + urlencode(pairs) if pairs else ""


def _cell(value: Any) -> str:
    """A value as a CSV cell; text that a spreadsheet would run as a formula (=, +, -, @
    first) is prefixed with a quote, as OWASP advises for CSV exports."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_row(row: dict[str, Any], tags: dict[str, str]) -> list[str]:
    values = {
        **row,
        "labels": "; ".join(row["labels"]),
        "tags": "; ".join(f"{k}={v}" for k, v in sorted(tags.items())),
        "prognosis": row["flags"],
    }
    return [_cell(values.get(column)) for column in CSV_COLUMNS]


def csv_text(rows: Iterable[list[str]]) -> str:
    """Rows as CSV (RFC 4180: quoted where needed, CRLF line ends)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


async def attempts_csv(ui: Ui, request: Request, token: str, me: Any) -> Response:
    """The attempts table, filtered and sorted as the page is, as a CSV download."""
    req, state = list_request(request, CSV_PAGE)
    req.page_token = ""
    if state["mine"]:
        req.owner = me.name
    first = await ui.gateway.list_attempts(token, req)  # a refusal is a page, not a file

    async def body() -> AsyncIterator[str]:
        reply, sent = first, 0
        yield csv_text([list(CSV_COLUMNS)])
        while True:
            rows = [
                csv_row(views.attempt_row(a), dict(a.tags))
                for a in reply.attempts[: MAX_CSV_ROWS - sent]
            ]
            sent += len(rows)
            yield csv_text(rows)
            if not reply.next_page_token or sent >= MAX_CSV_ROWS:
                return
            req.page_token = reply.next_page_token
            reply = await ui.gateway.list_attempts(token, req)

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": "attachment; filename=attempts.csv"},
    )
