"""TokenService: admins make, list and revoke principals' tokens; anyone asks who they are."""

from __future__ import annotations

import math
from typing import Any

from gateway.auth import Authenticator, Role, current
from gateway.auth.tokens import digest, expiry, mint
from gateway.names import check_name
from gateway.store.tokens import TokenRecord, TokenStore
from metalearn.credentials import presented
from metalearn.errors import Violations
from metalearn.status import translate_errors
from metalearn.v1 import token_service_pb2, token_service_pb2_grpc

pb = token_service_pb2

MAX_DAYS = 3650.0
_ROLES = {
    pb.ROLE_READER: Role.READER,
    pb.ROLE_WRITER: Role.WRITER,
    pb.ROLE_ADMIN: Role.ADMIN,
    pb.ROLE_TRAINER: Role.TRAINER,
}
_ROLE_VALUES = {role.value: value for value, role in _ROLES.items()}


def token_message(record: TokenRecord) -> pb.Token:
    token = pb.Token(name=record.name, role=_ROLE_VALUES[record.role], created_by=record.created_by)
    token.create_time.FromDatetime(record.created_at)
    if record.expires_at is not None:
        token.expire_time.FromDatetime(record.expires_at)
    return token


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    """The tokens' RPCs (the interceptor lets only admins in)."""

    def __init__(self, tokens: TokenStore, authenticator: Authenticator | None) -> None:
        self._tokens = tokens
        self._auth = authenticator

    @translate_errors
    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: Any
    ) -> pb.CreateTokenResponse:
        v = Violations()
        check_name(v, "name", request.name)
        if request.role not in _ROLES:
            v.add("role", "one of ROLE_READER, ROLE_WRITER, ROLE_ADMIN, ROLE_TRAINER")
        days = request.expires_in_days
        if not math.isfinite(days) or not 0 <= days <= MAX_DAYS:
            v.add("expires_in_days", f"between 0 (never) and {MAX_DAYS:.0f}")
        v.raise_if_any()
        secret = mint()
        record = await self._tokens.create(
            request.name,
            digest(secret),
            _ROLES[request.role].value,
            expiry(days),
            current().name,
        )
        return pb.CreateTokenResponse(token=token_message(record), secret=secret)

    @translate_errors
    async def ListTokens(
        self, request: pb.ListTokensRequest, context: Any
    ) -> pb.ListTokensResponse:
        return pb.ListTokensResponse(tokens=[token_message(r) for r in await self._tokens.list()])

    @translate_errors
    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: Any
    ) -> pb.RevokeTokenResponse:
        v = Violations()
        check_name(v, "name", request.name)
        v.raise_if_any()
        await self._tokens.revoke(request.name)
        # Other replicas hear of it at commit; this one must not wait for that.
        if self._auth is not None:
            self._auth.forget()
        return pb.RevokeTokenResponse()

    @translate_errors
    async def WhoAmI(self, request: pb.WhoAmIRequest, context: Any) -> pb.WhoAmIResponse:
        # The interceptor has checked the token already; its record gives the times.
        secret = presented(context.invocation_metadata())
        record = await self._tokens.find(digest(secret)) if secret else None
        if record is None:  # revoked or expired between the interceptor and here
            caller = current()
            return pb.WhoAmIResponse(
                token=pb.Token(name=caller.name, role=_ROLE_VALUES[caller.role.value])
            )
        return pb.WhoAmIResponse(token=token_message(record))
