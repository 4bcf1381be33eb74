"""Assertions on gRPC errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def violations(err: grpc.RpcError) -> dict[str, str]:
    """The BadRequest field violations of an error, field -> description."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    found: dict[str, str] = {}
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def expect_error(
    code: grpc.StatusCode, call: Callable[..., Any], *args: Any, **kw: Any
) -> grpc.RpcError:
    """Calls and asserts that it fails with `code`; returns the error."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    err = info.value
    assert err.code() == code, f"{err.code()}: {err.details()}"  # type: ignore[attr-defined]
    return err
