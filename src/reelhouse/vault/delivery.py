"""The release job (`vault.release`): grant each recipient their ready messages and queue one
mail per recipient, all in one transaction.

A crash anywhere rolls the whole step back, and a retry does the whole step; once it has
committed, a retry finds every grant and outbox row already there (unique keys) and adds
nothing. So a recipient is never skipped (LegacyVideo's retry skipped messages already marked
RELEASED, losing their mails) and never mailed twice (the outbox's dedupe key
`release:<request>:<recipient>`; the mail tasks themselves are exactly-once, see outbox.py).
Messages that are not ready (still processing, failed) are not released and are listed in the
job's result and the audit entry, never silently dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.vault.audit import record
from reelhouse.vault.models import (
    MSG_READY,
    MSG_RELEASED,
    PLAN_RELEASED,
    REQ_RELEASED,
    grants,
    message_recipients,
    messages,
    plans,
    recipients,
    requests,
)
from reelhouse.vault.outbox import queue_mail
from reelhouse.vault.store import locked

if TYPE_CHECKING:
    from reelhouse.core.jobs.context import TaskContext
    from reelhouse.vault.services import VaultServices


async def deliver_release(services: VaultServices, ctx: TaskContext) -> dict[str, Any]:
    request_id = int(ctx.payload["request_id"])
    async with services.store.tx() as conn:
        request = await locked(conn, requests, request_id)
        if request is None or request.status != REQ_RELEASED:
            raise PermanentError(f"request {request_id} is not released")
        plan = await locked(conn, plans, request.plan_id)
        all_messages = (await conn.execute(select(messages).where(messages.c.plan_id == plan.id))).all()
        deliverable = [m for m in all_messages if m.status in (MSG_READY, MSG_RELEASED)]
        skipped = [{"message_id": m.id, "status": m.status} for m in all_messages if m not in deliverable]
        now = utcnow()
        for message in deliverable:
            if message.status == MSG_READY:
                await conn.execute(
                    update(messages).where(messages.c.id == message.id).values(status=MSG_RELEASED, released_at=now)
                )
        pairs = (
            await conn.execute(
                select(message_recipients.c.message_id, message_recipients.c.recipient_id).where(
                    message_recipients.c.message_id.in_([m.id for m in deliverable])
                )
            )
        ).all()
        existing = {
            (g.recipient_id, g.message_id)
            for g in (
                await conn.execute(
                    select(grants.c.recipient_id, grants.c.message_id)
                    .join(recipients, recipients.c.id == grants.c.recipient_id)
                    .where(recipients.c.plan_id == plan.id)
                )
            ).all()
        }
        for message_id, recipient_id in pairs:
            if (recipient_id, message_id) not in existing:
                await conn.execute(
                    grants.insert().values(
                        recipient_id=recipient_id, message_id=message_id, request_id=request_id, created_at=now
                    )
                )
        recipient_ids = sorted({recipient_id for _, recipient_id in pairs})
        queued = 0
        for recipient in (await conn.execute(select(recipients).where(recipients.c.id.in_(recipient_ids)))).all():
            outbox_id = await queue_mail(
                conn,
                plan_id=plan.id,
                template="release",
                to=recipient.email,
                dedupe_key=f"release:{request_id}:{recipient.id}",
                max_attempts=services.settings.mail_max_attempts,
                recipient_id=recipient.id,
                request_id=request_id,
            )
            queued += outbox_id is not None
        if plan.status != PLAN_RELEASED:
            await conn.execute(update(plans).where(plans.c.id == plan.id).values(status=PLAN_RELEASED, released_at=now))
            await record(
                conn,
                "system",
                "release.delivered",
                f"request:{request_id}",
                messages=len(deliverable),
                recipients=len(recipient_ids),
                skipped=[s["message_id"] for s in skipped] or None,
            )
    return {"messages": len(deliverable), "recipients": len(recipient_ids), "mails_queued": queued, "skipped": skipped}
