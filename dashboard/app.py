"""The dashboard's routes: pages rendered on the server, their data as JSON for the
charts, server-sent events for the live parts (dashboard/streams.py), the attempts as
CSV (dashboard/listing.py), and the few actions (sign in and out here; cancel, test,
tags and note, train a suggestion in dashboard/actions.py) behind the CSRF check. Built
by `create_app`; errors from the gateway become pages here and nowhere else."""

from __future__ import annotations

import hashlib
import math
import time
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

from dashboard import actions, listing, security, study_pages, views
from dashboard.config import UiConfig
from dashboard.gateway import Gateway
from dashboard.importance import Importances
from dashboard.streams import event_stream, sse
from dashboard.study_attempts import StudyAttempts
from metalearn.client import MetalearnError, UnauthenticatedError
from metalearn.tls import is_loopback
from metalearn.v1 import attempt_service_pb2, study_service_pb2, token_service_pb2
from metalearn.views.attempts import status_text
from metalearn.views.tokens import role_text

apb = attempt_service_pb2
HERE = Path(__file__).parent
# At most this many attempts side by side (each is one FULL read from the gateway).
MAX_COMPARE = 200
# How long a token's name and role are remembered (a revoked token fails its next call
# anyway: this only saves a WhoAmI per page).
_WHO_TTL = 30.0
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
        self.importances = Importances()
        # Read through the gateway client made on first use, inside the server's loop.
        self.study_attempts = StudyAttempts(lambda t, ids: self.gateway.attempts_by_id(t, ids))
        self.launch = security.LaunchKey(
            config.launch_key, config.launch_token, config.launch_seconds
        )
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
            response = self.to_login(request, "revoked")
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
        """To the sign-in page, and back here after; `message` is a code of
        security.LOGIN_MESSAGES (the address carries no text of its own)."""
        if _wants_json(request):
            return JSONResponse({"code": "UNAUTHENTICATED", "message": "sign in first"}, 401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = {"next": target} | ({"m": message} if message else {})
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
    if request.method == "POST":  # the buttons' scripts; a plain form gets a page
        form = request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        )
        return not form
    return request.url.path.endswith((".json", "/events", "/data"))


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
        message=security.LOGIN_MESSAGES.get(request.query_params.get("m", ""), ""),
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
    local admin token (the key is a secret only that terminal saw), once, in its first
    minutes (security.LaunchKey)."""
    ui: Dashboard = request.app.state.ui
    token = ui.launch.redeem(request.query_params.get("key", ""))
    if token is None:
        minutes = f"{ui.config.launch_seconds / 60:g}"
        return ui.render(
            request, "login.html", 403, next="/attempts",
            message=f"That sign-in link is not valid: a link signs in once, within {minutes}"
            " minutes of metalearn up printing it. Paste a token.",
        )  # fmt: skip
    response = RedirectResponse("/attempts", status_code=303)
    security.set_token(response, token, ui.config.secure_cookies)
    return response


async def logout(request: Request) -> Response:
    if not await security.csrf_ok(request):
        return PlainTextResponse("the CSRF check failed: reload the page", status_code=403)
    response = RedirectResponse("/login", status_code=303)
    security.forget_token(response)
    return response


# Attempts.
@signed_in
async def attempts_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    req, state = listing.list_request(request, ui.config.page_size)
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
        return listing.query(
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
            (name, label, listing.query(state, sort=name, page_token=""))
            for name, (label, _) in views.SORTS.items()
        ],
        next_page=listing.query(state, page_token=next_token) if next_token else "",
        first_page=listing.query(state, page_token="") if state["page_token"] else "",
        mine_link=listing.query(state, mine=not state["mine"], page_token=""),
        csv_link="/attempts.csv" + listing.query(state, page_token=""),
        max_csv=listing.MAX_CSV_ROWS,
    )


async def _untestable(ui: Dashboard, token: str, attempt: Any) -> list[str]:
    """The labels a test of `attempt` would need that have no images here (an imported
    prototype's, say): then the Test button is off, saying so."""
    labels = list(attempt.testing_commands.label_names) or list(
        attempt.training_commands.label_names
    )
    counts = await ui.gateway.label_counts(token)
    return [label for label in labels if not counts.get(label)]


@signed_in
async def attempt_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    attempt_id = actions.attempt_id_of(request)
    attempt = await ui.gateway.attempt(token, attempt_id)
    page = views.attempt_page(attempt)
    may_change = _may_change(me, attempt.owner)
    no_images = await _untestable(ui, token, attempt) if may_change and page["can_test"] else []
    return ui.render(
        request,
        "attempt.html",
        me=_me(me),
        a=page,
        may_change=may_change,
        no_images=no_images,
        max_note=actions.MAX_NOTE_CHARS,
        tags_text="\n".join(f"{k}={v}" for k, v in page["tags"].items()),
        data={
            "id": attempt.id,
            "status": page["status"],
            "running": page["running"],
            "n_epoch": page["n_epoch"],
            "n_labels": page["n_labels"],
            "best_val_accuracy": page["best_val_accuracy"],
            "has_validation": page["has_validation"],
            "curves": views.curves(attempt),
            "test": page["test"],
        },
    )


@signed_in
async def attempt_command(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    attempt_id = actions.attempt_id_of(request)
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
    attempt_id = actions.attempt_id_of(request)
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
    is its epoch, so a reconnecting browser (Last-Event-ID) resumes where it was, and so
    does this side when the gateway's stream breaks (a restart)."""
    attempt_id = actions.attempt_id_of(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("from_epoch", "0")
    seen: dict[str, Any] = {
        "epoch": int(resume) if actions.digits(resume) and len(resume) < 10 else 0,
        "status": "",
        "loss": None,
        "n_labels": 0,
    }

    def watch() -> AsyncIterator[apb.WatchAttemptResponse]:
        return ui.gateway.watch_attempt(token, attempt_id, seen["epoch"])

    def encode(event: apb.WatchAttemptResponse) -> str | None:
        kind = event.WhichOneof("event")
        if kind == "epoch":
            seen["epoch"] = max(seen["epoch"], event.epoch.epoch)
            seen["loss"] = views.number(event.epoch.loss)
            return sse("epoch", views.epoch_event(event.epoch), event_id=str(event.epoch.epoch))
        if kind in ("status", "snapshot"):
            a = getattr(event, kind)
            seen["status"] = status_text(a.status)
            seen["n_labels"] = len(a.training_commands.label_names)
            return sse("status", {"status": seen["status"], "error": a.error})
        if kind == "prognosis":
            told = views.prognosis(event.prognosis)
            text = views.prognosis_text(
                told, seen["status"], seen["epoch"], seen["loss"], seen["n_labels"]
            )
            return sse("prognosis", told | {"text": text})
        if kind == "test_progress":
            p = event.test_progress
            return sse("test", {"done": p.done, "total": p.total})
        return None

    return event_stream(watch, encode)


# Comparing.
@signed_in
async def compare_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    raw = [x for value in request.query_params.getlist("id") for x in value.split(",") if x]
    if not all(actions.digits(x) and len(x) < 19 for x in raw):
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
    studies = sorted(await ui.gateway.list_studies(token), key=lambda s: -s.id)
    rows = [study_pages.study_summary(s) for s in studies]  # each with its best trial
    return ui.render(request, "studies.html", me=_me(me), rows=rows)


async def _study_data(ui: Dashboard, token: str, name: str) -> dict[str, Any]:
    study = await ui.gateway.study(token, name)
    attempts = await ui.study_attempts.of(token, study)
    return study_pages.study_data(study, attempts, await ui.importances.of(study))


@signed_in
async def study_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    data = await _study_data(ui, token, request.path_params["name"])
    return ui.render(request, "study.html", me=_me(me), s=data, data=data)


@signed_in
async def study_json(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    return JSONResponse(await _study_data(ui, token, request.path_params["name"]))


@signed_in
async def study_events(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    name = request.path_params["name"]
    opened = [0]

    def watch() -> AsyncIterator[study_service_pb2.WatchStudyResponse]:
        opened[0] += 1
        return ui.gateway.watch_study(token, name)

    def encode(event: study_service_pb2.WatchStudyResponse) -> str | None:
        kind = event.WhichOneof("event")
        if kind == "snapshot" and opened[0] > 1:  # watching again: what was missed
            return sse("trial", {"kind": "resumed"})
        if kind == "trial_epoch":
            e = event.trial_epoch
            return sse("epoch", {"trial": e.trial, **views.epoch_event(e.epoch)})
        if kind in ("trial_started", "trial_pruned", "trial_finished", "new_best"):
            return sse("trial", study_pages.trial_event(kind, getattr(event, kind)))
        if kind == "study_finished":
            return sse("trial", {"kind": kind})
        return None

    return event_stream(watch, encode)


# Tasks.
@signed_in
async def tasks_page(ui: Dashboard, request: Request, token: str, me: Any) -> Response:
    rows = views.distinct_tasks(await ui.gateway.list_tasks(token))
    return ui.render(request, "tasks.html", me=_me(me), rows=rows)


def _fingerprint(request: Request) -> str | None:
    text = request.path_params["fingerprint"]
    digits = text.removeprefix("missing:")  # the gateway's row of labels without images
    ok = 8 <= len(digits) <= 128 and all(c in "0123456789abcdef" for c in digits)
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
        may_train=me.role in (token_service_pb2.ROLE_ADMIN, token_service_pb2.ROLE_WRITER),
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
        Route("/attempts.csv", signed_in(listing.attempts_csv)),
        Route("/attempts/{attempt_id}", attempt_page),
        Route("/attempts/{attempt_id}/command.json", attempt_command),
        Route("/attempts/{attempt_id}/model", attempt_model),
        Route("/attempts/{attempt_id}/events", attempt_events),
        Route("/attempts/{attempt_id}/notes", signed_in(actions.attempt_notes), methods=["POST"]),
        Route(
            "/attempts/{attempt_id}/{action:str}",
            signed_in(actions.attempt_action),
            methods=["POST"],
        ),
        Route("/compare", compare_page),
        Route("/studies", studies_page),
        Route("/studies/{name}", study_page),
        Route("/studies/{name}/data", study_json),
        Route("/studies/{name}/events", study_events),
        Route("/tasks", tasks_page),
        Route("/tasks/{fingerprint}", task_page),
        Route("/tasks/{fingerprint}/suggestion.json", task_suggestion),
        Route("/tasks/{fingerprint}/train", signed_in(actions.task_train), methods=["POST"]),
        Mount("/static", app=_Static(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.ui = ui
    return app
