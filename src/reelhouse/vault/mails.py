"""What each vault mail says, rendered at send time from the rows it is about, with a freshly
issued link token (only its hash is stored; see outbox.py for why tokens are not queued)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.models import users
from reelhouse.core.db.types import utcnow
from reelhouse.core.notify.templates import RenderedMail
from reelhouse.vault import links
from reelhouse.vault.models import (
    MSG_READY,
    MSG_RELEASED,
    grants,
    messages,
    plans,
    recipients,
    requests,
    verifiers,
    votes,
)

if TYPE_CHECKING:
    from reelhouse.vault.services import VaultServices

LINK_PATHS = {
    "invite": "/vault/invite",
    "verifier": "/vault/verifier",
    "vote": "/vault/vote",
    "veto": "/vault/veto",
    "checkin": "/vault/checkin",
    "view": "/vault/view",
}


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"


async def owner_name(conn: AsyncConnection, plan: Any) -> str:
    name = (await conn.execute(select(users.c.username).where(users.c.id == plan.owner_user_id))).scalar()
    return str(name or "The owner")


async def _one(conn: AsyncConnection, table: Any, row_id: int | None) -> Any:
    if row_id is None:
        return None
    return (await conn.execute(select(table).where(table.c.id == row_id))).first()


async def approvals(conn: AsyncConnection, request_id: int) -> int:
    query = (
        select(votes.c.id)
        .join(verifiers, verifiers.c.id == votes.c.verifier_id)
        .where(votes.c.request_id == request_id, votes.c.approved.is_(True), verifiers.c.status == "accepted")
    )
    return len((await conn.execute(query)).all())


async def build_content(services: VaultServices, conn: AsyncConnection, row: Any) -> RenderedMail:
    settings = services.settings
    plan = await _one(conn, plans, row.plan_id)
    request = await _one(conn, requests, row.request_id)
    context: dict[str, Any] = {
        "app_name": settings.app_name,
        "plan_title": plan.title,
        "plan_id": plan.id,
        "owner": await owner_name(conn, plan),
        "threshold": plan.approval_threshold,
        **(row.context or {}),
    }

    async def link(purpose: str, expires_at: datetime, **subject: int | None) -> str:
        token = await links.issue(conn, purpose, plan.id, expires_at, outbox_id=row.id, **subject)
        return settings.link(LINK_PATHS[purpose], token)

    now = utcnow()
    template = row.template
    if template == "invite":
        verifier = await _one(conn, verifiers, row.verifier_id)
        context["expires"] = when(verifier.invite_expires_at)
        context["link"] = await link("invite", verifier.invite_expires_at, verifier_id=verifier.id)
    elif template == "vote":
        initiator = await _one(conn, verifiers, request.initiator_verifier_id)
        context.update(
            initiator=(initiator.name or "another verifier") if initiator else None,
            note=request.note,
            approvals=await approvals(conn, request.id),
            expires=when(request.expires_at),
        )
        context["link"] = await link("vote", request.expires_at, verifier_id=row.verifier_id, request_id=request.id)
    elif template in ("owner_request", "owner_waiting"):
        # Valid for as long as the request can still become a release.
        horizon = max(request.expires_at, request.release_at or now) + timedelta(days=1)
        context.update(
            origin=request.origin, approvals=await approvals(conn, request.id), release_at=when(request.release_at)
        )
        context.setdefault("reminder", 0)
        context["link"] = await link("veto", horizon, request_id=request.id)
    elif template == "checkin":
        deadline = datetime.fromisoformat(context["deadline_iso"])
        context.update(last_checkin=when(plan.last_checkin_at), deadline=when(deadline))
        context["link"] = await link("checkin", deadline + timedelta(days=1))
    elif template in ("release", "view_link"):
        recipient = await _one(conn, recipients, row.recipient_id)
        titles = (
            await conn.execute(
                select(messages.c.title)
                .join(grants, grants.c.message_id == messages.c.id)
                .where(
                    grants.c.recipient_id == recipient.id,
                    grants.c.revoked_at.is_(None),
                    messages.c.status.in_([MSG_RELEASED, MSG_READY]),
                )
                .order_by(messages.c.id)
            )
        ).scalars()
        expires = now + settings.recipient_link_ttl
        context.update(name=recipient.name, titles=list(titles), expires=when(expires))
        context["count"] = len(context["titles"])
        context["link"] = await link("view", expires, recipient_id=recipient.id)
    elif template == "admin_notice":
        context.update(request_id=row.request_id, admin_url=f"{settings.app_url.rstrip('/')}/vault/admin")
    else:
        raise ValueError(f"unknown vault mail template {template!r}")
    return services.templates.render(template, **context)
