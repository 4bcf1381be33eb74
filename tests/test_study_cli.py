"""`metalearn study ...` and `Client`'s study methods, in-process against the session's
gateway (no trainers: trials stay queued), the live table from a fake client, and the
plots from a made-up study. A study run to its end with real trainers is the slow test
at the bottom."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from metalearn import Client
from metalearn.client import InvalidRequest, NotFoundError
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as pb
from metalearn.views import studies as study_views
from tests.harness import GatewayThread, upload_labels
from tests.test_cli import run
from tests.test_studies_live import live, tiny_study
from tests.trainer_harness import lenet_command, lenet_doc

__all__ = ["live"]  # a module-scoped fixture of test_studies_live, used by the slow test

SPACE = [
    {"path": "optimizer.lr", "float": {"low": 1e-4, "high": 0.1, "log": True}},
    {"path": "batch_size", "int": {"low": 16, "high": 64, "step": 16}},
]


def study_file(tmp_path: Path, **changes: Any) -> str:
    """A study file whose base_command is the path of a command file beside it."""
    (tmp_path / "lenet.json").write_text(json.dumps({**lenet_doc(), "n_epoch": 2}))
    doc = {"name": "s", "base_command": "lenet.json", "search_space": SPACE, "n_trials": 4,
           "max_parallel": 2, "seed": 1, **changes}  # fmt: skip
    path = tmp_path / "study.json"
    path.write_text(json.dumps(doc))
    return str(path)


def wait_queued(gateway: GatewayThread, name: str, count: int) -> pb.Study:
    with Client(gateway.address, token=gateway.admin_token) as client:
        deadline = time.monotonic() + 20
        while True:
            study = client.study(name)
            if sum(bool(t.attempt_id) for t in study.trials) >= count:
                return study
            assert time.monotonic() < deadline, study
            time.sleep(0.1)


@pytest.fixture()
def labelled(gateway: GatewayThread) -> GatewayThread:
    upload_labels(gateway, lenet_command().label_names)
    return gateway


def test_create_show_list_stop_delete(labelled, capsys, tmp_path) -> None:
    gateway = labelled
    code, out, err = run(gateway, capsys, "study", "create", "--file", study_file(tmp_path))
    assert code == 0, err
    assert out == ("s (id 1) running: 4 trials, at most 2 at once. Follow it: metalearn study"
                   " watch s\n")  # fmt: skip
    wait_queued(gateway, "s", 2)

    code, out, _ = run(gateway, capsys, "study", "show", "s")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("s (id 1)  running  trials 2/4 (2 running)  tpe")
    assert lines[1].split() == ["TRIAL", "ATTEMPT", "STATE", "PARAMS", "EPOCHS", "VALUE"]
    assert [line.split()[:3] for line in lines[2:4]] == [["0", "s-0", "running"],
                                                         ["1", "s-1", "running"]]  # fmt: skip
    assert "lr=" in lines[2] and "batch_size=" in lines[2] and lines[2].split()[-2:] == ["0", "-"]
    assert lines[4:] == ["no trial has completed yet"]

    code, out, _ = run(gateway, capsys, "study", "show", "s", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["id"] == 1 and doc["state"] == "Running"
    assert doc["best_trial"] is None and doc["best_command"] is None
    assert doc["base_command"]["n_epoch"] == 2 and doc["trials_made"] == 2
    trial = doc["trials"][0]
    assert trial["value"] is None and trial["attempt_name"] == "s-0"
    assert isinstance(trial["params"]["batch_size"], int) and trial["attempt_id"] >= 1
    assert doc["search_space"][1]["int"] == {"low": 16, "high": 64, "step": 16, "log": False}
    # What `show --json` prints is a study file again (output-only fields are ignored).
    copy = tmp_path / "copy.json"
    copy.write_text(out)
    code, out, err = run(gateway, capsys, "study", "create", "--file", str(copy), "--name", "t",
                         "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["name"] == "t" and json.loads(out)["trials_made"] == 0

    code, out, _ = run(gateway, capsys, "study", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "TRIALS", "BEST", "CREATED", "OWNER"]
    # No trial has finished: no best yet.
    assert [line.split()[:3] + line.split()[4:5] for line in lines[1:]] == [
        ["2", "t", "running", "-"], ["1", "s", "running", "-"]]  # fmt: skip
    code, out, _ = run(gateway, capsys, "study", "list", "--json")
    listed = json.loads(out)
    assert [s["name"] for s in listed] == ["t", "s"] and "trials" not in listed[0]

    code, _, err = run(gateway, capsys, "study", "delete", "s")
    assert code == 1 and err.startswith("metalearn: FAILED_PRECONDITION") and "stop it" in err
    code, out, _ = run(gateway, capsys, "study", "stop", "t")
    assert code == 0 and out.startswith("t ")
    code, out, _ = run(gateway, capsys, "study", "stop", "s", "--cancel-running", "--json")
    stopped = json.loads(out)
    assert stopped["state"] == "Done" and stopped["stop_reason"].startswith("stopped")
    assert [t["state"] for t in stopped["trials"]] == ["Failed"] * 2
    # A finished study: its table once, then no best (exit status 1).
    code, out, _ = run(gateway, capsys, "study", "watch", "s")
    lines = out.splitlines()
    assert code == 1 and lines[0].split() == ["TRIAL", "PARAMS", "EPOCHS", "VALUE", "STATE", "BEST"]
    assert [line.split()[-2:] for line in lines[1:3]] == [["failed", "-"]] * 2
    assert lines[3].startswith("study s done (stopped by ") and lines[3].endswith("2/4 trials made")
    assert lines[4:] == ["no trial has completed yet"]
    code, out, _ = run(gateway, capsys, "study", "plot", "s", "-o", str(tmp_path / "s.png"))
    assert code == 1 and not (tmp_path / "s.png").exists()

    code, out, _ = run(gateway, capsys, "study", "delete", "s", "--json")
    assert code == 0 and json.loads(out) == {"deleted": "s"}
    code, _, err = run(gateway, capsys, "study", "show", "s")
    assert code == 1 and err.startswith("metalearn: NOT_FOUND")
    with Client(gateway.address, token=gateway.admin_token) as client:
        assert client.get("s-0").tags["study"] == "s"  # its trials stay as attempts


def test_mistakes_are_one_line(labelled, capsys, tmp_path) -> None:
    gateway = labelled
    code, _, err = run(gateway, capsys, "study", "create", "--file",
                       study_file(tmp_path, n_trial=3))  # fmt: skip
    assert code == 1 and err.count("\n") == 1
    assert 'unknown field "n_trial" in the document; did you mean "n_trials"?' in err
    code, _, err = run(gateway, capsys, "study", "create", "--file",
                       study_file(tmp_path, base_command="nowhere.json"))  # fmt: skip
    assert code == 1 and err.startswith("metalearn: cannot read ") and "nowhere.json" in err
    inside = [*SPACE, {"path": "optimizer", "categorical": {"values": [{"name": "SGD", "lr": 1}]}}]
    code, _, err = run(gateway, capsys, "study", "create", "--file",
                       study_file(tmp_path, search_space=inside))  # fmt: skip
    assert code == 1 and err.startswith("metalearn: INVALID_ARGUMENT: study.search_space: ")
    assert "'optimizer.lr' lies inside 'optimizer'" in err
    code, _, err = run(gateway, capsys, "study", "watch", "nope")
    assert code == 1 and err.startswith("metalearn: NOT_FOUND")


def test_the_client_creates_from_a_dict_and_lists_every_page(labelled) -> None:
    base = json_format.MessageToDict(lenet_command(n_epoch=1), preserving_proto_field_name=True)
    with Client(labelled.address, token=labelled.admin_token) as client:
        for name in ("c1", "c2", "c3"):
            study = client.create_study({"name": name, "base_command": base,
                                         "search_space": SPACE, "n_trials": 1})  # fmt: skip
            assert study.name == name and study.state == pb.STUDY_STATE_RUNNING
        assert [s.name for s in client.studies()] == ["c3", "c2", "c1"]
        with pytest.raises(InvalidRequest, match='did you mean "search_space"'):
            client.create_study({"name": "x", "search_spaces": []})
        with pytest.raises(InvalidRequest) as refused:
            client.create_study({"name": "x", "base_command": base, "n_trials": 1})
        assert "study.search_space" in refused.value.violations
        assert client.stop_study("c1", cancel_running=True).state == pb.STUDY_STATE_DONE
        client.delete_study("c1")
        with pytest.raises(NotFoundError):
            client.study("c1")


def made_up_study() -> tuple[pb.Study, dict[int, list[attempt_pb2.EpochMetrics]]]:
    """Three finished trials and a running one, with their epochs."""
    study = pb.Study(name="m", n_trials=5, trials_made=4, state=pb.STUDY_STATE_RUNNING)
    for param in [*SPACE, {"path": "optimizer.name",
                           "categorical": {"values": ["Adam", {"name": "SGD"}]}}]:  # fmt: skip
        study.search_space.append(json_format.ParseDict(param, pb.SearchParameter()))
    epochs: dict[int, list[attempt_pb2.EpochMetrics]] = {}
    for k, (lr, value, state) in enumerate([(0.01, 0.8, 2), (0.001, 0.9, 2), (0.05, math.nan, 3),
                                            (0.002, math.nan, 1)]):  # fmt: skip
        trial = pb.Trial(number=k, attempt_name=f"m-{k}", attempt_id=k + 1, state=state,  # type: ignore[arg-type]
                         value=value, epochs=2)  # fmt: skip
        choice = "Adam" if k % 2 else {"name": "SGD"}
        trial.params.update({"optimizer.lr": lr, "batch_size": 16 * (k + 1),
                             "optimizer.name": choice})  # fmt: skip
        study.trials.append(trial)
        epochs[k] = [attempt_pb2.EpochMetrics(epoch=e, val_accuracy=0.4 * e) for e in (1, 2)]
    study.best_trial.CopyFrom(study.trials[1])
    return study, epochs


def test_the_plot_rebuilds_the_study_in_optuna(tmp_path) -> None:
    from metalearn.views import study_plots  # as the CLI does: only plotting needs Optuna

    study, epochs = made_up_study()
    rebuilt = study_plots.rebuild(study, epochs)
    trials = rebuilt.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "RUNNING"]
    assert trials[1].value == 0.9 and trials[1].params["batch_size"] == 32
    assert trials[0].params["optimizer.name"] == '{"name": "SGD"}'
    assert trials[1].intermediate_values == {1: 0.4, 2: 0.8}
    assert rebuilt.best_trial.number == 1
    path = study_plots.plot_study(study, epochs, tmp_path / "sub" / "m.png")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000


class FakeClient:
    """Streams the given WatchStudy events; an exception is raised where it stands."""

    def __init__(self, *events: pb.WatchStudyResponse | BaseException) -> None:
        self.events = list(events)

    def watch_study(self, name: str) -> Iterator[pb.WatchStudyResponse]:
        for event in self.events:
            if isinstance(event, BaseException):
                raise event
            yield event


def stream(running: pb.Study, done: pb.Study, over: pb.Study) -> list[pb.WatchStudyResponse]:
    """What WatchStudy sends for the three stages: a snapshot, an epoch, the trial
    finished, the new best, the finished study."""
    epoch = pb.TrialEpoch(trial=0)
    epoch.epoch.epoch = 2
    return [
        pb.WatchStudyResponse(snapshot=running),
        pb.WatchStudyResponse(trial_epoch=epoch),
        pb.WatchStudyResponse(trial_finished=done.trials[0]),
        pb.WatchStudyResponse(new_best=done.trials[0]),
        pb.WatchStudyResponse(study_finished=over),
    ]


def stages() -> list[pb.Study]:
    """A study seen three times: a trial running, then done, then the study done."""
    study, _ = made_up_study()
    del study.trials[1:]
    study.ClearField("best_trial")
    running = pb.Study()
    running.CopyFrom(study)
    running.trials[0].state = pb.TRIAL_STATE_RUNNING
    running.trials[0].value = math.nan
    running.trials[0].epochs = 1
    done = pb.Study()
    done.CopyFrom(study)
    done.best_trial.CopyFrom(done.trials[0])
    over = pb.Study()
    over.CopyFrom(done)
    over.state = pb.STUDY_STATE_DONE
    over.stop_reason = "n_trials reached"
    return [running, done, over]


def test_following_prints_each_change_once(capsys) -> None:
    running, done, over = stages()
    assert study_views.follow_study(FakeClient(*stream(running, done, over)), "m") == 0  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TRIAL", "PARAMS", "EPOCHS", "VALUE", "STATE", "BEST"]
    assert lines[1].split() == ["0", "lr=0.01", "batch_size=16", "optimizer=SGD", "1", "-",
                                "running", "-"]  # fmt: skip
    assert lines[2] == "study m running: 4/5 trials made"
    assert lines[3].split()[-4:] == ["2", "0.8000", "complete", "0.8000"]
    assert lines[4] == "study m done (n_trials reached): 4/5 trials made"
    assert lines[5:] == ["best: trial 0 (m-0), best val accuracy 0.8000"]


def test_following_as_json_is_one_object_per_change(capsys) -> None:
    running, done, over = stages()
    client = FakeClient(*stream(running, done, over))
    assert study_views.follow_study(client, "m", as_json=True) == 0  # type: ignore[arg-type]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # The epoch, then the trial's end, each one "trial" change.
    assert [e["event"] for e in events] == ["snapshot", "trial", "trial", "study"]
    assert events[1]["epochs"] == 2 and events[1]["value"] is None
    assert events[0]["trials"][0]["value"] is None and events[0]["trials"][0]["epochs"] == 1
    assert events[2]["value"] == 0.8 and events[2]["best_trial"] == 0
    assert events[2]["params"] == {"optimizer.lr": 0.01, "batch_size": 16,
                                   "optimizer.name": {"name": "SGD"}}  # fmt: skip
    assert events[3]["state"] == "Done" and events[3]["best_trial"]["number"] == 0


def test_ctrl_c_while_following_says_the_study_goes_on(capsys) -> None:
    running, _, _ = stages()
    snapshot = pb.WatchStudyResponse(snapshot=running)
    code = study_views.follow_study(FakeClient(snapshot, KeyboardInterrupt()), "m")  # type: ignore[arg-type]
    assert code == 130
    assert capsys.readouterr().err == (
        "metalearn: stopped following; study m goes on (running, 4/5 trials made). Follow it"
        " again: metalearn study watch m; stop it: metalearn study stop m [--cancel-running]\n"
    )


def test_a_terminal_gets_the_table_redrawn_in_place(capsys) -> None:
    table = study_views.LiveTable("m", as_json=False, tty=True)
    running, done, _ = stages()
    table.show(running)
    table.show(done)
    out = capsys.readouterr().out
    first, second = out.split("\x1b[3F\x1b[J")
    assert first.splitlines()[1].split()[-3:] == ["-", "running", "-"]
    assert second.splitlines()[1].split()[-3:] == ["0.8000", "complete", "0.8000"]
    assert second.splitlines()[2] == ("study m running: 4/5 trials made; best: trial 0 (m-0),"
                                      " best val accuracy 0.8000")  # fmt: skip


@pytest.mark.slow
def test_a_study_followed_to_its_end_then_its_best_command_and_plot(live, capsys, tmp_path):
    gateway = live.gateway
    doc = json_format.MessageToDict(tiny_study("cli", 4), preserving_proto_field_name=True)
    path = tmp_path / "study.json"
    path.write_text(json.dumps(doc))
    code, out, err = run(gateway, capsys, "study", "create", "--file", str(path), "--follow")
    lines = out.splitlines()
    assert code == 0, err
    assert lines[-1].startswith("best: trial ") and "(cli-" in lines[-1]
    rows = [line.split() for line in lines if line.split()[0].isdigit()]
    assert len(rows) == len({tuple(r) for r in rows})  # each change once
    finals = {int(r[0]): r for r in rows}
    assert sorted(finals) == [0, 1, 2, 3]
    assert all(r[-2] == "complete" and r[-4] == "2" for r in finals.values()), finals
    assert lines[-2].startswith("study cli done")

    code, out, _ = run(gateway, capsys, "study", "show", "cli", "--best-command")
    written = json.loads(out)
    command = json_format.ParseDict(written, attempt_pb2.TrainCommand())
    # As a person writes it: no defaults, whole numbers whole, each layer's name first.
    assert "model_name" not in written and "devices" not in written
    assert isinstance(written["batch_size"], int)
    assert all(next(iter(layer)) == "name" for layer in written["model"]["layers"])
    assert code == 0 and command.n_epoch == 2 and command.batch_size == 64
    best = Client(gateway.address, token=gateway.admin_token).study("cli").best_trial
    assert command.optimizer["lr"] == pytest.approx(best.params["optimizer.lr"])
    png = tmp_path / "cli.png"
    code, out, _ = run(gateway, capsys, "study", "plot", "cli", "-o", str(png), "--json")
    assert code == 0 and json.loads(out) == {"name": "cli", "plot": str(png)}
    assert png.read_bytes().startswith(b"\x89PNG")
