"""The dashboard in a real headless Chromium (Debian's, through chromedriver): what a
user sees, live, with no console errors. A scripted trainer feeds epochs on cue, so a
chart's growth is watched epoch by epoch. Screenshots land in docs/screenshots, where
the README shows them."""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from dashboard.server import UiServer
from gateway.config import GatewayConfig
from gateway.inprocess import GatewayThread
from metalearn import Client
from metalearn.v1 import (
    attempt_pb2,
    trainer_registry_service_pb2,
    trainer_registry_service_pb2_grpc,
    trainer_service_pb2_grpc,
)
from tests.dashboard_harness import (
    browser_sign_in,
    chromium,
    chromium_missing,
    console_errors,
    screenshot,
    start_ui,
    wait_for,
)
from tests.harness import fresh_database
from tests.test_attempts import make_attempt
from tests.test_lying_trainer import (
    FakeTrainer,
    chunks,
    epoch,
    finished,
    five_images_each,
    register,
    started,
)
from tests.trainer_harness import lenet_command

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(chromium_missing()), reason=chromium_missing() or "-"),
]
XSS = "<script>alert(1)</script>"


class ProfilingTrainer(FakeTrainer):
    """The scripted trainer, also profiling tasks (with made-up, well-formed features)."""

    def ProfileTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        from gateway.tasks.profiler import FEATURES
        from metalearn.v1 import task_pb2, trainer_service_pb2

        features = {name: 0.1 * (i + 1) for i, name in enumerate(sorted(FEATURES))}
        profile = task_pb2.TaskProfile(
            features=features, images=10, classes=2, input_shape=[1, 8, 8], seconds=0.1
        )
        return trainer_service_pb2.TrainerServiceProfileTaskResponse(profile=profile)


class Stage:
    """A gateway on a database of its own, a scripted trainer it dispatches to, the
    dashboard in front, and a signed-in Chromium."""

    def __init__(self, postgres_url: str) -> None:
        url = fresh_database(postgres_url, "dashboard")
        self.gateway = GatewayThread(url, GatewayConfig(listen="127.0.0.1:0", database_url=url))
        self.gateway.start()
        self.trainer = ProfilingTrainer()
        self._server = grpc.server(futures.ThreadPoolExecutor(8))
        trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(self.trainer, self._server)
        self.trainer_address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()
        five_images_each(self.gateway)
        register(self.gateway, self.trainer_address)
        self._stop = threading.Event()
        self._beats = threading.Thread(target=self._heartbeat, daemon=True)
        self._beats.start()
        # Real curves to look at: two tasks' runs of the benchmark suite's recorded history
        # (128 trained attempts of 10 epochs, with their prognoses).
        with self.client() as client:
            self.history = client.import_attempts(recorded_runs(128)).attempts
        self.ui: UiServer = start_ui(self.gateway)
        self.driver = chromium()

    def _heartbeat(self) -> None:
        # A trainer that stays silent gets no new work (studies dispatch for a while).
        while not self._stop.wait(1.0):
            try:
                with self.gateway.channel("trainer") as channel:
                    trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel).Heartbeat(
                        trainer_registry_service_pb2.HeartbeatRequest(address=self.trainer_address)
                    )
            except grpc.RpcError:
                pass

    def client(self) -> Client:
        return Client(self.gateway.address, token=self.gateway.admin_token)

    def open(self, path: str) -> None:
        self.driver.get(f"{self.ui.url}{path}")

    def script(self, selector: str, *args: Any) -> Any:
        return self.driver.execute_script(selector, *args)

    def close(self) -> None:
        self._stop.set()
        self.driver.quit()
        self.ui.stop()
        self._server.stop(1)
        self.gateway.stop()


def recorded_runs(count: int) -> list[Any]:
    from metalearn.examples.history import history, table

    return history(table())[:count]


def tick_texts(stage: Stage, chart: str, axis: str) -> list[str]:
    """The tick labels a chart drew on an axis ("x" or "y"), as the user reads them."""
    return stage.script(
        f"return Array.from(document.querySelectorAll('#{chart} .{axis}tick text'))"
        ".map((t) => t.textContent)"
    )


