"""`metalearn tasks ...`, `metalearn suggest`, `study create --warm-start` and the warm
start in study views, and `Client`'s task methods.

Most tests render hand-built TaskService replies through a fake client (no gateway).
The live tests at the bottom need the gateway's TaskService (skipped while
gateway/server.py does not list it); the slow one trains with real trainers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from metalearn import Client, cli
from metalearn.cli import study as study_cli
from metalearn.cli import task as task_cli
from metalearn.cli.runs import CliError
from metalearn.client import (
    InvalidRequest,
    MetalearnError,
    NotFoundError,
    UnavailableError,
    task_key,
)
from metalearn.v1 import attempt_pb2, task_pb2
from metalearn.v1 import study_service_pb2 as spb
from metalearn.v1 import task_service_pb2 as pb
from metalearn.views import studies as study_views
from tests.harness import GatewayThread, upload_labels
from tests.trainer_harness import lenet_command, lenet_doc

# The slow test's module-scoped fixture (a fast gateway over the digits, two trainers)
# and study, taken by name: mypy --strict checks this file without following into
# those modules.
_studies_live: Any = importlib.import_module("tests.test_studies_live")
live = _studies_live.live
tiny_study = _studies_live.tiny_study

Capture = pytest.CaptureFixture[str]
DIGITS = [f"digit {i}" for i in range(10)]
FP_A = "a1" * 32
FP_B = "b2" * 32
FP_C = "c3" * 32


def has_task_service() -> bool:
    from gateway.server import SERVICE_NAMES

    return "metalearn.v1.TaskService" in SERVICE_NAMES


needs_service = pytest.mark.skipif(
    not has_task_service(), reason="the gateway does not serve TaskService yet"
)


# Hand-built replies.
def task(
    fingerprint: str = FP_A,
    labels: list[str] | None = None,
    state: int = task_pb2.TASK_STATE_READY,
    attempts: int = 0,
    best: float = 0.0,
    profiled: bool = True,
) -> task_pb2.Task:
    made = task_pb2.Task(
        fingerprint=fingerprint,
        label_names=labels if labels is not None else DIGITS[:3],
        state=state,  # type: ignore[arg-type]
        attempts=attempts,
        best_val_accuracy=best,
    )
    made.create_time.FromSeconds(1_700_000_000)
    if profiled:
        made.profile.features.update(
            {"probe_mean": 0.25, "landmark_1nn": 0.9, "log_images": 6.29, "imbalance": 0.0}
        )
        made.profile.images = 540
        made.profile.classes = len(made.label_names)
        made.profile.input_shape.extend([1, 8, 8])
        made.profile.seconds = 1.5
        made.profile_time.FromSeconds(1_700_000_005)
    return made


def attempt(name: str, accuracies: list[float]) -> attempt_pb2.Attempt:
    made = attempt_pb2.Attempt(name=name, id=len(name), status=attempt_pb2.ATTEMPT_STATUS_TRAINED)
    made.training_commands.CopyFrom(lenet_command())
    made.epochs.extend(
        attempt_pb2.EpochMetrics(epoch=i + 1, val_accuracy=a) for i, a in enumerate(accuracies)
    )
    return made


def learned(**changes: Any) -> pb.TaskDistance:
    distance = pb.TaskDistance(
        kind="learned", tasks=12, pairs=40, spearman=0.62, standardized_spearman=0.41
    )
    distance.weights.update({"landmark_1nn": 2.5, "log_images": -0.75, "imbalance": 0.1})
    distance.fit_time.FromSeconds(1_700_000_100)
    for key, value in changes.items():
        setattr(distance, key, value)
    return distance


def similar_reply() -> pb.FindSimilarTasksResponse:
    reply = pb.FindSimilarTasksResponse(target=task(labels=DIGITS[3:6]), distance=learned())
    near = reply.tasks.add(task=task(FP_B, DIGITS[:3], attempts=4, best=0.97), distance=0.4123)
    near.best_attempts.extend([attempt("lenet-a", [0.5, 0.97]), attempt("lenet-b", [0.9])])
    # No epochs sent: the first (the task's best) takes the task's best; others "-".
    far = reply.tasks.add(task=task(FP_C, DIGITS, attempts=2, best=0.8), distance=1.5)
    far.best_attempts.extend([attempt_pb2.Attempt(name="far-1"), attempt_pb2.Attempt(name="far-2")])
    return reply


def suggestion(fallback: bool = False) -> pb.SuggestCommandResponse:
    command = lenet_command(label_names=DIGITS[3:6], n_epoch=2)
    reply = pb.SuggestCommandResponse(
        command=command,
        reason="the best by quantile across 2 similar tasks" if not fallback else "no history",
        fallback=fallback,
        task=task(labels=DIGITS[3:6]),
        ranking=pb.SUGGESTION_RANKING_DEFAULT if fallback else pb.SUGGESTION_RANKING_STATIC,
        score=0.0 if fallback else 0.9,
    )
    if not fallback:
        reply.distance.CopyFrom(learned())
        reply.sources.add(
            task=task(FP_B, DIGITS[:3]), distance=0.41, weight=0.7, attempt_id=3,
            attempt_name="lenet-a", val_accuracy=0.97, quantile=1.0,
            provenance=attempt_pb2.PROVENANCE_TRAINED, owner="alice",
        )  # fmt: skip
        reply.sources.add(
            task=task(FP_C, DIGITS), distance=1.5, weight=0.3, attempt_id=9,
            attempt_name="wide-7", val_accuracy=0.8, quantile=0.75,
            provenance=attempt_pb2.PROVENANCE_IMPORTED, owner="lab-b",
        )  # fmt: skip
        reply.trusted_owners[:] = ["lab-b", "me"]
    return reply


class FakeClient:
    """What the task commands call; records calls, raises an exception it is given."""

    def __init__(self, **replies: Any) -> None:
        self.replies = replies
        self.calls: list[tuple[str, Any]] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _answer(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((name, (args, kwargs)))
        reply = self.replies[name]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def tasks(self, all_versions: bool = False) -> Iterator[task_pb2.Task]:
        yield from self._answer("tasks")

    def profile_task(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("profile_task", *args, **kwargs)

    def similar_tasks(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("similar_tasks", *args, **kwargs)

    def suggest_command(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("suggest_command", *args, **kwargs)

    def fit_task_distance(self) -> Any:
        return self._answer("fit_task_distance")

    def get(self, name: str, **kwargs: Any) -> Any:
        return self._answer("get", name)

    def train(self, name: str, command: attempt_pb2.TrainCommand) -> Any:
        self.calls.append(("train", (name, command)))
        return attempt_pb2.Attempt(name=name, id=7, status=attempt_pb2.ATTEMPT_STATUS_QUEUED)

    def watch(self, name: str, from_epoch: int = 0) -> Iterator[Any]:
        yield attempt_pb2.Attempt(name=name, id=7, status=attempt_pb2.ATTEMPT_STATUS_TRAINING)
        yield attempt_pb2.EpochMetrics(epoch=1, loss=0.5, val_accuracy=0.9)
        yield attempt_pb2.Attempt(name=name, id=7, status=attempt_pb2.ATTEMPT_STATUS_TRAINED)

    def create_study(self, study: spb.Study) -> spb.Study:
        self.calls.append(("create_study", study))
        created = spb.Study()
        created.CopyFrom(study)
        created.id, created.state = 1, spb.STUDY_STATE_RUNNING
        return created

    def study(self, name: str) -> Any:
        return self._answer("study", name)


def run(gateway: GatewayThread, capsys: Capture, *args: str) -> tuple[int, str, str]:
    """`metalearn ARGS` in-process against a gateway (as test_cli.run)."""
    code = cli.main([*args, "--gateway", gateway.address, "--token", gateway.admin_token])
    out, err = capsys.readouterr()
    return code, out, err


def parsers(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, Any]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def cli_run(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, fake: FakeClient, *args: str
) -> tuple[int, str, str]:
    """`metalearn ARGS` in-process against `fake`."""
    for module in (task_cli, study_cli):
        monkeypatch.setattr(module, "client_for", lambda _args: fake)
    code = cli.main([*args, "--gateway", "127.0.0.1:1"])
    out, err = capsys.readouterr()
    return code, out, err


def rpc_error(code: str) -> MetalearnError:
    cls = UnavailableError if code == "DEADLINE_EXCEEDED" else MetalearnError
    return cls(code, "boom")


# The command line.
def test_every_new_command_has_help_and_a_description() -> None:
    found = dict(parsers(cli.build_parser(), "metalearn"))
    for path in ("tasks", "tasks list", "tasks profile", "tasks similar", "tasks fit", "suggest"):
        parser = found[f"metalearn {path}"]
        assert parser.description, path
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help != argparse.SUPPRESS, (path, action.dest)
        if path != "tasks":
            assert "--json" in parser.format_help()
    assert "(default: 5)" in found["metalearn suggest"].format_help()
    assert "--warm-start" in found["metalearn study create"].format_help()


def test_arguments_parse() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["tasks", "similar", "--labels", "digit 0", "digit 1", "--limit",
                              "3", "--attempts", "1", "--json"])  # fmt: skip
    assert args.func is task_cli.cmd_similar and args.labels == ["digit 0", "digit 1"]
    assert (args.limit, args.attempts, args.json, args.fingerprint) == (3, 1, True, None)
    args = parser.parse_args(["suggest", "--command", "c.json", "--train", "x", "--follow"])
    assert args.func is task_cli.cmd_suggest and args.command_file == "c.json"
    assert (args.train, args.follow, args.neighbours, args.labels) == ("x", True, 5, None)
    args = parser.parse_args(["tasks", "fit"])
    assert args.func is task_cli.cmd_fit and args.top == 10
    args = parser.parse_args(["tasks", "profile", "--labels", "a", "--no-wait"])
    assert args.func is task_cli.cmd_profile and args.no_wait
    assert parser.parse_args(["tasks", "list", "--json"]).func is task_cli.cmd_list
    for wrong in (["tasks", "profile"],  # a target is required
                  ["tasks", "profile", "--labels", "a", "--command", "c.json"],  # one only
                  ["suggest", "--fingerprint", "abc"],  # similar only
                  ["tasks", "similar", "--labels", "a", "--limit", "x"]):  # fmt: skip
        with pytest.raises(SystemExit) as refused:
            parser.parse_args(wrong)
        assert refused.value.code == 2


def test_the_warm_start_flag() -> None:
    flag = study_cli.warm_start_flag
    assert flag("similar") == spb.WarmStart(similar_tasks=5)
    assert flag("similar:3") == spb.WarmStart(similar_tasks=3)
    assert flag("Similar: 12") == spb.WarmStart(similar_tasks=12)
    assert flag("study:a,b") == spb.WarmStart(studies=["a", "b"])
    assert flag("studies:a") == spb.WarmStart(studies=["a"])
    for wrong in ("similar:0", "similar:x", "similar:-2", "study:", "study", "nearby:3", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            flag(wrong)
    args = cli.build_parser().parse_args(
        ["study", "create", "--file", "s.json", "--warm-start", "similar:2", "--zero-shot", "-1"]
    )
    assert args.warm_start == spb.WarmStart(similar_tasks=2) and args.zero_shot == -1


SPACE = [{"path": "optimizer.lr", "float": {"low": 1e-4, "high": 0.1}}]


def write_study(tmp_path: Path, filename: str = "study.json", **changes: Any) -> str:
    (tmp_path / "lenet.json").write_text(json.dumps(lenet_doc()))
    doc = {"name": "s", "base_command": "lenet.json", "n_trials": 4, "search_space": SPACE,
           **changes}  # fmt: skip
    path = tmp_path / filename
    path.write_text(json.dumps(doc))
    return str(path)


def test_study_create_sends_the_warm_start_of_the_flag_or_the_file(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, tmp_path: Path
) -> None:
    fake = FakeClient()
    plain = write_study(tmp_path)
    code, out, err = cli_run(monkeypatch, capsys, fake, "study", "create", "--file", plain,
                             "--warm-start", "similar:3", "--zero-shot", "2")  # fmt: skip
    assert code == 0, err
    sent = fake.calls[-1][1]
    assert sent.warm_start == spb.WarmStart(similar_tasks=3, zero_shot_trials=2)
    lines = out.splitlines()
    assert lines[0].startswith("s (id 1) running: 4 trials")
    assert lines[1] == (
        "warm start from the 3 most similar tasks, at most 2 zero-shot trials: not started yet"
    )
    # A `warm_start` key in the file is proto JSON; the flag replaces it.
    warm = write_study(
        tmp_path, "warm.json", warm_start={"studies": ["old"], "zero_shot_trials": -1}
    )
    code, out, _ = cli_run(monkeypatch, capsys, fake, "study", "create", "--file", warm, "--json")
    assert code == 0 and fake.calls[-1][1].warm_start == spb.WarmStart(
        studies=["old"], zero_shot_trials=-1
    )
    doc = json.loads(out)
    assert doc["warm_start"] == {"similar_tasks": 0, "studies": ["old"], "zero_shot_trials": -1}
    assert doc["warm_start_report"] is None
    code, _, _ = cli_run(monkeypatch, capsys, fake, "study", "create", "--file", warm,
                         "--warm-start", "similar")  # fmt: skip
    assert code == 0 and fake.calls[-1][1].warm_start == spb.WarmStart(similar_tasks=5)
    # Cold: no warm start sent, and null in JSON.
    code, out, _ = cli_run(monkeypatch, capsys, fake, "study", "create", "--file", plain, "--json")
    assert not fake.calls[-1][1].HasField("warm_start") and json.loads(out)["warm_start"] is None
    code, _, err = cli_run(monkeypatch, capsys, fake, "study", "create", "--file", plain,
                           "--zero-shot", "3")  # fmt: skip
    assert code == 1 and err == (
        "metalearn: --zero-shot needs a warm start (--warm-start, or warm_start in the file)\n"
    )
    with pytest.raises(CliError):
        study_cli.apply_warm_start(spb.Study(), None, 1)


# Rendering.
def test_tasks_list_table_and_json(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    pending = task(FP_C, [f"a rather long label {i}" for i in range(5)],
                   task_pb2.TASK_STATE_PENDING, profiled=False)  # fmt: skip
    failed = task(FP_B, ["x"], task_pb2.TASK_STATE_FAILED, profiled=False)
    failed.error = "images of different sizes: resize them\nmore"
    failed.source = task_pb2.TASK_SOURCE_DECLARED
    failed.dataset, failed.owner = "cifar10", "alice"
    fake = FakeClient(tasks=[task(attempts=4, best=0.975), pending, failed])
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "list")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["FINGERPRINT", "LABELS", "STATE", "IMAGES", "CLASSES", "INPUT",
                                "ATTEMPTS", "BEST", "VAL", "FROM"]  # fmt: skip
    assert lines[1].split() == ["a1a1a1a1a1a1", "digit", "0,", "digit", "1,", "digit", "2",
                                "ready", "540", "3", "1x8x8", "4", "0.9750", "images"]  # fmt: skip
    assert lines[2].startswith("c3c3c3c3c3c3  a rather long label 0, +4 more")
    assert lines[2].split()[-7:] == ["pending", "-", "5", "-", "0", "-", "images"]
    assert lines[3].split()[-3:] == ["declared", "cifar10", "(alice)"]
    assert lines[4] == "  task b2b2b2b2b2b2: images of different sizes: resize them"
    assert len({len(line) for line in lines[:4]}) == 1  # columns line up

    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "list", "--json")
    docs = json.loads(out)
    assert [d["fingerprint"] for d in docs] == [FP_A, FP_C, FP_B]
    ready = docs[0]
    assert ready["state"] == "Ready" and ready["best_val_accuracy"] == 0.975
    assert ready["profile"]["images"] == 540 and isinstance(ready["profile"]["images"], int)
    assert ready["profile"]["input_shape"] == [1, 8, 8]
    assert ready["profile"]["features"]["imbalance"] == 0.0  # zero values present
    assert ready["image_ops"] == [] and ready["error"] == ""
    assert docs[1]["profile"] is None and docs[1]["best_val_accuracy"] is None
    assert docs[1]["profile_time"] is None and docs[1]["attempts"] == 0


def test_tasks_profile_prints_the_features_in_order(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    fake = FakeClient(profile_task=task())
    ops = '[{"resize": {"size": [8, 8]}}, {"convert": {"mode": "L"}}]'
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "profile", "--labels",
                           "digit 0", "digit 1", "digit 2", "--image-ops", ops)  # fmt: skip
    assert code == 0
    (labels, ops), kwargs = fake.calls[0][1]
    assert labels == DIGITS[:3] and kwargs == {"wait": True}
    assert [op.WhichOneof("op") for op in ops] == ["resize", "convert"]
    lines = out.splitlines()
    assert lines[0] == (
        "task digit 0, digit 1, digit 2 (a1a1a1a1a1a1, ready: 540 images, 3 classes, input 1x8x8)"
    )
    assert lines[1] == f"  fingerprint  {FP_A}"
    assert lines[4] == "  profiled in  1.5 s"
    assert [line.split() for line in lines[5:]] == [
        ["FEATURE", "VALUE"], ["log_images", "6.2900"], ["imbalance", "0.0000"],
        ["landmark_1nn", "0.9000"], ["probe_mean", "0.2500"],
    ]  # fmt: skip
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "profile", "--labels", "a",
                           "--json", "--no-wait")  # fmt: skip
    assert code == 0 and json.loads(out)["profile"]["features"]["landmark_1nn"] == 0.9
    assert fake.calls[-1][1][1] == {"wait": False}


def test_tasks_profile_from_a_command_file(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, tmp_path: Path
) -> None:
    command = tmp_path / "c.json"
    command.write_text(json.dumps({**lenet_doc(), "image_ops": [{"grayscale": {}}]}))
    fake = FakeClient(profile_task=task(state=task_pb2.TASK_STATE_PENDING, profiled=False))
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "profile", "--command",
                           str(command), "--no-wait")  # fmt: skip
    (labels, ops), _ = fake.calls[0][1]
    assert labels == list(lenet_command().label_names) and len(ops) == 1
    assert code == 0 and out.splitlines()[-1] == (
        "queued for a trainer to profile; run this again without --no-wait to wait for it"
    )
    # --image-ops replaces the command's; waited for in vain, it says so.
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "profile", "--command",
                           str(command), "--image-ops", "[]")  # fmt: skip
    assert fake.calls[-1][1][0][1] == []
    assert code == 0 and out.splitlines()[-1] == (
        "not profiled yet: no trainer has profiled it in time (is one running?); run this"
        " again to wait longer"
    )


def test_task_mistakes_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, tmp_path: Path
) -> None:
    failed = task(state=task_pb2.TASK_STATE_FAILED, profiled=False)
    failed.error = "images of different sizes"
    cases = [
        (FakeClient(profile_task=failed), ["tasks", "profile", "--labels", "a"], None),
        (FakeClient(), ["tasks", "profile", "--labels", "a", "--image-ops", "{}"],
         "metalearn: --image-ops must be a JSON list, e.g. [{\"resize\": {\"size\": [32, 32]}}]"),
        (FakeClient(), ["tasks", "profile", "--labels", "a", "--image-ops", '[{"rezise": {}}]'],
         'metalearn: --image-ops: unknown field "rezise" in image_ops[0]; did you mean'
         ' "resize"?'),
        (FakeClient(), ["tasks", "profile", "--labels", "a", "--image-ops", "nowhere.json"],
         "metalearn: --image-ops: 'nowhere.json' is neither a JSON list nor a file"),
        (FakeClient(profile_task=rpc_error("DEADLINE_EXCEEDED")),
         ["tasks", "profile", "--labels", "a"],
         "metalearn: not profiled yet: no trainer has profiled it in time (is one running?);"
         " run this again to wait longer"),
        (FakeClient(tasks=rpc_error("UNIMPLEMENTED")), ["tasks", "list"],
         "metalearn: the gateway at 127.0.0.1:1 has no TaskService (it is older than this"
         " client): upgrade it"),
        (FakeClient(suggest_command=rpc_error("FAILED_PRECONDITION")),
         ["suggest", "--labels", "a"], "metalearn: FAILED_PRECONDITION: boom"),
        (FakeClient(), ["suggest", "--labels", "a", "--follow"],
         "metalearn: --follow needs --train NAME"),
        (FakeClient(tasks=[task(FP_A), task("a1" + "f" * 62)]),
         ["tasks", "similar", "--fingerprint", "A1"],
         "metalearn: 2 tasks' fingerprints start with 'a1': give more of it"),
        (FakeClient(tasks=[task(FP_A)]), ["tasks", "similar", "--fingerprint", "ff"],
         "metalearn: no task's fingerprint starts with 'ff' (see metalearn tasks list)"),
    ]  # fmt: skip
    for fake, args, said in cases:
        code, out, err = cli_run(monkeypatch, capsys, fake, *args)
        assert code == 1, args
        if said is None:  # the task's state and error, on stdout
            assert out.splitlines()[-1] == "  error: images of different sizes" and not err
        else:
            assert err.startswith(said) and err.count("\n") == 1, err


def test_tasks_similar_ranks_with_each_tasks_best_attempts(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    fake = FakeClient(similar_tasks=similar_reply(), get=NotFoundError("NOT_FOUND", "gone"))
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "similar", "--labels",
                           *DIGITS[3:6], "--limit", "2", "--attempts", "2")  # fmt: skip
    assert code == 0
    assert fake.calls[0][1] == (
        (DIGITS[3:6],),
        {"limit": 2, "attempts_per_task": 2, "image_ops": []},
    )
    lines = out.splitlines()
    assert lines[0].startswith("target: digit 3, digit 4, digit 5 (a1a1a1a1a1a1, ready:")
    assert lines[1] == (
        "distance: learned, fitted on 12 tasks and 40 pairs (spearman with transfer regret"
        " 0.620; standardized 0.410)"
    )
    assert lines[2].split() == ["RANK", "TASK", "LABELS", "DISTANCE", "ATTEMPTS", "ATTEMPT",
                                "VAL", "ACC"]  # fmt: skip
    assert lines[3].split()[:2] == ["1", "b2b2b2b2b2b2"]
    assert lines[3].split()[-4:] == ["0.4123", "4", "lenet-a", "0.9700"]
    assert lines[4].split() == ["lenet-b", "0.9000"]  # under its task's row
    assert lines[5].split()[-4:] == ["1.5000", "2", "far-1", "0.8000"]
    assert "digit 0, digit 1, +8 more" in lines[5]
    assert lines[6].split() == ["far-2", "-"]
    assert len({len(line) for line in lines[2:]}) == 1

    # A stored task by its prefix, as `tasks list` shows it.
    reply = similar_reply()
    reply.distance.CopyFrom(pb.TaskDistance(kind="standardized", tasks=2, pairs=0))
    del reply.tasks[:]
    fake = FakeClient(tasks=[task(FP_A), task(FP_B)], similar_tasks=reply)
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "similar", "--fingerprint",
                           "b2b2b2b2b2b2")  # fmt: skip
    assert fake.calls[-1][1] == ((), {"fingerprint": FP_B, "limit": 5, "attempts_per_task": 3})
    assert out.splitlines()[1:] == [
        "distance: standardized (every meta-feature z-scored and weighted 1: 2 tasks and 0"
        " pairs are too little history to learn weights from)",
        "no past task with trained attempts to compare it with",
    ]


def test_tasks_similar_json(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    fake = FakeClient(similar_tasks=similar_reply(), get=attempt("far-2", [0.25, 0.5]))
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "similar", "--labels", "a",
                           "--json")  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and set(doc) == {"target", "tasks", "distance"}
    assert doc["target"]["label_names"] == DIGITS[3:6]
    near = doc["tasks"][0]
    assert near["distance"] == 0.4123 and near["task"]["fingerprint"] == FP_B
    assert [a["name"] for a in near["best_attempts"]] == ["lenet-a", "lenet-b"]
    assert [a["best_val_accuracy"] for a in near["best_attempts"]] == [0.97, 0.9]
    assert near["best_attempts"][0]["status"] == "Trained"  # an attempt document
    assert near["best_attempts"][0]["training_commands"]["batch_size"] == 32
    # Sent without epochs: fetched whole for their validation accuracy.
    assert [a["best_val_accuracy"] for a in doc["tasks"][1]["best_attempts"]] == [0.5, 0.5]
    assert [c[1][0] for c in fake.calls if c[0] == "get"] == [("far-1",), ("far-2",)]
    assert doc["distance"]["kind"] == "learned" and doc["distance"]["pairs"] == 40
    assert doc["distance"]["fit_time"].startswith("2023-11-14T")


def test_tasks_fit_shows_the_largest_weights(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    fake = FakeClient(fit_task_distance=learned())
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "fit", "--top", "2")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("distance: learned, fitted on 12 tasks and 40")
    assert lines[0].endswith(" at 2023-11-14 22:15:00")
    assert lines[1] == "weights on the meta-features' z-scores (the 2 largest of 3):"
    assert [line.split() for line in lines[2:]] == [
        ["FEATURE", "WEIGHT"], ["landmark_1nn", "2.5000"], ["log_images", "-0.7500"]
    ]  # fmt: skip
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "fit", "--top", "0")
    assert len(out.splitlines()) == 6
    unfitted = pb.TaskDistance(kind="standardized", spearman=math.nan)
    fake = FakeClient(fit_task_distance=unfitted)
    code, out, _ = cli_run(monkeypatch, capsys, fake, "tasks", "fit", "--json")
    doc = json.loads(out)
    assert code == 0 and doc == {"kind": "standardized", "weights": {}, "tasks": 0, "pairs": 0,
                                 "fit_time": None, "spearman": None,
                                 "standardized_spearman": 0.0}  # fmt: skip


def test_suggest_prints_the_command_why_and_its_sources(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    fake = FakeClient(suggest_command=suggestion())
    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", *DIGITS[3:6],
                           "--neighbours", "2")  # fmt: skip
    assert code == 0 and fake.calls[0][1] == ((DIGITS[3:6], 2), {"image_ops": []})
    lines = out.splitlines()
    assert lines[0] == (
        "suggested command for digit 3, digit 4, digit 5 (task a1a1a1a1a1a1): the best across"
        " past tasks (static portfolio)"
    )
    assert lines[1].startswith("  model 12 layers  optimizer Adam(lr=0.003)  scheduler StepLR(")
    assert lines[1].endswith(")  batch_size 32  n_epoch 2") and "step_size=5" in lines[1]
    assert lines[2] == "why: the best by quantile across 2 similar tasks"
    assert lines[3].startswith("distance: learned")
    assert lines[4].split() == ["TASK", "LABELS", "DISTANCE", "WEIGHT", "ATTEMPT", "VAL", "ACC",
                                "QUANTILE", "FROM"]  # fmt: skip
    # Where each source's numbers come from: trained here, or a trusted owner's import.
    assert lines[5].split()[-6:] == ["0.4100", "0.700", "lenet-a", "0.9700", "1.000", "trained"]
    assert lines[6].split()[-8:] == ["1.5000", "0.300", "wide-7", "0.8000", "0.750",
                                     "imported", "by", "lab-b"]  # fmt: skip
    assert lines[7].startswith("train it: add --train NAME")

    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a", "--json")
    doc = json.loads(out)
    assert set(doc) == {"command", "reason", "fallback", "sources", "task", "distance",
                        "trusted_owners", "ranking", "score"}  # fmt: skip
    assert doc["fallback"] is False and doc["sources"][1]["attempt_id"] == 9
    assert (doc["ranking"], doc["score"]) == ("static", 0.9)
    assert doc["trusted_owners"] == ["lab-b", "me"]
    assert [(s["provenance"], s["owner"]) for s in doc["sources"]] == [
        ("TRAINED", "alice"), ("IMPORTED", "lab-b")
    ]  # fmt: skip
    assert doc["sources"][0]["quantile"] == 1.0 and doc["sources"][0]["task"]["fingerprint"]
    assert doc["command"]["optimizer"] == {"name": "Adam", "lr": 0.003}
    assert isinstance(doc["command"]["model"]["layers"][0]["out_channels"], int)

    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a",
                           "--command-only")  # fmt: skip
    parsed = json_format.ParseDict(json.loads(out), attempt_pb2.TrainCommand())
    assert code == 0 and parsed == suggestion().command  # `train --file` takes it


def test_suggest_says_when_it_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    fake = FakeClient(suggest_command=suggestion(fallback=True))
    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a")
    lines = out.splitlines()
    assert code == 0 and lines[0] == (
        "no history to draw from: metalearn's default command for digit 3, digit 4, digit 5"
        " (a fallback, not learned from past tasks)"
    )
    assert lines[2] == "why: no history" and not any("DISTANCE" in line for line in lines)
    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a", "--json")
    doc = json.loads(out)
    assert doc["fallback"] is True and doc["sources"] == [] and doc["distance"] is None


def test_suggest_train_queues_and_follows_it(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    fake = FakeClient(suggest_command=suggestion(), get=NotFoundError("NOT_FOUND", "no such"))
    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a", "--train",
                           "sugg")  # fmt: skip
    name, command = fake.calls[-1][1]
    assert code == 0 and name == "sugg" and command.model_name == "sugg"
    assert command.label_names == DIGITS[3:6]
    lines = out.splitlines()
    assert lines[-2:] == ["sugg (id 7) queued", "follow it: metalearn watch sugg"]

    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a", "--train",
                           "sugg", "--follow")  # fmt: skip
    lines = out.splitlines()
    assert code == 0 and lines[-4] == "sugg (id 7) queued"
    assert lines[-3] == "sugg training" and "epoch 1/" in lines[-2] and lines[-1] == "sugg trained"

    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a", "--train",
                           "sugg", "--json")  # fmt: skip
    doc = json.loads(out)
    assert doc["attempt"]["name"] == "sugg" and doc["attempt"]["status"] == "Queued"
    assert doc["command"]["n_epoch"] == 2

    code, out, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a", "--train",
                           "sugg", "--follow", "--json")  # fmt: skip
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["suggestion", "snapshot", "epoch", "status"]
    assert events[0]["attempt"]["name"] == "sugg" and events[-1]["status"] == "Trained"

    # A name with epochs needs --overwrite, as `metalearn train` does.
    trained = attempt_pb2.Attempt(name="sugg", status=attempt_pb2.ATTEMPT_STATUS_TRAINED,
                                  training_losses=[0.5])  # fmt: skip
    fake.replies["get"] = trained
    code, _, err = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a", "--train",
                           "sugg")  # fmt: skip
    assert code == 1 and "add --overwrite" in err and err.count("\n") == 1
    calls = len(fake.calls)
    code, _, _ = cli_run(monkeypatch, capsys, fake, "suggest", "--labels", "a", "--train",
                         "sugg", "--overwrite")  # fmt: skip
    assert code == 0 and fake.calls[-1][0] == "train" and len(fake.calls) == calls + 2


# The warm start in study views.
def warm_study() -> spb.Study:
    study = spb.Study(name="w", id=3, n_trials=6, trials_made=3, state=spb.STUDY_STATE_RUNNING)
    study.search_space.append(
        json_format.ParseDict(
            {"path": "optimizer.lr", "float": {"low": 1e-4, "high": 0.1}}, spb.SearchParameter()
        )
    )
    study.warm_start.similar_tasks = 2
    report = study.warm_start_report
    report.state, report.priors, report.zero_shot_trials = "ready", 14, 2
    report.sources.add(task_fingerprint=FP_B, label_names=DIGITS[:3], distance=0.41,
                       weight=0.7, trials=10)  # fmt: skip
    report.sources.add(task_fingerprint=FP_C, label_names=DIGITS, distance=1.5, weight=0.3,
                       trials=4)  # fmt: skip
    for k in range(3):
        trial = spb.Trial(number=k, attempt_name=f"w-{k}", attempt_id=k + 1, value=math.nan,
                          state=spb.TRIAL_STATE_RUNNING,
                          seeded_by_attempt_id=40 + k if k < 2 else 0)  # fmt: skip
        trial.params.update({"optimizer.lr": 0.001 * (k + 1)})
        study.trials.append(trial)
    return study


def test_study_show_reports_the_warm_start_and_marks_zero_shot_trials(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    fake = FakeClient(study=warm_study())
    code, out, _ = cli_run(monkeypatch, capsys, fake, "study", "show", "w")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("w (id 3)  running  trials 3/6 (3 running)")
    assert lines[1] == (
        "warm start from the 2 most similar tasks: ready; 2 past tasks, 14 prior trials,"
        " 2 zero-shot trials"
    )
    assert lines[2].split() == ["TASK", "LABELS", "DISTANCE", "WEIGHT", "TRIALS"]
    assert lines[3].split() == ["b2b2b2b2b2b2", "digit", "0,", "digit", "1,", "digit", "2",
                                "0.4100", "0.700", "10"]  # fmt: skip
    assert lines[4].split()[-3:] == ["1.5000", "0.300", "4"]
    assert lines[5].split() == ["TRIAL", "ATTEMPT", "STATE", "FROM", "PARAMS", "EPOCHS", "VALUE"]
    assert [line.split()[:4] for line in lines[6:9]] == [
        ["0", "w-0", "running", "warm"], ["1", "w-1", "running", "warm"],
        ["2", "w-2", "running", "-"],
    ]  # fmt: skip
    assert lines[9:] == ["no trial has completed yet"]
    code, out, _ = cli_run(monkeypatch, capsys, fake, "study", "show", "w", "--json")
    doc = json.loads(out)
    assert doc["warm_start_report"]["sources"][0]["trials"] == 10
    assert doc["warm_start_report"]["priors"] == 14
    assert [t["seeded_by_attempt_id"] for t in doc["trials"]] == [40, 41, 0]


def test_a_warm_study_waiting_for_its_profile(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    study = warm_study()
    study.warm_start.CopyFrom(spb.WarmStart(studies=["a", "b"], zero_shot_trials=-1))
    study.warm_start_report.CopyFrom(spb.WarmStartReport(state="waiting for the task's profile"))
    assert study_views.warm_start_lines(study) == [
        "warm start from the trials of studies a, b, no zero-shot trials: waiting for the"
        " task's profile; 0 past tasks, 0 prior trials, 0 zero-shot trials"
    ]
    cold = spb.Study(name="c")
    assert study_views.warm_start_lines(cold) == [] and not study_views.is_warm(cold)
    assert study_views.study_document(cold)["warm_start"] is None


def test_following_a_warm_study(capsys: Capture) -> None:
    waiting, ready = warm_study(), warm_study()
    waiting.warm_start_report.CopyFrom(spb.WarmStartReport(state="waiting for the task's profile"))
    ready.state = spb.STUDY_STATE_DONE
    ready.stop_reason = "n_trials reached"

    class Events:
        def watch_study(self, name: str) -> Iterator[spb.WatchStudyResponse]:
            yield spb.WatchStudyResponse(snapshot=waiting)
            yield spb.WatchStudyResponse(study_finished=ready)

    assert study_views.follow_study(Events(), "w") == 1  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("warm start from the 2 most similar tasks: waiting for")
    assert lines[1].split() == ["TRIAL", "FROM", "PARAMS", "EPOCHS", "VALUE", "STATE", "BEST"]
    assert [line.split()[:2] for line in lines[2:5]] == [["0", "warm"], ["1", "warm"], ["2", "-"]]
    assert lines[5] == "study w running: 3/6 trials made"
    assert lines[6].startswith("warm start from the 2 most similar tasks: ready; 2 past tasks")
    assert lines[7:] == ["study w done (n_trials reached): 3/6 trials made",
                         "no trial has completed yet"]  # fmt: skip

    table = study_views.LiveTable("w", as_json=False, tty=True)
    table.show(ready)
    drawn = capsys.readouterr().out.splitlines()
    assert drawn[0].startswith("warm start from") and drawn[1].split()[:2] == ["TRIAL", "FROM"]

    assert study_views.follow_study(Events(), "w", as_json=True) == 1  # type: ignore[arg-type]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["snapshot", "study"]
    assert events[0]["warm_start_report"]["state"] == "waiting for the task's profile"
    assert events[1]["warm_start_report"]["state"] == "ready"


def test_label_lists_are_cut_to_their_width() -> None:
    assert study_views.label_list(["cat", "dog"]) == "cat, dog"
    assert study_views.label_list(DIGITS) == "digit 0, digit 1, +8 more"
    assert len(study_views.label_list(["x" * 80, "y"])) <= 30
    assert study_views.label_list([]) == "-"
    assert study_views.fingerprint_prefix(FP_A) == "a1a1a1a1a1a1"


# The client, without a gateway: what it sends.
class Stub:
    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.requests: list[tuple[Any, float]] = []

    def __call__(self, request: Any, timeout: float) -> Any:
        self.requests.append((request, timeout))
        return self.reply


def offline_client() -> Client:
    return Client("127.0.0.1:1", timeout=5.0, token="t")


def test_the_client_builds_task_requests() -> None:
    key = task_key(["a", "b"], [{"resize": {"size": [8, 8]}}, attempt_pb2.ImageOp()])
    assert list(key.label_names) == ["a", "b"] and key.image_ops[0].resize.size == [8, 8]
    assert list(task_key("cat").label_names) == ["cat"]
    with pytest.raises(InvalidRequest, match='unknown field "resise"'):
        task_key(["a"], [{"resise": {}}])
    with offline_client() as client:
        profile = Stub(pb.ProfileTaskResponse(task=task()))
        similar = Stub(similar_reply())
        suggest = Stub(suggestion())
        fit = Stub(pb.FitTaskDistanceResponse(distance=learned()))
        pages = iter([pb.ListTasksResponse(tasks=[task(FP_A)], next_page_token="p2"),
                      pb.ListTasksResponse(tasks=[task(FP_B)])])  # fmt: skip
        listed: list[Any] = []

        def list_tasks(request: Any, timeout: float) -> Any:
            listed.append(pb.ListTasksRequest(page_size=request.page_size,
                                              page_token=request.page_token))  # fmt: skip
            return next(pages)

        client._tasks = argparse.Namespace(  # type: ignore[assignment]
            ProfileTask=profile, FindSimilarTasks=similar, SuggestCommand=suggest,
            FitTaskDistance=fit, ListTasks=list_tasks,
        )  # fmt: skip
        assert client.profile_task(["a"]).fingerprint == FP_A
        assert client.profile_task(["a"], wait=False).state == task_pb2.TASK_STATE_READY
        (waited, long), (queued, short) = profile.requests
        assert waited.wait and not queued.wait and long >= 60 and short == 5.0
        assert [t.fingerprint for t in client.tasks(page_size=1)] == [FP_A, FP_B]
        assert [(r.page_size, r.page_token) for r in listed] == [(1, ""), (1, "p2")]
        assert len(client.similar_tasks(["a"], limit=2, attempts_per_task=1).tasks) == 2
        assert client.similar_tasks(fingerprint=FP_B).target.fingerprint == FP_A
        (by_labels, _), (by_fingerprint, _) = similar.requests
        assert by_labels.WhichOneof("target") == "task" and by_labels.limit == 2
        assert by_fingerprint.fingerprint == FP_B and by_fingerprint.attempts_per_task == 3
        with pytest.raises(InvalidRequest):
            client.similar_tasks()
        with pytest.raises(InvalidRequest):
            client.similar_tasks(["a"], fingerprint=FP_B)
        assert client.suggest_command(["a"], neighbours=3).sources[0].attempt_name == "lenet-a"
        assert suggest.requests[0][0].neighbours == 3
        assert client.fit_task_distance().kind == "learned"


def test_create_study_takes_a_warm_start() -> None:
    base = json_format.MessageToDict(lenet_command(), preserving_proto_field_name=True)
    doc = {"name": "s", "base_command": base, "n_trials": 2, "search_space": SPACE}
    with offline_client() as client:
        create = Stub(spb.CreateStudyResponse())
        client._studies = argparse.Namespace(CreateStudy=create)  # type: ignore[assignment]
        client.create_study(doc, warm_start={"similar_tasks": 5})
        client.create_study({**doc, "warm_start": {"studies": ["x"]}})
        client.create_study({**doc, "warm_start": spb.WarmStart(similar_tasks=2)})
        study = json_format.ParseDict(doc, spb.Study())
        client.create_study(study, warm_start=spb.WarmStart(studies=["y"], zero_shot_trials=-1))
        assert not study.HasField("warm_start")  # the caller's study is left as it was
        sent = [r.study.warm_start for r, _ in create.requests]
        assert sent == [spb.WarmStart(similar_tasks=5), spb.WarmStart(studies=["x"]),
                        spb.WarmStart(similar_tasks=2),
                        spb.WarmStart(studies=["y"], zero_shot_trials=-1)]  # fmt: skip
        with pytest.raises(InvalidRequest, match='did you mean "similar_tasks"'):
            client.create_study(doc, warm_start={"similar_task": 5})


# Live: the session's gateway (no trainers), once it serves TaskService.
@needs_service
def test_live_profile_list_and_fit_without_trainers(
    gateway: GatewayThread, capsys: Capture
) -> None:
    upload_labels(gateway, ["owl", "cat"])
    code, out, err = run(gateway, capsys, "tasks", "list", "--json")
    assert code == 0 and json.loads(out) == [], err
    code, out, err = run(gateway, capsys, "tasks", "profile", "--labels", "owl", "cat",
                         "--no-wait", "--json")  # fmt: skip
    queued = json.loads(out)
    assert code == 0, err
    assert len(queued["fingerprint"]) == 64 and sorted(queued["label_names"]) == ["cat", "owl"]
    assert queued["state"] in ("Pending", "Ready")
    code, out, _ = run(gateway, capsys, "tasks", "list")
    lines = out.splitlines()
    labels = ", ".join(queued["label_names"])
    assert code == 0 and lines[1].startswith(f"{queued['fingerprint'][:12]}  {labels}")
    code, _, err = run(gateway, capsys, "tasks", "profile", "--labels", "owl", "giraffe",
                       "--no-wait")  # fmt: skip
    assert code == 1 and err.startswith("metalearn: ") and err.count("\n") == 1
    code, out, err = run(gateway, capsys, "tasks", "fit", "--json")
    fitted = json.loads(out)
    assert code == 0 and fitted["kind"] == "standardized", err  # no history to learn from
    with Client(gateway.address, token=gateway.admin_token) as client:
        assert queued["fingerprint"] in [t.fingerprint for t in client.tasks(page_size=1)]


@needs_service
def test_live_study_create_with_a_warm_start(
    gateway: GatewayThread, capsys: Capture, tmp_path: Path
) -> None:
    upload_labels(gateway, lenet_command().label_names)
    path = write_study(tmp_path, max_parallel=1)
    code, out, err = run(gateway, capsys, "study", "create", "--file", path, "--warm-start",
                         "similar:2", "--json")  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert created["warm_start"]["similar_tasks"] == 2
    code, out, _ = run(gateway, capsys, "study", "show", "s")
    assert code == 0 and "warm start from the 2 most similar tasks" in out


@pytest.fixture(scope="module")
def history(live: Any) -> Any:
    """The slow tests' stack with a past task trained: two attempts on digits 0-2 whose
    commands lie inside `tiny_study`'s search space (so a warm start can use them)."""
    with Client(live.gateway.address, token=live.gateway.admin_token) as client:
        for name, lr in (("past-a", 0.003), ("past-b", 0.01)):
            command = lenet_command(n_epoch=2, batch_size=64, label_names=DIGITS[:3])
            command.optimizer["lr"] = lr
            command.model.layers[7]["out_features"] = 64
            client.train(name, command)
        for name in ("past-a", "past-b"):
            assert client.wait(name).status == attempt_pb2.ATTEMPT_STATUS_TRAINED
    return live


