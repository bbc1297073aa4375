"""Alembic environment: always driven programmatically by reelhouse.core.db.migrate.

The caller hands over a live synchronous connection (from AsyncConnection.run_sync), so
migrations run in the caller's transaction on either backend.
"""

from alembic import context

from reelhouse.core.db.models import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch mode for ALTERs
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
