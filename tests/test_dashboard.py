"""The dashboard over HTTP: sign-in, refusals, CSRF, headers, escaping, and what each
page shows, against a real gateway (the browser tests are test_dashboard_browser.py)."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.config import UiConfig
from dashboard.gateway import Gateway
from dashboard.server import UiServer
from dashboard.study_attempts import StudyAttempts
from metalearn import Client, documents
from metalearn.client import MetalearnError
from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc, study_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import study_service_pb2 as spb
from tests.dashboard_harness import signed_in, start_ui, wait_for
from tests.harness import upload_labels
from tests.test_attempts import make_attempt
from tests.test_studies import make_study, wait_trials
from tests.trainer_harness import lenet_command

XSS = "<script>alert(1)</script>"


@pytest.fixture()
def ui(gateway) -> Iterator[UiServer]:
    server = start_ui(gateway)
    try:
        yield server
    finally:
        server.stop()


def store(gateway, *attempts: attempt_pb2.Attempt, token: str | None = None) -> list[int]:
    with Client(gateway.address, token=token or gateway.admin_token) as client:
        return [client.create(a).id for a in attempts]


def test_a_visit_without_a_token_is_sent_to_sign_in_and_sees_nothing(gateway, ui) -> None:
    [attempt_id] = store(gateway, make_attempt("secret-run"))
    plain = httpx.Client(base_url=ui.url)
    for path in ("/attempts", f"/attempts/{attempt_id}", f"/compare?id={attempt_id}",
                 "/studies", "/tasks"):  # fmt: skip
        reply = plain.get(path)
        assert reply.status_code == 303 and reply.headers["location"].startswith("/login?next=")
        assert "secret-run" not in reply.text
    for path in (f"/attempts/{attempt_id}/events", f"/attempts/{attempt_id}/command.json"):
        assert plain.get(path).status_code == 401
    assert plain.post(f"/attempts/{attempt_id}/cancel").status_code == 401
    # A token the gateway does not know is refused at sign-in, and as a cookie.
    plain.get("/login")
    refused = plain.post(
        "/login", data={"token": "mlt_forged", "csrf": plain.cookies["metalearn_csrf"]}
    )
    assert refused.status_code == 401 and "does not accept" in refused.text
    plain.cookies.set("metalearn_token", "mlt_forged")
    reply = plain.get("/attempts")
    assert reply.status_code == 303 and "secret-run" not in reply.text


def test_the_token_cookie_is_http_only_and_strict(gateway, ui) -> None:
    client = httpx.Client(base_url=ui.url)
    client.get("/login")
    reply = client.post(
        "/login",
        data={"token": gateway.admin_token, "csrf": client.cookies["metalearn_csrf"],
              "next": "//evil.example/x"},
    )  # fmt: skip
    cookie = reply.headers["set-cookie"]
    assert "metalearn_token=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    # No open redirect: a `next` off this site goes to the attempts.
    assert reply.headers["location"] == "/attempts"


def test_state_changing_requests_need_the_csrf_value_and_this_origin(gateway, ui) -> None:
    [attempt_id] = store(gateway, make_attempt("csrf-run"))
    client = signed_in(ui, gateway.admin_token)
    csrf = client.cookies["metalearn_csrf"]
    url = f"/attempts/{attempt_id}/cancel"
    assert client.post(url).status_code == 403
    assert client.post(url, headers={"x-csrf-token": "x" * 43}).status_code == 403
    cross = {"x-csrf-token": csrf, "origin": "http://evil.example"}
    assert client.post(url, headers=cross).status_code == 403
    other_site = {"x-csrf-token": csrf, "sec-fetch-site": "cross-site"}
    assert client.post(url, headers=other_site).status_code == 403
    assert client.post("/logout").status_code == 403
    # With it, the request reaches the gateway, which says what it thinks (an INCOMPLETE
    # attempt cannot be cancelled).
    allowed = client.post(url, headers={"x-csrf-token": csrf, "origin": ui.url})
    assert allowed.status_code == 409 and allowed.json()["code"] == "FAILED_PRECONDITION"
    # Only the two actions exist (nothing else reaches Test).
    unknown = client.post(f"/attempts/{attempt_id}/delete", headers={"x-csrf-token": csrf})
    assert unknown.status_code == 404
    assert client.post("/logout", data={"csrf": csrf}).status_code == 303


def test_every_response_carries_a_strict_policy(gateway, ui) -> None:
    client = signed_in(ui, gateway.admin_token)
    for path in ("/login", "/attempts", "/studies", "/tasks", "/static/app.css"):
        headers = client.get(path).headers
        policy = headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
    # Bound to loopback, it answers only to this machine's names (DNS rebinding).
    assert client.get("/attempts", headers={"host": "evil.example"}).status_code == 400


def test_a_script_in_a_label_is_shown_as_text(gateway, ui) -> None:
    [attempt_id] = store(gateway, make_attempt("xss-run", labels=(XSS, "dog"), note=XSS))
    client = signed_in(ui, gateway.admin_token)
    for path in (f"/attempts/{attempt_id}", f"/compare?id={attempt_id}", "/attempts"):
        page = client.get(path).text
        assert XSS not in page, path
    page = client.get(f"/attempts/{attempt_id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # In the page's JSON too, `<` is escaped, so no `</script>` can close the block.
    page = client.get(f"/compare?id={attempt_id}").text
    data = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page, re.S)
    assert data is not None and "<" not in data.group(1)
    assert XSS in json.dumps(json.loads(data.group(1)))


def test_the_attempts_table_lists_filters_and_pages(gateway, ui) -> None:
    store(gateway, *(make_attempt(f"alpha-{i}") for i in range(3)), make_attempt("beta-0"))
    client = signed_in(ui, gateway.admin_token)
    names = lambda text: re.findall(r'<a href="/attempts/\d+">([^<]+)</a>', text)  # noqa: E731
    assert sorted(names(client.get("/attempts").text)) == [
        "alpha-0",
        "alpha-1",
        "alpha-2",
        "beta-0",
    ]
    assert sorted(names(client.get("/attempts", params={"filter": 'name = "alpha-*"'}).text)) == [
        "alpha-0", "alpha-1", "alpha-2",
    ]  # fmt: skip
    assert names(client.get("/attempts", params={"status": "complete"}).text) == []
    # Sorted by the best validated epoch (computed by the gateway from the epoch rows).
    with psycopg.connect(gateway.database_url) as conn:
        for name, accuracy in (("alpha-1", 0.9), ("beta-0", 0.5)):
            conn.execute(
                "INSERT INTO attempt_epochs (attempt_id, epoch, loss, val_accuracy)"
                " SELECT id, 1, 1.0, %s FROM attempts WHERE name = %s",
                (accuracy, name),
            )
    by_val = names(client.get("/attempts", params={"sort": "val_acc"}).text)
    assert by_val[:2] == ["alpha-1", "beta-0"]
    bad = client.get("/attempts", params={"filter": "name ="})
    assert bad.status_code == 400 and "filter: at column" in bad.text
    # Pages of the configured size, and a link to the next.
    small = start_ui(gateway, page_size=2)
    try:
        paged = signed_in(small, gateway.admin_token)
        first = paged.get("/attempts", params={"sort": "id"}).text
        assert names(first) == ["alpha-0", "alpha-1"]
        link = re.search(r'href="/attempts(\?[^"]+)" id="next-page"', first)
        assert link is not None
        second = paged.get("/attempts" + link.group(1).replace("&amp;", "&")).text
        assert names(second) == ["alpha-2", "beta-0"]
    finally:
        small.stop()


def test_compare_shows_exactly_the_fields_that_differ(gateway, ui) -> None:
    a, b, c = make_attempt("cmp-a"), make_attempt("cmp-b"), make_attempt("cmp-c")
    b.training_commands.optimizer["lr"] = 0.01
    c.training_commands.batch_size = 32
    ids = store(gateway, a, b, c)
    client = signed_in(ui, gateway.admin_token)
    page = client.get("/compare", params={"id": ",".join(map(str, ids))}).text
    differing = re.findall(r'<tr class="differs" data-key="([^"]+)">', page)
    assert sorted(differing) == ["batch_size", "optimizer.lr"]
    assert 'data-key="optimizer.name"' in page  # the same in all: there, hidden
    assert client.get("/compare", params={"id": "1,x"}).status_code == 400
    assert client.get("/compare", params={"id": "999999"}).status_code == 404


def test_bad_addresses_name_what_is_wrong(gateway, ui) -> None:
    client = signed_in(ui, gateway.admin_token)
    for path, status, field in (
        ("/attempts/abc", 400, "<code>id</code>"),
        ("/attempts/99999999999999999999", 400, "<code>id</code>"),
        ("/attempts/424242", 404, "424242"),
        ("/tasks/not-hex", 400, "<code>fingerprint</code>"),
        ("/studies/nobody", 404, "nobody"),
    ):
        reply = client.get(path)
        assert reply.status_code == status and field in reply.text, path
    assert client.get("/attempts/abc/events").json()["violations"] == {
        "id": "an attempt's id is a whole number"
    }


def test_only_the_owner_or_an_admin_gets_the_buttons_and_may_act(gateway, ui) -> None:
    writer = gateway.make_token("ui-writer", "writer")
    reader = gateway.make_token("ui-reader", "reader")
    [attempt_id] = store(gateway, make_attempt("owned-run"), token=writer)
    for token, buttons in ((writer, True), (gateway.admin_token, True), (reader, False)):
        page = signed_in(ui, token).get(f"/attempts/{attempt_id}").text
        assert ('id="cancel"' in page) is buttons
    as_reader = signed_in(ui, reader)
    refused = as_reader.post(
        f"/attempts/{attempt_id}/test",
        headers={"x-csrf-token": as_reader.cookies["metalearn_csrf"]},
    )
    assert refused.status_code == 403 and refused.json()["code"] == "PERMISSION_DENIED"


def test_the_command_downloads_ready_for_train_file(gateway, ui) -> None:
    made = make_attempt("cmd-run")
    [attempt_id] = store(gateway, made)
    reply = signed_in(ui, gateway.admin_token).get(f"/attempts/{attempt_id}/command.json")
    assert reply.headers["content-disposition"].endswith("cmd-run.json")
    parsed = documents.parse(reply.json(), attempt_pb2.TrainCommand(), "training_commands")
    assert parsed == made.training_commands


def test_the_launch_link_signs_in_with_the_local_token_only_with_its_key(gateway) -> None:
    ui = start_ui(gateway, launch_key="k" * 32, launch_token=gateway.admin_token)
    try:
        client = httpx.Client(base_url=ui.url)
        assert client.get("/login/launch", params={"key": "wrong"}).status_code == 403
        assert "metalearn_token" not in client.cookies
        reply = client.get("/login/launch", params={"key": "k" * 32})
        assert reply.status_code == 303 and client.cookies["metalearn_token"] == gateway.admin_token
    finally:
        ui.stop()
    without = start_ui(gateway)
    try:
        assert httpx.get(f"{without.url}/login/launch?key=").status_code == 403
    finally:
        without.stop()


def test_the_launch_link_signs_in_once(gateway) -> None:
    ui = start_ui(gateway, launch_key="k" * 32, launch_token=gateway.admin_token)
    try:
        first = httpx.Client(base_url=ui.url)
        assert first.get("/login/launch", params={"key": "k" * 32}).status_code == 303
        # The same link again, in this browser or another: refused, and no cookie.
        for browser in (first, httpx.Client(base_url=ui.url)):
            browser.cookies.clear()
            again = browser.get("/login/launch", params={"key": "k" * 32})
            assert again.status_code == 403 and "not valid" in again.text, again.text
            assert "once, within 10 minutes" in again.text
            assert "metalearn_token" not in browser.cookies
    finally:
        ui.stop()


def test_the_launch_link_used_at_once_by_many_signs_in_one(gateway) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ui = start_ui(gateway, launch_key="k" * 32, launch_token=gateway.admin_token)
    try:

        def use(_: int) -> int:
            with httpx.Client(base_url=ui.url, timeout=30) as browser:
                return browser.get("/login/launch", params={"key": "k" * 32}).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(use, range(32)))
        assert sorted(codes) == [303] + [403] * 31
    finally:
        ui.stop()


def test_the_launch_link_expires(gateway) -> None:
    import time

    ui = start_ui(
        gateway, launch_key="k" * 32, launch_token=gateway.admin_token, launch_seconds=0.5
    )
    try:
        time.sleep(0.7)
        late = httpx.Client(base_url=ui.url)
        reply = late.get("/login/launch", params={"key": "k" * 32})
        assert reply.status_code == 403 and "not valid" in reply.text
        assert "metalearn_token" not in late.cookies
    finally:
        ui.stop()
    # The default is ten minutes, as `metalearn up` says when it prints the link.
    from dashboard.config import UiConfig
    from metalearn.launch import LAUNCH_KEY_MINUTES

    assert UiConfig().launch_seconds == 600 == LAUNCH_KEY_MINUTES * 60


def test_the_sign_in_page_says_only_its_own_sentences(gateway, ui) -> None:
    plain = httpx.Client(base_url=ui.url)
    planted = "Your account is locked: call +1 555 0100 <b>now</b>"
    for query in ({"message": planted}, {"m": planted}, {"m": "nonsense"}, {"m": ""}):
        page = plain.get("/login", params=query)
        assert page.status_code == 200
        assert "login-message" not in page.text and "locked" not in page.text, query
    # A token the gateway stops accepting: the sign-in page says so, by a code.
    with Client(gateway.address, token=gateway.admin_token) as admin:
        secret = admin.create_token("soon-revoked", "reader").secret
    browser = signed_in(ui, secret)
    with Client(gateway.address, token=gateway.admin_token) as admin:
        admin.revoke_token("soon-revoked")
    sent = browser.get("/attempts")
    assert sent.status_code == 303, sent.text
    location = sent.headers["location"]
    assert location.startswith("/login?") and "m=revoked" in location
    assert "message=" not in location and "accepts" not in location
    page = browser.get(location)
    assert "The gateway no longer accepts your token" in page.text


# 80 examples of 12 s in all: in `make test`, not in the fast subset.
@pytest.mark.slow
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(max_size=120),
    sort=st.one_of(st.sampled_from(["updated", "epochs", "lr"]), st.text(max_size=20)),
    status=st.lists(st.text(max_size=12), max_size=3),
    page_token=st.one_of(st.just(""), st.text(max_size=40)),
    path=st.text(alphabet="abc019-_/.%xyz", max_size=30),
)
def test_whatever_a_browser_sends_is_answered_never_with_a_server_error(
    gateway_server, fuzz_ui, text, sort, status, page_token, path
) -> None:
    """A user's query strings and paths, anything at all: a page, a 4xx naming what is
    wrong, never a 5xx (the gateway's INVALID_ARGUMENT reaches the page as 400)."""
    client = fuzz_ui
    replies = [
        client.get(
            "/attempts",
            params={"filter": text, "sort": sort, "status": status, "page_token": page_token},
        ),
        client.get("/compare", params={"id": text}),
        client.get(f"/attempts/{path}"),
        client.get(f"/studies/{path}"),
        client.get(f"/tasks/{path}"),
    ]
    for reply in replies:
        assert reply.status_code < 500, (reply.request.url, reply.text[:300])


@pytest.fixture(scope="module")
def fuzz_ui(gateway_server) -> Iterator[httpx.Client]:
    server = start_ui(gateway_server)
    try:
        yield signed_in(server, gateway_server.admin_token)
    finally:
        server.stop()


# What issue 24 found, looking as an MLflow or optuna-dashboard user would.
def test_numbers_and_prognoses_read_as_a_person_writes_them() -> None:
    from dashboard import views

    assert views.human(0.046116328437) == "0.04612"
    assert (views.human(32.0), views.human(5), views.human("AdamW")) == ("32", "5", "AdamW")
    assert views.human(True) == "true" and views.human([1, 2]) == "[1, 2]"
    quiet = {"flags": [], "hopeless": False, "predicted": False, "note": "", "final": None,
             "low": None, "high": None, "hopeless_reason": ""}  # fmt: skip
    # No curve model: said so, never a bare "ok".
    text = views.prognosis_text(quiet, "training", 3, 0.5, 2)
    assert text == "no rule fired; no prediction: no curve model is fitted yet"
    told = quiet | {"note": "no curve model fitted yet (0 finished runs)"}
    assert views.prognosis_text(told, "training", 3, 0.5, 2).endswith("(0 finished runs)")
    # Pruned at chance (10 labels, loss ln 10 = 2.303): how it stopped, and why.
    pruned = views.prognosis_text(quiet, "pruned", 2, 2.301, 10)
    assert pruned.startswith("pruned after epoch 2; its loss 2.301 is what learning nothing")
    assert "ok" not in pruned.split("; ") and "no rule fired" not in pruned
    assert views.prognosis_text(None, "pruned", 1, 0.4, 10) == "pruned after epoch 1"
    predicted = quiet | {"predicted": True, "final": 0.9, "low": 0.85, "high": 0.95}
    assert views.prognosis_text(predicted, "training", 4, 0.3, 2).endswith(
        "final val accuracy 0.900 (0.850\u20130.950)"
    )


def test_the_tasks_page_shows_one_row_per_task_and_a_failed_one_sensibly(gateway, ui) -> None:
    labels = [f"digits/{i}" for i in range(10)]
    rows = [  # three versions of the ten digits (re-imported), and labels with no images
        (f"{i:064x}", "READY" if i else "FAILED", labels) for i in (1, 2, 3)
    ] + [("missing:" + "e" * 64, "FAILED", ["dog"]), ("f" * 64, "READY", ["cat", "dog"])]
    with psycopg.connect(gateway.database_url) as conn:
        for fingerprint, state, names in rows:
            conn.execute(
                "INSERT INTO tasks (fingerprint, key, label_names, image_ops, state, error)"
                " VALUES (%s, %s, %s, '[]', %s, %s)",
                (fingerprint, ",".join(names), json.dumps(names), state,
                 "labels without images: dog" if fingerprint.startswith("missing") else ""),
            )  # fmt: skip
    client = signed_in(ui, gateway.admin_token)
    page = client.get("/tasks").text
    shown = re.findall(r'<tr data-fingerprint="([^"]+)">', page)
    # The newest usable version of the digits (id 3), once; the others once each.
    assert sorted(shown) == sorted([f"{3:064x}", "missing:" + "e" * 64, "f" * 64])
    # (The gateway lists one row per task since 55c4144; the page would fold an older
    # gateway's versions itself, saying how many there are.)
    table = page[page.index('<table class="grid" id="tasks">') :]
    assert "no images" in table, table
    assert "none of these labels has images here" in page
    # A failed task's page opens, says why, and offers no suggestion to train.
    failed = client.get("/tasks/missing:" + "e" * 64)
    assert failed.status_code == 200 and 'id="no-suggestion"' in failed.text
    assert 'id="suggest"' not in failed.text


def _prototype(gateway) -> int:
    from tests.conftest import SEED

    with Client(gateway.address, token=gateway.admin_token) as client:
        [made] = client.import_attempts([documents.attempt_from_json(SEED.read_text())]).attempts
    return int(made.id)


def test_the_imported_prototype_shows_its_accuracy_and_why_it_cannot_be_tested(gateway, ui) -> None:
    attempt_id = _prototype(gateway)
    page = signed_in(ui, gateway.admin_token).get(f"/attempts/{attempt_id}").text
    assert re.search(r'id="test-accuracy">0\.1650', page)
    # Its labels have no images here: Test is there but off, saying why.
    assert re.search(r'id="test" data-action="test"\s+disabled', page)
    assert 'id="no-test"' in page and "American Hairless Terrier" in page
    data = json.loads(re.search(r'id="page-data">(.*?)</script>', page, re.S).group(1))
    assert data["has_validation"] is False  # the chart says so (test_dashboard_browser)
    assert "metalearn train --file command.json --name NAME" in page


def test_train_names_its_flags_as_the_attempt_page_says() -> None:
    import contextlib
    import io

    from metalearn.cli import main

    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
        main(["train", "--help"])
    assert "--file FILE" in help_text.getvalue() and "--name NAME" in help_text.getvalue()


def _post_form(client: httpx.Client, url: str, **fields: str) -> httpx.Response:
    return client.post(url, data={"csrf": client.cookies["metalearn_csrf"], **fields})


def test_the_owner_edits_tags_and_a_note_kept_as_a_tag(gateway, ui) -> None:
    from dashboard import actions, views
    from gateway.attempts.validation import MAX_TAG_VALUE_CHARS

    assert actions.MAX_NOTE_CHARS == MAX_TAG_VALUE_CHARS
    writer = gateway.make_token("notes-writer", "writer")
    reader = gateway.make_token("notes-reader", "reader")
    [attempt_id] = store(gateway, make_attempt("noted", draft="yes"), token=writer)
    owner = signed_in(ui, writer)
    assert 'id="notes-form"' in owner.get(f"/attempts/{attempt_id}").text
    url = f"/attempts/{attempt_id}/notes"
    note = f"lr too high?\nsee {XSS}"
    reply = _post_form(owner, url, tags="team = vision\n\nstage=a=b\n", note=note)
    assert reply.status_code == 303 and reply.headers["location"] == f"/attempts/{attempt_id}"
    with Client(gateway.address, token=writer) as client:
        tags = dict(client.get("noted").tags)
    assert tags == {"team": "vision", "stage": "a=b", views.NOTE_TAG: note}
    page = owner.get(f"/attempts/{attempt_id}").text
    assert "lr too high?" in page and XSS not in page and "team=vision" in page
    # Mistakes are pages naming the field; nothing is written.
    too_long = _post_form(owner, url, tags="", note="x" * (MAX_TAG_VALUE_CHARS + 1))
    assert too_long.status_code == 400 and "<code>note</code>" in too_long.text
    no_equals = _post_form(owner, url, tags="team vision", note="")
    assert no_equals.status_code == 400 and "line 1: write key=value" in no_equals.text
    bad_key = _post_form(owner, url, tags="bad key=1", note="")
    assert bad_key.status_code == 400 and "keys are 1-63 letters" in bad_key.text
    assert owner.post(url, data={"tags": "x=1"}).status_code == 403  # no CSRF value
    with Client(gateway.address, token=writer) as client:
        assert dict(client.get("noted").tags) == tags
    # A reader sees the note but no form, and the gateway refuses a forged one.
    as_reader = signed_in(ui, reader)
    assert 'id="notes-form"' not in as_reader.get(f"/attempts/{attempt_id}").text
    refused = _post_form(as_reader, url, tags="x=1", note="")
    assert refused.status_code == 403 and "PERMISSION_DENIED" in refused.text


def test_the_attempts_table_downloads_as_csv_honouring_its_filter(gateway, ui, monkeypatch) -> None:
    import csv
    import io

    from dashboard import listing

    awkward = make_attempt("csv-0", labels=("=cmd|calc", 'say "hi", then'), note="a,b\nc")
    store(gateway, awkward, *(make_attempt(f"csv-{i}") for i in range(1, 5)), make_attempt("x"))
    client = signed_in(ui, gateway.admin_token)
    page = client.get("/attempts", params={"filter": 'name = "csv-*"', "sort": "id"}).text
    link = re.search(r'<a href="([^"]+)" id="csv-link"', page).group(1).replace("&amp;", "&")
    assert link.startswith("/attempts.csv?") and "filter=" in link and "sort=id" in link
    reply = client.get(link)
    assert reply.headers["content-type"].startswith("text/csv")
    assert "attachment" in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert [r["name"] for r in rows] == [f"csv-{i}" for i in range(5)]
    # Quoting survives commas, quotes and newlines; a formula is never a formula.
    assert rows[0]["labels"] == '\'=cmd|calc; say "hi", then'
    assert rows[0]["tags"] == "note=a,b\nc"
    # Bounded, read a page at a time.
    monkeypatch.setattr(listing, "MAX_CSV_ROWS", 3)
    monkeypatch.setattr(listing, "CSV_PAGE", 2)
    bounded = list(csv.DictReader(io.StringIO(client.get(link).text)))
    assert [r["name"] for r in bounded] == ["csv-0", "csv-1", "csv-2"]
    bad = client.get("/attempts.csv", params={"filter": "name ="})
    assert bad.status_code == 400


def _labels_with_images(gateway, labels: tuple[str, ...]) -> None:
    from tests.test_lying_trainer import five_images_each

    five_images_each(gateway, labels)


def test_a_writer_trains_a_suggested_command_from_the_task_page(gateway, ui) -> None:
    from google.protobuf import json_format

    _labels_with_images(gateway, ("0", "1"))
    command = make_attempt("x", labels=("0", "1")).training_commands
    text = json.dumps(json_format.MessageToDict(command, preserving_proto_field_name=True))
    fingerprint = "a" * 64
    writer = gateway.make_token("train-writer", "writer")
    reader = gateway.make_token("train-reader", "reader")
    as_writer = signed_in(ui, writer)
    url = f"/tasks/{fingerprint}/train"
    reply = _post_form(as_writer, url, name="from-suggestion", command=text)
    assert reply.status_code == 303, reply.text
    with Client(gateway.address, token=writer) as client:
        queued = client.get("from-suggestion")
    assert reply.headers["location"] == f"/attempts/{queued.id}"
    assert queued.owner == "train-writer" and queued.training_commands == command
    # The same name again is refused, not trained over.
    again = _post_form(as_writer, url, name="from-suggestion", command=text)
    assert again.status_code == 409 and "choose another name" in again.text
    assert _post_form(as_writer, url, name="y", command="[1]").status_code == 400
    assert _post_form(as_writer, url, name="y", command='{"batchsize": 3}').status_code == 400
    refused = _post_form(signed_in(ui, reader), url, name="by-reader", command=text)
    assert refused.status_code == 403
    assert as_writer.post(url, data={"name": "z", "command": text}).status_code == 403  # CSRF


def test_the_train_this_button_is_for_writers_only(gateway, ui) -> None:
    with psycopg.connect(gateway.database_url) as conn:
        conn.execute(
            "INSERT INTO tasks (fingerprint, key, label_names, image_ops, state)"
            " VALUES (%s, 'k', '[\"0\", \"1\"]', '[]', 'READY')",
            ("b" * 64,),
        )
    reader = gateway.make_token("task-reader", "reader")
    assert 'id="train-form"' in signed_in(ui, gateway.admin_token).get(f"/tasks/{'b' * 64}").text
    assert 'id="train-form"' not in signed_in(ui, reader).get(f"/tasks/{'b' * 64}").text


def test_a_broken_watch_is_opened_again_from_the_last_epoch_seen() -> None:
    import asyncio

    from dashboard.streams import Reconnecting, resilient
    from metalearn.client import MetalearnError

    opened: list[int] = []
    seen = {"epoch": 0}

    async def watch():  # two epochs, a gateway restart, then the rest
        start = seen["epoch"]
        opened.append(start)
        for epoch in range(start + 1, 5):
            if len(opened) == 1 and epoch == 3:
                raise MetalearnError("UNAVAILABLE", "this gateway is stopping")
            yield epoch

    async def collect() -> list[object]:
        found: list[object] = []
        async for item in resilient(lambda: watch(), backoff=(0.0,)):
            if isinstance(item, int):
                seen["epoch"] = item
            found.append(item)
        return found

    items = asyncio.run(collect())
    assert [i for i in items if isinstance(i, int)] == [1, 2, 3, 4]
    assert opened == [0, 2]  # resumed after epoch 2, nothing twice
    [retry] = [i for i in items if isinstance(i, Reconnecting)]
    assert retry.tries == 1 and "stopping" in retry.message

    async def refused():
        raise MetalearnError("PERMISSION_DENIED", "no")
        yield

    async def drain() -> None:
        async for _ in resilient(refused, backoff=(0.0,)):
            pass

    with pytest.raises(MetalearnError):
        asyncio.run(drain())


def _events(client: httpx.Client, url: str, into: queue.Queue[tuple[str, dict]]) -> None:
    """Reads server-sent events into a queue as (event, data) until the stream ends."""
    kind = ""
    with client.stream("GET", url, timeout=httpx.Timeout(120, read=120)) as reply:
        for line in reply.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                into.put((kind, json.loads(line.removeprefix("data: "))))
    into.put(("closed", {}))


def _next(events: queue.Queue[tuple[str, dict]], kind: str) -> dict:
    while True:
        got, data = events.get(timeout=60)
        if got == kind:
            return data
        assert got != "closed", f"the stream closed before a {kind} event"


def test_the_live_page_follows_its_attempt_across_a_gateway_restart(postgres_url) -> None:
    import threading

    from gateway.config import GatewayConfig
    from gateway.inprocess import GatewayThread
    from tests.harness import fresh_database
    from tests.test_lying_trainer import five_images_each

    url = fresh_database(postgres_url, "dashboard_restart")
    first = GatewayThread(url, GatewayConfig(listen="127.0.0.1:0", database_url=url)).start()
    port, token = first.port, first.admin_token
    five_images_each(first)
    ui = start_ui(first)
    second = None
    try:
        with Client(first.address, token=token) as client:  # no trainer: it stays QUEUED
            queued = client.train(
                "survivor", make_attempt("x", labels=("0", "1")).training_commands
            )
        events: queue.Queue[tuple[str, dict]] = queue.Queue()
        reader = threading.Thread(
            target=_events,
            args=(signed_in(ui, token), f"/attempts/{queued.id}/events", events),
            daemon=True,
        )
        reader.start()
        assert _next(events, "status")["status"] == "queued"
        first.stop()
        assert "message" in _next(events, "reconnecting")
        config = GatewayConfig(listen=f"127.0.0.1:{port}", database_url=url)
        second = GatewayThread(url, config).start()
        # The dashboard watches again (the same token: tokens live in the database)...
        assert _next(events, "status")["status"] == "queued"
        with Client(second.address, token=token) as client:
            client.cancel("survivor")
        # ...and the page sees what happened after the restart, to the end.
        assert _next(events, "status")["status"] == "cancelled"
        _next(events, "end")
    finally:
        ui.stop()
        if second is not None:
            second.stop()


def test_the_tables_prognosis_is_never_a_bare_ok() -> None:
    from dashboard import views

    running = make_attempt("r", labels=tuple(str(i) for i in range(10)))
    running.status = attempt_pb2.ATTEMPT_STATUS_TRAINING
    running.training_losses.extend([1.0, 0.5])
    running.prognosis.epoch = 2
    assert views.attempt_row(running)["flags"] == ""  # shown as a dash, not "ok"
    pruned = attempt_pb2.Attempt()
    pruned.CopyFrom(running)
    pruned.status = attempt_pb2.ATTEMPT_STATUS_PRUNED
    del pruned.training_losses[:]
    pruned.training_losses.extend([2.31, 2.302])  # ln 10: learning nothing
    assert views.attempt_row(pruned)["flags"] == "at chance"
    page = views.attempt_page(pruned)
    assert page["prognosis_text"].startswith("pruned after epoch 2; its loss 2.302 is what")


def test_parameter_importances_are_optunas_over_the_complete_trials() -> None:
    from dashboard.importance import MIN_TRIALS, compute
    from metalearn.v1 import study_service_pb2 as spb

    study = spb.Study(name="imp", id=1)
    lr = study.search_space.add(path="optimizer.lr")
    lr.float.low, lr.float.high, lr.float.log = 1e-4, 0.1, True
    name = study.search_space.add(path="optimizer.name")
    name.categorical.values.add(string_value="Adam")
    name.categorical.values.add(string_value="SGD")
    for i in range(12):  # the value follows the learning rate only
        state = spb.TRIAL_STATE_PRUNED if i % 4 == 3 else spb.TRIAL_STATE_COMPLETE
        trial = study.trials.add(number=i, state=state, value=0.5 + 0.04 * i)
        trial.params.update({"optimizer.lr": 1e-4 * 2**i, "optimizer.name": ["Adam", "SGD"][i % 2]})
    found = compute(study)
    assert found["params"] == ["optimizer.lr", "optimizer.name"] and not found["note"]
    assert abs(sum(found["values"]) - 1) < 1e-3 and found["values"][0] > 0.8
    assert compute(study) == found  # seeded: the same answer every time
    del study.trials[MIN_TRIALS - 1 :]
    assert compute(study)["note"].startswith(f"shown once {MIN_TRIALS} trials are complete")


def test_an_older_gateways_versions_of_a_task_are_folded_into_one_row() -> None:
    from dashboard import views
    from metalearn.v1 import task_pb2

    digits = [f"digits/{i}" for i in range(10)]
    listed = [  # newest first, as ListTasks lists them
        task_pb2.Task(fingerprint="c" * 64, label_names=digits, state=task_pb2.TASK_STATE_FAILED),
        task_pb2.Task(fingerprint="b" * 64, label_names=digits, state=task_pb2.TASK_STATE_READY),
        task_pb2.Task(fingerprint="a" * 64, label_names=digits, state=task_pb2.TASK_STATE_READY),
        task_pb2.Task(fingerprint="d" * 64, label_names=["x"], state=task_pb2.TASK_STATE_READY),
    ]
    rows = views.distinct_tasks(listed)
    assert [(r["fingerprint"][0], r["versions"]) for r in rows] == [("b", 3), ("d", 1)]


def test_a_reported_run_shows_its_params_and_declared_task_not_a_command(gateway, ui) -> None:
    """A run of users' own code has no command: its page shows what it reported of
    itself (params, declared task, metric names), escaped, and offers no Test."""
    from metalearn.v1 import reporting_service_pb2 as rpb
    from metalearn.v1 import reporting_service_pb2_grpc as rgrpc

    with gateway.channel() as channel:
        stub = rgrpc.ReportingServiceStub(channel)
        start = rpb.StartRunRequest(
            name=f"reported-{uuid.uuid4().hex[:6]}",
            task=attempt_pb2.DeclaredTask(dataset="pets", labels=["cat", XSS], train_size=900),
            client="metalearn-python/test",
        )
        start.task.features["imbalance"] = 0.25
        start.params.update({"lr": 0.01, "note": XSS})
        run = stub.StartRun(start).attempt
        stub.FinishRun(rpb.FinishRunRequest(attempt_id=run.id, end=rpb.RUN_END_FINISHED))
    page = signed_in(ui, gateway.admin_token).get(f"/attempts/{run.id}").text
    assert 'id="reported"' in page and 'id="command"' not in page
    assert "metalearn-python/test" in page and "pets" in page and "900" in page
    assert "imbalance" in page and "0.2500" in page
    params = re.search(r'<pre id="params">(.*?)</pre>', page, re.S).group(1)
    assert "&#34;lr&#34;: 0.01" in params or "&quot;lr&quot;: 0.01" in params
    assert XSS not in page  # the label and the param are text
    assert re.search(r'id="test" data-action="test"\s+hidden', page)


def test_a_study_page_reads_again_only_the_attempts_of_trials_not_at_rest(gateway, channel) -> None:
    """The page's data after each trial event: a trial at rest (here cancelled, so
    failed) keeps its attempt; a running one is read again on every reload."""
    upload_labels(gateway, lenet_command().label_names)
    studies = study_service_pb2_grpc.StudyServiceStub(channel)
    studies.CreateStudy(spb.CreateStudyRequest(study=make_study("kept", n_trials=2)))
    first, second = wait_trials(studies, "kept", 2).trials
    attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    attempts.CancelAttempt(apb.CancelAttemptRequest(name=first.attempt_name))
    wait_for(
        lambda: (
            studies.GetStudy(spb.GetStudyRequest(name="kept")).study.trials[0].state
            == spb.TRIAL_STATE_FAILED
        ),
        "the cancelled trial failed",
    )

    async def reload_twice() -> None:
        client = Gateway(UiConfig(gateway=gateway.address))
        try:
            kept = StudyAttempts(client.attempts_by_id)
            token = gateway.admin_token
            study = await client.study(token, "kept")
            found = await kept.of(token, study)
            assert sorted(found) == sorted([first.attempt_id, second.attempt_id])
            assert kept.last_read == 2
            again = await kept.of(token, await client.study(token, "kept"))
            assert kept.last_read == 1  # the running trial only
            assert again == found
            # Kept per token: another token is not served what this one read; the
            # gateway refuses it the attempts themselves.
            with pytest.raises(MetalearnError):
                await kept.of(token + "-not-a-token", study)
        finally:
            await client.close()

    asyncio.run(reload_twice())
