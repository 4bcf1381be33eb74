"""The dashboard in a real headless Chromium (Debian's, through chromedriver): what a
user sees, live, with no console errors. A scripted trainer feeds epochs on cue, so a
chart's growth is watched epoch by epoch. Screenshots land in docs/screenshots, where
the README shows them."""

from __future__ import annotations

import json
import queue
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

    def script(self, selector: str) -> Any:
        return self.driver.execute_script(selector)

    def close(self) -> None:
        self._stop.set()
        self.driver.quit()
        self.ui.stop()
        self._server.stop(1)
        self.gateway.stop()


def recorded_runs(count: int) -> list[Any]:
    import gzip

    from bench.metalearning.build_table import TABLE
    from bench.metalearning.export import history

    with gzip.open(TABLE, "rt") as f:
        return history(json.load(f))[:count]


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
    screenshot(stage.driver, "study")
    stage.open("/studies")
    screenshot(stage.driver, "studies")
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
    screenshot(stage.driver, "task")
    stage.open("/tasks")
    screenshot(stage.driver, "tasks")
    assert console_errors(stage.driver) == []
