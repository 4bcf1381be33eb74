"""What one study may cost the gateway (issue 25, findings 2 and 3): every sampler and
pruner argument is bounded to what a real study needs and named when it is not; the
search space's check at CreateStudy and every ask of the sampler run in a worker thread,
so that other calls are answered while they run. Through a real gateway and PostgreSQL.

Ordering, not timing: the gateway's calls into its worker processes are watched (a
wrapper notes when each starts and ends, and makes the real call), and another client's
calls are answered between the two. On the event loop, no answer could be sent in
between."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from gateway import workers
from gateway.studies import asking, checks, pruning
from learning.studies import arguments, sampling
from metalearn.v1 import study_service_pb2 as pb
from metalearn.v1 import study_service_pb2_grpc
from tests.harness import upload_labels
from tests.rpc import expect_error, violations
from tests.trainer_harness import lenet_command, lenet_doc


@pytest.fixture()
def studies(channel, gateway) -> study_service_pb2_grpc.StudyServiceStub:
    upload_labels(gateway, lenet_command().label_names)
    return study_service_pb2_grpc.StudyServiceStub(channel)


def study(name: str, **changes: Any) -> pb.Study:
    doc: dict[str, Any] = {
        "name": name,
        "base_command": json_format.MessageToDict(
            lenet_command(n_epoch=2), preserving_proto_field_name=True
        ),
        "search_space": [
            {"path": "optimizer.lr", "float": {"low": 1e-4, "high": 1e-1, "log": True}},
            {"path": "batch_size", "int": {"low": 16, "high": 64, "step": 16}},
        ],
        "n_trials": 4,
        "max_parallel": 1,
        **changes,
    }
    return json_format.ParseDict(doc, pb.Study())


def refused(studies, spec: pb.Study) -> dict[str, str]:
    err = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, studies.CreateStudy, pb.CreateStudyRequest(study=spec)
    )
    return violations(err)


def outside(arg: arguments.Arg, scale: arguments.Scale) -> list[Any]:
    """Values just outside what `arg` takes (and a fraction for a whole number)."""
    if arg.kind == arguments.FLAG:
        return [1.0]
    if arg.kind == arguments.CHOICE:
        return ["nope"]
    low, high = scale.of(arg.low), scale.of(arg.high)
    step = 1.0 if arg.kind == arguments.WHOLE else 0.5
    values = [low - step, high + step]
    if arg.kind == arguments.WHOLE:
        values.append(low + 0.5)
    return values


def _tables() -> list[tuple[str, str, dict[str, arguments.Arg]]]:
    found = [("sampler", name, table) for name, table in sampling.SAMPLER_ARGS.items()]
    found += [("pruner", name, table) for name, table in pruning.PRUNER_ARGS.items()]
    return [t for t in found if t[2]]


@pytest.mark.parametrize(
    ("part", "name", "table"), _tables(), ids=[f"{p}-{n}" for p, n, _ in _tables()]
)
def test_every_argument_outside_its_range_is_named(
    studies, gateway, part: str, name: str, table: dict[str, arguments.Arg]
) -> None:
    """Each argument each sampler and pruner takes, one value at a time just past its
    bounds: INVALID_ARGUMENT naming study.<part>.args.<argument>."""
    limits = gateway.config.limits
    scale = arguments.Scale(trials=checks.MAX_TRIALS, epochs=limits.max_epochs)
    for key, arg in table.items():
        for value in outside(arg, scale):
            spec = study(f"bounds-{name}")
            getattr(spec, part).name = name
            getattr(spec, part).args.update({key: value})
            field = f"study.{part}.args.{key}"
            found = refused(studies, spec)
            assert field in found, (key, value, found)


def test_the_finding_and_the_bounds_themselves(studies) -> None:
    """The case from the issue (4,000,000 candidates, no startup trials) is refused at
    once; the largest values allowed are taken."""
    spec = study("freeze")
    spec.sampler.args.update({"n_ei_candidates": 4_000_000, "n_startup_trials": 0})
    found = refused(studies, spec)
    assert found == {"study.sampler.args.n_ei_candidates": "a whole number from 1 to 1000"}
    spec = study("largest", n_trials=checks.MAX_TRIALS)
    spec.sampler.args.update({"n_ei_candidates": 1000, "n_startup_trials": 1000})
    spec.pruner.name = "successive_halving"
    spec.pruner.args.update({"reduction_factor": 100, "min_early_stopping_rate": 32})
    created = studies.CreateStudy(pb.CreateStudyRequest(study=spec)).study
    assert created.sampler.args["n_ei_candidates"] == 1000
    studies.StopStudy(pb.StopStudyRequest(name="largest", cancel_running=True))


class Watch:
    """A real function wrapped so that each call's start and end are noted in one
    sequence with the calls another client sees answered."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._calls = 0

    def note(self, what: str, call: int = 0) -> None:
        with self._lock:
            self.events.append((what, call))

    def wrap(self, real: Callable[..., Awaitable[Any]], fn: Callable[..., Any]) -> Any:
        """`workers.run`, noting each of its calls of `fn`."""

        async def watched(called: Callable[..., Any], *args: Any) -> Any:
            if called is not fn:
                return await real(called, *args)
            with self._lock:
                self._calls += 1
                call = self._calls
            self.note("start", call)
            try:
                return await real(called, *args)
            finally:
                self.note("end", call)

        return watched

    def most_answered_within_one_call(self) -> int:
        """The most answers noted between one call's start and its end."""
        best, inside = 0, {}
        for what, call in self.events:
            if what == "start":
                inside[call] = 0
            elif what == "end":
                best = max(best, inside.pop(call, 0))
            else:
                inside = {c: n + 1 for c, n in inside.items()}
        return best


