"""`metalearn examples import-history|import-letters`: the recorded history and a task new
to it, made offline from what ships in the repository."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from gateway.tasks.learner import params_of
from learning.studies import space
from metalearn import cli
from metalearn.errors import Violations
from metalearn.examples import grid, history, tasks
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as spb
from tests.harness import GatewayThread

# thousands of images generated and the history imported: not in `make test-fast`.
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
Capture = pytest.CaptureFixture[str]


def run(gateway: GatewayThread, capsys: Capture, *args: str) -> tuple[int, str]:
    code = cli.main([*args, "--gateway", gateway.address, "--token", gateway.admin_token])
    out, _ = capsys.readouterr()
    return code, out


def test_the_history_is_every_run_of_the_pinned_table() -> None:
    runs = history.history(history.table())
    assert len(runs) == len(tasks.FAMILY) * len(grid.points()) == 1536
    assert len({a.name for a in runs}) == len(runs)
    family = {t.labels for t in tasks.FAMILY}
    for attempt in runs:
        assert tuple(attempt.training_commands.label_names) in family
        assert attempt.status == attempt_pb2.ATTEMPT_STATUS_TRAINED
        assert [e.epoch for e in attempt.epochs] == list(range(1, grid.EPOCHS + 1))


def test_the_new_letters_share_no_label_and_no_image_with_the_history() -> None:
    seen = tasks.FAMILY + tasks.HELD_OUT
    old = {r.label: hashlib.sha256(r.data).hexdigest() for r in tasks.uploads(seen)}
    new = list(tasks.new_letter_uploads())
    assert len(new) == 600
    assert not {r.label for r in new} & {label for t in seen for label in t.labels}
    assert not {hashlib.sha256(r.data).hexdigest() for r in new} & set(old.values())
    # Made the same way every time: the demo's figures are reproducible.
    again = [hashlib.sha256(r.data).hexdigest() for r in tasks.new_letter_uploads()]
    assert again == [hashlib.sha256(r.data).hexdigest() for r in new]


def test_the_letters_study_searches_the_space_the_history_was_recorded_in() -> None:
    study = json.loads((EXAMPLES / "letters_study.json").read_text())
    assert study["base_command"] == grid.base_command(tasks.NEW_LETTERS.labels)
    assert study["search_space"] == grid.SPACE
    json_format.ParseDict(study, spb.Study())


def test_the_history_warm_starts_the_readme_digits_study() -> None:
    """Some recorded commands have values inside examples/digits_study.json's ranges at
    every path, so a warm start of it has trials to begin with."""
    study = json_format.ParseDict(
        json.loads((EXAMPLES / "digits_study.json").read_text()), spb.Study()
    )
    v = Violations()
    params = space.parse(v, "s", space.command_json(study.base_command), study.search_space)
    v.raise_if_any()
    fitting = [p for p in grid.points() if params_of(grid.command(["x"], p), params) is not None]
    assert len(fitting) == 24  # lr 0.0003..0.03, batch size 16: either optimizer


def test_import_history_then_again_adds_nothing(gateway: GatewayThread, capsys: Capture) -> None:
    code, out = run(gateway, capsys, "examples", "import-history", "--no-wait")
    assert code == 0, out
    assert "images: 18576 added, 0 already there" in out
    assert "runs: 1536 imported, 0 already there (24 tasks x 64 commands" in out
    # No trainer here: the tasks wait for one, and the command says so.
    assert "tasks: 0 of 24 profiled, 24 waiting for a trainer" in out
    code, out = run(gateway, capsys, "--json", "examples", "import-history", "--no-wait")
    assert code == 0, out
    found = json.loads(out)
    assert found["images"] == {"added": 0, "duplicates": 18576, "rejected": 0}
    assert found["attempts"] == {"imported": 0, "skipped": 1536}
    code, out = run(gateway, capsys, "attempts", "list", "--filter", "imported = true")
    assert code == 0 and len(out.splitlines()) == 1 + 1536


def test_import_letters(gateway: GatewayThread, capsys: Capture) -> None:
    code, out = run(gateway, capsys, "examples", "import-letters")
    assert code == 0, out
    assert "letters: 600 added" in out
    assert 'metalearn suggest --labels "letter L" "letter M" "letter N"' in out
    code, out = run(gateway, capsys, "images", "labels")
    assert [line.split(None, 1) for line in out.splitlines()] == [
        ["120", label] for label in tasks.NEW_LETTERS.labels
    ]
