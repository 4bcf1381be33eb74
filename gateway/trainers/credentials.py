"""The credential the gateway presents to a trainer, kept out of the database.

A trainer obeys only calls that carry the credential it was handed at registration, so
the gateway must be able to present it again later, from any replica: it cannot be
hashed the way tokens are. It is not stored at all instead. Each registration stores a
random salt, and the credential is HMAC-SHA256(key, salt + address), under a key that
lives outside the database. Whoever reads the database (a backup, a read-only role, a
leaked dump) learns salts, not credentials, and cannot command a trainer.

Every replica must derive the same credentials, so they share the key. In order:
- METALEARN_TRAINER_KEY_FILE: a mounted secret of at least 32 random characters;
- else METALEARN_ADMIN_TOKEN_FILE: the operator's admin token, a secret every replica of
  a deployment already mounts (docker-compose, Kubernetes); the key is derived from it
  under a label of its own, so neither reveals the other (rotating it makes trainers
  register again, once);
- else a random key of this process: one gateway (`metalearn up`, tests). After it
  restarts, its trainers are told to register again at their next heartbeat.

Each trainer row records the fingerprint of the key that made its credential. A replica
gives work only to trainers whose credential it can make, and a heartbeat reaching a
replica of another key asks the trainer to register again: replicas that do not share a
key degrade to each using the trainers registered with it, never to refused calls.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

# Derivation labels: a key made from the admin token is not the admin token.
_KEY_LABEL = b"metalearn trainer credential key v1\0"
_FINGERPRINT_LABEL = b"fingerprint"
MIN_SECRET_CHARS = 32
SALT_BYTES = 16


class CredentialKey:
    """Makes each trainer's credential from its salt and address."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(_KEY_LABEL, secret, hashlib.sha256).digest()
        # What a trainer row records: which key its credential is of (not the key).
        self.fingerprint = hmac.new(self._key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]

    @classmethod
    def random(cls) -> CredentialKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_file(cls, path: Path) -> CredentialKey:
        secret = path.read_bytes().strip()
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"{path}: a key needs at least {MIN_SECRET_CHARS} random characters")
        return cls(secret)

    @staticmethod
    def new_salt() -> bytes:
        return secrets.token_bytes(SALT_BYTES)

    def credential(self, address: str, salt: bytes) -> str:
        """The credential of the trainer registered at `address` with `salt`."""
        mac = hmac.new(self._key, salt + address.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


@functools.cache
def process_key() -> CredentialKey:
    """The key of this process: from the operator's secret files, or random (see the
    module's docstring). The same for every store of the process."""
    for variable in ("METALEARN_TRAINER_KEY_FILE", "METALEARN_ADMIN_TOKEN_FILE"):
        if path := os.environ.get(variable, "").strip():
            return CredentialKey.from_file(Path(path))
    log.info(
        "trainer credentials: a key of this process (replicas sharing a database should"
        " share METALEARN_TRAINER_KEY_FILE)"
    )
    return CredentialKey.random()
