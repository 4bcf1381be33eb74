"""The dashboard's routes: pages rendered on the server, their data as JSON for the
charts, server-sent events for the live parts, and the few actions (sign in and out,
cancel, test) behind the CSRF check. Built by `create_app`; errors from the gateway
become pages here and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard import security, views
from dashboard.config import UiConfig
from dashboard.gateway import Gateway
from metalearn.client import MetalearnError, UnauthenticatedError, status_text
from metalearn.security_cli import role_text
from metalearn.tls import is_loopback
from metalearn.v1 import attempt_service_pb2, study_service_pb2, token_service_pb2

apb = attempt_service_pb2
HERE = Path(__file__).parent
# At most this many attempts side by side (each is one FULL read from the gateway).
MAX_COMPARE = 200
# Filter expressions longer than this are refused here (the gateway bounds them too).
MAX_FILTER = 4000
# How long a token's name and role are remembered (a revoked token fails its next call
# anyway: this only saves a WhoAmI per page).
_WHO_TTL = 30.0
# A comment on an idle event stream this often, so proxies keep it open.
_KEEPALIVE = 15.0
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2013"  # an en dash: no value
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


class Dashboard:
    """The handlers, with what they share: settings, templates, the gateway."""

    def __init__(self, config: UiConfig) -> None:
        self.config = config
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            auto_reload=False,
        )
        self.env.filters["num"] = _num
        self.env.globals["statuses"] = views.STATUSES
        self._gateway: Gateway | None = None
        self._who: dict[bytes, tuple[float, token_service_pb2.Token]] = {}

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:  # first use, inside the server's event loop
            self._gateway = Gateway(self.config)
        return self._gateway

    async def close(self) -> None:
        if self._gateway is not None:
            await self._gateway.close()

    # Rendering.
    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        body = self.env.get_template(template).render(
            request=request, csrf=security.csrf_value(request), **context
        )
        response = HTMLResponse(body, status_code=status)
        security.remember_csrf(request, response, self.config.secure_cookies)
        return response

    def failure(self, request: Request, err: MetalearnError, me: Any = None) -> Response:
        """A refused gateway call as a page (or JSON, for the pages' scripts)."""
        status = _HTTP_STATUS.get(err.code, 502)
        if isinstance(err, UnauthenticatedError):
            response = self.to_login(request, "The gateway no longer accepts your token.")
            security.forget_token(response)
            return response
        if _wants_json(request):
            return JSONResponse(
                {"code": err.code, "message": err.message, "violations": err.violations},
                status_code=status,
            )
        return self.render(
            request, "error.html", status, me=me, code=err.code, message=err.message,
            violations=err.violations,
        )  # fmt: skip

    def to_login(self, request: Request, message: str = "") -> Response:
        if _wants_json(request):
            return JSONResponse({"code": "UNAUTHENTICATED", "message": "sign in first"}, 401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = {"next": target} | ({"message": message} if message else {})
        return RedirectResponse(f"/login?{urlencode(query)}", status_code=303)

    async def whoami(self, token: str) -> token_service_pb2.Token:
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._who.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        who = await self.gateway.whoami(token)
        if len(self._who) > 1000:
            self._who.clear()
        self._who[key] = (now + _WHO_TTL, who)
        return who


Page = Callable[[Dashboard, Request, str, Any], Awaitable[Response]]


def _wants_json(request: Request) -> bool:
    return request.url.path.endswith((".json", "/events", "/data")) or request.method == "POST"


def signed_in(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A route that needs a signed-in user: no cookie is a trip to the sign-in page;
    a POST must also pass the CSRF check."""

    async def route(request: Request) -> Response:
        ui: Dashboard = request.app.state.ui
        token = security.token_of(request)
        if token is None:
            return ui.to_login(request)
        if request.method == "POST" and not await security.csrf_ok(request):
            return JSONResponse(
                {"code": "PERMISSION_DENIED", "message": "the CSRF check failed: reload the page"},
                status_code=403,
            )
        me = None
        try:
            me = await ui.whoami(token)
            return await handler(ui, request, token, me)
        except MetalearnError as err:
            return ui.failure(request, err, me)

    return route


def _me(me: Any) -> dict[str, Any]:
    return {"name": me.name, "role": role_text(me.role)}


def _may_change(me: Any, owner: str) -> bool:
    return bool(me.role == token_service_pb2.ROLE_ADMIN) or (
        me.role == token_service_pb2.ROLE_WRITER and me.name == owner
    )


def _bad_request(ui: Dashboard, request: Request, me: Any, field: str, what: str) -> Response:
    return ui.failure(request, MetalearnError("INVALID_ARGUMENT", what, {field: what}), me)


# Sign-in.
async def login_form(request: Request) -> Response:
    ui: Dashboard = request.app.state.ui
    return ui.render(
        request,
        "login.html",
        next=security.safe_next(request.query_params.get("next")),
        message=request.query_params.get("message", "")[:200],
    )


async def login(request: Request) -> Response:
    ui: Dashboard = request.app.state.ui
    if not await security.csrf_ok(request):
        return ui.render(
            request, "login.html", 403, next="/attempts",
            message="The sign-in form had expired: please try again.",
        )  # fmt: skip
    form = await request.form()
    token = str(form.get("token", "")).strip()
    target = security.safe_next(str(form.get("next", "")))
    if not token or len(token) > 512 or not token.isprintable():
        return ui.render(request, "login.html", 400, next=target, message="Paste a token.")
    try:
        await ui.gateway.whoami(token)
    except MetalearnError as err:
        message = (
            "The gateway does not accept this token."
            if isinstance(err, UnauthenticatedError)
            else f"The gateway could not check it: {err.message}"
        )
        return ui.render(request, "login.html", 401, next=target, message=message)
    response = RedirectResponse(target, status_code=303)
    security.set_token(response, token, ui.config.secure_cookies)
    return response


async def launch(request: Request) -> Response:
    """`metalearn up`'s sign-in link: the key it printed signs this browser in with the
    local admin token (the key is a secret only that terminal saw)."""
    ui: Dashboard = request.app.state.ui
    key = request.query_params.get("key", "")
    expected = ui.config.launch_key
    if not expected or not ui.config.launch_token or not security.same_secret(key, expected):
        return ui.render(
            request, "login.html", 403, next="/attempts",
            message="That sign-in link is not valid here: paste a token.",
        )  # fmt: skip
    response = RedirectResponse("/attempts", status_code=303)
    security.set_token(response, ui.config.launch_token, ui.config.secure_cookies)
    return response


async def logout(request: Request) -> Response:
    if not await security.csrf_ok(request):
        return PlainTextResponse("the CSRF check failed: reload the page", status_code=403)
    response = RedirectResponse("/login", status_code=303)
    security.forget_token(response)
    return response


# Attempts.
def _list_request(
    request: Request, ui: Dashboard
) -> tuple[apb.ListAttemptsRequest, dict[str, Any]]:
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
        page_size=ui.config.page_size,
        page_token=state["page_token"],
        filter=state["filter"][:MAX_FILTER],
        view=apb.ATTEMPT_VIEW_BASIC,
        statuses=[views.STATUSES.index(s) + 1 for s in state["status"]],  # type: ignore[misc]
        **views.SORTS[state["sort"]][1],
    )
    return req, state


def _query(state: dict[str, Any], **change: Any) -> str:
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


@signed_in
async def attempts_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    req, state = _list_request(request, ui)
    if state["mine"]:
        req.owner = me.name
    error = None
    try:
        reply = await ui.gateway.list_attempts(token, req)
        rows = [views.attempt_row(a) for a in reply.attempts]
        next_token = reply.next_page_token
    except MetalearnError as err:
        if err.code != "INVALID_ARGUMENT":
            raise
        # A filter the gateway cannot read: the page stays, with its complaint.
        error = "; ".join(f"{k}: {v}" for k, v in err.violations.items()) or err.message
        rows, next_token = [], ""

    def toggled(status: str) -> str:
        chosen = state["status"]
        return _query(
            state,
            status=[s for s in chosen if s != status] if status in chosen else [*chosen, status],
            page_token="",
        )

    return ui.render(
        request,
        "attempts.html",
        400 if error else 200,
        me=_me(me),
        rows=rows,
        state=state,
        error=error,
        chips=[(s, s in state["status"], toggled(s)) for s in views.STATUSES],
        sorts=[
            (name, label, _query(state, sort=name, page_token=""))
            for name, (label, _) in views.SORTS.items()
        ],
        next_page=_query(state, page_token=next_token) if next_token else "",
        first_page=_query(state, page_token="") if state["page_token"] else "",
        mine_link=_query(state, mine=not state["mine"], page_token=""),
    )


def _attempt_id(request: Request) -> int:
    text = request.path_params["attempt_id"]
    if not text.isdigit() or len(text) >= 19:
        what = "an attempt's id is a whole number"
        raise MetalearnError("INVALID_ARGUMENT", what, {"id": what})
    return int(text)


@signed_in
async def attempt_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    attempt_id = _attempt_id(request)
    attempt = await ui.gateway.attempt(token, attempt_id)
    page = views.attempt_page(attempt)
    return ui.render(
        request,
        "attempt.html",
        me=_me(me),
        a=page,
        may_change=_may_change(me, attempt.owner),
        data={
            "id": attempt.id,
            "status": page["status"],
            "running": page["running"],
            "curves": views.curves(attempt),
            "test": page["test"],
        },
    )


@signed_in
async def attempt_command(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    attempt_id = _attempt_id(request)
    attempt = await ui.gateway.attempt(token, attempt_id, full=False)
    return Response(
        views.command_json(attempt.training_commands) + "\n",
        media_type="application/json",
        headers={"content-disposition": _attachment(f"{attempt.name}.json")},
    )


def _attachment(filename: str) -> str:
    # Names are [A-Za-z0-9._-] by the gateway's rules; RFC 5987 quoting all the same.
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}"


@signed_in
async def attempt_model(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    attempt_id = _attempt_id(request)
    attempt = await ui.gateway.attempt(token, attempt_id, full=False)
    chunks = ui.gateway.download(token, attempt_id)
    first = await anext(chunks)  # a refusal becomes a page, before any byte is sent

    async def body() -> AsyncIterator[bytes]:
        yield first.data
        async for chunk in chunks:
            yield chunk.data

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={
            "content-disposition": _attachment(f"{attempt.name}.safetensors"),
            "content-length": str(first.total_size),
        },
    )


@signed_in
async def attempt_events(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    """The attempt's epochs, status changes and prognoses as they happen. An event's id
    is its epoch, so a reconnecting browser (Last-Event-ID) resumes where it was."""
    attempt_id = _attempt_id(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("from_epoch", "0")
    from_epoch = int(resume) if resume.isdigit() and len(resume) < 10 else 0
    stream = ui.gateway.watch_attempt(token, attempt_id, from_epoch)

    def encode(event: apb.WatchAttemptResponse) -> str | None:
        kind = event.WhichOneof("event")
        if kind == "epoch":
            return _sse("epoch", views.epoch_event(event.epoch), event_id=str(event.epoch.epoch))
        if kind in ("status", "snapshot"):
            a = getattr(event, kind)
            return _sse("status", {"status": status_text(a.status), "error": a.error})
        if kind == "prognosis":
            return _sse("prognosis", views.prognosis(event.prognosis))
        if kind == "test_progress":
            p = event.test_progress
            return _sse("test", {"done": p.done, "total": p.total})
        return None

    return _event_stream(stream, encode)


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n"


def _event_stream(source: AsyncIterator[Any], encode: Callable[[Any], str | None]) -> Response:
    """Server-sent events from a gateway stream, with keep-alive comments while it is
    quiet; `end` when the gateway ends it, `failure` when it refuses."""

    async def events() -> AsyncIterator[str]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for item in source:
                    await queue.put(item)
                await queue.put(done)
            except MetalearnError as err:
                await queue.put(err)

        task = asyncio.create_task(pump())
        try:
            yield "retry: 1000\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), _KEEPALIVE)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is done:
                    yield _sse("end", {})
                    return
                if isinstance(item, MetalearnError):
                    yield _sse("failure", {"code": item.code, "message": item.message})
                    return
                text = encode(item)
                if text:
                    yield text
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MetalearnError):
                await task

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


@signed_in
async def attempt_action(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    action = request.path_params["action"]
    if action not in ("cancel", "test"):
        return JSONResponse({"code": "NOT_FOUND", "message": f"no action {action[:40]!r}"}, 404)
    attempt_id = _attempt_id(request)
    attempt = await ui.gateway.attempt(token, attempt_id, full=False)
    if action == "cancel":
        changed = await ui.gateway.cancel(token, attempt.name)
    else:
        changed = await ui.gateway.test(token, attempt.name, str(uuid.uuid4()))
    return JSONResponse({"status": status_text(changed.status)})


# Comparing.
@signed_in
async def compare_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    raw = [x for value in request.query_params.getlist("id") for x in value.split(",") if x]
    if not all(x.isdigit() and len(x) < 19 for x in raw):
        return _bad_request(ui, request, me, "id", "attempt ids are whole numbers")
    ids = list(dict.fromkeys(int(x) for x in raw))
    if not 1 <= len(ids) <= MAX_COMPARE:
        return _bad_request(ui, request, me, "id", f"choose 1 to {MAX_COMPARE} attempts")
    attempts = await ui.gateway.attempts_by_id(token, ids)
    data = views.comparison(attempts)
    return ui.render(request, "compare.html", me=_me(me), c=data, data=data)


# Studies.
@signed_in
async def studies_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    studies = await ui.gateway.list_studies(token)
    rows = [views.study_summary(s) for s in sorted(studies, key=lambda s: -s.id)]
    return ui.render(request, "studies.html", me=_me(me), rows=rows)


async def _study_data(ui: Dashboard, token: str, name: str) -> dict[str, Any]:
    study = await ui.gateway.study(token, name)
    ids = [t.attempt_id for t in study.trials if t.attempt_id]
    attempts = {a.id: a for a in await ui.gateway.attempts_by_id(token, ids)}
    return views.study_data(study, attempts)


@signed_in
async def study_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    data = await _study_data(ui, token, request.path_params["name"])
    return ui.render(request, "study.html", me=_me(me), s=data, data=data)


@signed_in
async def study_json(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    return JSONResponse(await _study_data(ui, token, request.path_params["name"]))


@signed_in
async def study_events(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    stream = ui.gateway.watch_study(token, request.path_params["name"])

    def encode(event: study_service_pb2.WatchStudyResponse) -> str | None:
        kind = event.WhichOneof("event")
        if kind == "trial_epoch":
            e = event.trial_epoch
            return _sse("epoch", {"trial": e.trial, **views.epoch_event(e.epoch)})
        if kind in ("trial_started", "trial_pruned", "trial_finished", "new_best"):
            return _sse("trial", views.trial_event(kind, getattr(event, kind)))
        if kind == "study_finished":
            return _sse("trial", {"kind": kind})
        return None

    return _event_stream(stream, encode)


# Tasks.
@signed_in
async def tasks_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    tasks = await ui.gateway.list_tasks(token)
    rows = [views.task_row(t) for t in tasks]
    return ui.render(request, "tasks.html", me=_me(me), rows=rows)


def _fingerprint(request: Request) -> str | None:
    text = request.path_params["fingerprint"]
    ok = 8 <= len(text) <= 128 and all(c in "0123456789abcdef" for c in text)
    return text if ok else None


async def _task(ui: Dashboard, token: str, fingerprint: str) -> Any:
    for task in await ui.gateway.list_tasks(token):
        if task.fingerprint == fingerprint:
            return task
    raise MetalearnError("NOT_FOUND", f"no task {fingerprint}")


@signed_in
async def task_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    fingerprint = _fingerprint(request)
    if fingerprint is None:
        return _bad_request(ui, request, me, "fingerprint", "a task's hex fingerprint")
    similar_error = ""
    try:
        found = await ui.gateway.similar_tasks(token, fingerprint)
        task, similar = found.target, list(found.tasks)
    except MetalearnError as err:
        if err.code not in ("FAILED_PRECONDITION", "DEADLINE_EXCEEDED"):
            raise
        similar_error, similar = err.message, []
        task = await _task(ui, token, fingerprint)
    rows = [
        {
            **views.task_row(s.task),
            "distance": views.number(s.distance),
            "best": [views.attempt_row(a) for a in s.best_attempts],
        }
        for s in similar
    ]
    return ui.render(
        request,
        "task.html",
        me=_me(me),
        t=views.task_row(task),
        profile=views.task_profile(task),
        similar=rows,
        similar_error=similar_error,
    )


@signed_in
async def task_suggestion(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    fingerprint = _fingerprint(request)
    if fingerprint is None:
        return _bad_request(ui, request, me, "fingerprint", "a task's hex fingerprint")
    task = await _task(ui, token, fingerprint)
    reply = await ui.gateway.suggest(token, task)
    return JSONResponse(
        {
            "command": views.command_json(reply.command),
            "reason": reply.reason,
            "fallback": reply.fallback,
            "sources": [
                {
                    "attempt": s.attempt_name,
                    "attempt_id": s.attempt_id,
                    "distance": views.number(s.distance),
                    "weight": views.number(s.weight),
                    "val_accuracy": views.number(s.val_accuracy),
                    "labels": list(s.task.label_names),
                }
                for s in reply.sources
            ],
        }
    )


async def home(request: Request) -> Response:
    return RedirectResponse("/attempts", status_code=303)


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


class _Static(StaticFiles):
    """The JavaScript, CSS and vendored plotly: the same for everyone, cached a day (the
    plotly file's name carries its version)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "public, max-age=86400"
        return response


def create_app(config: UiConfig) -> Starlette:
    """The dashboard as an ASGI app."""
    ui = Dashboard(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await ui.close()

    middleware = [Middleware(security.SecurityHeaders)]
    hosts = list(config.allowed_hosts)
    if not hosts and is_loopback(f"{config.host}:{config.port}"):
        # Bound to loopback: only this machine's names, so a DNS-rebinding page cannot
        # reach the dashboard under a name of its own.
        hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
    if hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=hosts))
    routes = [
        Route("/", home),
        Route("/healthz", health),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/login/launch", launch, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/attempts", attempts_page),
        Route("/attempts/{attempt_id}", attempt_page),
        Route("/attempts/{attempt_id}/command.json", attempt_command),
        Route("/attempts/{attempt_id}/model", attempt_model),
        Route("/attempts/{attempt_id}/events", attempt_events),
        Route("/attempts/{attempt_id}/{action:str}", attempt_action, methods=["POST"]),
        Route("/compare", compare_page),
        Route("/studies", studies_page),
        Route("/studies/{name}", study_page),
        Route("/studies/{name}/data", study_json),
        Route("/studies/{name}/events", study_events),
        Route("/tasks", tasks_page),
        Route("/tasks/{fingerprint}", task_page),
        Route("/tasks/{fingerprint}/suggestion.json", task_suggestion),
        Mount("/static", app=_Static(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.ui = ui
    return app
