"""What a gRPC call we made answered, as Python exceptions: `translate` turns a call's
`grpc.RpcError` into a `MetalearnError` subclass with its field violations.

The client raises these (and re-exports them: `from metalearn.client import
NotFoundError` stays right), and the gateway reads a trainer's refusals with `translate`
too, so this module makes no channel and imports nothing of the client.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class MetalearnError(Exception):
    """A request the gateway refused; `code` is the gRPC status code's name."""

    def __init__(self, code: str, message: str, violations: dict[str, str] | None = None) -> None:
        self.code = code
        self.message = message
        # Field path -> what is wrong with it (INVALID_ARGUMENT only).
        self.violations = violations or {}
        detail = "; ".join(f"{f}: {d}" for f, d in self.violations.items()) or message
        super().__init__(f"{code}: {detail}")


class InvalidRequest(MetalearnError):
    """INVALID_ARGUMENT: `violations` names every bad field."""


class NotFoundError(MetalearnError):
    """NOT_FOUND."""


class AlreadyExistsError(MetalearnError):
    """ALREADY_EXISTS."""


class WrongStateError(MetalearnError):
    """FAILED_PRECONDITION: the attempt's status forbids it now."""


class UnavailableError(MetalearnError):
    """UNAVAILABLE or DEADLINE_EXCEEDED: the gateway (or its database) is not reachable."""


class UnauthenticatedError(MetalearnError):
    """UNAUTHENTICATED: no token, or one the gateway does not know (revoked, expired)."""


class PermissionDeniedError(MetalearnError):
    """PERMISSION_DENIED: the token's role, or ownership of the attempt, forbids it."""


_ERRORS: dict[grpc.StatusCode, type[MetalearnError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: WrongStateError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def translate(err: grpc.RpcError) -> MetalearnError:
    """The Python exception for a gRPC error, with its field violations.

    Never fails itself: details that cannot be read (garbage bytes, a status that
    disagrees with the call's code, an undecodable BadRequest) leave the code and the
    message, so the caller still learns what went wrong.
    """
    from google.protobuf.message import DecodeError

    if not isinstance(err, grpc.Call | grpc.aio.AioRpcError):  # sync or asyncio calls
        return UnavailableError("UNAVAILABLE", str(err))
    code = err.code() or grpc.StatusCode.UNKNOWN
    violations: dict[str, str] = {}
    try:
        status: Any = rpc_status.from_call(err)
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                for v in bad.field_violations:
                    # One field may have several problems: keep them all.
                    seen = violations.get(v.field)
                    violations[v.field] = f"{seen}; {v.description}" if seen else v.description
    except (DecodeError, ValueError, TypeError):
        violations = {}
    cls = _ERRORS.get(code, MetalearnError)
    return cls(code.name, err.details() or code.name, violations)
