"""The `metalearn` command as people and scripts meet it: help, JSON, errors, new commands.

Commands run in-process (`cli.main`) against the session's gateway; a closed pipe and
Ctrl-C need a real process. Training with real trainers is in test_cli_live.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from metalearn import Client, cli, documents
from metalearn.cli import runs
from metalearn.v1 import attempt_pb2, trainer_service_pb2
from tests.conftest import SEED
from tests.harness import GatewayThread, png, upload_labels
from tests.trainer_harness import lenet_command, lenet_doc

S = attempt_pb2
METALEARN = [sys.executable, "-m", "metalearn.cli"]


def run(gateway: GatewayThread, capsys: Any, *args: str) -> tuple[int, str, str]:
    """`metalearn ARGS` in-process: exit status, stdout, stderr."""
    code = cli.main([*args, "--gateway", gateway.address, "--token", gateway.admin_token])
    out, err = capsys.readouterr()
    return code, out, err


def parsers(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, Any]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def test_every_help_page_has_a_description_and_every_argument_help() -> None:
    seen = []
    for path, parser in parsers(cli.build_parser(), "metalearn"):
        seen.append(path)
        assert parser.description, f"{path} --help has no description"
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help != argparse.SUPPRESS, (path, action.dest)
    assert {"metalearn attempts update", "metalearn images delete", "metalearn watch"} <= set(seen)
    # Defaults are shown where there is one worth showing.
    trainer = dict(parsers(cli.build_parser(), "metalearn"))["metalearn trainer"]
    assert "(default: 5)" in trainer.format_help()


def test_version_comes_from_the_package(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"metalearn {version('metalearn')}"


def test_the_document_has_plain_numbers_one_status_spelling_and_names_our_fields() -> None:
    attempt = documents.attempt_from_json(SEED.read_text())
    attempt.id = 2**40  # an int64: proto JSON writes it as a string
    attempt.test_result.images = 200
    attempt.test_result.confusion_matrix.extend([3, 0, 1, 4])
    attempt.model_artifact.size_bytes = 127_096
    attempt.dataset.images_per_label.extend([180, 182])
    attempt.testing_commands.ids.extend([7, 9])
    attempt.training_commands.seed = 5
    doc = documents.attempt_to_document(attempt)
    assert doc["id"] == 2**40 and doc["status"] == "Complete"
    # The confusion matrix as rows ([true][predicted]), read back flat.
    assert doc["test_result"]["images"] == 200
    assert doc["test_result"]["confusion_matrix"] == [[3, 0], [1, 4]]
    assert doc["model_artifact"]["size_bytes"] == 127_096
    assert doc["dataset"]["images_per_label"] == [180, 182]
    assert doc["testing_commands"]["ids"] == [7, 9] and doc["training_commands"]["seed"] == 5
    assert doc["restart_count"] == 0 and doc["current_epoch"] == 0  # zero counts present
    # Every field, in the proto's order: a message not set is null.
    assert list(doc)[: len(S.Attempt.DESCRIPTOR.fields)] == [
        f.name for f in S.Attempt.DESCRIPTOR.fields
    ]
    assert doc["prognosis"] is None and doc["model_artifact"] is not None
    ours = doc["metalearn_fields"]
    assert {"create_time", "epochs", "tags", "training_commands.seed"} <= set(ours)
    prototype = json.loads(SEED.read_text())
    assert not set(prototype) & set(ours)
    assert not set(prototype["training_commands"]) & {
        p.split(".", 1)[1] for p in ours if p.startswith("training_commands.")
    }
    # Every spelling of a status is read back; what is written reads back the same.
    assert documents.attempt_from_document(json.loads(json.dumps(doc))) == attempt
    for spelling in ("Complete", "complete", "COMPLETE", "ATTEMPT_STATUS_COMPLETE"):
        got = documents.attempt_from_document({"status": spelling})
        assert got.status == S.ATTEMPT_STATUS_COMPLETE
    with pytest.raises(documents.DocumentError, match='unknown status "Complet"; did you mean'):
        documents.attempt_from_document({"status": "Complet"})
    assert set(documents.STATUS_SPELLING.values()) >= {"Incomplete", "Training", "Cancelled"}


def test_a_command_is_printed_as_a_person_writes_it() -> None:
    command = lenet_command(seed=7, devices=0)
    written = documents.command_as_written(command)
    assert written["seed"] == 7 and written["batch_size"] == 32  # numbers, not "7"
    assert "devices" not in written and "model_name" not in written  # defaults left out
    assert written["model"]["layers"][0] == {
        "name": "Conv2d", "in_channels": "auto", "kernel_size": 3, "out_channels": 16,
        "padding": 1,
    }  # fmt: skip
    assert documents.parse(written, S.TrainCommand(), "") == command


def test_every_enum_is_spelt_as_a_status_and_read_back() -> None:
    from metalearn.v1 import study_service_pb2, task_pb2

    assert documents.plain(task_pb2.Task(state=task_pb2.TASK_STATE_READY))["state"] == "Ready"
    study = study_service_pb2.Study(objective=study_service_pb2.OBJECTIVE_BEST_VAL_ACCURACY)
    written = documents.plain(study)
    assert written["objective"] == "Best_val_accuracy"
    for spelling in ("Best_val_accuracy", "best val accuracy", "OBJECTIVE_BEST_VAL_ACCURACY"):
        read = documents.parse({"objective": spelling}, study_service_pb2.Study(), "")
        assert read.objective == study.objective


@pytest.mark.parametrize(
    "command,typo,written,where,meant",
    [
        (["train", "--name", "x"], {"batchsize": 8}, "batchsize", "training_commands",
         "batch_size"),
        (["train"], {"model": {"layerz": []}}, "layerz", "training_commands.model", "layers"),
        (["test", "x"], {"limitt": 3}, "limitt", "testing_commands", "limit"),
        (["attempts", "create"], {"training_commands": {"n_epochs": 1}}, "n_epochs",
         "training_commands", "n_epoch"),
        (["attempts", "update", "x"], {"label_name": []}, "label_name", "training_commands",
         "label_names"),
    ],
)  # fmt: skip
def test_a_misspelt_field_is_one_line_with_the_nearest_name(
    tmp_path, capsys, command, typo, written, where, meant
) -> None:
    doc = lenet_doc() if command[0] in ("train", "attempts") else {}
    doc = typo if command[:2] == ["attempts", "create"] else {**doc, **typo}
    path = tmp_path / "cmd.json"
    path.write_text(json.dumps(doc))
    code = cli.main([*command, "--file", str(path), "--gateway", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 1 and err == (
        f'metalearn: {path}: unknown field "{written}" in {where}; did you mean "{meant}"?\n'
    )


def test_json_on_every_client_command(gateway, capsys, tmp_path) -> None:
    code, out, _ = run(gateway, capsys, "attempts", "create", "--file", str(SEED), "--json")
    created = json.loads(out)
    assert code == 0 and created["id"] == 1 and created["status"] == "Incomplete"
    # The document goes back in as it came out (metalearn_fields and all).
    copy = tmp_path / "copy.json"
    copy.write_text(out)
    code, out, _ = run(gateway, capsys, "attempts", "create", "--file", str(copy), "--name", "b")
    assert code == 0 and out.startswith("b (id 2)  incomplete")
    code, out, _ = run(gateway, capsys, "attempts", "list", "--json")
    assert [(d["id"], d["status"]) for d in json.loads(out)] == [
        (1, "Incomplete"),
        (2, "Incomplete"),
    ]
    # A global flag, before the command's name, as the connection flags are.
    code, before, _ = run(gateway, capsys, "--json", "attempts", "list")
    assert code == 0 and json.loads(before) == json.loads(out)

    folder = tmp_path / "images" / "digit 0"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png())
    code, out, _ = run(gateway, capsys, "images", "import", str(folder.parent), "--json")
    assert json.loads(out) == {"added": 1, "duplicates": 0, "rejected": 0, "rejections": []}
    code, out, _ = run(gateway, capsys, "images", "labels", "--json")
    assert json.loads(out) == {"digit 0": 1}

    upload_labels(gateway, lenet_command().label_names)
    command = tmp_path / "lenet.json"
    command.write_text(json.dumps(lenet_doc()))
    code, out, _ = run(gateway, capsys, "train", "--file", str(command), "--name", "q", "--json")
    queued = json.loads(out)  # nothing trains here: no trainers
    assert code == 0 and queued["status"] == "Queued" and queued["name"] == "q"
    code, out, _ = run(gateway, capsys, "cancel", "q", "--json")
    assert json.loads(out)["status"] == "Cancelled"
    code, out, _ = run(gateway, capsys, "watch", "q", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [(e["event"], e["status"]) for e in events] == [("snapshot", "Cancelled")]

    code, out, _ = run(gateway, capsys, "attempts", "update", "b", "--tag", "team=vision", "--json")
    assert json.loads(out)["tags"] == {"team": "vision"}
    code, out, _ = run(gateway, capsys, "attempts", "delete", "b", "--json")
    assert json.loads(out) == {"deleted": "b"}
    code, out, _ = run(gateway, capsys, "images", "delete", "digit 0", "--json")
    assert json.loads(out) == {"labels": ["digit 0"], "deleted": 2}  # and upload_labels' one
    code, out, _ = run(gateway, capsys, "tokens", "list", "--json")
    assert code == 0 and all(isinstance(t["name"], str) for t in json.loads(out))


def test_attempts_update_changes_what_the_flags_name(gateway, capsys, tmp_path) -> None:
    assert run(gateway, capsys, "attempts", "create", "--file", str(SEED))[0] == 0
    name = "american_dog_species_3"
    code, out, _ = run(
        gateway, capsys, "attempts", "update", name, "--tag", "a=1", "--tag", "b=x=y",
        "--n-epoch", "7", "--limit", "50", "--json",
    )  # fmt: skip
    doc = json.loads(out)
    assert doc["tags"] == {"a": "1", "b": "x=y"} and doc["n_epoch"] == 7 and doc["limit"] == 50
    command = tmp_path / "lenet.json"
    command.write_text(json.dumps(lenet_doc()))
    code, out, _ = run(
        gateway, capsys, "attempts", "update", name, "--remove-tag", "a", "--file", str(command)
    )
    with Client(gateway.address, token=gateway.admin_token) as client:
        got = client.get(name)
    assert code == 0 and dict(got.tags) == {"b": "x=y"}
    assert got.training_commands.label_names == lenet_command().label_names
    assert got.n_epoch == 7  # untouched: not named
    for args, words in (
        ([], "nothing to change"),
        (["--tag", "novalue"], "give KEY=VALUE"),
    ):
        code, _, err = run(gateway, capsys, "attempts", "update", name, *args)
        assert code == 1 and words in err and err.count("\n") == 1, err


def test_removing_a_tag_that_is_not_there_applies_the_rest(gateway, capsys) -> None:
    # The README's line, on an attempt that never had the tag it removes.
    run(gateway, capsys, "attempts", "create", "--file", str(SEED))
    name = "american_dog_species_3"
    code, out, err = run(
        gateway, capsys, "attempts", "update", name,
        "--tag", "team=vision", "--remove-tag", "draft", "--n-epoch", "20", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert err == f"metalearn: {name} had no tag 'draft'\n"
    doc = json.loads(out)
    assert doc["tags"]["team"] == "vision" and "draft" not in doc["tags"] and doc["n_epoch"] == 20


def test_deleting_attempts_and_images(gateway, capsys) -> None:
    run(gateway, capsys, "attempts", "create", "--file", str(SEED))
    code, out, _ = run(gateway, capsys, "attempts", "delete", "american_dog_species_3")
    assert code == 0 and out == "deleted american_dog_species_3\n"
    code, _, err = run(gateway, capsys, "attempts", "delete", "american_dog_species_3")
    assert code == 1 and err.startswith("metalearn: NOT_FOUND")
    upload_labels(gateway, ["owl", "cat"])
    code, out, _ = run(gateway, capsys, "images", "delete", "owl")
    assert code == 0 and out == "deleted 1 images of owl\n"
    with Client(gateway.address, token=gateway.admin_token) as client:
        assert client.labels() == {"cat": 1}
    writer = gateway.make_token("cli-writer", "writer")
    code = cli.main(["images", "delete", "cat", "--gateway", gateway.address, "--token", writer])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("metalearn: PERMISSION_DENIED") and err.count("\n") == 1


def test_train_refuses_labels_without_images_naming_the_nearest(gateway, tmp_path) -> None:
    upload_labels(gateway, [f"digit {i}" for i in range(10)])
    from metalearn.client import InvalidRequest

    command = lenet_command(label_names=["digit 0", "digit three", "giraffe"])
    with Client(gateway.address, token=gateway.admin_token) as client:
        with pytest.raises(InvalidRequest) as refused:
            client.train("nope", command)
        assert set(refused.value.violations) == {
            "command.label_names[1]",
            "command.label_names[2]",
        }
        assert (
            "no images have the label 'digit three'; did you mean"
            in (refused.value.violations["command.label_names[1]"])
        )
        assert "upload images for it first" in refused.value.violations["command.label_names[2]"]
        assert list(client.list()) == []  # nothing was queued


def epoch(n: int) -> attempt_pb2.EpochMetrics:
    return attempt_pb2.EpochMetrics(epoch=n, loss=1.0 / n, val_loss=0.5, val_accuracy=0.9)


class FakeClient:
    """What `follow` reads: `watch` yields these events (an exception is raised)."""

    def __init__(self, *events: Any) -> None:
        self.events = events

    def watch(self, name: str, from_epoch: int = 0) -> Iterator[Any]:
        for event in self.events:
            if isinstance(event, BaseException):
                raise event
            yield event


def test_watch_of_a_finished_attempt_prints_its_epochs_then_its_state_once(capsys) -> None:
    done = S.Attempt(name="a", status=S.ATTEMPT_STATUS_COMPLETE, n_epoch=2, accuracy=0.9)
    code = runs.follow(FakeClient(done, epoch(1), epoch(2)), "a", 0)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 3
    assert "epoch 1/2" in lines[0] and "epoch 2/2" in lines[1]
    assert lines[2] == "a complete  accuracy 0.900"


def test_a_status_already_printed_is_not_printed_again(capsys) -> None:
    queued = S.Attempt(name="a", status=S.ATTEMPT_STATUS_QUEUED, n_epoch=1)
    training = S.Attempt(name="a", status=S.ATTEMPT_STATUS_TRAINING, n_epoch=1)
    trained = S.Attempt(name="a", status=S.ATTEMPT_STATUS_TRAINED, n_epoch=1)
    client = FakeClient(queued, training, epoch(1), trained)
    assert runs.follow(client, "a", 0, seen=S.ATTEMPT_STATUS_QUEUED) == 0  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a training" and lines[-1] == "a trained" and len(lines) == 3


def test_watch_of_a_cancelled_attempt_says_so(capsys) -> None:
    cancelled = S.Attempt(name="a", status=S.ATTEMPT_STATUS_CANCELLED, n_epoch=10, current_epoch=1)
    assert runs.follow(FakeClient(cancelled, epoch(1)), "a", 0) == 1  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines()[-1] == "a was cancelled at epoch 1/10"


def test_watch_json_is_one_object_per_event(capsys) -> None:
    queued = S.Attempt(name="a", id=3, status=S.ATTEMPT_STATUS_QUEUED, n_epoch=1)
    failed = S.Attempt(name="a", id=3, status=S.ATTEMPT_STATUS_FAILED, error="boom")
    progress = trainer_service_pb2.TestProgress(done=0, total=5)
    client = FakeClient(queued, epoch(1), progress, failed)
    assert runs.follow(client, "a", 0, as_json=True) == 1  # type: ignore[arg-type]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["snapshot", "epoch", "test_progress", "status"]
    assert events[0]["id"] == 3 and events[0]["status"] == "Queued"
    assert events[1] == {"event": "epoch", "name": "a", **documents.plain(epoch(1))}
    assert events[2] == {"event": "test_progress", "name": "a", "done": 0, "total": 5}
    assert events[3]["status"] == "Failed" and events[3]["error"] == "boom"


def test_ctrl_c_while_following_says_the_attempt_goes_on(capsys) -> None:
    training = S.Attempt(name="a", status=S.ATTEMPT_STATUS_TRAINING, n_epoch=9)
    client = FakeClient(training, epoch(1), epoch(2), KeyboardInterrupt())
    assert runs.follow(client, "a", 0) == 130  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err == (
        "metalearn: stopped watching; a goes on (training). Watch it again: metalearn watch a"
        " --from-epoch 2; stop it: metalearn cancel a\n"
    )


def test_attempts_get_shows_accuracy_and_full_shows_every_epoch(capsys) -> None:
    attempt = S.Attempt(name="a", id=4, status=S.ATTEMPT_STATUS_COMPLETE, n_epoch=2, accuracy=0.5)
    attempt.test_result.accuracy = 0.5
    attempt.training_losses.extend([1.0, 0.5])
    attempt.epochs.extend([epoch(1), epoch(2)])
    runs.print_attempt(attempt, as_json=False, full=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a (id 4)  complete  epochs 2/2  last loss 0.5000  accuracy 0.500"
    assert lines[1].split() == ["EPOCH", "LOSS", "VAL", "LOSS", "VAL", "ACC", "LR", "SECONDS",
                                "SAMPLES/S"]  # fmt: skip
    assert lines[3].split()[:4] == ["2", "0.5000", "0.5000", "0.900"] and len(lines) == 4


def test_no_traceback_on_a_closed_pipe(gateway) -> None:
    with Client(gateway.address, token=gateway.admin_token) as client:
        seed = documents.attempt_from_json(SEED.read_text())
        for i in range(40):  # ~400 kB of JSON: more than a pipe holds
            seed.name = f"seed-{i}"
            client.create(seed)
    proc = subprocess.Popen(
        [*METALEARN, "attempts", "list", "--json", "--gateway", gateway.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "METALEARN_TOKEN": gateway.admin_token},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"["  # `| head -1`
    proc.stdout.close()
    assert proc.wait(60) == 1
    assert proc.stderr.read() == b""


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_watch_exits_130_and_says_how_to_go_on(gateway, tmp_path) -> None:
    upload_labels(gateway, ["owl", "cat"])
    with Client(gateway.address, token=gateway.admin_token) as client:
        # No trainer here: it stays queued.
        client.train("waiting", lenet_command(label_names=["owl", "cat"]))
    proc = subprocess.Popen(
        [*METALEARN, "watch", "waiting", "--gateway", gateway.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "METALEARN_TOKEN": gateway.admin_token},
        # Ctrl-C as a terminal delivers it, however the tests were started: a suite run
        # as a shell's background job inherits SIGINT ignored, and so would the CLI.
        preexec_fn=_interruptible,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == "waiting queued\n"  # the snapshot: it is watching
    proc.send_signal(signal.SIGINT)
    # Generous: a loaded machine may take a while to end the process and its channel.
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    # It says the state it printed last: queued, unless the session's gateway changed the
    # attempt meanwhile (then that change was printed on stdout first).
    state = ["waiting queued", *out.splitlines()][-1].removeprefix("waiting ").split()[0]
    assert err == (
        f"metalearn: stopped watching; waiting goes on ({state}). Watch it again: metalearn"
        " watch waiting --from-epoch 0; stop it: metalearn cancel waiting\n"
    )


def test_follow_shows_each_prognosis_and_list_has_a_column(capsys) -> None:
    training = S.Attempt(name="a", status=S.ATTEMPT_STATUS_TRAINING, n_epoch=4)
    p = S.Prognosis(epoch=1, predicted=True, final_val_accuracy=0.91, model_version=2,
                    final_val_accuracy_low=0.85, final_val_accuracy_high=0.95)  # fmt: skip
    chance = S.Prognosis(epoch=2, hopeless=True, hopeless_reason="at chance since epoch 1",
                         note="no curve model fitted yet")  # fmt: skip
    chance.flags.add(kind=S.CURVE_FLAG_KIND_AT_CHANCE, since_epoch=1)
    done = S.Attempt(name="a", status=S.ATTEMPT_STATUS_PRUNED, n_epoch=4, error="hopeless")
    client = FakeClient(training, epoch(1), p, epoch(2), chance, done)
    runs.follow(client, "a", 0, seen=S.ATTEMPT_STATUS_TRAINING)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "  prognosis after epoch 1: final val accuracy 0.910 (80% 0.850-0.950, curve model v2)"
    )
    assert lines[3] == (
        "  prognosis after epoch 2: no curve model fitted yet; at chance since"
        " epoch 1; HOPELESS: at chance since epoch 1"
    )
    assert runs.prognosis_short(chance) == "at-chance hopeless"
    assert runs.prognosis_short(p) == "->0.910" and runs.prognosis_short(None) == "-"
    assert runs.prognosis_short(S.Prognosis(epoch=3, note="no curve model fitted yet")) == "-"


def test_follow_prints_a_prognosis_when_it_says_something_new(capsys) -> None:
    training = S.Attempt(name="a", status=S.ATTEMPT_STATUS_TRAINING, n_epoch=4)
    waiting = [S.Prognosis(epoch=n, note="no curve model fitted yet") for n in (1, 2, 3)]
    p = S.Prognosis(epoch=4, predicted=True, final_val_accuracy=0.91, model_version=1,
                    final_val_accuracy_low=0.85, final_val_accuracy_high=0.95)  # fmt: skip
    done = S.Attempt(name="a", status=S.ATTEMPT_STATUS_COMPLETE, n_epoch=4)
    events = [training]
    for n, said in enumerate([*waiting, p], start=1):
        events += [epoch(n), said]
    runs.follow(FakeClient(*events, done), "a", 0)  # type: ignore[arg-type]
    said = [line for line in capsys.readouterr().out.splitlines() if "prognosis" in line]
    assert said == [
        "  prognosis after epoch 1: no curve model fitted yet",
        "  prognosis after epoch 4: final val accuracy 0.910 (80% 0.850-0.950, curve model v1)",
    ]
    runs.follow(FakeClient(training, epoch(1), p, done), "a", 0, as_json=True)  # type: ignore[arg-type]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[2]["event"] == "prognosis" and events[2]["final_val_accuracy"] == 0.91
