"""The real `metalearn` command: the gateway as a process, the CLI against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import SEED
from tests.harness import png

METALEARN = [sys.executable, "-m", "metalearn.cli"]


class GatewayProcess:
    """`metalearn gateway` on a free port with an embedded PostgreSQL in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [*METALEARN, "gateway", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"gateway did not start: {line}{self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.address = line.rsplit(" ", 1)[-1].strip()

    def cli(
        self,
        *args: str,
        check: bool = True,
        data_dir: Path | None = None,
        gateway_first: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        where = ["--gateway", self.address]
        result = subprocess.run(
            [*METALEARN, *where, *args] if gateway_first else [*METALEARN, *args, *where],
            capture_output=True,
            text=True,
            timeout=60,
            # The CLI finds the admin token the gateway wrote, as it does in ./.metalearn.
            env={
                **{k: v for k, v in os.environ.items() if k != "METALEARN_TOKEN"},
                "METALEARN_DATA_DIR": str(data_dir or self.data_dir),
            },
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture()
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path / "data")
    yield process
    if process.proc.poll() is None:
        process.terminate()


def postgres_running(data_dir: Path) -> bool:
    return (data_dir / "postgres" / "postmaster.pid").exists()


def test_restart_on_the_same_data_dir_keeps_everything(gateway_process, tmp_path) -> None:
    gw = gateway_process
    created = json.loads(gw.cli("attempts", "create", "--file", str(SEED), "--json").stdout)
    folder = tmp_path / "images"
    for label, colors in (("cat", [(1, 2, 3), (4, 5, 6)]), ("dog", [(7, 8, 9)])):
        (folder / label).mkdir(parents=True)
        for i, color in enumerate(colors):
            (folder / label / f"{i}.png").write_bytes(png(color))
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG nope")
    imported = gw.cli("images", "import", str(folder))
    assert "added 3, duplicates 0, rejected 1" in imported.stdout
    assert "broken.png" in imported.stdout

    assert gw.terminate() == 0
    assert not postgres_running(gw.data_dir)  # the embedded server stops with the gateway

    again = GatewayProcess(gw.data_dir)
    try:
        got = json.loads(again.cli("attempts", "get", "american_dog_species_3", "--json").stdout)
        assert got["id"] == created["id"]
        assert got["training_commands"] == created["training_commands"]
        labels = json.loads(again.cli("images", "labels", "--json").stdout)
        assert labels == {"cat": 2, "dog": 1}
    finally:
        assert again.terminate() == 0


def test_health_and_reflection_are_served(gateway_process) -> None:
    with grpc.insecure_channel(gateway_process.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "metalearn.v1.AttemptService", "metalearn.v1.DatasetService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert {"metalearn.v1.AttemptService", "metalearn.v1.DatasetService"} <= names


def test_cli_errors_are_one_line_and_nonzero(gateway_process, tmp_path) -> None:
    gw = gateway_process
    missing = gw.cli("attempts", "get", "nobody", check=False)
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0
    assert "NOT_FOUND" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad name!", "training_commands": {"n_epoch": -1}}))
    refused = gw.cli("attempts", "create", "--file", str(bad), check=False)
    assert refused.returncode == 1
    assert (
        "attempt.name" in refused.stderr and "attempt.training_commands.n_epoch" in refused.stderr
    )
    assert (
        gw.cli("attempts", "create", "--file", str(tmp_path / "none.json"), check=False).returncode
        == 1
    )
    listed = gw.cli("attempts", "list")
    assert "NAME" in listed.stdout


def test_unreachable_gateway_is_a_clear_error() -> None:
    result = subprocess.run(
        [*METALEARN, "attempts", "list", "--gateway", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "METALEARN_GATEWAY": ""},
    )
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr


def test_a_port_in_use_is_an_error_not_a_shared_port(gateway_process, tmp_path) -> None:
    """gRPC would bind with SO_REUSEPORT and two gateways would share the calls."""
    for command in (
        ["gateway", "--listen", gateway_process.address, "--data-dir", str(tmp_path / "g")],
        ["up", "--listen", gateway_process.address, "--data-dir", str(tmp_path / "u"),
         "--trainers", "0", "--ui", "off"],
    ):  # fmt: skip
        done = subprocess.run([*METALEARN, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0, done.stdout
        log = done.stderr + "".join(p.read_text() for p in tmp_path.rglob("*.log"))
        assert "in use" in log, log[-2000:]
        if command[0] == "up":  # the reason in one line, no traceback
            assert done.stderr.startswith("metalearn: gateway did not start: cannot listen on")
            assert "is the port in use?" in done.stderr and "Traceback" not in done.stderr
    # The first is still the only one answering.
    assert gateway_process.cli("attempts", "list").returncode == 0


def test_the_cli_lists_by_filter(gateway_process) -> None:
    gw = gateway_process
    gw.cli("attempts", "create", "--file", "tests/fixtures/attempt_american_dog_species_3.json")
    hit = gw.cli("attempts", "list", "--filter", 'training_commands.optimizer.name = "SGD"')
    assert "american_dog_species_3" in hit.stdout
    miss = gw.cli("attempts", "list", "--json", "--filter", "training_commands.batch_size > 4")
    assert json.loads(miss.stdout) == []
    bad = gw.cli("attempts", "list", "--filter", "training_commands.batch_size >", check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "filter: at column 31: expected a value" in bad.stderr
    # A field named without its place: the path that has it.
    short = gw.cli("attempts", "list", "--filter", "batch_size > 4", check=False)
    assert short.returncode == 1 and short.stderr.endswith(
        "an attempt has no field 'batch_size'; did you mean \"training_commands.batch_size\"?\n"
    )


@pytest.mark.slow
def test_up_starts_the_dashboard_and_its_link_signs_in(tmp_path) -> None:
    import re

    import httpx

    up = subprocess.Popen(
        [*METALEARN, "up", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
         "--trainers", "0", "--ui", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert up.stdout is not None
        banner = up.stdout.readline()
        link = re.search(r"dashboard on (http://127\.0\.0\.1:\d+)/login/launch\?key=(\S+);", banner)
        assert link is not None, banner
        # Not the default address and data directory: the exports that the CLI needs.
        exports = up.stdout.readline()
        found = re.search(r"export METALEARN_GATEWAY=(\S+) METALEARN_DATA_DIR=(\S+)$", exports)
        assert found is not None, exports
        env = {**os.environ, "METALEARN_GATEWAY": found[1], "METALEARN_DATA_DIR": found[2]}
        env.pop("METALEARN_TOKEN", None)
        whoami = subprocess.run(
            [*METALEARN, "tokens", "whoami"], capture_output=True, text=True, env=env, cwd="/"
        )
        assert whoami.returncode == 0 and "admin" in whoami.stdout, whoami.stderr
        base, key = link.groups()
        with httpx.Client(base_url=base) as browser:
            assert browser.get("/attempts").status_code == 303  # not signed in
            assert browser.get("/login/launch", params={"key": key[:-1]}).status_code == 403
            assert browser.get("/login/launch", params={"key": key}).status_code == 303
            page = browser.get("/attempts")
            assert page.status_code == 200 and "(admin)" in page.text
        # The key is nowhere in the dashboard's command line.
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert key not in ps
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
