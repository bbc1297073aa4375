"""Statements whose SQL differs between PostgreSQL and SQLite, written once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Bind = AsyncEngine | AsyncConnection | Connection


def upsert_insert(bind: Bind, table: Table) -> Any:
    """`INSERT` with `.on_conflict_do_nothing()` / `.on_conflict_do_update()` for the bind's
    dialect (both dialects spell ON CONFLICT the same; SQLAlchemy has one construct each)."""
    if bind.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