def boxes_overlap(stage: Stage, first: str, second: str) -> bool:
    """Whether any element matching `first` overlaps any matching `second` on screen."""
    return bool(
        stage.script(
            "const rects = (s) => Array.from(document.querySelectorAll(s))"
            ".map((e) => e.getBoundingClientRect()).filter((r) => r.width && r.height);"
            "const a = rects(arguments[0]), b = rects(arguments[1]);"
            "return a.some((r) => b.some((q) => r.left < q.right && q.left < r.right"
            " && r.top < q.bottom && q.top < r.bottom));",
            first,
            second,
        )
    )


def readable_log_ticks(stage: Stage, chart: str) -> None:
    """Each label of the chart's log axis says its own value in full (never plotly's
    lone minor digits "2 5 0.1 2"), and they do not crowd each other."""
    axis = stage.script(
        f"const a = document.getElementById('{chart}')._fullLayout.yaxis;"
        "return {type: a.type, tickmode: a.tickmode, tickvals: a.tickvals, ticktext: a.ticktext}"
    )
    assert axis["type"] == "log"
    if axis["tickmode"] == "array":  # a range of a factor 3 or more: ticks of our own
        for value, text in zip(axis["tickvals"], axis["ticktext"], strict=True):
            assert abs(float(text) - value) <= 1e-9 + 1e-3 * value, (value, text)
    texts = tick_texts(stage, chart, "y")
    assert texts and len(texts) == len(set(texts)) <= 10, texts
    values = [float(t.replace("\u2212", "-")) for t in texts]
    assert values == sorted(values), texts  # every label its own value, in order


@pytest.fixture(scope="module")
def stage(postgres_url: str) -> Iterator[Stage]:
    s = Stage(postgres_url)
    try:
        browser_sign_in(s.driver, s.ui, s.gateway.admin_token)
        yield s
    finally:
        s.close()


def paced(cue: queue.Queue[int], epochs: int) -> Any:
    """A training script that sends each epoch when the test says so."""

    def script(request: Any) -> Iterator[Any]:
        yield started()
        for n in range(1, epochs + 1):
            cue.get(timeout=60)
            yield epoch(n, loss=1.0 / n, val_loss=1.2 / n, val_accuracy=0.5 + 0.1 * n)
        yield from chunks("weights", b"w" * 2500, epochs)
        yield finished()

    return script


def test_a_visit_without_a_token_is_refused(stage) -> None:
    driver = chromium()
    try:
        driver.get(f"{stage.ui.url}/attempts")
        assert "/login" in driver.current_url and driver.title.startswith("Sign in")
        screenshot(driver, "sign-in")
        assert console_errors(driver) == []
    finally:
        driver.quit()


def test_the_attempts_table_lists_the_store_and_filters_it(stage) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with stage.client() as client:
        for i in range(4):
            client.create(make_attempt(f"resnet-{i}", labels=("0", "1"), team="vision"))
        client.create(make_attempt("xss-label", labels=(XSS, "1")))
    stage.open("/attempts?sort=val_acc&filter=imported%20%3D%20true")
    screenshot(stage.driver, "attempts")
    stage.open("/attempts")

    def names():
        return [e.text for e in stage.driver.find_elements(By.CSS_SELECTOR, "#attempts td.name a")]

    assert {f"resnet-{i}" for i in range(4)} | {"xss-label"} <= set(names())
    box = stage.driver.find_element(By.ID, "filter")
    box.clear()
    box.send_keys('name = "resnet-*" AND tags.team = "vision"', Keys.ENTER)
    wait_for(lambda: "filter=" in stage.driver.current_url, "the filtered page")
    assert sorted(names()) == [f"resnet-{i}" for i in range(4)]
    # Selecting rows leads to their comparison.
    for box in stage.driver.find_elements(By.CSS_SELECTOR, "input.pick")[:2]:
        box.click()
    stage.driver.find_element(By.ID, "compare").click()
    wait_for(lambda: "/compare" in stage.driver.current_url, "the comparison")
    assert console_errors(stage.driver) == []


