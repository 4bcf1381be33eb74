"""The trainer's preprocessed-data cache under its byte budget (trainer/cache.py): least
recently used out, the file just written kept, crashed writers' leftovers cleared, and
nothing raised when another trainer sharing the directory removes a file first.

No test sleeps: every file's time of last use is set with os.utime.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
from PIL import Image

from metalearn import cli
from metalearn.limits import COMMAND_LIMITS
from trainer import cache
from trainer.config import TrainerConfig
from trainer.data import ImageRef, Preprocessor
from trainer.transforms import Pipeline

LABELS = ["a", "b"]
NOW = 1_000_000_000.0


def cached(directory: Path, n: int, size: int, used: float) -> Path:
    """A cache file of `size` bytes, last used at `used`."""
    path = directory / f"{n:064x}.safetensors"
    path.write_bytes(b"\0" * size)
    os.utime(path, (used, used))
    return path


def left(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# --- trainer/cache.py ---------------------------------------------------------------


def test_eviction_goes_by_last_use_and_a_hit_counts_as_use(tmp_path: Path) -> None:
    a, b, c = (cached(tmp_path, n, 10, used) for n, used in [(1, 100), (2, 200), (3, 300)])
    assert cache.touch(a)  # a hit: a is now the most recently used
    assert a.stat().st_mtime > c.stat().st_mtime
    d = cached(tmp_path, 4, 10, NOW)
    assert cache.prune(tmp_path, 30, keep=d) == [b]
    assert left(tmp_path) == {a.name, c.name, d.name}


def test_the_total_fits_the_budget_after_a_store(tmp_path: Path) -> None:
    sizes = [70, 10, 40, 25, 5, 60, 30]
    files = [cached(tmp_path, n, size, 1_000 + n) for n, size in enumerate(sizes)]
    new = cached(tmp_path, 99, 20, NOW)
    removed = cache.prune(tmp_path, 100, keep=new)
    kept = [f for f in files if f.exists()]
    assert sum(f.stat().st_size for f in [*kept, new]) <= 100
    # The oldest went, and no more than needed: the newest that fit are all still here.
    assert removed == files[: len(removed)] and kept == files[len(removed) :]
    assert sum(sizes[len(removed) - 1 :]) + 20 > 100
    assert cache.prune(tmp_path, 100, keep=new) == []  # within the budget: nothing to do


@pytest.mark.parametrize("budget", [0, 50])
def test_the_file_just_written_stays_even_alone_over_the_budget(
    tmp_path: Path, budget: int
) -> None:
    old = [cached(tmp_path, n, 10, 100 + n) for n in range(3)]
    # Older than the others (a clock behind, another process's file): kept all the same.
    new = cached(tmp_path, 9, 100, 50)
    assert cache.prune(tmp_path, budget, keep=new) == old
    assert left(tmp_path) == {new.name}
    later = cached(tmp_path, 10, 10, NOW)
    assert cache.prune(tmp_path, budget, keep=later) == [new]  # the next store evicts it


def test_stale_temporary_files_go_and_fresh_ones_stay(tmp_path: Path) -> None:
    names = {
        # mkstemp's, in _store; and the one safetensors writes beside it first.
        "tmp3k_x9qwe.tmp": NOW - 2 * cache.STALE_SECONDS,
        ".tmpAb3dE9": NOW - 2 * cache.STALE_SECONDS,
        "tmpfresh01.tmp": NOW - 60,
        ".tmpFr35h1": NOW - 60,
        # Not this cache's: never touched, however old.
        "notes.tmp": 0,
        "model.safetensors": 0,
        "README": 0,
    }
    for name, used in names.items():
        (tmp_path / name).write_bytes(b"\0" * 1000)
        os.utime(tmp_path / name, (used, used))
    new = cached(tmp_path, 1, 10, NOW)
    removed = cache.prune(tmp_path, 10, keep=new, now=NOW)
    assert sorted(p.name for p in removed) == [".tmpAb3dE9", "tmp3k_x9qwe.tmp"]
    # Fresh temporary files are writes under way: not counted, not removed.
    assert left(tmp_path) == set(names) - {".tmpAb3dE9", "tmp3k_x9qwe.tmp"} | {new.name}


def test_files_another_trainer_removes_meanwhile_are_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    files = [cached(tmp_path, n, 10, 100 + n) for n in range(4)]
    scandir, unlink = os.scandir, Path.unlink

    def listed_then_evicted(path: Any) -> Any:
        entries = list(scandir(path))
        unlink(files[0])  # gone between the listing and its stat
        return iter(entries)

    def evicted_first(self: Path, missing_ok: bool = False) -> None:
        if self == files[1]:
            unlink(self)  # gone between its stat and this unlink
        unlink(self, missing_ok)

    monkeypatch.setattr(os, "scandir", listed_then_evicted)
    monkeypatch.setattr(Path, "unlink", evicted_first)
    with caplog.at_level(logging.WARNING, logger="trainer.cache"):
        assert cache.prune(tmp_path, 20, keep=files[3]) == [files[1]]
    monkeypatch.undo()
    assert left(tmp_path) == {files[2].name, files[3].name}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    # A directory or a file that is not there at all.
    assert cache.prune(tmp_path / "gone", 0, keep=files[3]) == []
    assert not cache.touch(tmp_path / f"{9:064x}.safetensors")


def test_other_failures_are_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    files = [cached(tmp_path, n, 10, 100 + n) for n in range(4)]
    unlink = Path.unlink

    def refused(self: Path, missing_ok: bool = False) -> None:
        if self == files[0]:
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    with caplog.at_level(logging.WARNING, logger="trainer.cache"):
        # files[0] cannot go: the next oldest go in its place.
        assert cache.prune(tmp_path, 20, keep=files[3]) == [files[1], files[2]]
        not_a_directory = cached(tmp_path, 9, 1, NOW)
        assert cache.prune(not_a_directory, 0, keep=files[3]) == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warnings] == [
        f"could not remove cache file {files[0]}",
        f"could not prune the cache {not_a_directory}",
    ]


# --- Through the preprocessor ---------------------------------------------------------


class Images:
    """What `trainer.data.ImageSource` gives the preprocessor: listed images' bytes."""

    def __init__(self) -> None:
        self.data: dict[int, bytes] = {}
        self.fetched = 0

    def refs(self, count: int) -> list[ImageRef]:
        """`count` new 8x8 images, of both labels in turn."""
        refs = []
        for _ in range(count):
            image_id = len(self.data) + 1
            rng = random.Random(image_id)
            image = Image.new("L", (8, 8))
            image.putdata([rng.randrange(256) for _ in range(64)])
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            self.data[image_id] = buffer.getvalue()
            label = LABELS[image_id % len(LABELS)]
            refs.append(ImageRef(image_id, label, hashlib.sha256(buffer.getvalue()).hexdigest()))
        return refs

    def fetch(self, refs: list[ImageRef]) -> dict[int, bytes]:
        self.fetched += len(refs)
        return {r.id: self.data[r.id] for r in refs}


