"""The layers of the `metalearn` package, checked from its import statements.

metalearn/ holds three things: code shared by every process (errors, statuses, documents,
limits, TLS, credentials, the text in `metalearn.views`…), the Python client
(`metalearn.client`), and the `metalearn` command (`metalearn.cli`). The shared code
imports neither of the other two, so the gateway and the trainer never load the client;
and the dashboard, a client of its own, formats through `metalearn.views`, never through
the command's modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "metalearn"
# What is not shared: the command, the client, and the generated code.
NOT_SHARED = ("metalearn/cli/", "metalearn/client.py", "metalearn/v1/")
# What shared code may never import (the client only for type checking).
ABOVE_SHARED = ("metalearn.cli", "metalearn.client", "gateway", "trainer", "dashboard")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def shared_modules() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.relative_to(ROOT).as_posix().startswith(NOT_SHARED)
    ]


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, *, runtime_only: bool = False) -> Iterator[tuple[int, str]]:
    """Every module `path` imports (at the top, in functions, lazily), with its line;
    with `runtime_only`, not those under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if _type_checking_only(node):
                skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the module's package
                here = module_name(path).split(".")
                parent = here[: len(here) - node.level + (path.name == "__init__.py")]
                base = ".".join([*parent, base] if base else parent)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def reaches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_importing_the_package_and_its_shared_modules_does_not_load_the_client() -> None:
    shared = [module_name(p) for p in shared_modules()]
    assert {"metalearn", "metalearn.errors", "metalearn.status", "metalearn.documents",
            "metalearn.limits", "metalearn.structs", "metalearn.tls", "metalearn.credentials",
            "metalearn.outgoing", "metalearn.views.attempts"} <= set(shared)  # fmt: skip
    code = (
        f"import {', '.join(shared)}; import sys; "
        "print(sorted(m for m in sys.modules if m == 'metalearn.client'"
        " or m.startswith('metalearn.cli.') or m == 'metalearn.cli'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True,
        timeout=120,
    ).stdout  # fmt: skip
    assert out.strip() == "[]"


def test_the_gateway_does_not_load_the_client() -> None:
    code = "import gateway.server, sys; print('metalearn.client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True,
        timeout=120,
    ).stdout  # fmt: skip
    assert out.strip() == "False"


def test_the_package_still_offers_the_client_and_its_error() -> None:
    code = (
        "import metalearn, metalearn.client as c; from metalearn import Client, MetalearnError;"
        " assert Client is c.Client and MetalearnError is c.MetalearnError;"
        " assert {'Client', 'MetalearnError'} <= set(dir(metalearn))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_shared_modules_import_nothing_above_them() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in shared_modules()
        for line, name in imports(path, runtime_only=True)
        if reaches(name, ABOVE_SHARED)
    ]
    assert found == []
    # Not even for type checking: the command and the servers are above the package.
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in shared_modules()
        for line, name in imports(path)
        if reaches(name, ("metalearn.cli", "gateway", "trainer", "dashboard", "learning"))
    ]
    assert found == []


def test_the_dashboard_imports_nothing_of_the_command() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "dashboard").rglob("*.py"))
        for line, name in imports(path)
        if reaches(name, ("metalearn.cli",))
    ]
    assert found == []


def test_the_checks_see_imports_of_every_kind(tmp_path: Path) -> None:
    """The parser above finds top-level, lazy, relative and aliased imports alike."""
    probe = PACKAGE / "views" / "attempts.py"
    names = {name for _, name in imports(probe)}
    assert "metalearn.documents" in names and "matplotlib" in names  # matplotlib: lazy
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from metalearn.cli import runs as r\n"
        "def f():\n    import gateway.server\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from metalearn.client import Client\n"
    )
    everything = {name for _, name in imports(sample)}
    assert {"metalearn.cli.runs", "gateway.server", "metalearn.client.Client"} <= everything
    assert "metalearn.client" not in {name for _, name in imports(sample, runtime_only=True)}
