"""Per-person link tokens: random, stored only as SHA-256, one purpose each, expiring, revocable.

LegacyVideo stored invitation tokens and whole recipient JWTs in plaintext and returned them
from list endpoints; here a token exists in clear only in the mail (or response) that carries
it. Purposes:

| purpose   | who        | what it allows                                       | lifetime                |
|-----------|------------|------------------------------------------------------|-------------------------|
| invite    | verifier   | accept or decline the invitation (single use)        | VAULT_INVITATION_TTL    |
| verifier  | verifier   | act as this verifier: request release, vote, cancel  | VAULT_VERIFIER_LINK_TTL |
| vote      | verifier   | vote on (or cancel) one request                       | until the request ends  |
| veto      | owner      | veto one request in its waiting period (single use)  | until the request ends  |
| checkin   | owner      | confirm liveness for one plan (single use)           | until the next due date |
| view      | recipient  | open their released messages (renewable once expired) | VAULT_RECIPIENT_LINK_TTL |
| session   | recipient  | the playback cookie `view` is exchanged for          | VAULT_VIEW_SESSION_TTL  |
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.types import utcnow
from reelhouse.vault.models import links

TOKEN_PREFIX = "rhv_"
MAX_TOKEN_LENGTH = 128
PURPOSES = ("invite", "verifier", "vote", "veto", "checkin", "view", "session")
SINGLE_USE = {"invite", "veto", "checkin"}


def hash_link_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    id: int
    purpose: str
    plan_id: int
    verifier_id: int | None
    recipient_id: int | None
    request_id: int | None
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and self.used_at is None and self.expires_at > now


async def issue(
    conn: AsyncConnection,
    purpose: str,
    plan_id: int,
    expires_at: datetime,
    *,
    verifier_id: int | None = None,
    recipient_id: int | None = None,
    request_id: int | None = None,
    outbox_id: int | None = None,
) -> str:
    """A new token for `purpose`; only its hash is stored. The clear token is returned once."""
    assert purpose in PURPOSES
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        links.insert().values(
            purpose=purpose,
            token_hash=hash_link_token(token),
            plan_id=plan_id,
            verifier_id=verifier_id,
            recipient_id=recipient_id,
            request_id=request_id,
            outbox_id=outbox_id,
            created_at=utcnow(),
            expires_at=expires_at,
        )
    )
    return token


async def find(conn: AsyncConnection, token: str | None, purposes: tuple[str, ...]) -> Link | None:
    """The link `token` names if it has one of `purposes` (expired, used and revoked ones
    included: callers decide, so an expired view link can still ask for a fresh one)."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.startswith(TOKEN_PREFIX):
        return None
    row = (
        await conn.execute(
            select(links).where(links.c.token_hash == hash_link_token(token), links.c.purpose.in_(purposes))
        )
    ).first()
    if row is None:
        return None
    return Link(
        row.id,
        row.purpose,
        row.plan_id,
        row.verifier_id,
        row.recipient_id,
        row.request_id,
        row.expires_at,
        row.used_at,
        row.revoked_at,
    )


async def mark_used(conn: AsyncConnection, link_id: int) -> bool:
    """Compare-and-set: True for the one caller that used a single-use link first."""
    result = await conn.execute(
        update(links).where(links.c.id == link_id, links.c.used_at.is_(None)).values(used_at=utcnow())
    )
    return result.rowcount == 1


async def revoke(conn: AsyncConnection, **where: int | str | None) -> int:
    """Revoke every live link matching `where` (e.g. verifier_id=3, purpose="verifier")."""
    query = update(links).where(links.c.revoked_at.is_(None))
    for column, value in where.items():
        query = query.where(links.c[column] == value)
    return (await conn.execute(query.values(revoked_at=utcnow()))).rowcount
