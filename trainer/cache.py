"""The preprocessed-data cache directory, kept under a byte budget: least recently used out.

A cache file is `{fingerprint}.safetensors` (trainer/data.py); its mtime is when a run
last used it: set when it is written, refreshed by `touch` on every hit. After each
write, `prune` removes the files used longest ago until the rest fit the budget, and the
leftovers of writers that crashed. Several trainer processes may share the directory:
any file may vanish under any call (another process evicted it), which is never an
error; any other filesystem failure is logged, not raised: it only costs a later run a
decode.

Hand-written on purpose: the files are plain safetensors files that every trainer
process writes, reads and ages directly, with the filesystem as the only shared state.
`diskcache` keeps its entries and their recency in its own SQLite index, and joblib's
`Memory.reduce_size` works over its own per-call layout; neither would govern these
files, and a shared index would be one more thing to lock and to lose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The budget when none is configured; a run's preprocessed data is at most
# metalearn.limits' max_data_bytes (also 4 GiB), so the largest one fits.
DEFAULT_MAX_BYTES = 4 * 1024**3
# A temporary file untouched this long is a crashed writer's (a live one writes it
# within seconds of creating it, and renames it away as soon as it is written).
STALE_SECONDS = 3600.0

# Only names the preprocessor writes are ever removed, whatever else the directory
# holds: cache files named by a SHA-256 fingerprint, `tempfile.mkstemp`'s files
# ("tmp…" + ".tmp") and the ones safetensors writes beside them before its own rename
# (the Rust tempfile crate's ".tmp" + 6 letters and digits).
_CACHE_FILE = re.compile(r"[0-9a-f]{64}\.safetensors")
_TEMPORARY = re.compile(r"tmp\w+\.tmp|\.tmp[A-Za-z0-9]+")


@dataclass(frozen=True)
class _Entry:
    path: Path
    size: int
    mtime_ns: int


def touch(path: Path) -> bool:
    """Marks a cache file as just used (its mtime, which eviction goes by); False when
    there is no such file (not cached, or just evicted by another process)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError as err:  # a read-only cache is still read
        log.warning("could not mark cache file %s as used: %s", path, err)
    return True


def prune(directory: Path, max_bytes: int, keep: Path, now: float | None = None) -> list[Path]:
    """Removes the least recently used cache files in `directory` until those left total
    at most `max_bytes`, and temporary files older than STALE_SECONDS (a fresh one may be
    another process's write under way); temporary files do not count towards the budget.

    `keep`, the file just written, is never removed, even alone over the budget: a run
    is about to use it, and the next write evicts it. Returns the files it found gone
    (including any another process removed meanwhile); any other failure is logged, not
    raised.
    """
    now = time.time() if now is None else now
    try:
        return _prune(directory, max_bytes, keep.name, now)
    except OSError as err:
        log.warning("could not prune the cache %s: %s", directory, err)
        return []


def _prune(directory: Path, max_bytes: int, keep: str, now: float) -> list[Path]:
    removed: list[Path] = []
    files: list[_Entry] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        cache_file = _CACHE_FILE.fullmatch(entry.name) is not None
        if not (cache_file or _TEMPORARY.fullmatch(entry.name)):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        path = Path(entry.path)
        if cache_file:
            files.append(_Entry(path, stat.st_size, stat.st_mtime_ns))
        elif now - stat.st_mtime > STALE_SECONDS and _remove(path):
            removed.append(path)
    total = sum(f.size for f in files)
    # Oldest use first; the name breaks ties, so that every process picks the same file.
    for f in sorted(files, key=lambda f: (f.mtime_ns, f.path.name)):
        if total <= max_bytes:
            break
        if f.path.name == keep:
            continue
        if _remove(f.path):
            total -= f.size
            removed.append(f.path)
    if removed:
        log.info("cache %s: removed %d files, %d bytes kept", directory, len(removed), total)
    return removed


def _remove(path: Path) -> bool:
    """Whether `path` is gone: removed here, or already by another process."""
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    except OSError as err:
        log.warning("could not remove cache file %s: %s", path, err)
        return False
    return True
