"""The `metalearn` command with a real trainer: what `train --follow`, `watch`, `test` and
their --json print, retraining, and a shape mistake as the failed attempt says it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from tests.harness import GatewayThread
from tests.test_orchestration import Stack
from tests.trainer_harness import lenet_doc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(
    digits_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    config = GatewayConfig(
        listen="127.0.0.1:0", database_url=digits_gateway.database_url, dispatch_seconds=0.2
    )
    fast = GatewayThread(digits_gateway.database_url, config).start()
    stack = Stack(fast, tmp_path_factory.mktemp("cli-live"))
    stack.ensure_trainers(1)
    try:
        yield stack
    finally:
        stack.close()
        fast.stop()


def command_file(tmp_path: Path, **changes: Any) -> str:
    path = tmp_path / "command.json"
    path.write_text(json.dumps({**lenet_doc(), "n_epoch": 2, **changes}))
    return str(path)


def run(stack: Stack, capsys: Any, *args: str) -> tuple[int, str, str]:
    from metalearn import cli

    gateway = stack.gateway
    code = cli.main([*args, "--gateway", gateway.address, "--token", gateway.admin_token])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_follow_prints_each_status_once_and_watch_replays_in_order(
    live, capsys, tmp_path
) -> None:
    code, out, err = run(live, capsys, "train", "--file", command_file(tmp_path), "--name", "f1",
                         "--follow")  # fmt: skip
    lines = out.splitlines()
    assert code == 0, err
    # Train answers with the attempt as it reads it back: queued, or (a trainer was
    # idle and quicker than that read) training already.
    assert lines[0].startswith("f1 (id ")
    assert lines[0].endswith((") queued", ") training")), lines[0]
    statuses = [line for line in lines if not line.startswith("[")]
    assert len(statuses) == len(set(statuses)) and statuses[-1] == "f1 trained", lines
    assert sum("] epoch" in line for line in lines) == 2
    # A finished attempt: its epochs, then its state, once.
    code, out, _ = run(live, capsys, "watch", "f1")
    lines = out.splitlines()
    assert code == 0 and [line.split()[2] for line in lines[:2]] == ["1/2", "2/2"]
    assert lines[2:] == ["f1 trained"]
    # The same as NDJSON: the snapshot first, then each epoch with numbers as numbers.
    code, out, _ = run(live, capsys, "watch", "f1", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["snapshot", "epoch", "epoch"]
    assert events[0]["status"] == "Trained" and events[0]["current_epoch"] == 2
    assert isinstance(events[0]["id"], int) and isinstance(
        events[0]["model_artifact"]["size_bytes"], int
    )
    assert [e["epoch"] for e in events[1:]] == [1, 2] and all(e["loss"] > 0 for e in events[1:])

    code, out, _ = run(live, capsys, "test", "f1", "--follow")
    assert code == 0 and out.splitlines()[-1].startswith("f1 complete  accuracy ")
    code, out, _ = run(live, capsys, "attempts", "get", "f1", "--full")
    lines = out.splitlines()
    assert "accuracy" in lines[0] and lines[2].split()[0] == "EPOCH" and len(lines) == 5
    # Its prognosis, made after its last epoch (the end is known: nothing to predict).
    assert lines[1] == (
        "  prognosis after epoch 2: its last epoch is in: nothing left to predict"
    ), lines

    # Retraining forgets epochs and results: the CLI asks for --overwrite first.
    code, _, err = run(live, capsys, "train", "--file", command_file(tmp_path), "--name", "f1")
    assert code == 1 and err.count("\n") == 1 and "f1 already has 2 epochs and test accuracy" in err
    assert "--overwrite" in err
    code, out, _ = run(live, capsys, "train", "--file", command_file(tmp_path), "--name", "f1",
                       "--overwrite", "--follow", "--json")  # fmt: skip
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and events[0]["event"] == "snapshot" and events[-1]["status"] == "Trained"
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]


def test_download_plot_and_compare_print_json(live, capsys, tmp_path) -> None:
    for name in ("c1", "c2"):
        lr = 0.003 if name == "c1" else 0.01
        path = command_file(tmp_path, optimizer={"name": "Adam", "lr": lr})
        assert run(live, capsys, "train", "--file", path, "--name", name, "--follow")[0] == 0
    code, out, _ = run(live, capsys, "download", "c1", "-o", str(tmp_path), "--json")
    got = json.loads(out)
    assert code == 0 and got["bytes"] == Path(got["weights"]).stat().st_size > 0
    code, out, _ = run(live, capsys, "plot", "c1", "-o", str(tmp_path / "c1.png"), "--json")
    assert json.loads(out) == {"name": "c1", "plot": str(tmp_path / "c1.png")}
    code, out, _ = run(live, capsys, "compare", "c1", "c2", "--json")
    compared = json.loads(out)
    assert compared["names"] == ["c1", "c2"] and compared["plot"] is None
    assert compared["differences"] == {"optimizer.lr": [0.003, 0.01]}
    assert [r["epochs"] for r in compared["results"]] == [2, 2]
    assert compared["results"][0]["status"] == "Trained"
    assert compared["results"][0]["test_accuracy"] is None


def test_a_shape_mistake_fails_the_attempt_in_plain_words(live, capsys, tmp_path) -> None:
    doc = lenet_doc()
    doc["model"]["layers"][7]["in_features"] = 256  # Flatten gives 32 * 2 * 2 = 128
    code, out, _ = run(live, capsys, "train", "--file", command_file(tmp_path, model=doc["model"]),
                       "--name", "shapes", "--follow")  # fmt: skip
    assert code == 1
    assert out.splitlines()[-1] == (
        "shapes failed: INVALID_ARGUMENT: command.model.layers[7]: layer 7 (Linear) expects"
        " 256 input features, got 128 (from layer 6's output of shape (batch, 128))"
    )