def test_a_label_holding_a_script_is_inert(stage) -> None:
    with stage.client() as client:
        made = (
            client.get("xss-label")
            if _exists(client, "xss-label")
            else client.create(make_attempt("xss-label", labels=(XSS, "1")))
        )
    stage.script("window.alerted = false; window.alert = () => { window.alerted = true; };")
    stage.open(f"/attempts/{made.id}")
    assert XSS in stage.driver.page_source.replace("&lt;", "<").replace("&gt;", ">")
    inline = "return document.querySelectorAll('script:not([src]):not([type])').length"
    assert stage.script(inline) == 0
    assert stage.script("return window.alerted === true") is False
    assert console_errors(stage.driver) == []


def _exists(client: Client, name: str) -> bool:
    from metalearn.client import NotFoundError

    try:
        client.get(name)
        return True
    except NotFoundError:
        return False


def test_a_running_attempts_chart_gains_points_as_epochs_arrive(stage) -> None:
    from selenium.webdriver.common.by import By

    cue: queue.Queue[int] = queue.Queue()
    stage.trainer.train_script = paced(cue, 4)
    with stage.client() as client:
        attempt = client.train("live-run", lenet_command(n_epoch=4, label_names=["0", "1"]))
        wait_for(lambda: client.get("live-run").status == 3, "training")  # TRAINING
    stage.open(f"/attempts/{attempt.id}")
    points = lambda: stage.script(  # noqa: E731
        "const c = document.getElementById('loss-chart'); return c.data ? c.data[0].x.length : -1"
    )
    wait_for(lambda: points() == 0, "the empty chart")
    for n in range(1, 4):
        cue.put(n)
        wait_for(lambda n=n: points() == n, f"epoch {n} on the chart")
        assert stage.driver.find_element(By.ID, "epochs").text == str(n)
    # The facts follow the epochs: the best validation accuracy so far (0.5 + 0.1 n).
    wait_for(lambda: stage.driver.find_element(By.ID, "best-val").text == "0.8000", "best val")
    # Whole epochs on the axes, never 1.5 or 2.5.
    for chart in ("loss-chart", "accuracy-chart"):
        wait_for(lambda c=chart: tick_texts(stage, c, "x"), "the ticks")
        assert all(t.isdigit() for t in tick_texts(stage, chart, "x")), tick_texts(
            stage, chart, "x"
        )
    readable_log_ticks(stage, "loss-chart")
    # No curve model here: the prognosis says so, never a bare "ok".
    wait_for(lambda: stage.driver.find_elements(By.ID, "prognosis-text"), "a prognosis")
    told = stage.driver.find_element(By.ID, "prognosis").text
    assert "no prediction" in told and not told.rstrip().endswith("ok"), told
    screenshot(stage.driver, "attempt-live")
    cue.put(4)
    # Trained: the status changes on the page, which reloads with the weights' link.
    wait_for(lambda: stage.driver.find_elements(By.ID, "download-model"), "the trained page")
    assert points() == 4
    assert console_errors(stage.driver) == []


def test_a_tested_attempt_shows_its_confusion_matrix(stage) -> None:
    from selenium.webdriver.common.by import By

    tested = recorded_runs(1)[0]
    tested.name = "tested-run"
    tested.status = attempt_pb2.ATTEMPT_STATUS_COMPLETE
    tested.accuracy = 0.75
    # A test reports on the model's labels (the gateway checks imported results so).
    tested.training_commands.ClearField("label_names")
    tested.training_commands.label_names.extend(["cat", "dog"])
    tested.testing_commands.label_names.extend(["cat", "dog"])
    tested.test_result.CopyFrom(
        attempt_pb2.TestResult(
            loss=0.5, accuracy=0.75, images=8, confusion_matrix=[3, 1, 1, 3],
            per_label_accuracy={"cat": 0.75, "dog": 0.75},
        )
    )  # fmt: skip
    with stage.client() as client:
        [made] = client.import_attempts([tested]).attempts
    stage.open(f"/attempts/{made.id}")
    wait_for(
        lambda: stage.script(
            "const c = document.getElementById('confusion-chart'); return c.data && c.data.length"
        ),
        "the heat map",
    )
    assert stage.script("return document.getElementById('confusion-chart').data[0].z") == [
        [3, 1], [1, 3],
    ]  # fmt: skip
    assert "cat" in stage.driver.find_element(By.ID, "per-label").text
    # The axis titles sit beside the tick labels, not on them.
    assert not boxes_overlap(stage, "#confusion-chart .ytitle", "#confusion-chart .ytick text")
    assert not boxes_overlap(stage, "#confusion-chart .xtitle", "#confusion-chart .xtick text")
    stage.script("document.getElementById('per-label').scrollIntoView()")
    screenshot(stage.driver, "attempt-tested")
    assert console_errors(stage.driver) == []


