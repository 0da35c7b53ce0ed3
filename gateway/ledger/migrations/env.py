"""Alembic environment: runs on the connection ``gateway.ledger.store.migrate`` passes in."""

from __future__ import annotations

from alembic import context

from gateway.ledger.schema import metadata
from gateway.ledger.store import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      version_table=VERSION_TABLE, literal_binds=True)
else:
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                      render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
