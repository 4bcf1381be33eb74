"""The dashboard over HTTP: sign-in, refusals, CSRF, headers, escaping, and what each
page shows, against a real gateway (the browser tests are test_dashboard_browser.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.server import UiServer
from metalearn import Client, documents
from metalearn.v1 import attempt_pb2
from tests.dashboard_harness import signed_in, start_ui
from tests.test_attempts import make_attempt

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