def test_compare_shows_exactly_the_differing_fields(stage) -> None:
    from selenium.webdriver.common.by import By

    ids = []
    with stage.client() as client:
        for i in range(50):  # as many as users compare
            a = make_attempt(f"cmp-{i}", labels=("0", "1"))
            a.training_commands.optimizer["lr"] = 0.001 * (i + 1)
            if i == 49:
                a.training_commands.batch_size = 64
            ids.append(client.create(a).id)
    stage.open("/compare?id=" + ",".join(map(str, ids)))
    visible = lambda: sorted(  # noqa: E731
        r.get_attribute("data-key")
        for r in stage.driver.find_elements(By.CSS_SELECTOR, "#fields tbody tr[data-key]")
        if r.is_displayed()
    )
    assert visible() == ["batch_size", "optimizer.lr"]
    stage.driver.find_element(By.ID, "show-all").click()
    assert len(visible()) > 2 and "optimizer.name" in visible()
    stage.driver.find_element(By.ID, "show-all").click()
    assert visible() == ["batch_size", "optimizer.lr"]
    wait_for(lambda: stage.script("return window.metalearnRendered !== undefined"), "the charts")
    assert console_errors(stage.driver) == []
    # For the README: eight recorded runs of one task, their curves and what differs.
    stage.open("/compare?id=" + ",".join(str(a.id) for a in stage.history[8:64:7]))
    wait_for(lambda: stage.script("return window.metalearnRendered !== undefined"), "the charts")
    readable_log_ticks(stage, "loss-chart")
    assert all(t.isdigit() for t in tick_texts(stage, "loss-chart", "x"))
    screenshot(stage.driver, "compare")
    assert console_errors(stage.driver) == []


def test_a_study_page_updates_while_the_study_runs(stage) -> None:
    cue: queue.Queue[int] = queue.Queue()
    stage.trainer.train_script = paced(cue, 3)
    study = {
        "name": "ui-study",
        "base_command": json.loads(json.dumps(_lenet_doc())),
        "search_space": [
            {"path": "optimizer.lr", "float": {"low": 0.0001, "high": 0.1, "log": True}},
            {"path": "optimizer.name", "categorical": {"values": ["Adam", "SGD"]}},
        ],
        "objective": "OBJECTIVE_BEST_VAL_ACCURACY",
        "n_trials": 3,
        "max_parallel": 1,
        "seed": 1,
    }
    with stage.client() as client:
        client.create_study(study)
    stage.open("/studies/ui-study")
    updates = lambda: stage.script("return window.metalearnStudyUpdates")  # noqa: E731
    wait_for(lambda: updates() is not None, "the study page")
    before = updates()
    for _ in range(9):  # three trials of three epochs, fed one at a time
        cue.put(1)
    wait_for(lambda: updates() > before, "a live update", timeout=30)
    wait_for(
        lambda: (
            stage.script("return document.querySelectorAll('#trials tbody tr').length") == 3
            and stage.driver.find_element("id", "study-state").text == "done"
        ),
        "the finished study",
        timeout=60,
    )
    assert console_errors(stage.driver) == []


def pruning(release: threading.Event) -> Any:
    """Trials by turns good and bad, by their number (`pruned-study-k`, so a retried one
    runs as before): a bad one's first epoch is at 0.3, below every complete trial, so
    the median pruner stops it; then it waits to be cancelled."""

    def script(request: Any) -> Iterator[Any]:
        k = int(request.attempt_name.rsplit("-", 1)[1])
        yield started()
        if k in (1, 4):
            yield epoch(1, loss=2.3, val_loss=2.3, val_accuracy=0.3)
            release.wait(60)
            return
        for n in range(1, 4):
            yield epoch(n, loss=1.0 / n, val_loss=1.1 / n, val_accuracy=0.6 + 0.04 * k + 0.05 * n)
        yield from chunks("weights", b"w" * 2500, 3)
        yield finished()

    return script


