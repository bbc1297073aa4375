"""The vault's SQL for plans, messages, recipients and verifiers (release transitions are in
release.py, mail in outbox.py). Mutations run in `tx()`: a writer transaction (BEGIN IMMEDIATE
on SQLite) so read-check-write sequences cannot interleave; rows that decide a transition are
locked (`FOR UPDATE`) on PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_transaction
from reelhouse.core.db.types import utcnow
from reelhouse.vault.errors import conflict, not_found
from reelhouse.vault.models import (
    REQ_OPEN,
    VERIFIER_ACCEPTED,
    VERIFIER_INVITED,
    message_recipients,
    messages,
    plans,
    recipients,
    requests,
    verifiers,
)


class VaultStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncConnection]:
        async with write_transaction(self.engine) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn


async def locked(conn: AsyncConnection, table: Table, row_id: int) -> Any:
    query = select(table).where(table.c.id == row_id)
    if conn.dialect.name == "postgresql":
        # FOR NO KEY UPDATE: the vault never changes a key, and a plain FOR UPDATE also blocks the
        # KEY SHARE lock a foreign-key insert takes (a mail's link row referencing this request or
        # plan), which deadlocked a vote against the mail being rendered for it.
        query = query.with_for_update(key_share=True)
    return (await conn.execute(query)).first()


async def get_row(conn: AsyncConnection, table: Table, row_id: int) -> Any:
    return (await conn.execute(select(table).where(table.c.id == row_id))).first()


async def open_request_of(conn: AsyncConnection, plan_id: int) -> Any:
    return (
        await conn.execute(select(requests).where(requests.c.plan_id == plan_id, requests.c.status.in_(REQ_OPEN)))
    ).first()


async def require_no_open_request(conn: AsyncConnection, plan_id: int, what: str) -> None:
    if await open_request_of(conn, plan_id) is not None:
        raise conflict("REQUEST_OPEN", f"cannot {what} while a release request is open")


# ---- plans -------------------------------------------------------------------------------
async def insert_plan(conn: AsyncConnection, owner_user_id: int, values: dict[str, Any]) -> int:
    now = utcnow()
    result = await conn.execute(
        plans.insert()
        .values(
            owner_user_id=owner_user_id, status="active", created_at=now, updated_at=now, last_checkin_at=now, **values
        )
        .returning(plans.c.id)
    )
    return int(result.scalar_one())


async def owned_plan(conn: AsyncConnection, plan_id: int, user_id: int | None, *, lock: bool = False) -> Any:
    """The plan if `user_id` owns it; 404 otherwise (not 403: others learn nothing about it)."""
    row = await (locked(conn, plans, plan_id) if lock else get_row(conn, plans, plan_id))
    if row is None or user_id is None or row.owner_user_id != user_id:
        raise not_found(f"plan {plan_id}")
    return row


async def plans_of(conn: AsyncConnection, user_id: int) -> list[Any]:
    return list(
        (await conn.execute(select(plans).where(plans.c.owner_user_id == user_id).order_by(plans.c.id.desc()))).all()
    )


async def update_plan(conn: AsyncConnection, plan_id: int, **values: Any) -> None:
    await conn.execute(update(plans).where(plans.c.id == plan_id).values(updated_at=utcnow(), **values))


async def count_where(conn: AsyncConnection, table: Table, *conditions: Any) -> int:
    return int((await conn.execute(select(func.count()).select_from(table).where(*conditions))).scalar_one())


async def occupied_verifier_slots(conn: AsyncConnection, plan_id: int) -> int:
    """Accepted verifiers plus invitations still open (an expired invitation frees its slot)."""
    now = utcnow()
    accepted = await count_where(
        conn, verifiers, verifiers.c.plan_id == plan_id, verifiers.c.status == VERIFIER_ACCEPTED
    )
    invited = await count_where(
        conn,
        verifiers,
        verifiers.c.plan_id == plan_id,
        verifiers.c.status == VERIFIER_INVITED,
        verifiers.c.invite_expires_at > now,
    )
    return accepted + invited


async def accepted_verifiers(conn: AsyncConnection, plan_id: int) -> list[Any]:
    query = select(verifiers).where(verifiers.c.plan_id == plan_id, verifiers.c.status == VERIFIER_ACCEPTED)
    return list((await conn.execute(query.order_by(verifiers.c.id))).all())


# ---- messages and recipients --------------------------------------------------------------
async def owned_message(conn: AsyncConnection, message_id: int, user_id: int | None, *, lock: bool = False) -> Any:
    row = await (locked(conn, messages, message_id) if lock else get_row(conn, messages, message_id))
    if row is None:
        raise not_found(f"message {message_id}")
    await owned_plan(conn, row.plan_id, user_id)
    return row


async def messages_of(conn: AsyncConnection, plan_id: int) -> list[Any]:
    return list(
        (await conn.execute(select(messages).where(messages.c.plan_id == plan_id).order_by(messages.c.id))).all()
    )


async def recipient_ids_of(conn: AsyncConnection, message_id: int) -> list[int]:
    query = select(message_recipients.c.recipient_id).where(message_recipients.c.message_id == message_id)
    return [int(r) for r in (await conn.execute(query)).scalars()]


async def ensure_recipient(conn: AsyncConnection, plan_id: int, email: str, name: str | None) -> int:
    existing = (
        await conn.execute(select(recipients.c.id).where(recipients.c.plan_id == plan_id, recipients.c.email == email))
    ).scalar()
    if existing is not None:
        if name:
            await conn.execute(update(recipients).where(recipients.c.id == existing).values(name=name))
        return int(existing)
    result = await conn.execute(
        recipients.insert()
        .values(plan_id=plan_id, email=email, name=name, created_at=utcnow())
        .returning(recipients.c.id)
    )
    return int(result.scalar_one())


async def assign(conn: AsyncConnection, message_id: int, recipient_id: int) -> bool:
    if (
        await conn.execute(
            select(message_recipients.c.message_id).where(
                message_recipients.c.message_id == message_id, message_recipients.c.recipient_id == recipient_id
            )
        )
    ).first():
        return False
    await conn.execute(message_recipients.insert().values(message_id=message_id, recipient_id=recipient_id))
    return True


async def recipients_of(conn: AsyncConnection, plan_id: int) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(select(recipients).where(recipients.c.plan_id == plan_id).order_by(recipients.c.id))
    ).all()
    pairs = (
        await conn.execute(
            select(message_recipients.c.recipient_id, message_recipients.c.message_id)
            .join(messages, messages.c.id == message_recipients.c.message_id)
            .where(messages.c.plan_id == plan_id)
        )
    ).all()
    by_recipient: dict[int, list[int]] = {}
    for recipient_id, message_id in pairs:
        by_recipient.setdefault(recipient_id, []).append(message_id)
    return [
        {"id": r.id, "email": r.email, "name": r.name, "message_ids": sorted(by_recipient.get(r.id, []))} for r in rows
    ]


async def verifier_of_user(conn: AsyncConnection, plan_id: int, user_id: int | None) -> Any:
    if user_id is None:
        return None
    query = select(verifiers).where(
        verifiers.c.plan_id == plan_id, verifiers.c.user_id == user_id, verifiers.c.status == VERIFIER_ACCEPTED
    )
    return (await conn.execute(query)).first()


async def verifier_plans_of_user(conn: AsyncConnection, user_id: int) -> list[Any]:
    query = (
        select(
            verifiers.c.id.label("verifier_id"), plans.c.id, plans.c.title, plans.c.status, plans.c.approval_threshold
        )
        .join(plans, plans.c.id == verifiers.c.plan_id)
        .where(verifiers.c.user_id == user_id, verifiers.c.status == VERIFIER_ACCEPTED)
        .order_by(plans.c.id)
    )
    return list((await conn.execute(query)).all())
