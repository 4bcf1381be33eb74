"""docs/architecture.md stays true to the repository: every reference to one of its
sections names a section it has, and no reference to the old internal design is left.

Code comments, READMEs and manifests cite the design as `docs/architecture.md §N`; a
section renumbered or removed would leave them pointing nowhere.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
# Built from parts, so that this file does not match what it looks for.
REFERENCE = re.compile(re.escape("docs/architecture.md") + r" \u00a7(\d+)")
OLD_REFERENCE = "DESIGN" + " \u00a7"
HEADING = re.compile(r"^## (\d+)\. \S", re.MULTILINE)
_SKIPPED_DIRS = {".git", ".venv", "build", "node_modules", "__pycache__"}


def _repository_files() -> list[Path]:
    """The repository's files: tracked, or new and not ignored (git's view); every file
    under the root but the usual build and environment folders where git is absent."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        paths = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        paths = [
            p for p in ROOT.rglob("*") if not _SKIPPED_DIRS.intersection(p.relative_to(ROOT).parts)
        ]
    return [p for p in paths if p.is_file()]


def _texts() -> dict[str, str]:
    """Every text file of the repository by its relative path (binary files left out)."""
    texts = {}
    for path in _repository_files():
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            texts[path.relative_to(ROOT).as_posix()] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return texts


def _sections() -> list[int]:
    return [int(n) for n in HEADING.findall(DOC.read_text(encoding="utf-8"))]


def test_sections_are_numbered_once_and_in_order() -> None:
    sections = _sections()
    assert sections, "docs/architecture.md has no numbered sections (## N. Title)"
    assert sections == list(range(1, len(sections) + 1))


def test_every_reference_names_a_section() -> None:
    sections = set(_sections())
    dangling = [
        f"{name}:{text.count(chr(10), 0, match.start()) + 1}: \u00a7{match.group(1)}"
        for name, text in _texts().items()
        for match in REFERENCE.finditer(text)
        if int(match.group(1)) not in sections
    ]
    assert not dangling, f"references to sections docs/architecture.md lacks: {dangling}"


def test_the_code_cites_the_document() -> None:
    # The references exist at all (a pattern that matched nothing would prove nothing).
    citing = {name for name, text in _texts().items() if REFERENCE.search(text)}
    assert {"gateway/store/work.py", "gateway/store/database.py"} <= citing


def test_no_reference_to_the_old_design_is_left() -> None:
    left = [
        f"{name}:{number}"
        for name, text in _texts().items()
        for number, line in enumerate(text.splitlines(), 1)
        if OLD_REFERENCE in line
    ]
    assert not left, f"cite docs/architecture.md \u00a7N instead: {left}"


# A repository path in backticks: `gateway/dispatcher.py`, `trainer/`, `protos/metalearn/v1/`
# (its first part in lower case: `LISTEN/NOTIFY` is no path).
CITED_PATH = re.compile(r"`([a-z0-9_][a-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)*/?)`")
# A relative link: [text](../README.md#anchor).
LINKED_PATH = re.compile(r"\]\((?!https?:|#)([^)#\s]+)(?:#[^)\s]*)?\)")


def test_every_path_the_document_cites_exists() -> None:
    # Issue 26's target layout (learning/, gateway/attempts/, gateway/epochs.py,
    # metalearn/cli/) is what the document describes: this holds once those moves landed.
    text = DOC.read_text(encoding="utf-8")
    cited = {p for p in CITED_PATH.findall(text) if "/" in p and not p.startswith(".")}
    linked = {
        (DOC.parent / p).resolve().relative_to(ROOT).as_posix() for p in LINKED_PATH.findall(text)
    }
    assert len(cited) > 50, "the pattern for cited paths no longer matches the document"
    missing = sorted(p for p in cited | linked if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md cites paths that do not exist: {missing}"