def test_a_study_shows_pruned_trials_dimmed_and_its_parameters_importance(stage) -> None:
    from selenium.webdriver.common.by import By

    release = threading.Event()
    stage.trainer.train_script = pruning(release)
    study = {
        "name": "pruned-study",
        "base_command": _lenet_doc(),
        "search_space": [
            {"path": "optimizer.lr", "float": {"low": 0.0001, "high": 0.1, "log": True}},
            {"path": "optimizer.name", "categorical": {"values": ["AdamW", "SGD"]}},
            {"path": "batch_size", "int": {"low": 8, "high": 64}},
        ],
        "objective": "OBJECTIVE_BEST_VAL_ACCURACY",
        "n_trials": 5,
        "max_parallel": 1,
        "seed": 3,
        "pruner": {"name": "median", "args": {"n_startup_trials": 1, "n_warmup_steps": 0}},
    }
    try:
        with stage.client() as client:
            client.create_study(study)
            wait_for(lambda: client.study("pruned-study").state == 3, "the study's end", 120)
    finally:
        release.set()
    stage.open("/studies/pruned-study")
    wait_for(
        lambda: stage.script("return document.querySelectorAll('#trials tbody tr').length") == 5,
        "the trials",
    )
    # Read once the script has drawn the charts and rebuilt the table (atomic reads:
    # the table's rows are replaced when it does).
    wait_for(
        lambda: stage.script("const c = document.getElementById('importance-chart');"
                             " return Boolean(c.data && c.data.length)"),
        "the charts",
    )  # fmt: skip
    states = stage.script(
        "return Array.from(document.querySelectorAll('#trials td .chip')).map((e) => e.textContent)"
    )
    assert states.count("pruned") == 2 and states.count("complete") == 3, states
    # Parameters rounded for people, categories without JSON's quotes.
    table = stage.script("return document.getElementById('trials').innerText")
    assert '"' not in table, table
    digits = [len(n.replace(".", "").lstrip("0")) for n in re.findall(r"\d+\.\d+", table)]
    assert max(digits) <= 4, table
    parallel = "document.getElementById('parallel-chart')"
    wait_for(lambda: stage.script(f"return {parallel}.data && {parallel}.data.length"), "lines")
    lines = stage.script(
        f"return {parallel}.data.filter((t) => t.mode === 'lines+markers')"
        ".map((t) => [t.opacity, t.line.width, t.line.dash || ''])"
    )
    # Every trial that reported a value: the pruned ones too, dimmed and dotted.
    assert len(lines) == 5
    assert sorted(o for o, _, _ in lines) == [0.55, 0.55, 1, 1, 1]
    assert all(w >= 2.5 for o, w, _ in lines if o == 1) and all(
        d == "dot" for o, _, d in lines if o < 1
    )
    labels = stage.script(f"return {parallel}.layout.annotations.map((a) => a.text)")
    assert "AdamW" in labels or "SGD" in labels
    assert not any('"' in t for t in labels), labels
    numbers = [t for t in labels if re.fullmatch(r"[\d.e+-]+", t)]
    assert numbers and all(len(t.replace(".", "").lstrip("0")) <= 4 for t in numbers), labels
    # Optuna's importances (fANOVA over the 3 complete trials), one bar per parameter.
    bars = stage.script("return document.getElementById('importance-chart').data[0].y")
    assert sorted(bars) == ["batch_size", "optimizer.lr", "optimizer.name"]
    # Whole epochs and trials; captions clear of the tool bar; no axis title on a legend.
    for chart in ("history-chart", "intermediate-chart"):
        assert all(t.isdigit() for t in tick_texts(stage, chart, "x")), chart
        assert not boxes_overlap(stage, f"#{chart} .xtitle", f"#{chart} .legend")
        caption = f"#{chart}"
        assert not boxes_overlap(
            stage, f"figure:has({caption}) figcaption", f"{caption} .modebar-group"
        )
    stage.driver.set_window_size(1400, 1900)  # the whole page: every chart and the table
    try:
        screenshot(stage.driver, "study")
    finally:
        stage.driver.set_window_size(1400, 1000)
    stage.open("/studies")
    best = {
        row.find_element(By.CSS_SELECTOR, "td.name").text: row.find_elements(
            By.CSS_SELECTOR, "td.n"
        )[1].text
        for row in stage.driver.find_elements(By.CSS_SELECTOR, "#studies tbody tr")
    }
    assert best["ui-study"] == "0.8000" and best["pruned-study"] != "\u2013", best
    screenshot(stage.driver, "studies")
    assert console_errors(stage.driver) == []


