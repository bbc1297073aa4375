# Over 400 lines: the one owner of the users and api_tokens SQL (users, sessions, tokens together).
"""Users, roles, login sessions and API tokens: the one owner of the `users` and `api_tokens` SQL.

Tokens are random 32-byte secrets shown once; only their SHA-256 is stored. A token is either a
*session* (`kind='login'`, minted by `POST /auth/login`): it expires `SESSION_TTL` after its last
use and `SESSION_MAX_AGE` after it was issued; or an *API token* (`kind='api'`): named, with an
optional fixed expiry. Locking a user revokes all of their tokens in the same transaction, so
a locked user's token stops working on the next request on every node.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import api_tokens, oidc_identities, users
from reelhouse.core.db.types import utcnow
from reelhouse.core.security.passwords import PasswordWorker, check_password_rules, hash_password, verify_password

ROLES = ("viewer", "operator", "admin")  # each role includes the ones before it
TOKEN_PREFIX = "rh_"
SESSION, API = "login", "api"
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,119}$")
# Writing last_used_at on every request would turn each read into a write; a minute is precise
# enough for the sliding expiry and for "last used" in listings.
TOUCH_EVERY = timedelta(seconds=60)


class UserError(ValueError):
    """A user-management request that cannot be honoured (duplicate name, bad role...)."""


class UnknownUser(UserError):
    pass


# The password hash of a user provisioned by an OIDC login: not an argon2 hash, so no password
# ever verifies against it (the account signs in through its provider only).
NO_PASSWORD = "!oidc"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (by id) or the runbook-compatible ADMIN_TOKEN holder."""

    name: str
    role: str
    user_id: int | None = None
    token_id: int | None = None  # the API token or session the request came with
    via: str = "token"  # token | basic | admin-token | oidc

    def has_role(self, needed: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)


@dataclass(frozen=True)
class SessionPolicy:
    ttl: timedelta = timedelta(hours=12)
    max_age: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class IssuedToken:
    id: int
    token: str = ""  # shown once
    name: str = ""
    kind: str = API
    prefix: str = ""
    expires_at: datetime | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role[:20]!r}; expected one of {', '.join(ROLES)}")


def check_username(username: str) -> None:
    if not USERNAME.match(username):
        raise UserError("username must be 1-120 characters: letters, digits and . _ @ - (not first)")


async def _hash(password: str, passwords: PasswordWorker | None) -> str:
    try:
        check_password_rules(password)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return await passwords.hash(password) if passwords else await asyncio.to_thread(hash_password, password)


# ---- users -------------------------------------------------------------------------------------


async def create_user(
    engine: AsyncEngine, username: str, password: str, role: str, *, passwords: PasswordWorker | None = None
) -> int:
    check_role(role)
    check_username(username)
    password_hash = await _hash(password, passwords)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                users.insert()
                .values(username=username, password_hash=password_hash, role=role, created_at=utcnow())
                .returning(users.c.id)
            )
            return int(result.scalar_one())
    except IntegrityError:
        raise UserError(f"user {username!r} already exists") from None


def _user_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "username": row.username,
        "role": row.role,
        "locked": bool(row.disabled),
        "created_at": row.created_at,
        "active_tokens": int(getattr(row, "active_tokens", 0) or 0),
    }


async def list_users(engine: AsyncEngine, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    now = utcnow()
    active = (
        select(api_tokens.c.user_id, func.count().label("active_tokens"))
        .where(~api_tokens.c.revoked, (api_tokens.c.expires_at.is_(None)) | (api_tokens.c.expires_at > now))
        .group_by(api_tokens.c.user_id)
        .subquery()
    )
    query = (
        select(users, func.coalesce(active.c.active_tokens, 0).label("active_tokens"))
        .outerjoin(active, active.c.user_id == users.c.id)
        .order_by(users.c.id)
        .limit(limit)
        .offset(offset)
    )
    async with engine.connect() as conn:
        return [_user_view(row) for row in (await conn.execute(query)).all()]


async def find_user(engine: AsyncEngine, ref: int | str) -> dict[str, Any] | None:
    """By id, or by username (the CLI accepts either)."""
    if isinstance(ref, str) and ref.isdigit() and len(ref) < 19:
        ref = int(ref)
    column = users.c.id if isinstance(ref, int) else users.c.username
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(column == ref))).first()
    return _user_view(row) if row else None


async def _revoke_all(conn: AsyncConnection, user_id: int, kind: str | None = None) -> int:
    query = update(api_tokens).where(api_tokens.c.user_id == user_id, ~api_tokens.c.revoked)
    if kind is not None:
        query = query.where(api_tokens.c.kind == kind)
    return int((await conn.execute(query.values(revoked=True))).rowcount or 0)


async def set_locked(engine: AsyncEngine, user_id: int, locked: bool) -> int | None:
    """Lock or unlock; locking revokes every token of the user at once. Returns the number of
    tokens revoked, or None for an unknown user."""
    async with engine.begin() as conn:
        found = await conn.execute(update(users).where(users.c.id == user_id).values(disabled=locked))
        if not found.rowcount:
            return None
        return await _revoke_all(conn, user_id) if locked else 0