@needs_service
@pytest.mark.slow
def test_live_profile_similar_and_suggest_with_trainers(history: Any, capsys: Capture) -> None:
    """A new task profiled by a trainer, its nearest past task found, a command suggested
    from it and trained."""
    gateway = history.gateway
    new = DIGITS[3:6]
    code, out, err = run(gateway, capsys, "tasks", "profile", "--labels", *new, "--json")
    assert code == 0, err
    profiled = json.loads(out)
    assert profiled["state"] == "Ready", profiled
    assert profiled["profile"]["classes"] == 3 and profiled["profile"]["input_shape"] == [1, 8, 8]
    assert "landmark_1nn" in profiled["profile"]["features"]

    code, out, err = run(gateway, capsys, "tasks", "similar", "--labels", *new)
    lines = out.splitlines()
    assert code == 0, err
    assert lines[1].startswith("distance: ")
    assert lines[3].split()[0] == "1" and "digit 0, digit 1, digit 2" in lines[3]
    assert lines[3].split()[-2] in ("past-a", "past-b")
    assert float(lines[3].split()[-1]) > 0  # its val accuracy

    code, out, err = run(gateway, capsys, "suggest", "--labels", *new, "--json")
    assert code == 0, err
    suggested = json.loads(out)
    assert suggested["command"]["label_names"] == new and not suggested["fallback"]
    assert suggested["sources"][0]["attempt_name"] in ("past-a", "past-b")
    code, out, err = run(gateway, capsys, "suggest", "--labels", *new, "--train", "sugg",
                         "--follow")  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].startswith("suggested command for digit 3, digit 4, digit 5")
    assert out.splitlines()[-1].startswith("sugg trained")

    code, out, _ = run(gateway, capsys, "tasks", "list", "--json")
    listed = {tuple(t["label_names"]): t for t in json.loads(out)}
    assert listed[tuple(DIGITS[:3])]["attempts"] >= 2 and listed[tuple(new)]["attempts"] >= 1


@needs_service
@pytest.mark.slow
def test_live_a_warm_study_marks_its_zero_shot_trials(
    history: Any, capsys: Capture, tmp_path: Path
) -> None:
    gateway = history.gateway
    study = json_format.MessageToDict(tiny_study("warm", 4), preserving_proto_field_name=True)
    study["base_command"]["label_names"] = DIGITS[6:9]
    path = tmp_path / "warm.json"
    path.write_text(json.dumps(study))
    code, out, err = run(gateway, capsys, "study", "create", "--file", str(path),
                         "--warm-start", "similar:1", "--follow")  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].startswith("warm start from the most similar task: ")
    code, out, _ = run(gateway, capsys, "study", "show", "warm", "--json")
    shown = json.loads(out)
    assert shown["warm_start"]["similar_tasks"] == 1
    assert shown["warm_start_report"]["state"] == "ready", shown["warm_start_report"]
    assert shown["trials"][0]["seeded_by_attempt_id"] > 0
    code, out, _ = run(gateway, capsys, "study", "show", "warm")
    lines = out.splitlines()
    assert lines[1].startswith("warm start from the most similar task: ready; 1 past task,")
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] == ["0"]}
    assert rows["0"][3] == "warm"
