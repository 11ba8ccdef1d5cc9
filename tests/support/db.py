"""Real databases for tests: a migrated SQLite file, and a migrated schema of its own on the machine's PostgreSQL.

The PostgreSQL fixtures fail (never skip) when the server on 127.0.0.1:5432 cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from gateway.db import Database, make_engine
from gateway.migrations import migrate

PG_SERVER = os.environ.get("ANTENNA_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'antenna.db'}"


def pg_schema_url(schema: str) -> str:
    return f"{PG_SERVER}?options=-csearch_path%3D{schema}"


def new_pg_schema() -> str:
    """Create an empty schema; the caller drops it with ``drop_pg_schema``."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_SERVER)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_SERVER} is not reachable: {exc.orig}")
    finally:
        admin.dispose()
    return schema


def drop_pg_schema(schema: str) -> None:
    admin = create_engine(PG_SERVER)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    db = Database(engine)
    yield db
    db.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh, migrated schema on the real PostgreSQL, dropped afterwards."""
    schema = new_pg_schema()
    url = pg_schema_url(schema)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    drop_pg_schema(schema)


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    db = Database(make_engine(pg_url, pool_size=20))
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest) -> Database:
    """Runs a test on both backends."""
    name = "sqlite_db" if request.param == "sqlite" else "pg_db"
    db: Database = request.getfixturevalue(name)
    return db
