"""Alembic migrations of every gateway table, applied by ``migrate`` (and at start when configured)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

_HERE = Path(__file__).parent
_LOCK_ID = 0x616E74656E6E61  # PostgreSQL advisory lock key: replicas migrate one at a time


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Safe to call from several replicas at once."""
    config = alembic_config(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Waiting for another replica's migration, and a long migration itself, are no timeouts' business.
            conn.execute(text("SET LOCAL lock_timeout = 0"))
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