def preprocessor(images: Images, directory: Path, budget: int) -> Preprocessor:
    limits = COMMAND_LIMITS
    return Preprocessor(
        images, directory, limits.max_data_bytes, limits.max_input_pixels, cache_max_bytes=budget
    )


def tensors(p: Preprocessor, refs: list[ImageRef]) -> Any:
    return p.tensors(refs, LABELS, [], Pipeline([], [], None, [], path="command.transform"))


def test_the_preprocessor_keeps_the_most_recently_used_data_within_the_budget(
    tmp_path: Path,
) -> None:
    images = Images()
    first, second, third = images.refs(6), images.refs(6), images.refs(6)
    one = tensors(preprocessor(images, tmp_path, cache.DEFAULT_MAX_BYTES), first)
    assert not one.cache_hit
    a = tmp_path / f"{one.fingerprint}.safetensors"
    size = a.stat().st_size  # every dataset here is as large: 6 images of 8x8
    p = preprocessor(images, tmp_path, 2 * size)
    b = tmp_path / f"{tensors(p, second).fingerprint}.safetensors"
    os.utime(a, (100, 100))
    os.utime(b, (200, 200))
    assert left(tmp_path) == {a.name, b.name}
    hit = tensors(p, first)  # a hit: `first` is now the most recently used
    assert hit.cache_hit and hit.images.equal(one.images)
    c = tmp_path / f"{tensors(p, third).fingerprint}.safetensors"
    assert left(tmp_path) == {a.name, c.name}  # `second`, the least recently used, went
    fetched = images.fetched
    assert tensors(p, first).cache_hit and images.fetched == fetched
    assert not tensors(p, second).cache_hit and images.fetched == fetched + 6


def test_a_cache_file_evicted_while_it_is_read_is_rebuilt_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    images = Images()
    refs = images.refs(4)
    p = preprocessor(images, tmp_path, cache.DEFAULT_MAX_BYTES)
    path = tmp_path / f"{tensors(p, refs).fingerprint}.safetensors"
    load = safetensors.torch.load_file

    def evicted_first(name: str, *args: Any, **kw: Any) -> Any:
        os.unlink(name)  # another trainer's eviction, between the hit and the read
        return load(name, *args, **kw)

    monkeypatch.setattr(safetensors.torch, "load_file", evicted_first)
    with caplog.at_level(logging.WARNING):
        again = tensors(p, refs)
    assert not again.cache_hit and path.exists() and images.fetched == 8
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    monkeypatch.undo()
    path.write_bytes(b"damaged")  # a damaged file still says so
    with caplog.at_level(logging.WARNING):
        assert not tensors(p, refs).cache_hit
    assert "is unreadable; rebuilding it" in caplog.text


def test_a_failed_write_leaves_no_temporary_file_and_fails_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(*args: Any, **kw: Any) -> None:
        # What safetensors raises for an I/O error: not an OSError.
        raise safetensors.SafetensorError("Error while serializing: I/O error: disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    images = Images()
    with caplog.at_level(logging.WARNING):
        result = tensors(preprocessor(images, tmp_path, cache.DEFAULT_MAX_BYTES), images.refs(4))
    assert result.images.shape == (4, 1, 8, 8) and not result.cache_hit
    assert left(tmp_path) == set()
    assert "could not write cache file" in caplog.text


# --- The setting --------------------------------------------------------------------


def test_the_budget_is_a_trainer_flag_and_never_negative(capsys: Any) -> None:
    parser = cli.build_parser()
    assert (
        TrainerConfig.from_args(parser.parse_args(["trainer"])).cache_max_bytes
        == (TrainerConfig().cache_max_bytes)
        == cache.DEFAULT_MAX_BYTES
    )
    args = parser.parse_args(["trainer", "--cache-max-bytes", "0"])
    assert TrainerConfig.from_args(args).cache_max_bytes == 0
    with pytest.raises(ValueError, match="at least 0"):
        TrainerConfig(cache_max_bytes=-1)
    assert cli.main(["trainer", "--cache-max-bytes", "-1"]) == 1
    assert "--cache-max-bytes) must be at least 0, got -1" in capsys.readouterr().err
