"""CurveService: the learned curve model's versions, and a refit on request."""

from __future__ import annotations

from typing import Any

from gateway.curves import forecast
from gateway.curves.live import Curves, model_proto
from gateway.store.curves import CurveStore
from metalearn.errors import NotFound
from metalearn.status import translate_errors
from metalearn.v1 import curve_service_pb2 as pb
from metalearn.v1 import curve_service_pb2_grpc


class CurveServicer(curve_service_pb2_grpc.CurveServiceServicer):
    def __init__(self, curves: Curves, store: CurveStore) -> None:
        self._curves = curves
        self._store = store

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

    @translate_errors
    async def ForecastCurve(
        self, request: pb.ForecastCurveRequest, context: Any
    ) -> pb.ForecastCurveResponse:
        forecast.check(request)
        profile: dict[str, float] = {}
        if request.task_fingerprint:
            found = await self._store.profile(request.task_fingerprint)
            if found is None:
                raise NotFound(f"no task has the fingerprint {request.task_fingerprint!r}")
            profile = found
        return await self._curves.forecast(
            forecast.run_of(request, profile),
            forecast.pruner_of(request),
            request.best if request.HasField("best") else None,
            request.finished,
        )
