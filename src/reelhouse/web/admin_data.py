"""Read-only views of core's users, API tokens and audit log for the admin pages.

Changes go through the API (`/v1/users`, `/v1/tokens`...); these queries only list.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.models import api_tokens, audit_log, users
from reelhouse.core.db.types import utcnow

MAX_ROWS = 500


async def list_users(engine: AsyncEngine) -> list[dict[str, Any]]:
    now = utcnow()
    active = (
        select(api_tokens.c.user_id, func.count().label("active"))
        .where(~api_tokens.c.revoked, (api_tokens.c.expires_at.is_(None)) | (api_tokens.c.expires_at > now))
        .group_by(api_tokens.c.user_id)
        .subquery()
    )
    query = (
        select(users.c.id, users.c.username, users.c.role, users.c.disabled, users.c.created_at, active.c.active)
        .outerjoin(active, active.c.user_id == users.c.id)
        .order_by(users.c.username)
        .limit(MAX_ROWS)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "id": row.id,
            "username": row.username,
            "role": row.role,
            "locked": bool(row.disabled),
            "created_at": row.created_at,
            "active_tokens": row.active or 0,
        }
        for row in rows
    ]


async def list_tokens(engine: AsyncEngine, user_id: int | None) -> list[dict[str, Any]]:
    """Tokens of one user (None: everyone's, for admins), newest first; never the secret."""
    query = (
        select(
            api_tokens.c.id,
            api_tokens.c.name,
            api_tokens.c.prefix,
            api_tokens.c.created_at,
            api_tokens.c.last_used_at,
            api_tokens.c.expires_at,
            api_tokens.c.revoked,
            users.c.username,
        )
        .join(users, users.c.id == api_tokens.c.user_id)
        .order_by(api_tokens.c.id.desc())
        .limit(MAX_ROWS)
    )
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    now = utcnow()
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            **row._asdict(),
            "active": not row.revoked and (row.expires_at is None or row.expires_at > now),
        }
        for row in rows
    ]


async def audit_page(engine: AsyncEngine, before_id: int | None, limit: int) -> list[dict[str, Any]]:
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [row._asdict() for row in rows]
