"""TrainerService: relays each run's events from its worker process, one message each;
profiles tasks itself, from the gateway's images or from a sample sent with the call."""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import torch

import metalearn
from metalearn.credentials import open_channel
from metalearn.errors import InvalidArgument, ResourceExhausted
from metalearn.status import translate_errors
from metalearn.v1 import trainer_service_pb2 as pb
from metalearn.v1 import trainer_service_pb2_grpc
from trainer.config import TrainerConfig
from trainer.workers import Workers


def devices() -> list[pb.Device]:
    """What this machine offers: every CUDA device, else the CPU."""
    if torch.cuda.is_available():
        found = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            found.append(
                pb.Device(name=f"cuda:{i}", description=props.name, memory_bytes=props.total_memory)
            )
        return found
    return [pb.Device(name="cpu", description=platform.processor() or platform.machine())]


class TrainerServicer(trainer_service_pb2_grpc.TrainerServiceServicer):
    """Train and Test each run in a worker process; this only relays and translates.

    ProfileTask runs here, in the call's thread: seconds on one core, with no random
    state or device of its own that would call for a process. Its images stay in this
    process only while the call lasts (at most the trainer's data limit)."""

    def __init__(self, config: TrainerConfig, workers: Workers) -> None:
        self._config = config
        self._workers = workers
        self._devices = devices()
        # Held while a profile runs: one at a time, the next refused rather than queued
        # (the gateway has other trainers to ask, and a profile's data may be large).
        self._profiling = threading.Lock()

    def _relay(
        self,
        kind: str,
        request: Any,
        context: grpc.ServicerContext,
        response: Any,
        devices: int = 1,
    ) -> Iterator[Any]:
        for payload in self._workers.start(
            kind,
            request.SerializeToString(),
            context.add_callback,
            context.is_active,
            request.attempt_name,
            devices,
        ):
            yield response.FromString(payload)

    @translate_errors
    def Train(
        self, request: pb.TrainerServiceTrainRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TrainerServiceTrainResponse]:
        devices = max(1, min(request.command.devices, self._config.limits.max_devices))
        yield from self._relay("train", request, context, pb.TrainerServiceTrainResponse, devices)

    @translate_errors
    def Test(
        self, request: pb.TrainerServiceTestRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TrainerServiceTestResponse]:
        yield from self._relay("test", request, context, pb.TrainerServiceTestResponse)

    @translate_errors
    def Interrupt(
        self, request: pb.InterruptRequest, context: grpc.ServicerContext
    ) -> pb.InterruptResponse:
        return pb.InterruptResponse(interrupted=self._workers.interrupt(request.attempt_name))

    @translate_errors
    def GetTrainerInfo(
        self, request: pb.GetTrainerInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetTrainerInfoResponse:
        return pb.GetTrainerInfoResponse(
            devices=self._devices,
            capacity=self._config.capacity,
            busy_slots=self._workers.busy,
            version=metalearn.__version__,
            torch_version=torch.__version__,
        )

    @translate_errors
    def ProfileTask(
        self, request: pb.TrainerServiceProfileTaskRequest, context: grpc.ServicerContext
    ) -> pb.TrainerServiceProfileTaskResponse:
        # Imported at the first profile, not at start: scikit-learn adds a second to
        # every daemon's start, and most never profile anything.
        from trainer import profiling

        started_at = time.perf_counter()
        labels = profiling.check_task(request.task, self._config)
        plan = None
        if request.HasField("sample"):
            # A sample is profiled as it was sent: ops would make a task of their own
            # that no reported run declared.
            if request.task.image_ops:
                raise InvalidArgument.one(
                    "task.image_ops", "a sample is profiled as sent: give no image ops with it"
                )
            # Checked from its headers before the lock, as the task is: a bad request is
            # told so even while this trainer profiles another.
            plan = profiling.check_sample(
                request.sample, request.task.label_names, self._config.limits
            )
        if not self._profiling.acquire(blocking=False):
            raise ResourceExhausted("this trainer is profiling another task; try again later")
        try:
            if plan is not None:
                # Decoded under the lock, which bounds the memory profiles take to one.
                tensors = profiling.decode_sample(plan)
            else:
                config = self._config
                options = [("grpc.max_receive_message_length", config.max_message_bytes)]
                with open_channel(
                    config.gateway, config.token, config.gateway_tls, options
                ) as channel:
                    tensors = profiling.load(labels, request.task.image_ops, config, channel)
            profile = profiling.profile(tensors, len(labels), started_at=started_at)
        finally:
            self._profiling.release()
        return pb.TrainerServiceProfileTaskResponse(profile=profile)
