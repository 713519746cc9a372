"""Alembic environment: runs on the connection `server.core.migrate` hands it (sync facade)."""

from __future__ import annotations

from alembic import context

from server.models import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `apotheca migrate` (server.core.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
