"""What a signed-in user may change from the pages, each one gateway call made with the
user's own token (the gateway decides who may): cancel or test an attempt, edit its
tags and note, train a task's suggested command. Every route here is a POST behind the
CSRF check (`app.signed_in`); the buttons' scripts get JSON, the plain forms a redirect
to the page they change or a page that names what was wrong."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dashboard import views
from dashboard.gateway import Ui
from metalearn import documents
from metalearn.client import MetalearnError
from metalearn.v1 import attempt_pb2
from metalearn.views.attempts import status_text

# The gateway keeps a tag's value to 256 characters (gateway/attempts/validation.py,
# MAX_TAG_VALUE_CHARS), so a note is that long at most; a test holds the two equal.
MAX_NOTE_CHARS = 256
# The largest form these routes read (a training command is a few kilobytes).
MAX_FORM_BYTES = 256 * 1024


def digits(text: str) -> bool:
    """Whether `text` is a whole number int() reads: ASCII digits only ("²".isdigit() is
    true, and int("²") fails)."""
    return text.isascii() and text.isdigit()


def attempt_id_of(request: Request) -> int:
    text = request.path_params["attempt_id"]
    if not digits(text) or len(text) >= 19:
        what = "an attempt's id is a whole number"
        raise MetalearnError("INVALID_ARGUMENT", what, {"id": what})
    return int(text)


def _invalid(field: str, what: str) -> MetalearnError:
    return MetalearnError("INVALID_ARGUMENT", what, {field: what})


async def _form(request: Request) -> dict[str, str]:
    size = request.headers.get("content-length", "")
    if not digits(size) or int(size) > MAX_FORM_BYTES:
        raise _invalid("form", f"a form of at most {MAX_FORM_BYTES} bytes, with its length")
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def attempt_action(ui: Ui, request: Request, token: str, me: Any) -> Response:
    """Cancel or test (the buttons' scripts): the attempt's new status as JSON."""
    action = request.path_params["action"]
    if action not in ("cancel", "test"):
        return JSONResponse({"code": "NOT_FOUND", "message": f"no action {action[:40]!r}"}, 404)
    attempt_id = attempt_id_of(request)
    attempt = await ui.gateway.attempt(token, attempt_id, full=False)
    if action == "cancel":
        changed = await ui.gateway.cancel(token, attempt.name)
    else:
        changed = await ui.gateway.test(token, attempt.name, str(uuid.uuid4()))
    return JSONResponse({"status": status_text(changed.status)})


def parse_tags(text: str) -> dict[str, str]:
    """`key=value` lines (blank lines skipped) as tags; a line without `=` is refused,
    naming it. Keys and values are checked by the gateway."""
    tags: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise _invalid("tags", f"line {number}: write key=value, e.g. team=vision")
        tags[key.strip()] = value.strip()
    return tags


async def attempt_notes(ui: Ui, request: Request, token: str, me: Any) -> Response:
    """The attempt's tags and note (a form): written with UpdateAttempt's mask `tags`,
    the note as the tag `views.NOTE_TAG`, as MLflow keeps its note in a tag."""
    attempt_id = attempt_id_of(request)
    form = await _form(request)
    tags = parse_tags(form.get("tags", ""))
    if views.NOTE_TAG in tags:
        raise _invalid("tags", f"{views.NOTE_TAG} holds the note: write it in the note's box")
    note = form.get("note", "").replace("\r\n", "\n").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise _invalid("note", f"at most {MAX_NOTE_CHARS} characters ({len(note)} given)")
    if note:
        tags[views.NOTE_TAG] = note
    await ui.gateway.set_tags(token, attempt_id, tags)
    return RedirectResponse(f"/attempts/{attempt_id}", status_code=303)


async def task_train(ui: Ui, request: Request, token: str, me: Any) -> Response:
    """Queues a task's suggested command (a form: the command as shown, and a name) with
    Train, then shows the new attempt. An existing name is refused, not trained over."""
    form = await _form(request)
    name = form.get("name", "").strip()
    if not name:
        raise _invalid("name", "name the new attempt")
    try:
        doc = json.loads(form.get("command", ""))
        if not isinstance(doc, dict):
            raise ValueError("a JSON object is expected")
        command = documents.parse(doc, attempt_pb2.TrainCommand(), "command")
    except (ValueError, documents.DocumentError) as err:
        raise _invalid("command", f"not a training command: {err}") from None
    try:
        await ui.gateway.attempt_named(token, name)
    except MetalearnError as err:
        if err.code != "NOT_FOUND":
            raise
    else:
        what = f"an attempt named {name!r} exists: choose another name (nothing was trained)"
        raise MetalearnError("ALREADY_EXISTS", what, {"name": what})
    queued = await ui.gateway.train(token, name, command, str(uuid.uuid4()))
    return RedirectResponse(f"/attempts/{queued.id}", status_code=303)
