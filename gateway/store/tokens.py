"""Every SQL statement about tokens: only their hashes are stored.

A revocation notifies every replica (at commit), which forgets the tokens it had
cached; see `gateway.auth.tokens`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg_pool
from psycopg.rows import dict_row

from gateway.store.database import translate_db_errors
from metalearn import errors

TOKENS = "metalearn_tokens"


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored, without its secret."""

    name: str
    role: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    created_by: str


_COLUMNS = "name, role, created_at, expires_at, created_by"
_INSERT = (
    "INSERT INTO tokens (name, token_hash, role, expires_at, created_by)"  # noqa: S608 - constant
    f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}"
)


class TokenStore:
    """Tokens in PostgreSQL, keyed by name and by the sha256 of the secret."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def create(
        self,
        name: str,
        token_hash: bytes,
        role: str,
        expires_at: dt.datetime | None,
        created_by: str,
    ) -> TokenRecord:
        """Stores a new token; AlreadyExists when the name has one."""
        try:
            with translate_db_errors():
                async with self._pool.connection() as conn:
                    cur = conn.cursor(row_factory=dict_row)
                    await cur.execute(_INSERT, (name, token_hash, role, expires_at, created_by))
                    row = await cur.fetchone()
        except errors.AlreadyExists as err:
            raise errors.AlreadyExists(f"a token named {name!r} exists: revoke it first") from err
        assert row is not None
        return TokenRecord(**row)

    async def put(self, name: str, token_hash: bytes, role: str) -> None:
        """Makes `name` a token with this hash and role whatever it was (start-up seeding
        from a secret file the operator provides)."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO tokens (name, token_hash, role) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash,"
                    " role = excluded.role, expires_at = NULL",
                    (name, token_hash, role),
                )
                await conn.execute("SELECT pg_notify(%s, %s)", (TOKENS, name))

    async def find(self, token_hash: bytes) -> TokenRecord | None:
        """The live (unexpired) token with this hash, or None."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    f"SELECT {_COLUMNS} FROM tokens WHERE token_hash = %s"  # noqa: S608 - constant
                    " AND (expires_at IS NULL OR expires_at > now())",
                    (token_hash,),
                )
                row = await cur.fetchone()
        return TokenRecord(**row) if row else None

    async def exists(self, name: str) -> bool:
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute("SELECT 1 FROM tokens WHERE name = %s", (name,))
                return await cur.fetchone() is not None

    async def has_hash(self, name: str, token_hash: bytes) -> bool:
        """Whether `name`'s token is the one with this hash (and is still live)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT 1 FROM tokens WHERE name = %s AND token_hash = %s"
                    " AND (expires_at IS NULL OR expires_at > now())",
                    (name, token_hash),
                )
                return await cur.fetchone() is not None

    async def list(self) -> list[TokenRecord]:
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(f"SELECT {_COLUMNS} FROM tokens ORDER BY name")  # noqa: S608
                return [TokenRecord(**row) for row in await cur.fetchall()]

    async def revoke(self, name: str) -> None:
        """Deletes the token; every replica hears of it at commit. NotFound if none."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute("DELETE FROM tokens WHERE name = %s RETURNING 1", (name,))
                if await cur.fetchone() is None:
                    raise errors.NotFound(f"no token named {name!r}")
                await conn.execute("SELECT pg_notify(%s, %s)", (TOKENS, name))
