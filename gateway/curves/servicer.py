"""CurveService: the learned curve model's versions, and a refit on request."""

from __future__ import annotations

from typing import Any

from gateway.curves.live import Curves, model_proto
from metalearn.status import translate_errors
from metalearn.v1 import curve_service_pb2 as pb
from metalearn.v1 import curve_service_pb2_grpc


class CurveServicer(curve_service_pb2_grpc.CurveServiceServicer):
    def __init__(self, curves: Curves) -> None:
        self._curves = curves

    @translate_errors
    async def FitCurveModel(
        self, request: pb.FitCurveModelRequest, context: Any
    ) -> pb.FitCurveModelResponse:
        return pb.FitCurveModelResponse(model=model_proto(await self._curves.fit()))

    @translate_errors
    async def GetCurveModel(
        self, request: pb.GetCurveModelRequest, context: Any
    ) -> pb.GetCurveModelResponse:
        return pb.GetCurveModelResponse(model=model_proto(await self._curves.newest()))
