"""Apply Alembic migrations from core and every domain that registers a versions folder.

Domains register their migration folders through the `reelhouse.migrations` entry-point group
(value: a package whose directory holds revision files), so `core` never imports a domain.
"""

from __future__ import annotations

from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.engine import write_connection

_CORE_MIGRATIONS = Path(str(resources.files("reelhouse.core.db") / "migrations"))


def version_locations() -> list[str]:
    locations = [str(_CORE_MIGRATIONS / "versions")]
    for ep in entry_points(group="reelhouse.migrations"):
        locations.append(str(resources.files(ep.value)))
    return locations


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_CORE_MIGRATIONS))
    config.set_main_option("version_locations", " ".join(version_locations()))
    config.set_main_option("path_separator", "space")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "heads")


def _pending(connection: Connection) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    current = MigrationContext.configure(connection).get_current_heads()
    # alembic_version keeps only leaves: a revision that another one depends on is applied
    # without being listed, so compare against everything below the current heads.
    applied = {rev.revision for rev in script.iterate_revisions(current, "base")} if current else set()
    return [rev for rev in script.get_heads() if rev not in applied]


async def run_migrations(engine: AsyncEngine) -> None:
    """Upgrade to the latest revision. Safe to call from several processes at once: on SQLite
    the write lock serialises them, on PostgreSQL an advisory lock does."""
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            if engine.dialect.name == "postgresql":
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(726354)")
            await conn.run_sync(_upgrade)
    finally:
        await conn.close()


async def pending_revisions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(_pending)
