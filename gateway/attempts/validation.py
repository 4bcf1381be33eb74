"""Request validation: every client mistake becomes a field violation with its exact path.

Checks what the gateway can know without torch: names, bounds, structure and the
vocabulary of layers, optimizers, losses and transforms. The trainer checks each
layer's arguments against the real signature later; both reject with the same paths.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from typing import Any

from google.protobuf import struct_pb2

from gateway.config import Limits
from gateway.names import check_name
from gateway.store.images import ImageStore
from metalearn import geometry, vocabulary
from metalearn.errors import Violations, some_of
from metalearn.signatures import SIGNATURES
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2

# Whole strings only: "$" also matches before a final newline, so "name\n" would pass
# `^...$` and then miss (NOT_FOUND) instead of being refused. \A...\Z hold whichever of
# match, search or fullmatch is used.
TAG_KEY_RE = re.compile(r"\A[A-Za-z0-9._/-]{1,63}\Z")
ARG_RE = re.compile(r"\A[a-z_][a-z0-9_]{0,63}\Z")
ARCHITECTURE_RE = re.compile(r"\A[a-z][a-z0-9_]{0,63}\Z")
MAX_LABEL_CHARS = 256
MAX_TAGS = 64
MAX_TAG_VALUE_CHARS = 256
MAX_IMAGE_SIDE = Limits().max_image_side


def text_problem(value: str, max_chars: int) -> str | None:
    """Why a client string cannot be stored: too long, or holding a NUL (PostgreSQL can't)."""
    if len(value) > max_chars:
        return f"at most {max_chars} characters"
    if "\x00" in value:
        return "must not contain NUL characters"
    return None


REQUEST_ID_RE = re.compile(r"\A[A-Za-z0-9._:-]{1,64}\Z")


def check_request_id(v: Violations, field: str, request_id: str) -> None:
    """An idempotency key (AIP-155): optional; a UUID fits."""
    if request_id and not REQUEST_ID_RE.fullmatch(request_id):
        v.add(field, "at most 64 letters, digits, '.', '_', ':' or '-' (a UUID fits)")


def _bounded(v: Violations, field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        v.add(field, f"must be between {low} and {high}, got {value}")


def check_labels(v: Violations, field: str, labels: Any, limits: Limits) -> None:
    if len(labels) > limits.max_labels:
        v.add(field, f"at most {limits.max_labels} labels")
        return
    seen: set[str] = set()
    for i, label in enumerate(labels):
        if not label.strip():
            v.add(f"{field}[{i}]", "must not be empty")
        elif problem := text_problem(label, MAX_LABEL_CHARS):
            v.add(f"{field}[{i}]", problem)
        elif label in seen:
            v.add(f"{field}[{i}]", f"{label!r} is listed twice")
        seen.add(label)


def _check_scalar(v: Violations, field: str, value: Any, depth: int = 0) -> None:
    """Argument values: finite numbers, booleans, short strings, flat lists of those."""
    if isinstance(value, bool):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            v.add(field, "must be a finite number")
    elif isinstance(value, str):
        if problem := text_problem(value, 64):
            v.add(field, problem)
    elif isinstance(value, list) and depth == 0:
        if len(value) > 64:
            v.add(field, "lists are at most 64 long")
        for i, item in enumerate(value):
            _check_scalar(v, f"{field}[{i}]", item, depth + 1)
    else:
        kind = "null" if value is None else type(value).__name__
        v.add(field, f"must be a number, boolean, string or list of those, got {kind}")


def _check_size(v: Violations, field: str, arg: str, value: Any) -> None:
    """Size arguments: non-negative integers, "auto" or "n_labels" where they apply."""
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, str):
            if item == "auto" and arg in vocabulary.AUTO_ARGS:
                continue
            if item == "n_labels" and arg in vocabulary.N_LABELS_ARGS:
                continue
            if arg == "padding" and item in ("same", "valid"):
                continue
            allowed = ["an integer"]
            allowed += ['"auto"'] if arg in vocabulary.AUTO_ARGS else []
            allowed += ['"n_labels"'] if arg in vocabulary.N_LABELS_ARGS else []
            v.add(field, f"must be {' or '.join(allowed)}, got {item!r}")
        elif isinstance(item, bool) or not isinstance(item, float) or not item.is_integer():
            v.add(field, f"must be an integer, got {item!r}")
        elif item < 0 and arg not in vocabulary.SIGNED_ARGS:
            v.add(field, f"must not be negative, got {int(item)}")
        elif abs(item) > 1_000_000:
            v.add(field, f"must be at most 1000000, got {int(item)}")


def _check_args(v: Violations, field: str, what: str, name: str, args: dict[str, Any]) -> None:
    """Argument names against the class's signature (from `metalearn.signatures`), so a
    misspelt or missing argument is refused before the command is queued."""
    required, optional = SIGNATURES[what].get(name, ((), ()))
    takes = sorted(required + optional)
    for arg in args:
        if ARG_RE.fullmatch(arg) and arg not in takes:
            v.add(
                f"{field}.{arg}",
                f"{name} takes no argument {arg!r}; it takes {some_of(takes, arg)}",
            )
    missing = [a for a in required if a not in args]
    if missing:
        v.add(field, f"{name} needs {missing}")


def _check_named(
    v: Violations, field: str, spec: struct_pb2.Struct, allowed: frozenset[str], what: str
) -> dict[str, Any]:
    """A {"name": ..., arguments...} object (layers, optimizer, criterion, scheduler)."""
    obj = plain_struct(spec)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        v.add(f"{field}.name", f"is required: one of the {what} {some_of(allowed)}")
    elif name not in allowed:
        v.add(
            f"{field}.name", f"unknown {what[:-1]} {name[:64]!r}; allowed: {some_of(allowed, name)}"
        )
    else:
        _check_args(v, field, what, name, {k: a for k, a in obj.items() if k != "name"})
    for arg, value in obj.items():
        if arg == "name":
            continue
        if not ARG_RE.fullmatch(arg):
            v.add(f"{field}.{arg[:64]}", "is not a valid argument name")
            continue
        _check_scalar(v, f"{field}.{arg}", value)
    return obj


def _check_model(v: Violations, field: str, model: attempt_pb2.Model, limits: Limits) -> None:
    if model.name and model.layers:
        v.add(f"{field}.name", "give either a named architecture or layers, not both")
    if model.name and not ARCHITECTURE_RE.fullmatch(model.name):
        v.add(f"{field}.name", f"{model.name[:64]!r} is not an architecture name")
    if len(model.layers) > limits.max_layers:
        v.add(f"{field}.layers", f"at most {limits.max_layers} layers")
        return
    for i, layer in enumerate(model.layers):
        path = f"{field}.layers[{i}]"
        obj = _check_named(v, path, layer, vocabulary.LAYERS, "layers")
        for arg, value in obj.items():
            if arg in vocabulary.SIZE_ARGS:
                _check_size(v, f"{path}.{arg}", arg, value)


def _check_image_ops(v: Violations, field: str, ops: Any, limits: Limits) -> None:
    if len(ops) > limits.max_image_ops:
        v.add(field, f"at most {limits.max_image_ops} image operations")
        return
    for i, op in enumerate(ops):
        path = f"{field}[{i}]"
        kind = op.WhichOneof("op")
        if kind is None:
            v.add(path, "must set one of resize, convert, center_crop, grayscale")
        elif kind in ("resize", "center_crop"):
            sizes = getattr(op, kind).size
            if len(sizes) not in (1, 2):
                v.add(f"{path}.{kind}.size", "must be [side] or [width, height]")
            for j, side in enumerate(sizes):
                _bounded(v, f"{path}.{kind}.size[{j}]", side, 1, limits.max_image_side)
            resample = op.resize.resample if kind == "resize" else ""
            if resample and vocabulary.resample_name(resample) is None:
                choices = sorted(set(vocabulary.RESAMPLE.values()))
                v.add(f"{path}.resize.resample", f"unknown filter {resample[:64]!r}; use {choices}")
        elif kind == "convert":
            if vocabulary.image_mode(op.convert.mode) is None:
                modes = sorted(vocabulary.IMAGE_MODES)
                v.add(f"{path}.convert.mode", f"unknown mode {op.convert.mode[:64]!r}; use {modes}")
        elif op.grayscale.num_output_channels not in (0, 1, 3):
            v.add(f"{path}.grayscale.num_output_channels", "must be 1 or 3")


def _check_transforms(
    v: Violations, field: str, spec: struct_pb2.Struct, allowed: frozenset[str]
) -> None:
    obj = plain_struct(spec)
    for name, args in obj.items():
        path = f"{field}.{name[:64]}"
        if name not in allowed:
            v.add(path, f"unknown transform; allowed: {some_of(allowed, name)}")
        elif isinstance(args, dict):
            if name in SIGNATURES["transforms"]:
                _check_args(v, path, "transforms", name, args)
            for arg, value in args.items():
                if not ARG_RE.fullmatch(arg):
                    v.add(f"{path}.{arg[:64]}", "is not a valid argument name")
                else:
                    _check_scalar(v, f"{path}.{arg}", value)
        elif not isinstance(args, bool):
            v.add(path, "must be true, false or an object of arguments")


def _check_sizes(
    v: Violations,
    field: str,
    cmd: attempt_pb2.TrainCommand | attempt_pb2.TestCommand,
    limits: Limits,
) -> None:
    """Each image's size at every step of the image ops and transforms, from their numbers
    alone, by the arithmetic the trainer uses (`metalearn.geometry`): a 10^6 x 10^6
    Resize, a size of 0 or Grayscale with 2 channels is refused before it is queued."""
    for problem in geometry.check(
        f"{field}.image_ops",
        cmd.image_ops,
        f"{field}.transform",
        plain_struct(cmd.transform),
        limits.max_input_pixels,
    ):
        v.add(problem.field, problem.description)


def check_train_command(
    v: Violations, field: str, cmd: attempt_pb2.TrainCommand, limits: Limits
) -> None:
    """Validates a training command's structure, bounds and vocabulary."""
    _bounded(v, f"{field}.batch_size", cmd.batch_size, 0, limits.max_batch_size)
    _bounded(v, f"{field}.n_epoch", cmd.n_epoch, 0, limits.max_epochs)
    _bounded(v, f"{field}.n_labels", cmd.n_labels, 0, limits.max_labels)
    _bounded(v, f"{field}.devices", cmd.devices, 0, limits.max_devices)
    if cmd.devices > 1 and 0 < cmd.batch_size < cmd.devices:
        v.add(f"{field}.batch_size", f"give each of the {cmd.devices} devices an image")
    if not (math.isfinite(cmd.hopeless_below) and 0.0 <= cmd.hopeless_below <= 1.0):
        v.add(f"{field}.hopeless_below", "must be an accuracy between 0 and 1")
    elif cmd.hopeless_below and not cmd.stop_when_hopeless:
        v.add(f"{field}.hopeless_below", "takes effect only with stop_when_hopeless: set it")
    if cmd.model_name:
        check_name(v, f"{field}.model_name", cmd.model_name)
    check_labels(v, f"{field}.label_names", cmd.label_names, limits)
    _check_model(v, f"{field}.model", cmd.model, limits)
    _check_image_ops(v, f"{field}.image_ops", cmd.image_ops, limits)
    _check_sizes(v, field, cmd, limits)
    for name, allowed, what in (
        ("criterion", vocabulary.CRITERIA, "losses"),
        ("optimizer", vocabulary.OPTIMIZERS, "optimizers"),
        ("scheduler", vocabulary.SCHEDULERS, "schedulers"),
    ):
        if cmd.HasField(name):
            _check_named(v, f"{field}.{name}", getattr(cmd, name), allowed, what)
    _check_transforms(v, f"{field}.transform", cmd.transform, vocabulary.TRANSFORMS)
    _check_transforms(
        v, f"{field}.target_transform", cmd.target_transform, vocabulary.TARGET_TRANSFORMS
    )


def check_trainable(
    v: Violations, field: str, cmd: attempt_pb2.TrainCommand, limits: Limits
) -> None:
    """A command Train can queue: a valid one that also says what, on what, how long."""
    check_train_command(v, field, cmd, limits)
    if not cmd.label_names:
        v.add(f"{field}.label_names", "name the labels to learn")
    if cmd.batch_size <= 0:
        v.add(f"{field}.batch_size", "must be at least 1")
    if cmd.n_epoch <= 0:
        v.add(f"{field}.n_epoch", "must be at least 1")
    if not cmd.model.layers and not cmd.model.name:
        v.add(f"{field}.model", "give layers or a torchvision architecture name")


def check_test_command(
    v: Violations, field: str, cmd: attempt_pb2.TestCommand, limits: Limits
) -> None:
    """Validates a test command's structure and bounds."""
    _bounded(v, f"{field}.limit", cmd.limit, 0, 10_000_000)
    _bounded(v, f"{field}.n_labels", cmd.n_labels, 0, limits.max_labels)
    if len(cmd.ids) > 100_000:
        v.add(f"{field}.ids", "at most 100000 ids")
    for i, image_id in enumerate(cmd.ids):
        if image_id <= 0:
            v.add(f"{field}.ids[{i}]", f"must be a positive image id, got {image_id}")
            break
    if cmd.model_name:
        check_name(v, f"{field}.model_name", cmd.model_name)
    check_labels(v, f"{field}.label_names", cmd.label_names, limits)
    _check_model(v, f"{field}.model", cmd.model, limits)
    _check_image_ops(v, f"{field}.image_ops", cmd.image_ops, limits)
    _check_sizes(v, field, cmd, limits)
    if cmd.HasField("criterion"):
        _check_named(v, f"{field}.criterion", cmd.criterion, vocabulary.CRITERIA, "losses")
    _check_transforms(v, f"{field}.transform", cmd.transform, vocabulary.TRANSFORMS)
    _check_transforms(
        v, f"{field}.target_transform", cmd.target_transform, vocabulary.TARGET_TRANSFORMS
    )


def check_tags(v: Violations, field: str, tags: Any) -> None:
    """Tags: at most 64, keys of 1-63 safe characters, values of at most 256."""
    if len(tags) > MAX_TAGS:
        v.add(field, f"at most {MAX_TAGS} tags")
        return
    for key, value in tags.items():
        if not TAG_KEY_RE.fullmatch(key):
            v.add(f"{field}[{key[:64]!r}]", "keys are 1-63 letters, digits, '.', '_', '/' or '-'")
        elif problem := text_problem(value, MAX_TAG_VALUE_CHARS):
            v.add(f"{field}[{key!r}]", problem)


# Client-writable fields of an Attempt, with the check of each.
WRITABLE_FIELDS = ("training_commands", "testing_commands", "n_epoch", "limit", "tags")


def tag_key(path: str) -> str | None:
    r"""The key of an update-mask path naming one tag (`tags.team`, or AIP-161's quoted
    form for keys with dots: `tags.\`a.b\``), or None for any other path. One key is
    set or removed inside the row's lock, so concurrent writers of different keys all
    keep theirs (writing `tags` replaces the whole map)."""
    if not path.startswith("tags."):
        return None
    key = path[len("tags.") :]
    if len(key) >= 2 and key[0] == key[-1] == "`":
        key = key[1:-1]
    return key


def check_tag_paths(v: Violations, field: str, paths: Any, tags: Any) -> None:
    """The keys named by `tags.KEY` paths, and the values given for them."""
    for i, path in enumerate(paths):
        key = tag_key(path)
        if key is None:
            continue
        if not TAG_KEY_RE.fullmatch(key):
            v.add(
                f"update_mask.paths[{i}]", "tag keys are 1-63 letters, digits, '.', '_', '/' or '-'"
            )
        elif key in tags and (problem := text_problem(tags[key], MAX_TAG_VALUE_CHARS)):
            v.add(f"{field}[{key!r}]", problem)


def check_writable(
    v: Violations, field: str, attempt: attempt_pb2.Attempt, paths: Any, limits: Limits
) -> None:
    """Validates the client-writable fields of `attempt` named in `paths`."""
    if "training_commands" in paths:
        check_train_command(v, f"{field}.training_commands", attempt.training_commands, limits)
    if "testing_commands" in paths:
        check_test_command(v, f"{field}.testing_commands", attempt.testing_commands, limits)
    if "n_epoch" in paths:
        _bounded(v, f"{field}.n_epoch", attempt.n_epoch, 0, limits.max_epochs)
    if "limit" in paths:
        _bounded(v, f"{field}.limit", attempt.limit, 0, 10_000_000)
    if "tags" in paths:
        check_tags(v, f"{field}.tags", attempt.tags)


async def check_labels_have_images(images: ImageStore, field: str, labels: Sequence[str]) -> None:
    """Labels without a single image are INVALID_ARGUMENT now, each named with the
    nearest known ones, rather than a run that fails on a trainer after the queue."""
    if not labels:
        return
    have = await images.having_images(labels)
    missing = [(i, label) for i, label in enumerate(labels) if label not in have]
    if not missing:
        return
    known = [name for name, _ in await images.labels()]
    v = Violations()
    for i, label in missing:
        close = difflib.get_close_matches(label, known, n=3)
        hint = (
            f"; did you mean {' or '.join(repr(c[:80]) for c in close)}?"
            if close
            else "; upload images for it first (`metalearn images import`)"
        )
        v.add(f"{field}[{i}]", f"no images have the label {label[:80]!r}{hint}")
    v.raise_if_any()


def check_task_key(v: Violations, field: str, key: Any, limits: Limits) -> None:
    """A TaskKey: at least one label, each as a command's, and image ops as a command's."""
    if not key.label_names:
        v.add(f"{field}.label_names", "give at least one label")
    check_labels(v, f"{field}.label_names", key.label_names, limits)
    _check_image_ops(v, f"{field}.image_ops", key.image_ops, limits)
    if not v.items:  # sizes after the ops, as a command's (no transform here)
        for problem in geometry.check(
            f"{field}.image_ops", key.image_ops, f"{field}.transform", {},
            limits.max_input_pixels,
        ):  # fmt: skip
            v.add(problem.field, problem.description)
