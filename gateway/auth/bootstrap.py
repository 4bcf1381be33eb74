"""The first admin token, so that local use stays `metalearn up` and nothing else.

On start the gateway makes sure an admin token exists. The first start makes one and
writes its secret to DATA_DIR/admin.token (mode 0600), where the CLI and the Python
client find it. An operator may instead hand the gateway secrets to use (Docker or
Kubernetes secrets): those files are authoritative and their tokens are (re)set.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gateway.auth.roles import Role
from gateway.auth.tokens import digest, mint
from gateway.store.tokens import TokenStore

log = logging.getLogger(__name__)

ADMIN = "admin"


def write_secret(path: Path, secret: str) -> None:
    """Writes a secret readable by this user only (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def read_secret(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


async def ensure_admin_token(tokens: TokenStore, data_dir: Path) -> Path | None:
    """Makes the first admin token if there is none; returns the file holding it."""
    path = data_dir / "admin.token"
    if path.is_file():
        secret = read_secret(path)
        if secret and await tokens.has_hash(ADMIN, digest(secret)):
            log.info("admin token in %s", path)
            return path
        if secret and not await tokens.exists(ADMIN):
            # A new database behind an old data directory: the file's token carries on.
            await tokens.put(ADMIN, digest(secret), Role.ADMIN.value)
            log.info("admin token in %s", path)
            return path
        log.warning(
            "%s does not hold the current admin token (it was revoked or replaced);"
            " use one made with `metalearn tokens create`",
            path,
        )
        return None
    if await tokens.exists(ADMIN):
        log.info("an admin token exists (made by another gateway); %s not written", path)
        return None
    secret = mint()
    await tokens.put(ADMIN, digest(secret), Role.ADMIN.value)
    write_secret(path, secret)
    log.warning("made the first admin token; its secret is in %s (mode 0600)", path)
    return path


async def seed_token(tokens: TokenStore, name: str, role: Role, path: Path) -> None:
    """Sets token `name` to the secret an operator put in `path` (a mounted secret)."""
    secret = read_secret(path)
    if len(secret) < 32:
        raise ValueError(f"{path}: a token needs at least 32 characters of secret")
    await tokens.put(name, digest(secret), role.value)
    log.info("token %r (%s) set from %s", name, role.value, path)