async def set_password(
    engine: AsyncEngine, user_id: int, password: str, *, passwords: PasswordWorker | None = None
) -> int | None:
    """Change the password and end the user's login sessions (API tokens stay). Returns the
    number of sessions ended, or None for an unknown user."""
    password_hash = await _hash(password, passwords)
    async with engine.begin() as conn:
        found = await conn.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))
        if not found.rowcount:
            return None
        return await _revoke_all(conn, user_id, SESSION)


async def set_role(engine: AsyncEngine, user_id: int, role: str) -> bool:
    check_role(role)
    async with engine.begin() as conn:
        return bool((await conn.execute(update(users).where(users.c.id == user_id).values(role=role))).rowcount)


async def delete_user(engine: AsyncEngine, user_id: int) -> bool:
    async with engine.begin() as conn:
        await conn.execute(delete(api_tokens).where(api_tokens.c.user_id == user_id))
        await conn.execute(delete(oidc_identities).where(oidc_identities.c.user_id == user_id))
        return bool((await conn.execute(delete(users).where(users.c.id == user_id))).rowcount)


async def authenticate_password(
    engine: AsyncEngine, username: str, password: str, *, passwords: PasswordWorker | None = None
) -> Principal | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.username == username[:120]))).first()
    stored = row.password_hash if row else None
    ok = (
        await passwords.verify(stored, password)
        if passwords
        else await asyncio.to_thread(verify_password, stored, password)
    )
    if not ok or row is None or row.disabled:
        return None
    return Principal(name=row.username, role=row.role, user_id=row.id, via="basic")


async def password_fingerprint(engine: AsyncEngine, user_id: int) -> tuple[str, bool] | None:
    """(hash of the stored password hash, locked) for the Basic credential cache: a cached
    credential is trusted only while the user's password and lock state are what they were."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(users.c.password_hash, users.c.disabled).where(users.c.id == user_id))).first()
    return (hashlib.sha256(row.password_hash.encode()).hexdigest(), bool(row.disabled)) if row else None


# ---- tokens ------------------------------------------------------------------------------------


async def issue_token(
    engine: AsyncEngine, user_id: int, name: str, *, kind: str = API, expires_at: datetime | None = None
) -> IssuedToken:
    """Mint a token; the returned object is the only place its value ever appears."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        token_id = (
            await conn.execute(
                api_tokens.insert()
                .values(
                    user_id=user_id,
                    name=name,
                    kind=kind,
                    token_hash=hash_token(token),
                    prefix=token[:10],
                    created_at=utcnow(),
                    expires_at=expires_at,
                )
                .returning(api_tokens.c.id)
            )
        ).scalar_one()
    return IssuedToken(int(token_id), token, name, kind, token[:10], expires_at)


async def create_api_token(engine: AsyncEngine, user_id: int, name: str, expires_at: datetime | None = None) -> str:
    """Returns the token once; only its hash is stored."""
    return (await issue_token(engine, user_id, name, expires_at=expires_at)).token


async def create_session(engine: AsyncEngine, user_id: int, policy: SessionPolicy) -> IssuedToken:
    return await issue_token(engine, user_id, SESSION, kind=SESSION, expires_at=utcnow() + policy.ttl)


def _session_expiry(row: Any, policy: SessionPolicy, now: datetime) -> datetime:
    last = row.last_used_at or row.created_at
    return min(row.created_at + policy.max_age, max(last + policy.ttl, row.expires_at or now))


async def authenticate_token(engine: AsyncEngine, token: str, policy: SessionPolicy | None = None) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    policy = policy or SessionPolicy()
    now = utcnow()
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    api_tokens.c.id,
                    api_tokens.c.kind,
                    api_tokens.c.created_at,
                    api_tokens.c.last_used_at,
                    api_tokens.c.expires_at,
                    api_tokens.c.revoked,
                    users.c.id.label("user_id"),
                    users.c.username,
                    users.c.role,
                    users.c.disabled,
                )
                .join(users, users.c.id == api_tokens.c.user_id)
                .where(api_tokens.c.token_hash == hash_token(token))
            )
        ).first()
    if row is None or row.revoked or row.disabled:
        return None
    expires = _session_expiry(row, policy, now) if row.kind == SESSION else row.expires_at
    if expires is not None and expires <= now:
        return None
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        values: dict[str, Any] = {"last_used_at": now}
        if row.kind == SESSION:
            values["expires_at"] = min(row.created_at + policy.max_age, now + policy.ttl)
        async with engine.begin() as conn:
            await conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(**values))
    return Principal(name=row.username, role=row.role, user_id=row.user_id, token_id=row.id)


def _token_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "username": row.username,
        "name": row.name,
        "kind": row.kind,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
        "expires_at": row.expires_at,
        "revoked": bool(row.revoked),
    }