@pytest.fixture()
def answering(gateway) -> Iterator[Callable[[Watch, threading.Event], threading.Thread]]:
    """A client that calls ListStudies until told to stop, noting each answer."""
    threads: list[threading.Thread] = []

    def start(watch: Watch, stop: threading.Event) -> threading.Thread:
        def run() -> None:
            with gateway.channel() as ch:
                stub = study_service_pb2_grpc.StudyServiceStub(ch)
                while not stop.is_set():
                    stub.ListStudies(pb.ListStudiesRequest(page_size=1), timeout=120)
                    watch.note("answered")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.join(timeout=130)


def big_base() -> tuple[dict[str, Any], list[int]]:
    """A command of 256 layers (the most allowed), and where its hidden Linear layers are."""
    doc = lenet_doc()
    doc["n_epoch"] = 2
    layers = doc["model"]["layers"]
    while len(layers) < 256:
        layers.insert(9, {"name": "ReLU"} if len(layers) % 2 else
                      {"name": "Linear", "in_features": "auto", "out_features": 84})  # fmt: skip
    return doc, [i for i, layer in enumerate(layers) if layer["name"] == "Linear"][:-1]


def heaviest_space() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The 256-layer base command and a space of as many values to check as allowed."""
    doc, linear = big_base()
    per = 100
    space = [
        {"path": f"model.layers[{linear[i]}].out_features",
         "categorical": {"values": list(range(1, per + 1))}}
        for i in range(checks.MAX_CORNERS // per)
    ]  # fmt: skip
    return doc, space


def test_the_heaviest_space_is_checked_while_other_calls_are_answered(
    studies, monkeypatch, answering
) -> None:
    doc, space = heaviest_space()
    spec = study("heavy", base_command=doc, search_space=space)
    watch = Watch()
    monkeypatch.setattr(workers, "run", watch.wrap(workers.run, checks.problems))
    stop = threading.Event()
    answering(watch, stop)
    try:
        while not any(what == "answered" for what, _ in watch.events):
            time.sleep(0.01)
        studies.CreateStudy(pb.CreateStudyRequest(study=spec), timeout=120)
    finally:
        stop.set()
    # More than one: an answer sent just before a call on the loop began can be noted
    # just after it (the client thread notes it late); a second one cannot.
    assert watch.most_answered_within_one_call() >= 2, watch.events
    # One value past the bound is refused, naming the space, before anything is built.
    _, linear = big_base()
    space.append({"path": f"model.layers[{linear[len(space)]}].out_features",
                  "int": {"low": 8, "high": 16}})  # fmt: skip
    found = refused(studies, study("heavier", base_command=doc, search_space=space))
    assert "at most 400 values" in found["study.search_space"]


def test_asks_run_while_other_calls_are_answered(studies, monkeypatch, answering) -> None:
    """TPE's costliest arguments over the most parameters, on the largest command, 16
    trials asked at once (each ask with the ones before it as running trials)."""
    doc, linear = big_base()
    space = [{"path": f"model.layers[{i}].out_features", "int": {"low": 8, "high": 128}}
             for i in linear[:32]]  # fmt: skip
    spec = study("asks", base_command=doc, search_space=space, n_trials=16, max_parallel=16)
    spec.sampler.args.update({"n_ei_candidates": 1000, "n_startup_trials": 0,
                              "multivariate": True})  # fmt: skip
    watch = Watch()
    monkeypatch.setattr(workers, "run", watch.wrap(workers.run, asking.propose))
    stop = threading.Event()
    answering(watch, stop)
    try:
        studies.CreateStudy(pb.CreateStudyRequest(study=spec), timeout=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            made = studies.GetStudy(pb.GetStudyRequest(name="asks")).study.trials_made
            if made == 16:
                break
            time.sleep(0.05)
    finally:
        stop.set()
    assert made == 16
    assert watch.most_answered_within_one_call() >= 2, watch.events


def test_a_pass_that_asks_part_of_what_is_wanted_comes_back_for_the_rest(
    studies, monkeypatch
) -> None:
    """A pass asks for about ASK_SECONDS of CPU and stores that; with none, one trial a
    pass, and passes come until every slot is filled, each trial asked once."""
    monkeypatch.setattr(asking, "ASK_SECONDS", 0.0)
    studies.CreateStudy(pb.CreateStudyRequest(study=study("parts", n_trials=8, max_parallel=6)))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = studies.GetStudy(pb.GetStudyRequest(name="parts")).study
        if len([t for t in found.trials if t.attempt_id]) == 6:
            break
        time.sleep(0.05)
    assert [t.number for t in found.trials] == list(range(6))
    assert found.trials_made == 6 and all(t.attempt_id for t in found.trials)


def test_a_worker_process_ends_with_its_gateway_even_killed(tmp_path) -> None:
    """The workers' pipes would not tell them (each holds the writer end too): without
    a watch on its parent, a worker of a gateway killed with -9 would live on."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "killed.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from gateway import workers\n"
        "def pid():\n    return os.getpid()\n"
        "async def main():\n    print(await workers.run(pid), flush=True)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n    os.kill(os.getpid(), 9)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = tmp_path / "out"
    with out.open("w") as stdout:  # a file, not a pipe: a worker left alive holds a pipe
        done = subprocess.run([sys.executable, str(script)], cwd=root, stdout=stdout,
                              stderr=subprocess.STDOUT, timeout=120, env=env)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, out.read_text()[-2000:]
    worker = int(out.read_text().split()[0])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{worker}").exists(), f"worker {worker} outlived its gateway"
