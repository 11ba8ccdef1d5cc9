"""Alembic environment: runs on the connection ``gateway.migrations.migrate`` hands over."""

from __future__ import annotations

from alembic import context

import gateway.models  # noqa: F401 - registers every table on the metadata
from gateway.db import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only used through gateway.migrations.migrate
    raise RuntimeError("run migrations through gateway.migrations.migrate(engine)")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
