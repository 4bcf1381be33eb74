"""Bearer tokens: made, hashed, and resolved to principals with a small cache.

A token is 256 random bits; the store keeps its sha256. Resolving one costs a dict
lookup once it is cached, which keeps authentication off the database on the hot path
(GetAttempt goes from one query to one query, not two). The cache is emptied whenever
any token changes (a notification every replica hears at commit), when the listener
reconnects (notifications may have been missed), and entries age out after
`ttl_seconds` as a last resort; expiry is checked on every call.

Secrets that matched nothing are remembered too (a bounded negative cache, emptied
with the rest), so a client repeating a revoked or mistyped token costs no query; and
lookups of secrets not cached are rate-limited per client address, so a flood of
random tokens costs the database a trickle of queries instead of one per call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from gateway.auth.roles import Principal, Role
from gateway.store.tokens import TokenStore
from metalearn import errors
from metalearn.credentials import presented

PREFIX = "mlt_"
# A bearer value longer than this is not one of ours: refused before hashing.
MAX_TOKEN_CHARS = 256
_CACHE_ENTRIES = 10_000
# Lookups of secrets the cache does not know, per client address: a bucket of this many
# that refills at this rate per second. A real client presents one or a few tokens
# (then they are cached); only guessing needs more.
_LOOKUP_BURST = 50.0
_LOOKUP_RATE = 20.0
_PEERS = 10_000


def mint() -> str:
    """A new secret: 256 random bits, URL-safe, recognisable by its prefix."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def bearer(metadata: Any) -> str:
    """The token of a call's `authorization: Bearer <token>` metadata; Unauthenticated
    if there is none, or it is not one."""
    if not any(key == "authorization" for key, _ in metadata or ()):
        raise errors.Unauthenticated("send `authorization: Bearer <token>` metadata")
    token = presented(metadata)
    if token is None or len(token) > MAX_TOKEN_CHARS:
        raise errors.Unauthenticated("the authorization metadata is not `Bearer <token>`")
    return token


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    expires: float | None  # epoch seconds
    cached_at: float


def peer_host(peer: str) -> str:
    """The address part of grpc's peer string ("ipv4:10.0.0.7:5123" -> "ipv4:10.0.0.7")."""
    host, _, port = peer.rpartition(":")
    return host if host and port.isdigit() else peer


@dataclass
class _Bucket:
    tokens: float
    at: float


class Authenticator:
    """Resolves secrets to principals, through a cache the store's changes empty."""

    def __init__(self, tokens: TokenStore, ttl_seconds: float = 30.0) -> None:
        self._tokens = tokens
        self._ttl = ttl_seconds
        self._cache: dict[bytes, _Entry] = {}
        self._unknown: dict[bytes, float] = {}  # secret digests that matched nothing
        self._buckets: dict[str, _Bucket] = {}

    def forget(self) -> None:
        """Empties the cache: a token changed (or we may have missed that one did)."""
        self._cache.clear()
        self._unknown.clear()

    async def principal(self, secret: str, peer: str = "") -> Principal:
        """The principal of a live token; Unauthenticated for any other secret, and
        ResourceExhausted for an address that looked up too many unknown ones."""
        key = digest(secret)
        now = time.time()
        entry = self._cache.get(key)
        if entry is not None and now - entry.cached_at < self._ttl:
            if entry.expires is None or now < entry.expires:
                return entry.principal
            self._cache.pop(key, None)
            raise errors.Unauthenticated("the token has expired")
        refused = self._unknown.get(key)
        if refused is not None and now - refused < self._ttl:
            raise errors.Unauthenticated("unknown, expired or revoked token")
        self._spend(peer_host(peer), now)
        record = await self._tokens.find(key)
        if record is None:
            if len(self._unknown) >= _CACHE_ENTRIES:
                self._unknown.clear()
            self._unknown[key] = now
            raise errors.Unauthenticated("unknown, expired or revoked token")
        principal = Principal(record.name, Role(record.role))
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.clear()
        expires = record.expires_at.timestamp() if record.expires_at else None
        self._cache[key] = _Entry(principal, expires, now)
        return principal

    def _spend(self, host: str, now: float) -> None:
        """Takes one lookup from `host`'s bucket, or refuses the call."""
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= _PEERS:
                self._buckets.clear()
            bucket = self._buckets[host] = _Bucket(_LOOKUP_BURST, now)
        bucket.tokens = min(_LOOKUP_BURST, bucket.tokens + (now - bucket.at) * _LOOKUP_RATE)
        bucket.at = now
        if bucket.tokens < 1:
            raise errors.ResourceExhausted(
                "too many unknown tokens from this address: wait a few seconds"
            )
        bucket.tokens -= 1


def expiry(days: float) -> dt.datetime | None:
    """When a token made now for `days` days expires (None: never)."""
    if not days:
        return None
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