def test_the_imported_prototype_says_what_it_lacks(stage) -> None:
    from selenium.webdriver.common.by import By

    from metalearn import documents
    from tests.conftest import SEED

    with stage.client() as client:
        if _exists(client, "american_dog_species_3"):
            made = client.get("american_dog_species_3")
        else:
            [made] = client.import_attempts(
                [documents.attempt_from_json(SEED.read_text())]
            ).attempts
    stage.open(f"/attempts/{made.id}")
    chart = "document.getElementById('accuracy-chart')"
    wait_for(lambda: stage.script(f"return {chart}.layout !== undefined"), "the charts")
    notes = stage.script(f"return {chart}.layout.annotations.map((a) => a.text)")
    assert notes == ["this attempt recorded no validation values"]
    assert stage.driver.find_element(By.ID, "test-accuracy").text.startswith("0.1650")
    test = stage.driver.find_element(By.ID, "test")
    assert not test.is_enabled() and "no images" in test.get_attribute("title").lower()
    assert "no images here" in stage.driver.find_element(By.ID, "no-test").text
    readable_log_ticks(stage, "loss-chart")
    screenshot(stage.driver, "attempt-imported")
    assert console_errors(stage.driver) == []


def _lenet_doc() -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(
        lenet_command(n_epoch=3, label_names=["0", "1"]), preserving_proto_field_name=True
    )


def test_the_tasks_pages_render(stage) -> None:
    from selenium.webdriver.common.by import By

    with stage.client() as client:
        task = client.profile_task(["0", "1"], wait=True)
    stage.open("/tasks")
    stage.driver.find_element(
        By.CSS_SELECTOR, f'#tasks a[href="/tasks/{task.fingerprint}"]'
    ).click()
    wait_for(lambda: stage.driver.find_elements(By.ID, "suggest"), "the task's page")
    assert "0, 1" in stage.driver.find_element(By.CSS_SELECTOR, ".facts").text
    assert "probe_fisher" in stage.driver.find_element(By.ID, "profile").text
    stage.driver.find_element(By.ID, "suggest").click()
    wait_for(lambda: stage.driver.find_element(By.ID, "suggested-command").text, "a suggestion")
    assert '"label_names"' in stage.driver.find_element(By.ID, "suggested-command").text
    # The reason is a sentence of its own, its sources a list beneath it.
    reason = stage.driver.find_element(By.ID, "suggestion-reason").text
    assert not re.search(r"[a-z] From:", reason), reason
    stage.driver.find_element(By.ID, "train-name").clear()
    stage.driver.find_element(By.ID, "train-name").send_keys("suggested-run")
    screenshot(stage.driver, "task")
    stage.trainer.train_script = lambda request: iter([started()])
    stage.driver.find_element(By.ID, "train-this").click()
    wait_for(lambda: re.search(r"/attempts/\d+$", stage.driver.current_url), "the new attempt")
    # (Read atomically: the page reloads itself when the run's status changes.)
    name = "const e = document.getElementById('attempt-name'); return e && e.textContent"
    wait_for(lambda: stage.script(name) == "suggested-run", "the new attempt's page")
    stage.open("/tasks")
    # One row per task, however many versions the gateway keeps.
    rows = [
        e.get_attribute("data-fingerprint")
        for e in stage.driver.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")
    ]
    labels = [
        e.text
        for e in stage.driver.find_elements(By.CSS_SELECTOR, "#tasks tbody tr td:nth-child(2)")
    ]
    assert len(rows) == len(set(rows)) and len(labels) == len(set(labels)), labels
    screenshot(stage.driver, "tasks")
    assert console_errors(stage.driver) == []


