"""TrainerService: relays each call's events from its worker process, one message each."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Any

import grpc
import torch

import metalearn
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
    """Train and Test each run in a worker process; this only relays and translates."""

    def __init__(self, config: TrainerConfig, workers: Workers) -> None:
        self._config = config
        self._workers = workers
        self._devices = devices()

    def _relay(
        self, kind: str, request: Any, context: grpc.ServicerContext, response: Any
    ) -> Iterator[Any]:
        for payload in self._workers.start(
            kind,
            request.SerializeToString(),
            context.add_callback,
            context.is_active,
            request.attempt_name,
        ):
            yield response.FromString(payload)

    @translate_errors
    def Train(
        self, request: pb.TrainerServiceTrainRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TrainerServiceTrainResponse]:
        yield from self._relay("train", request, context, pb.TrainerServiceTrainResponse)

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
