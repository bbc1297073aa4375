"""The vault's clock (`vault.tick`, a periodic task): expire stale requests, release those whose
waiting period passed, remind owners of pending releases, and watch inactivity check-ins.

Inactivity (Google Inactive Account Manager, a dead man's switch): a plan with a check-in
interval is due `interval` after the last check-in. A missed check-in sends reminders at the
due time and at 1/2 and 3/4 of VAULT_CHECKIN_GRACE (more often as the end nears); when the
grace runs out a release request is opened, which still needs the verifiers' approvals and
the waiting period. Any check-in (link, button, or the owner using the vault while signed in)
resets the clock and cancels a request the watchdog opened.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.types import utcnow
from reelhouse.vault import links, release
from reelhouse.vault.audit import record
from reelhouse.vault.errors import VaultError
from reelhouse.vault.models import PLAN_ACTIVE, REQ_OPEN, plans, requests
from reelhouse.vault.outbox import queue_mail

if TYPE_CHECKING:
    from reelhouse.vault.services import VaultServices

TICK_KIND = "vault.tick"
REMINDER_FRACTIONS = (0.0, 0.5, 0.75)
TRIGGERED = -1  # checkin_reminders_sent once the watchdog opened a request
ACTIVITY_RESOLUTION = timedelta(minutes=1)


async def tick(services: VaultServices, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    async with services.store.tx() as conn:
        expired = await release.expire_stale(conn, now)
        released = await release.release_due(services, conn, now)
        reminded = await release.remind_owners(services, conn, now)
        checkins = await watch_checkins(services, conn, now)
    return {"expired": expired, "released": released, "owner_reminders": reminded, **checkins}


async def watch_checkins(services: VaultServices, conn: AsyncConnection, now: datetime) -> dict[str, Any]:
    grace = services.settings.checkin_grace
    rows = (
        await conn.execute(
            select(plans).where(
                plans.c.status == PLAN_ACTIVE,
                plans.c.checkin_interval_seconds.is_not(None),
                plans.c.checkin_reminders_sent != TRIGGERED,
            )
        )
    ).all()
    reminders, triggered = 0, []
    for plan in rows:
        due = plan.last_checkin_at + timedelta(seconds=plan.checkin_interval_seconds)
        if now < due:
            continue
        deadline = due + grace
        sent = int(plan.checkin_reminders_sent)
        if now >= deadline:
            try:
                request_id = await release.open_request(services, conn, plan.id, None, None, "system:checkin")
            except VaultError as exc:  # no quorum possible, or a request is already open
                await record(conn, "system:checkin", "checkin.trigger_skipped", f"plan:{plan.id}", code=exc.code)
                request_id = None
            await conn.execute(update(plans).where(plans.c.id == plan.id).values(checkin_reminders_sent=TRIGGERED))
            triggered.append(request_id)
            continue
        if sent < len(REMINDER_FRACTIONS) and now >= due + grace * REMINDER_FRACTIONS[sent]:
            number = sent + 1
            await conn.execute(
                update(plans)
                .where(plans.c.id == plan.id)
                .values(
                    checkin_reminders_sent=number, checkins_missed=plans.c.checkins_missed + (1 if number == 1 else 0)
                )
            )
            if number == 1:
                await record(conn, "system:checkin", "checkin.missed", f"plan:{plan.id}")
            await queue_mail(
                conn,
                plan_id=plan.id,
                template="checkin",
                to=plan.owner_email,
                dedupe_key=f"checkin:{plan.id}:{due.isoformat()}:{number}",
                max_attempts=services.settings.mail_max_attempts,
                context={"reminder": number, "deadline_iso": deadline.isoformat()},
            )
            reminders += 1
    return {"checkin_reminders": reminders, "checkin_requests": triggered}


async def check_in(conn: AsyncConnection, plan_id: int, actor: str, how: str) -> bool:
    """Record that the owner is alive; True if a watchdog request was cancelled by it."""
    await conn.execute(
        update(plans).where(plans.c.id == plan_id).values(last_checkin_at=utcnow(), checkin_reminders_sent=0)
    )
    await links.revoke(conn, plan_id=plan_id, purpose="checkin")
    await record(conn, actor, "checkin", f"plan:{plan_id}", how=how)
    open_request = (
        await conn.execute(
            select(requests).where(
                requests.c.plan_id == plan_id, requests.c.status.in_(REQ_OPEN), requests.c.origin == "checkin"
            )
        )
    ).first()
    if open_request is None:
        return False
    await release.cancel(conn, open_request.id, actor)
    return True


async def plans_due_activity(conn: AsyncConnection, user_id: int, now: datetime | None = None) -> list[int]:
    """The owner's watched plans whose last check-in is older than ACTIVITY_RESOLUTION."""
    now = now or utcnow()
    stale = await conn.execute(
        select(plans.c.id).where(
            plans.c.owner_user_id == user_id,
            plans.c.status == PLAN_ACTIVE,
            plans.c.checkin_interval_seconds.is_not(None),
            plans.c.last_checkin_at < now - ACTIVITY_RESOLUTION,
        )
    )
    return [int(plan_id) for plan_id in stale.scalars()]


async def owner_activity(conn: AsyncConnection, user_id: int, now: datetime | None = None) -> None:
    """Signing in and using the vault counts as a check-in for every plan of the owner (at most
    one write a minute)."""
    for plan_id in await plans_due_activity(conn, user_id, now):
        await check_in(conn, plan_id, f"user:{user_id}", "activity")
