"""The examples in other languages, ready to run, or the test skipped where the toolchain
is missing (node: `make setup` installs the example's packages; Go: `make go-example`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.inprocess import GatewayThread

ROOT = Path(__file__).resolve().parents[1]
NODE_EXAMPLE = ROOT / "examples" / "node" / "train.js"
NODE_REPORT_EXAMPLE = NODE_EXAMPLE.with_name("report.js")
GO_BUILD = ROOT / "examples" / "go" / "build.sh"
# Where Debian puts the Go sources the example builds against.
DEBIAN_GOCODE = Path("/usr/share/gocode/src")
GO_NEEDS = ("go", "protoc-gen-go", "protoc-gen-go-grpc")


def node_example() -> list[str]:
    """The command that runs the Node.js example."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Node.js example cannot run here")
    modules = NODE_EXAMPLE.parent / "node_modules"
    assert (modules / "protobufjs").is_dir(), "run `make setup` (npm ci in examples/node)"
    return ["node", str(NODE_EXAMPLE)]


def node_report_example() -> list[str]:
    """The command that runs the Node.js reporting example, report.js: node_example's
    checks (skipped without node, its packages installed), another script."""
    return [*node_example()[:-1], str(NODE_REPORT_EXAMPLE)]


def go_example(out_dir: Path) -> Path:
    """The Go example, generated with buf and built from Debian's Go packages."""
    missing = [tool for tool in GO_NEEDS if shutil.which(tool) is None]
    if not (DEBIAN_GOCODE / "google.golang.org" / "grpc").is_dir():
        missing.append("golang-google-grpc-dev")
    if missing:
        pytest.skip(f"no {', '.join(missing)}: `make go-example` installs Debian's Go packages")
    binary = out_dir / "metalearn-go"
    buf = Path(sys.executable).with_name("buf")
    built = subprocess.run(
        [str(GO_BUILD), str(binary)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "BUF": str(buf) if buf.exists() else "buf"},
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    return binary


def run_example(
    argv: list[str], gateway: GatewayThread, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Runs an example against `gateway`, with its admin token."""
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "METALEARN_GATEWAY": gateway.address,
             "METALEARN_TOKEN": gateway.admin_token},
    )  # fmt: skip
