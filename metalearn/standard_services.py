"""The standard gRPC services our servers offer beside their own: health and reflection.

grpcio-health-checking and grpcio-reflection (1.85.1, the newest) fall short of what
clients expect in two ways, mended here by subclasses that keep their logic:

- `grpc.health.v1.Health/List` is in their generated stub but neither servicer
  implements it (UNIMPLEMENTED, "Method not implemented!").
- Reflection is served only as `grpc.reflection.v1alpha` (grpc/grpc#38576), while
  grpcurl and `buf curl` ask for `grpc.reflection.v1` first; and Python's descriptor pool
  cannot find the file of a method (`pkg.Service.Method`), so `grpcurl describe` of one
  was NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import _async as reflection_async
from grpc_reflection.v1alpha import _base, reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_REFLECTION = reflection.SERVICE_NAME
V1_REFLECTION = "grpc.reflection.v1.ServerReflection"


def _listing(statuses: dict[str, int]) -> health_pb2.HealthListResponse:
    return health_pb2.HealthListResponse(
        statuses={name: health_pb2.HealthCheckResponse(status=s) for name, s in statuses.items()}
    )


class AsyncHealthServicer(health_async.HealthServicer):  # type: ignore[misc]
    """grpc's asyncio health servicer, with `List`: every service set and its status."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return _listing(dict(self._server_status))


class HealthServicer(health.HealthServicer):  # type: ignore[misc]
    """grpc's threaded health servicer, with `List`: every service set and its status."""

    def List(
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        with self._lock:
            return _listing(dict(self._server_status))


def _v1_reflection_file() -> None:
    """Puts `grpc/reflection/v1/reflection.proto` in the default pool, so that reflection
    describes its v1 service too: v1 is v1alpha's messages under another package, field
    for field (grpc-proto made it by copying), so the bytes on the wire are the same."""
    pool = descriptor_pool.Default()
    name = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(name)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = name, "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # (assigning even "" would set it)
                field.type_name = field.type_name.replace(old, new, 1)
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(old, new, 1)
        method.output_type = method.output_type.replace(old, new, 1)
    proto.options.Clear()  # v1alpha's are deprecated and name v1alpha's packages
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    pool.AddSerializedFile(proto.SerializeToString())


def _find_symbol_file(pool: Any, symbol: str) -> Any:
    """The file defining `symbol`; a method is looked for in its service's file, which
    upb's pool does not do by itself."""
    try:
        return pool.FindFileContainingSymbol(symbol)
    except KeyError:
        service, _, method = symbol.rpartition(".")
        if method not in pool.FindServiceByName(service).methods_by_name:
            raise
        return pool.FindFileContainingSymbol(service)


class _FindsMethods:
    """Reflection's symbol lookup, which also finds methods by name."""

    _pool: Any

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            descriptor = _find_symbol_file(self._pool, fully_qualified_name)
        except KeyError:
            return _base._not_found_error(request)
        return _base._file_descriptor_response(descriptor, request)


class AsyncReflectionServicer(_FindsMethods, reflection_async.ReflectionServicer):  # type: ignore[misc]
    """grpc's asyncio reflection servicer that also finds methods by name."""


class ReflectionServicer(_FindsMethods, reflection.ReflectionServicer):  # type: ignore[misc]
    """grpc's threaded reflection servicer that also finds methods by name."""


def enable_server_reflection(service_names: Iterable[str], server: Any) -> None:
    """Serves reflection of `service_names` (and of itself), as v1 and as v1alpha, on a
    `grpc.Server` or a `grpc.aio.Server`."""
    _v1_reflection_file()
    names = (*service_names, V1_REFLECTION, V1ALPHA_REFLECTION)
    is_aio = isinstance(server, grpc.aio.Server)
    servicer = AsyncReflectionServicer(names) if is_aio else ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_REFLECTION, {"ServerReflectionInfo": v1}),)
    )
