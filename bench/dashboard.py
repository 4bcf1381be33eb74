"""The dashboard's speed (issue 15), with a real gateway, the dashboard on port 0, and
Debian's headless Chromium:

- attempts_page: GET /attempts (a page of 50, newest first) with `--attempts` attempts of
  10 epochs each in the store, measured at the HTTP client (so it includes the loopback
  round trip); beside it the gateway's own ListAttempts call for the same page, the
  baseline, in the same process. Goal: p50 <= 100 ms. Also the page sorted by the best
  validation accuracy, which the gateway computes for every attempt.
- live_epoch: from the moment a (scripted) trainer sends an epoch until the attempt's
  chart in Chromium has drawn it: the gateway's commit, its notification, WatchAttempt,
  the event stream and plotly. Goal: p95 <= 500 ms.
- compare_render: /compare of 50 attempts x 100 epochs in Chromium, from navigation start
  until both charts are drawn (server time, plotly and layout together). Goal: <= 1 s.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import time
from concurrent import futures
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.filter import fill
from bench.report import print_figures
from dashboard.config import UiConfig
from dashboard.server import UiServer, create_server
from gateway.inprocess import GatewayThread
from metalearn import Client
from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc, trainer_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as pb
from tests.dashboard_harness import (
    browser_sign_in,
    chromium,
    chromium_missing,
    signed_in,
    wait_for,
)
from tests.harness import fresh_database
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


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def attempts_page(gateway: GatewayThread, ui: UiServer, calls: int) -> dict[str, float]:
    client = signed_in(ui, gateway.admin_token)
    request = pb.ListAttemptsRequest(page_size=50, order_by=pb.ATTEMPT_ORDER_UPDATE_TIME)
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        stub.ListAttempts(request)
        rpc = []
        for _ in range(calls):
            t = time.perf_counter()
            stub.ListAttempts(request)
            rpc.append(time.perf_counter() - t)
    client.get("/attempts")
    page = []
    for _ in range(calls):
        t = time.perf_counter()
        reply = client.get("/attempts")
        page.append(time.perf_counter() - t)
        assert reply.status_code == 200 and reply.text.count('class="pick"') == 50
    page_p50, page_p95 = _ms(page)
    rpc_p50, _ = _ms(rpc)
    by_val = []
    for _ in range(calls):
        t = time.perf_counter()
        client.get("/attempts", params={"sort": "val_acc"})
        by_val.append(time.perf_counter() - t)
    return {
        "attempts_page_by_best_val_p50_ms": _ms(by_val)[0],
        "attempts_page_p50_ms": page_p50,
        "attempts_page_p95_ms": page_p95,
        "list_attempts_rpc_p50_ms": rpc_p50,
        "page_over_rpc": page_p50 / rpc_p50,
    }


def add_epochs(url: str, per_attempt: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO attempt_epochs (attempt_id, epoch, loss, val_loss, val_accuracy)"
            " SELECT a.id, e, 2.0 / e, 2.2 / e, 1 - 1.0 / (e + 1)"
            " FROM attempts a, generate_series(1, %s) e",
            (per_attempt,),
        )
        conn.execute("UPDATE attempts SET current_epoch = %s, status = 'TRAINED'", (per_attempt,))
        conn.execute("ANALYZE")


def live_epochs(gateway: GatewayThread, driver: Any, ui_url: str, epochs: int) -> dict[str, float]:
    fake = FakeTrainer()  # type: ignore[abstract]
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(fake, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    cue: queue.Queue[int] = queue.Queue()
    sent: dict[int, float] = {}

    def script(request: Any) -> Any:
        yield started()
        for n in range(1, epochs + 2):
            cue.get(timeout=60)
            sent[n] = time.time()
            yield epoch(n, loss=1.0 / n, val_loss=1.1 / n, val_accuracy=0.5)
        yield from chunks("weights", b"w" * 2500, epochs)
        yield finished()

    fake.train_script = script
    try:
        register(gateway, address)
        with Client(gateway.address, token=gateway.admin_token) as client:
            attempt = client.train("live", lenet_command(n_epoch=epochs, label_names=["0", "1"]))
            wait_for(
                lambda: client.get("live").status == attempt_pb2.ATTEMPT_STATUS_TRAINING, "run"
            )
        driver.get(f"{ui_url}/attempts/{attempt.id}")
        wait_for(
            lambda: driver.execute_script("return window.metalearnDrawn !== undefined"), "page"
        )
        time.sleep(0.5)  # the event stream open
        for n in range(1, epochs + 1):
            cue.put(n)
            drawn_yet = f"return window.metalearnDrawn[{n}] || 0"
            wait_for(partial(driver.execute_script, drawn_yet), f"epoch {n}")
            time.sleep(0.2)
        drawn = driver.execute_script("return window.metalearnDrawn")
        delays = [(drawn[str(n)] / 1000) - sent[n] for n in range(1, epochs + 1)]
    finally:
        server.stop(1)
    p50, p95 = _ms(delays)
    return {"live_epoch_p50_ms": p50, "live_epoch_p95_ms": p95, "live_epochs": epochs}


def compare_render(
    gateway: GatewayThread, driver: Any, ui_url: str, loads: int
) -> dict[str, float]:
    attempts = []
    for i in range(50):
        optimizer = {"name": "SGD", "lr": 0.001 * (i + 1)}
        a = attempt_pb2.Attempt(
            name=f"cmp-{i}",
            n_epoch=100,
            training_commands=lenet_command(n_epoch=100, optimizer=optimizer),
        )
        for e in range(1, 101):
            a.epochs.add(
                epoch=e, loss=2.0 / e + i * 0.001, val_loss=2.2 / e, val_accuracy=1 - 1 / (e + 1)
            )
        a.training_losses.extend(x.loss for x in a.epochs)
        attempts.append(a)
    with Client(gateway.address, token=gateway.admin_token) as client:
        client.import_attempts(attempts)
        ids = [a.id for a in client.list(prefix="cmp-")]
    url = f"{ui_url}/compare?id=" + ",".join(map(str, ids))
    times = []
    for i in range(loads + 1):
        driver.get(url)
        wait_for(lambda: driver.execute_script("return window.metalearnRendered"), "charts")
        if i:  # the first load fetched plotly into the cache
            times.append(driver.execute_script("return window.metalearnRendered") / 1000)
    p50, _ = _ms(times)
    return {"compare_50x100_render_p50_ms": p50, "compare_50x100_render_max_ms": max(times) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--attempts", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=30, help="live epochs to time")
    parser.add_argument("--loads", type=int, default=5, help="compare page loads to time")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with scratch_postgres() as scratch:
        url = scratch.url
        GatewayThread(url).start().stop()  # migrates
        fill(url, args.attempts)
        add_epochs(url, 10)
        gateway = GatewayThread(url).start()
        ui = create_server(UiConfig(gateway=gateway.address, port=0)).start()
        try:
            figures |= attempts_page(gateway, ui, args.calls)
        finally:
            ui.stop()
            gateway.stop()
        if chromium_missing():
            print(f"skipping the browser figures: {chromium_missing()}", file=sys.stderr)
        else:
            fresh = fresh_database(url, "live")
            gateway = GatewayThread(fresh).start()
            ui = create_server(UiConfig(gateway=gateway.address, port=0)).start()
            driver = chromium()
            try:
                five_images_each(gateway)
                browser_sign_in(driver, ui, gateway.admin_token)
                figures |= live_epochs(gateway, driver, ui.url, args.epochs)
                figures |= compare_render(gateway, driver, ui.url, args.loads)
            finally:
                driver.quit()
                ui.stop()
                gateway.stop()
    figures["attempts"] = args.attempts
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
