"""One attempt on two devices: DistributedDataParallel over two gloo processes on the CPU,
through a real trainer, against a real gateway's images."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from metalearn.v1 import attempt_pb2, trainer_service_pb2
from tests import test_trainer
from tests.rpc import expect_error, violations
from tests.test_trainer import drain, train
from tests.trainer_harness import lenet_command, lenet_doc
from trainer.artifacts import read_weights_tensors

pb = trainer_service_pb2
CODE = grpc.StatusCode

pytestmark = pytest.mark.slow  # worker processes and their ranks, each importing torch
# A trainer with 2 slots: test_trainer's fixture, started again for this module.
trainer = test_trainer.trainer


def rank_processes() -> list[int]:
    """The pids of every rank process still alive on this machine."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"trainer.distributed" in cmdline:
            found.append(int(pid))
    return found


def labels_and_batch(trainer, remainder: int, sizes: range) -> tuple[list[str], int]:
    """The digits' first labels and a batch size whose last batch holds `remainder`
    images (the fewest labels dropped that allow one)."""
    labels = list(lenet_command().label_names)
    for count in range(len(labels), 1, -1):
        probe = train(trainer, lenet_command(n_epoch=1, label_names=labels[:count]))
        assert probe.started is not None
        images = probe.started.train_images
        batch = next((b for b in sizes if images % b == remainder), 0)
        if batch:
            return labels[:count], batch
    raise AssertionError(f"no label set gives a last batch of {remainder}")


# How close N ranks' curve must stay to one device's, and why. Each rank sums its part of
# a batch's gradient and gloo sums the parts: the same terms as one device's sum in
# another order, and the convolutions of a smaller batch take other vectorized paths
# (oneDNN and ATen pick them by the CPU's instruction set). Each step's gradient then
# differs by float32 rounding, a few 1e-8 relative. With SGD the update is linear in the
# gradient, so at a learning rate the loss falls smoothly at, the curves stay that close:
# measured 2e-8 to 4e-7 relative over 3 epochs with AVX-512, AVX2 and no vector unit
# (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), against a tolerance of 1e-5. Adam is not
# used here on purpose: it divides each step by the root of the gradient's running
# square, so a weight whose gradient is mostly rounding gets an lr-sized step anyway, and
# the curves part chaotically (AVX2: 8e-7, 5e-5, 1.3e-3 over 3 epochs; AVX-512 under
# 1e-4 by luck), whatever the order of sums, on one device too.
CURVE_TOLERANCE = 1e-5


def sgd_command(**changes: object) -> attempt_pb2.TrainCommand:
    """The digits' LeNet trained by SGD with momentum: steps linear in the gradient."""
    command = lenet_command(n_epoch=3, **changes)
    command.optimizer.Clear()
    command.optimizer.update({"name": "SGD", "lr": 0.05, "momentum": 0.9})
    return command


def test_two_gloo_ranks_follow_the_one_device_curve(trainer) -> None:
    # A last batch of an odd number of images splits unevenly (5 and 4, say): the loss
    # weights make that step, too, the one-device step.
    probe = train(trainer, lenet_command(n_epoch=1))
    assert probe.started is not None
    batch = next(b for b in range(64, 32, -1) if probe.started.train_images % b in (5, 7, 9))
    one = train(trainer, sgd_command(batch_size=batch))
    two = train(trainer, sgd_command(batch_size=batch, devices=2))
    assert two.started is not None and two.started.device == "2 x cpu (gloo)"
    assert two.started.train_images == one.started.train_images  # type: ignore[union-attr]
    assert two.finished is not None and two.finished.outcome == pb.TRAIN_OUTCOME_COMPLETED
    assert [e.epoch for e in two.epochs] == [1, 2, 3]
    # The same global batches and gradients: only the order of float sums differs.
    assert two.losses == pytest.approx(one.losses, rel=CURVE_TOLERANCE)
    assert [e.val_loss for e in two.epochs] == pytest.approx(
        [e.val_loss for e in one.epochs], rel=CURVE_TOLERANCE
    )
    assert [e.val_accuracy for e in two.epochs] == pytest.approx(
        [e.val_accuracy for e in one.epochs], abs=0.02
    )
    assert one.losses[-1] < one.losses[0]
    # Rank 0's weights are the model's, in the one-device layout (no DDP "module." prefix).
    assert read_weights_tensors(two.weights).keys() == read_weights_tensors(one.weights).keys()
    assert not rank_processes()


