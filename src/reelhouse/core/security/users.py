"""Users, roles and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.models import api_tokens, users
from reelhouse.core.db.types import utcnow
from reelhouse.core.security.passwords import hash_password, verify_password

ROLES = ("viewer", "operator", "admin")  # each role includes the ones before it
TOKEN_PREFIX = "rh_"


class UserError(ValueError):
    """A user-management request that cannot be honoured (duplicate name, bad role...)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (by id) or the runbook-compatible ADMIN_TOKEN holder."""

    name: str
    role: str
    user_id: int | None = None

    def has_role(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user(engine: AsyncEngine, username: str, password: str, role: str) -> int:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if not username or len(username) > 120:
        raise UserError("username must be 1-120 characters")
    try:
        password_hash = hash_password(password)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        async with engine.begin() as conn:
            result = await conn.execute(users.insert().values(
                username=username, password_hash=password_hash, role=role, created_at=utcnow(),
            ).returning(users.c.id))
            return int(result.scalar_one())
    except IntegrityError:
        raise UserError(f"user {username!r} already exists") from None


async def authenticate_password(engine: AsyncEngine, username: str, password: str) -> Principal | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.username == username))).first()
    if not verify_password(row.password_hash if row else None, password) or row is None or row.disabled:
        return None
    return Principal(name=row.username, role=row.role, user_id=row.id)


async def create_api_token(engine: AsyncEngine, user_id: int, name: str,
                           expires_at: datetime | None = None) -> str:
    """Returns the token once; only its hash is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(api_tokens.insert().values(
            user_id=user_id, name=name, token_hash=hash_token(token), prefix=token[:10],
            created_at=utcnow(), expires_at=expires_at,
        ))
    return token


async def authenticate_token(engine: AsyncEngine, token: str) -> Principal | None:
    now = utcnow()
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(api_tokens.c.id, api_tokens.c.expires_at, api_tokens.c.revoked,
                   users.c.id.label("user_id"), users.c.username, users.c.role, users.c.disabled)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.token_hash == hash_token(token))
        )).first()
    if row is None or row.revoked or row.disabled or (row.expires_at and row.expires_at <= now):
        return None
    async with engine.begin() as conn:
        await conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(last_used_at=now))
    return Principal(name=row.username, role=row.role, user_id=row.user_id)


async def revoke_api_token(engine: AsyncEngine, token_id: int, user_id: int | None = None) -> bool:
    query = update(api_tokens).where(api_tokens.c.id == token_id)
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    async with engine.begin() as conn:
        return (await conn.execute(query.values(revoked=True))).rowcount > 0