# What a hostile writer plants in every text it controls (issue 25, finding 10): plotly
# reads its own small HTML in chart text (<a href>, <b>, <br>...), so a label such as
# the first one became a real link on the confusion matrix.
LINK = '<a href="https://evil.example/phish">sign in again</a>'
PLANTS = (LINK, LINK.replace('"', "'"), "<img src=x>", "<b>bold</b>")
# Elements that came from a plant: a link to evil.example or one saying "sign in again",
# an image of `x`, text made bold (an HTML <b>, or the bold tspan plotly makes of one).
_PLANTED_ELEMENTS = """
const found = [];
for (const a of document.querySelectorAll('a')) {
  const href = [a.getAttribute('href'), a.getAttribute('xlink:href'),
                a.getAttributeNS('http://www.w3.org/1999/xlink', 'href')].join(' ');
  if (href.includes('evil.example') || a.textContent.trim() === 'sign in again') {
    found.push('a ' + href);
  }
}
for (const img of document.querySelectorAll('img, image')) {
  const src = img.getAttribute('src') || img.getAttribute('href') || '';
  if (/(^|\\/)x$/.test(src)) found.push('img ' + src);
}
for (const b of document.querySelectorAll('b, strong, tspan, text')) {
  if (b.textContent === 'bold') found.push(b.tagName + ' ' + (b.getAttribute('style') || ''));
}
return found;
"""


def _chart_texts(stage: Stage, chart: str) -> str:
    """Every text a chart drew (ticks, annotations, legend, hover), as the user reads it."""
    return "\n".join(
        stage.script(
            "return Array.from(document.querySelectorAll(arguments[0] + ' text'))"
            ".map((t) => t.textContent)",
            f"#{chart}",
        )
    )


def _hover(stage: Stage, chart: str, x: float, y: float) -> str:
    """What a chart's tooltip says with the mouse over the point (x, y) of its axes."""
    from selenium.webdriver.common.action_chains import ActionChains

    element = stage.driver.find_element("id", chart)
    stage.script("arguments[0].scrollIntoView({block: 'center'})", element)
    dx, dy = stage.script(
        "const gd = document.getElementById(arguments[0]), l = gd._fullLayout;"
        "const box = gd.getBoundingClientRect();"
        "return [l._size.l + l.xaxis.l2p(arguments[1]) - box.width / 2,"
        "        l._size.t + l.yaxis.l2p(arguments[2]) - box.height / 2];",
        chart,
        x,
        y,
    )
    ActionChains(stage.driver).move_to_element_with_offset(element, round(dx), round(dy)).perform()
    return str(
        wait_for(
            lambda: stage.script(
                "return Array.from(document.querySelectorAll(arguments[0] + ' .hoverlayer text'))"
                ".map((t) => t.textContent).join('\\n')",
                f"#{chart}",
            ),
            f"{chart}'s tooltip",
        )
    )


def _inert(stage: Stage, path: str) -> str:
    """Opens a page and finds no element made from a plant; the page's text."""
    stage.open(path)
    wait_for(lambda: stage.script("return document.readyState === 'complete'"), path)
    assert stage.script(_PLANTED_ELEMENTS) == [], path
    assert console_errors(stage.driver) == [], path
    return str(stage.script("return document.body.innerText"))


