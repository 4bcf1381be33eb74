"""`make demo`: watch a real model learn, then compare two attempts, on a fresh stack.

Starts `metalearn up` (embedded PostgreSQL, a gateway and a trainer) on a fresh data dir
and a free port, stores the prototype's document, imports scikit-learn's handwritten
digits, imports the example history (the benchmark suite's 24 tasks and 1,536 recorded
runs, `metalearn examples import-history`) and fits the curve model on it, trains the
LeNet example twice — Adam, then SGD, the one hyper-parameter that differs — with live
progress and each epoch's prognosis (the predicted final accuracy), stops a third run
whose learning rate is far too small as hopeless, tests both, prints a comparison table,
writes a PNG of both loss curves, runs a short study (12 trials, TPE with successive
halving) and prints its best. Then it uploads a task that shares no label and no image
with the history (five noisy drawn letters), shows the past tasks nearest to it, trains
the command metalearn suggests for it beside a cold study's first trial (same space, same
epochs, both tested), says in one line which did better and by how much, and stops the
stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "tests" / "fixtures" / "attempt_american_dog_species_3.json"
LENET = ROOT / "examples" / "digits_lenet.json"
STUDY = ROOT / "examples" / "digits_study.json"
LETTERS = ROOT / "examples" / "letters_study.json"
TINY_LR = ROOT / "examples" / "digits_lenet_tiny_lr.json"
# Where the plot goes (the tests point it elsewhere).
OUTPUT = Path(os.environ.get("METALEARN_DEMO_OUTPUT", ROOT / "demo-output"))
# `make demo UI=1`: the dashboard on its usual port, and the stack left up until Ctrl-C.
KEEP_UP = os.environ.get("UI", "") not in ("", "0")
CLI = [sys.executable, "-m", "metalearn.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, address: str) -> None:
    print(f"\n$ metalearn {shlex.join(args)}", flush=True)
    subprocess.run([*CLI, *args, "--gateway", address], check=True)


def document(name: str, address: str) -> dict[str, Any]:
    """An attempt's document, as `attempts get --json` prints it."""
    done = subprocess.run([*CLI, "--json", "attempts", "get", name, "--gateway", address],
                          check=True, capture_output=True, text=True)  # fmt: skip
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def verdict(task: str, warm: dict[str, Any], cold: dict[str, Any]) -> str:
    """The suggested run against the cold first trial, in one line, whichever won."""
    epochs = {warm["n_epoch"], cold["n_epoch"]}
    assert len(epochs) == 1, f"unequal epochs: {epochs}"  # like with like, or nothing
    diff = warm["accuracy"] - cold["accuracy"]
    if abs(diff) < 0.005:
        outcome = "the two are level on the test split"
    elif diff > 0:
        outcome = f"the warm start is ahead by {diff:.3f} on the test split"
    else:
        outcome = f"the warm start is behind by {-diff:.3f} on the test split: here it did not help"
    return (
        f"Warm vs cold on {task} (new to the history), {epochs.pop()} epochs each: the"
        f" suggested command {warm['best_val_accuracy']:.3f} validation / {warm['accuracy']:.3f}"
        f" test accuracy, a cold study's first trial {cold['best_val_accuracy']:.3f} /"
        f" {cold['accuracy']:.3f}: {outcome}."
    )


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="metalearn-demo-") as tmp:
        address = f"127.0.0.1:{free_port()}"
        # The CLI finds the admin token `up` wrote into its data directory (by default
        # ./.metalearn; this demo keeps its data in a temporary one and says so).
        os.environ["METALEARN_DATA_DIR"] = f"{tmp}/data"
        print(f"$ export METALEARN_DATA_DIR={tmp}/data", flush=True)
        ui = "127.0.0.1:8080" if KEEP_UP else "127.0.0.1:0"
        print(f"$ metalearn up --listen {address} --data-dir {tmp}/data --trainers 1"
              f" --ui {ui}", flush=True)  # fmt: skip
        up = subprocess.Popen(
            [*CLI, "up", "--listen", address, "--data-dir", f"{tmp}/data", "--trainers", "1",
             "--ui", ui],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert up.stdout is not None
            banner = up.stdout.readline().strip()
            print(banner, flush=True)
            found = re.search(r"dashboard on (\S+?);", banner)
            dashboard = found.group(1) if found else ""
            time.sleep(1)  # the trainer's first heartbeat
            run("attempts", "create", "--file", str(SEED), address=address)
            run("images", "import-digits", address=address)
            # History to learn from: the suite's 24 tasks (their images made offline) and
            # the 1,536 runs recorded on them (64 commands x 10 epochs each), the tasks
            # profiled. The curve model fitted on them predicts every new run's final
            # accuracy; the tasks are the past a new task is compared with.
            run("examples", "import-history", address=address)
            run("curves", "fit", address=address)
            sgd = json.loads(LENET.read_text())
            sgd["optimizer"] = {"name": "SGD", "lr": 0.05, "momentum": 0.9}
            sgd_file = Path(tmp) / "digits_lenet_sgd.json"
            sgd_file.write_text(json.dumps(sgd))
            run("train", "--file", str(LENET), "--name", "lenet-adam", "--follow", address=address)
            run(
                "train", "--file", str(sgd_file), "--name", "lenet-sgd", "--follow", address=address
            )
            # A learning rate far too small: at chance from the first epoch. Opted in to
            # stop when hopeless, it ends PRUNED after a few epochs instead of ten.
            run("train", "--file", str(TINY_LR), "--name", "lenet-hopeless",
                "--stop-when-hopeless", "--follow", address=address)  # fmt: skip
            run("test", "lenet-adam", "--follow", address=address)
            run("test", "lenet-sgd", "--follow", address=address)
            plot = OUTPUT / "loss-curves.png"
            run("compare", "lenet-adam", "lenet-sgd", "--plot", str(plot), address=address)
            run("attempts", "list", "--filter", "NOT imported = true", address=address)
            # Every run gone bad, found by its prognosis (the prototype's document too).
            run("attempts", "list", "--filter", "prognosis.hopeless = true AND NOT imported"
                " = true", address=address)  # fmt: skip
            print(f"\nThe loss curves of both attempts are in {plot}")
            # A search instead of guessing: 12 trials sampled by TPE, the hopeless ones
            # stopped early by successive halving, the best one tested at the end.
            run("study", "create", "--file", str(STUDY), "--follow", address=address)
            run("study", "show", "digits-lenet", address=address)
            # What the history is for: a command for a task that shares no label and no
            # image with it (five noisy drawn letters), from the most similar past tasks,
            # trained at once; beside it, a cold study's first trial in the same space
            # (the one the history was recorded in), the same epochs; both tested.
            run("examples", "import-letters", address=address)
            letters = json.loads(LETTERS.read_text())
            new_task = letters["base_command"]["label_names"]
            run("tasks", "similar", "--labels", *new_task, address=address)
            run("suggest", "--labels", *new_task, "--train", "suggested-letters", "--follow",
                address=address)  # fmt: skip
            letters.update(name="cold-letters", n_trials=1, test_best=False)
            cold_file = Path(tmp) / "cold_letters.json"
            cold_file.write_text(json.dumps(letters))
            run("study", "create", "--file", str(cold_file), "--follow", address=address)
            run("test", "suggested-letters", "--follow", address=address)
            run("test", "cold-letters-0", "--follow", address=address)
            run("compare", "suggested-letters", "cold-letters-0", address=address)
            task = ", ".join(label.removeprefix("letter ") for label in new_task)
            warm, cold = document("suggested-letters", address), document("cold-letters-0", address)
            print(f"\n{verdict(f'the letters {task}', warm, cold)}", flush=True)
            if KEEP_UP and dashboard:
                print(f"\nThe dashboard: open {dashboard}\n(the stack stays up; Ctrl-C stops it)",
                      flush=True)  # fmt: skip
                with contextlib.suppress(KeyboardInterrupt):
                    while up.poll() is None:
                        time.sleep(1)
            else:
                print(
                    "\nEverything above is in the web dashboard too: `make demo UI=1` leaves"
                    " the stack up with it on http://127.0.0.1:8080 (or run `metalearn up` and"
                    " open the link it prints).",
                    flush=True,
                )
        finally:
            up.send_signal(signal.SIGINT)
            code = up.wait(timeout=180)
            assert up.stdout is not None
            print(up.stdout.read().strip())
        return code


if __name__ == "__main__":
    sys.exit(main())
