"""`metalearn examples import-history|import-letters`: example data to learn from, made
offline from what ships in the repository (no download).

`import-history` brings in the meta-learning suite's recorded history: the images of its
24 tasks (scikit-learn's digits transformed, shapes and letters drawn with Pillow, made
here deterministically) and the 1,536 runs metalearn recorded on them (24 tasks x 64
commands x 10 epochs, pinned in `metalearn/examples/table.json.gz`), then waits for a
trainer to profile the tasks, so that `tasks similar`, `suggest`, warm-started studies
and `curves fit` have a past to draw on. `import-letters` uploads a task that shares no
label and no image with that history, to ask metalearn about.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from metalearn.cli.runs import CliError, client_for, print_json
from metalearn.client import Client
from metalearn.v1 import attempt_pb2, dataset_service_pb2, task_pb2

# One ImportAttempts call takes at most 1,000 documents; the table's are about 3 KB each.
_BATCH = 500
_POLL_SECONDS = 1.0


def _uploaded(reply: dataset_service_pb2.UploadImagesResponse) -> dict[str, Any]:
    return {"added": reply.added, "duplicates": reply.duplicates, "rejected": reply.rejected}


def _upload(client: Client, requests: Any, what: str) -> dict[str, Any]:
    reply = client.upload_images(requests)
    if reply.rejected:
        first = reply.rejections[0] if reply.rejections else None
        why = f": {first.filename}: {first.reason}" if first else ""
        raise CliError(f"{what}: {reply.rejected} images rejected{why}")
    return _uploaded(reply)


def _import(client: Client, attempts: Sequence[attempt_pb2.Attempt]) -> tuple[int, int]:
    """Imports the runs in batches, leaving out names already taken (a second import
    adds nothing): (imported, skipped)."""
    imported = skipped = 0
    for start in range(0, len(attempts), _BATCH):
        reply = client.import_attempts(attempts[start : start + _BATCH], skip_existing=True)
        imported += len(reply.attempts)
        skipped += len(reply.skipped)
    return imported, skipped


def _profiles(client: Client, tasks: Sequence[Sequence[str]], wait: float) -> tuple[int, int]:
    """Asks for each task's profile and waits until a trainer made them all, or `wait`
    seconds passed: (ready, failed)."""
    states = {tuple(labels): client.profile_task(labels, wait=False).state for labels in tasks}
    deadline = time.monotonic() + wait
    while True:
        pending = [k for k, s in states.items() if s == task_pb2.TASK_STATE_PENDING]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_SECONDS)
        for labels in pending:
            states[labels] = client.profile_task(labels, wait=False).state
    values = list(states.values())
    return values.count(task_pb2.TASK_STATE_READY), values.count(task_pb2.TASK_STATE_FAILED)


def cmd_import_history(args: argparse.Namespace) -> int:
    # Imported here: numpy, Pillow and scikit-learn draw the images; only this needs them.
    from metalearn.examples import history, tasks

    family = tasks.FAMILY
    runs = history.history(history.table())
    with client_for(args) as client:
        images = _upload(client, tasks.uploads(family), "the history's images")
        imported, skipped = _import(client, runs)
        wait = 0.0 if args.no_wait else args.wait
        ready, failed = _profiles(client, [t.labels for t in family], wait)
    if args.json:
        print_json(
            {
                "images": images,
                "attempts": {"imported": imported, "skipped": skipped},
                "tasks": {"count": len(family), "profiled": ready, "failed": failed},
            }
        )
        return 0 if failed == 0 else 1
    print(
        f"images: {images['added']} added, {images['duplicates']} already there"
        f" ({len({label for t in family for label in t.labels})} labels such as"
        f" {family[0].labels[0]!r} and {family[-1].labels[0]!r})"
    )
    print(
        f"runs: {imported} imported, {skipped} already there ({len(family)} tasks x"
        f" {len(runs) // len(family)} commands, named table-TASK-NNN)"
    )
    waiting = len(family) - ready - failed
    print(
        f"tasks: {ready} of {len(family)} profiled"
        + (f", {failed} failed" if failed else "")
        + (
            f", {waiting} waiting for a trainer to profile them (is one up?); they count"
            " once profiled"
            if waiting
            else ""
        )
    )
    return 0 if failed == 0 else 1


def cmd_import_letters(args: argparse.Namespace) -> int:
    from metalearn.examples import tasks

    with client_for(args) as client:
        images = _upload(client, tasks.new_letter_uploads(), "the letters")
    labels = list(tasks.NEW_LETTERS.labels)
    if args.json:
        print_json({"images": images, "labels": labels})
        return 0
    quoted = " ".join(f'"{label}"' for label in labels)
    print(f"letters: {images['added']} added, {images['duplicates']} already there")
    print(f"labels: {', '.join(labels)}, new to the history")
    print(f"ask: metalearn suggest --labels {quoted}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`examples import-history|import-letters` on the `metalearn` parser."""
    examples = sub.add_parser(
        "examples",
        help="example data to learn from: a recorded history, a new task",
        description="Example data made offline from what ships with metalearn (nothing is"
        " downloaded).",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    history = examples.add_parser(
        "import-history",
        parents=[common],
        help="24 tasks' images and the 1,536 runs recorded on them (about 30 s)",
        description="Uploads the images of the meta-learning suite's 24 tasks (scikit-learn's"
        " digits rotated, mirrored, inverted, noised, blurred, resized or cut to 10 a class;"
        " shapes and letters drawn with Pillow: 18,576 images under labels such as"
        " 'digits/3' and 'noisyletters/A') and imports the 1,536 runs metalearn recorded on"
        " them (64 commands x 10 epochs each, marked imported), then waits for a trainer to"
        " profile the tasks. `tasks similar`, `suggest`, warm-started studies and `curves"
        " fit` then have a past to learn from. Running it again adds nothing.",
    )
    history.add_argument(
        "--wait",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="wait at most this long for the tasks' profiles (default 180)",
    )
    history.add_argument(
        "--no-wait", action="store_true", help="do not wait: trainers profile them later"
    )
    history.set_defaults(func=cmd_import_history)
    letters = examples.add_parser(
        "import-letters",
        parents=[common],
        help="a task the history has never seen: 5 noisy drawn letters",
        description="Uploads 600 images of five letters drawn with Pillow and noised"
        " ('letter L', 'letter M', 'letter N', 'letter P', 'letter R'): no label and no image"
        " of them is in the recorded history, so what metalearn suggests for them comes from"
        " other tasks.",
    )
    letters.set_defaults(func=cmd_import_letters)