def test_text_a_writer_planted_is_shown_as_text_never_as_markup(stage) -> None:
    from metalearn.client import InvalidRequest
    from metalearn.v1 import dataset_service_pb2, dataset_service_pb2_grpc
    from tests.harness import png

    labels = list(PLANTS)
    # Names, study names and parameter paths cannot hold markup at all: the gateway's rules.
    with stage.client() as client:
        for refused in (
            lambda: client.create(make_attempt(LINK)),
            lambda: client.create_study({"name": LINK}),
            lambda: client.create_study(
                {"name": "planted-path", "base_command": _lenet_doc(), "n_trials": 1,
                 "search_space": [{"path": LINK, "categorical": {"values": [1, 2]}}]}
            ),
        ):  # fmt: skip
            with pytest.raises(InvalidRequest):
                refused()
    # Everything else a writer writes: labels (trained and tested, and an imported test's
    # per-label figures), tags and the note, a study's choices.
    with stage.gateway.channel() as channel:
        dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
            iter(
                dataset_service_pb2.UploadImagesRequest(label=label, data=png((40 + i, j, 99)))
                for i, label in enumerate(labels)
                for j in range(5)
            )
        )
    tested = recorded_runs(1)[0]
    tested.name = "planted-run"
    tested.status = attempt_pb2.ATTEMPT_STATUS_COMPLETE
    tested.accuracy = 0.5
    del tested.training_commands.label_names[:]
    tested.training_commands.label_names.extend(labels)
    tested.testing_commands.label_names.extend(labels)
    tested.tags.update({"team": LINK, "metalearn.note": " ".join(PLANTS)})
    tested.test_result.CopyFrom(
        attempt_pb2.TestResult(
            loss=0.5, accuracy=0.5, images=16,
            confusion_matrix=[2, 1, 1, 0, 0, 2, 1, 1, 1, 0, 2, 1, 1, 1, 0, 2],
            per_label_accuracy={label: 0.5 for label in labels},
        )
    )  # fmt: skip

    def three_epochs(request: Any) -> Iterator[Any]:
        yield started(labels=tuple(request.command.label_names))
        for n in range(1, 4):
            yield epoch(n, loss=1.0 / n, val_loss=1.1 / n, val_accuracy=0.5 + 0.1 * n)
        yield from chunks("weights", b"w" * 2500, 3)
        yield finished()

    stage.trainer.train_script = three_epochs
    study = {
        "name": "planted-study",
        "base_command": _lenet_doc(),
        "search_space": [
            {"path": "label_names", "categorical": {"values": [labels[:2], labels[2:]]}},
            {"path": "optimizer.lr", "float": {"low": 0.001, "high": 0.1, "log": True}},
        ],
        "objective": "OBJECTIVE_BEST_VAL_ACCURACY",
        "n_trials": 2,
        "max_parallel": 1,
        "seed": 1,
    }
    with stage.client() as client:
        [made] = client.import_attempts([tested]).attempts
        client.create_study(study)
        wait_for(lambda: client.study("planted-study").state == 3, "the study's end", 90)
        client.profile_task(labels[:2], wait=True)
        tasks = [t.fingerprint for t in client.tasks() if set(t.label_names) & set(labels)]

    # The attempt: the confusion matrix's ticks and tooltip say the labels as written.
    text = _inert(stage, f"/attempts/{made.id}")
    assert all(p in text for p in PLANTS), text  # the tables and tags (HTML, escaped)
    wait_for(lambda: _chart_texts(stage, "confusion-chart"), "the heat map")
    for axis in ("x", "y"):
        assert sorted(tick_texts(stage, "confusion-chart", axis)) == sorted(labels)
    hover = _hover(stage, "confusion-chart", 1, 0)  # row 0, column 1
    assert f"true {labels[0]}, predicted {labels[1]}: 1" in hover, hover
    assert stage.script(_PLANTED_ELEMENTS) == []
    # The study: its parallel coordinates' axis of label sets, and a trial's tooltip.
    text = _inert(stage, "/studies/planted-study")
    wait_for(lambda: _chart_texts(stage, "parallel-chart"), "the parallel coordinates")
    drawn = _chart_texts(stage, "parallel-chart")
    as_json = [json.dumps(p)[1:-1] for p in PLANTS]  # a choice is shown as its JSON
    assert all(p in drawn for p in as_json), drawn
    assert all(p in text for p in as_json), text  # the trials table
    at = stage.script(  # where the first trial's line crosses the label sets' axis
        "const t = document.getElementById('parallel-chart').data[0]; return [t.x[0], t.y[0]]"
    )
    hover = _hover(stage, "parallel-chart", *at)
    assert any(p in hover for p in as_json), hover
    assert stage.script(_PLANTED_ELEMENTS) == []
    # The lists (which show no labels), and the pages that show them.
    for path in ("/attempts", "/studies"):
        _inert(stage, path)
    assert tasks
    compare = f"/compare?id={made.id},{stage.history[0].id}"  # label_names differ
    for path in (compare, "/tasks", *(f"/tasks/{f}" for f in tasks)):
        text = _inert(stage, path)
        assert any(p in text for p in PLANTS), (path, text)