def test_a_last_batch_smaller_than_the_team_trains_on_one_rank(trainer) -> None:
    # Batches that leave one image alone at the end of every epoch: rank 0 trains on it
    # while rank 1 runs the batch at weight 0, and the step is still the one-device step.
    labels, batch = labels_and_batch(trainer, 1, range(64, 2, -1))
    command = sgd_command(batch_size=batch, label_names=labels)
    one = train(trainer, command)
    command.devices = 2
    two = train(trainer, command)
    assert two.losses == pytest.approx(one.losses, rel=CURVE_TOLERANCE)
    assert one.losses[-1] < one.losses[0]


def test_two_ranks_resume_from_a_checkpoint(trainer) -> None:
    # Dropout and a random flip: every rank's random state travels in the checkpoint.
    doc = lenet_doc()
    doc["model"]["layers"].insert(8, {"name": "Dropout", "p": 0.3})
    doc["transform"]["RandomHorizontalFlip"] = {"p": 0.5}
    doc.update(n_epoch=4, batch_size=64, devices=2)
    command = json_format.ParseDict(doc, attempt_pb2.TrainCommand())
    whole = train(trainer, command, checkpoint_every_epochs=2)
    assert set(whole.checkpoints) == {2}
    resumed = train(trainer, command, resume_checkpoint=whole.checkpoints[2])
    assert resumed.started is not None and resumed.started.first_epoch == 3
    assert [e.epoch for e in resumed.epochs] == [3, 4]
    assert resumed.losses == pytest.approx(whole.losses[2:], rel=1e-6)
    assert [e.val_accuracy for e in resumed.epochs] == [e.val_accuracy for e in whole.epochs[2:]]


def test_cancelling_a_two_device_run_stops_every_rank(trainer) -> None:
    call = trainer.Train(
        pb.TrainerServiceTrainRequest(
            attempt_name="long", command=lenet_command(n_epoch=10_000, batch_size=2, devices=2)
        )
    )
    for event in call:
        if event.WhichOneof("event") == "started":
            break
    assert rank_processes()  # rank 1 is training
    call.cancel()
    deadline = time.monotonic() + 15
    while (rank_processes() or trainer.GetTrainerInfo(pb.GetTrainerInfoRequest()).busy_slots) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert trainer.GetTrainerInfo(pb.GetTrainerInfoRequest()).busy_slots == 0
    assert not rank_processes()


def test_an_interrupted_two_device_run_checkpoints_and_resumes(trainer) -> None:
    call = trainer.Train(
        pb.TrainerServiceTrainRequest(
            attempt_name="interrupted", command=lenet_command(n_epoch=50, devices=2)
        )
    )
    events = iter(call)
    for event in events:
        if event.WhichOneof("event") == "epoch":
            break
    assert trainer.Interrupt(pb.InterruptRequest(attempt_name="interrupted")).interrupted == 1
    rest = list(events)
    finished = rest[-1].finished
    assert finished.outcome == pb.TRAIN_OUTCOME_INTERRUPTED
    checkpoint = b"".join(e.checkpoint.data for e in rest if e.WhichOneof("event") == "checkpoint")
    resumed = train(
        trainer, lenet_command(n_epoch=finished.epochs + 1, devices=2), resume_checkpoint=checkpoint
    )
    assert [e.epoch for e in resumed.epochs] == [finished.epochs + 1]
    assert resumed.finished is not None
    assert resumed.finished.outcome == pb.TRAIN_OUTCOME_COMPLETED


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"devices": 3}, "command.devices"),  # more than the trainer's 2 slots
        ({"devices": 17}, "command.devices"),  # more than any run may ask
        ({"devices": -1}, "command.devices"),
        ({"devices": 2, "batch_size": 1}, "command.batch_size"),  # a device with no image
    ],
)
def test_bad_device_counts_name_the_field(trainer, changes, field) -> None:
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        drain(trainer.Train),
        pb.TrainerServiceTrainRequest(command=lenet_command(**changes)),
    )
    assert field in violations(err), violations(err)


def test_a_model_that_fails_on_one_ranks_part_stops_every_rank_with_the_reason(trainer) -> None:
    # BatchNorm1d in training takes no batch of one: a last batch of 3 splits 2 and 1.
    labels, batch = labels_and_batch(trainer, 3, range(64, 8, -1))
    doc = lenet_doc()
    doc["model"]["layers"].insert(-1, {"name": "BatchNorm1d", "num_features": "auto"})
    doc.update(n_epoch=1, batch_size=batch, devices=2, label_names=labels)
    command = json_format.ParseDict(doc, attempt_pb2.TrainCommand())
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        drain(trainer.Train),
        pb.TrainerServiceTrainRequest(attempt_name="bn", command=command),
    )
    assert "command.devices" in violations(err), violations(err)
    assert "one device's part" in err.details()
    assert not rank_processes()
