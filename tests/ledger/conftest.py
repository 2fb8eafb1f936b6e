"""Ledger fixtures: a fresh ledger URL per test on each backend.

PostgreSQL tests use database ``test`` on 127.0.0.1:5432 (``.ci/run`` starts
the server), each in its own schema dropped afterwards. A server that is down
fails these tests loudly: they are never skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_DSN = os.environ.get("TRAINGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_url() -> tuple[str, str]:
    schema = "tg_test_" + secrets.token_hex(6)
    return f"{PG_DSN}?schema={schema}", schema


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url, schema = pg_url()
    yield url
    drop_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh ledger URL on each backend (the contract tests run against both)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    url, schema = pg_url()
    yield url
    drop_schema(schema)
