"""The gateway's database from libpq's PG* variables, its password from a secret file."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from gateway.config import GatewayConfig

PG_VARIABLES = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}


def test_an_empty_url_takes_its_parameters_from_pg_variables(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """What docker-compose.yml does: no host, user or password in any URL."""
    with psycopg.connect(postgres_url) as conn:
        session = {key: str(getattr(conn.info, key)) for key in PG_VARIABLES}
    for key, variable in PG_VARIABLES.items():
        monkeypatch.setenv(variable, session[key])
    secret = tmp_path / "postgres.password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("METALEARN_DATABASE_URL", "postgresql://")
    monkeypatch.setenv("METALEARN_DATABASE_PASSWORD_FILE", str(secret))
    config = GatewayConfig.from_args(None, None, None)
    assert config.database_url is not None
    # Only the password joins the (empty) URL, read from the file, never from the environment.
    assert conninfo_to_dict(config.database_url) == {"password": "s3cret"}
    with psycopg.connect(config.database_url) as conn:
        assert {key: str(getattr(conn.info, key)) for key in PG_VARIABLES} == session
        assert conn.info.password == "s3cret"


def test_no_url_means_the_embedded_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METALEARN_DATABASE_URL", raising=False)
    monkeypatch.setenv("PGHOST", "elsewhere")  # a developer's shell: not a reason to leave
    assert GatewayConfig.from_args(None, None, None).database_url is None
