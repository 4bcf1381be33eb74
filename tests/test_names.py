"""One rule for every resource's name (gateway/names.py), attempts, studies and tokens
alike, in the gateway's checks and in the database's constraints."""

from __future__ import annotations

import psycopg
import pytest

from gateway import names
from gateway.studies.checks import MAX_STUDY_NAME, MAX_TRIALS
from gateway.studies.driver import trial_name


@pytest.mark.parametrize(
    "name,ok",
    [
        ("a", True),
        ("a" * 128, True),
        ("A-z_0.9", True),
        ("", False),
        ("a" * 129, False),
        ("a b", False),
        ("é", False),
        ("a/b", False),
        ("a\n", False),
    ],
)
def test_the_rule(name: str, ok: bool) -> None:
    assert (names.problem(name) is None) is ok


def test_a_studys_name_leaves_room_for_its_trials() -> None:
    longest = "s" * MAX_STUDY_NAME
    assert names.problem(longest, MAX_STUDY_NAME) is None
    assert names.problem(trial_name(longest, MAX_TRIALS)) is None
    assert names.problem(longest + "s", MAX_STUDY_NAME) is not None


def test_the_database_holds_the_same_rule(gateway) -> None:
    """A name the gateway takes, the store takes; one longer, it refuses too."""
    with psycopg.connect(gateway.database_url) as conn:
        checks = dict(
            conn.execute(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conname IN ('attempts_name_check', 'studies_name_check',"
                " 'tokens_name_check')"
            ).fetchall()
        )
    assert "{1,128}" in checks["attempts"] and "{1,128}" in checks["tokens"]
    assert f"{{1,{MAX_STUDY_NAME}}}" in checks["studies"]