async def list_tokens(
    engine: AsyncEngine,
    *,
    user_id: int | None = None,
    include_inactive: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = select(api_tokens, users.c.username).join(users, users.c.id == api_tokens.c.user_id)
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    if not include_inactive:
        now = utcnow()
        query = query.where(
            ~api_tokens.c.revoked, (api_tokens.c.expires_at.is_(None)) | (api_tokens.c.expires_at > now)
        )
    query = query.order_by(api_tokens.c.id.desc()).limit(limit).offset(offset)
    async with engine.connect() as conn:
        return [_token_view(row) for row in (await conn.execute(query)).all()]


async def get_token(engine: AsyncEngine, token_id: int) -> dict[str, Any] | None:
    query = (
        select(api_tokens, users.c.username)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.id == token_id)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return _token_view(row) if row else None


async def revoke_api_token(engine: AsyncEngine, token_id: int, user_id: int | None = None) -> bool:
    query = update(api_tokens).where(api_tokens.c.id == token_id)
    if user_id is not None:
        query = query.where(api_tokens.c.user_id == user_id)
    async with engine.begin() as conn:
        return bool((await conn.execute(query.values(revoked=True))).rowcount)


async def revoke_user_tokens(engine: AsyncEngine, user_id: int, kind: str | None = None) -> int:
    async with engine.begin() as conn:
        return await _revoke_all(conn, user_id, kind)


# ---- OIDC accounts -----------------------------------------------------------------------------


@asynccontextmanager
async def _writer(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    conn = await write_connection(engine)
    try:
        async with conn.begin():
            yield conn
    finally:
        await conn.close()


def _oidc_username(preferred: str | None, issuer: str, subject: str, attempt: int) -> str:
    """A valid, unused-looking username for a provider account: its preferred name cleaned up,
    suffixed with a digest of (issuer, subject) when the plain name is taken."""
    cleaned = re.sub(r"[^A-Za-z0-9._@-]+", "-", (preferred or "").strip())[:100].strip("-._@")
    digest = hashlib.sha256(f"{issuer}\n{subject}".encode("utf-8", "surrogateescape")).hexdigest()
    if not cleaned:
        return f"oidc-{digest[: 10 + attempt]}"
    if attempt == 0:
        return cleaned
    return f"{cleaned}-{digest[: 5 + attempt]}"[:120]


async def oidc_user_role(engine: AsyncEngine, issuer: str, subject: str) -> str | None:
    """The stored role of the user linked to this provider account (None: not provisioned yet)."""
    query = (
        select(users.c.role)
        .join(oidc_identities, oidc_identities.c.user_id == users.c.id)
        .where(oidc_identities.c.issuer == issuer, oidc_identities.c.subject == subject)
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar_one_or_none()


async def provision_oidc_user(
    engine: AsyncEngine, issuer: str, subject: str, preferred_username: str | None, role: str, *, login: bool
) -> tuple[Principal | None, bool]:
    """The local user of a provider account, created on first sight with `role`; on later sights
    its role is set to `role` (the provider's claims are the source of truth). Returns
    (principal, created); the principal is None for a locked user. `login` records the time."""
    check_role(role)
    now = utcnow()
    linked = (
        select(users.c.id, users.c.username, users.c.role, users.c.disabled, oidc_identities.c.id.label("link"))
        .join(oidc_identities, oidc_identities.c.user_id == users.c.id)
        .where(oidc_identities.c.issuer == issuer, oidc_identities.c.subject == subject)
    )
    if not login:  # a Bearer request: one read when nothing changed (the usual case)
        async with engine.connect() as conn:
            row = (await conn.execute(linked)).first()
        if row is not None and row.disabled:
            return None, False
        if row is not None and row.role == role:
            return Principal(name=row.username, role=role, user_id=row.id, via="oidc"), False
    for attempt in range(8):
        # Read-then-write: a writer from the start (BEGIN IMMEDIATE on SQLite), or a concurrent
        # writer would make the upgrade fail with "database is locked" instead of waiting.
        async with _writer(engine) as conn:
            row = (await conn.execute(linked)).first()
            if row is not None:
                if row.disabled:
                    return None, False
                if row.role != role:
                    await conn.execute(update(users).where(users.c.id == row.id).values(role=role))
                if login:
                    await conn.execute(
                        update(oidc_identities).where(oidc_identities.c.id == row.link).values(last_login_at=now)
                    )
                return Principal(name=row.username, role=role, user_id=row.id, via="oidc"), False
        username = _oidc_username(preferred_username, issuer, subject, attempt)
        try:
            async with _writer(engine) as conn:
                user_id = (
                    await conn.execute(
                        users.insert()
                        .values(username=username, password_hash=NO_PASSWORD, role=role, created_at=now)
                        .returning(users.c.id)
                    )
                ).scalar_one()
                await conn.execute(
                    oidc_identities.insert().values(
                        issuer=issuer,
                        subject=subject,
                        user_id=user_id,
                        created_at=now,
                        last_login_at=now if login else None,
                    )
                )
            return Principal(name=username, role=role, user_id=int(user_id), via="oidc"), True
        except IntegrityError:
            continue  # the name is taken, or a concurrent first login linked the account: look again
    raise UserError("could not find a free username for this provider account")
