"""The release state machine. Every transition is one transaction that locks the request (and
plan) row, checks the state, changes it by compare-and-set, audits, and queues the mails it
causes; so two approvals racing, or an approval racing a veto, end in one outcome.

    pending --k approvals--> waiting --release_at passed, not frozen--> released
    pending --approvals can no longer reach k--> denied
    pending|waiting --owner veto--> vetoed
    pending|waiting --initiator or owner cancels--> cancelled
    pending --VAULT_REQUEST_TTL passed--> expired
    waiting --a verifier revoked, approvals < k--> pending
    pending|waiting --admin A proposes force, admin B (another user) confirms--> released

Votes count only while their verifier is accepted (a revoked verifier's votes stop counting).
A suspended plan accepts no requests and releases nothing; a frozen request never releases.
The initiator's request is their approval, evaluated at once (a 1-of-n plan needs no admin).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.vault import links
from reelhouse.vault.audit import record
from reelhouse.vault.errors import VaultError, conflict, not_found
from reelhouse.vault.mails import approvals as count_approvals
from reelhouse.vault.models import (
    PLAN_ACTIVE,
    REQ_CANCELLED,
    REQ_DENIED,
    REQ_EXPIRED,
    REQ_OPEN,
    REQ_PENDING,
    REQ_RELEASED,
    REQ_VETOED,
    REQ_WAITING,
    VERIFIER_ACCEPTED,
    plans,
    requests,
    verifiers,
    votes,
)
from reelhouse.vault.outbox import queue_mail
from reelhouse.vault.store import accepted_verifiers, locked, open_request_of

if TYPE_CHECKING:
    from reelhouse.vault.services import VaultServices

RELEASE_KIND = "vault.release"


async def _mail(
    services: VaultServices, conn: AsyncConnection, plan: Any, template: str, to: str, key: str, **ids: Any
):
    context = ids.pop("context", None)
    await queue_mail(
        conn,
        plan_id=plan.id,
        template=template,
        to=to,
        dedupe_key=key,
        max_attempts=services.settings.mail_max_attempts,
        context=context,
        **ids,
    )


async def _notify_admin(services: VaultServices, conn: AsyncConnection, plan: Any, event: str, request_id: int) -> None:
    if services.settings.admin_email:
        await _mail(
            services,
            conn,
            plan,
            "admin_notice",
            services.settings.admin_email,
            f"admin:{event}:{request_id}",
            request_id=request_id,
            context={"event": event},
        )


async def open_request(
    services: VaultServices, conn: AsyncConnection, plan_id: int, verifier_id: int | None, note: str | None, actor: str
) -> int:
    """A new pending request (by a verifier, or by the check-in watchdog when `verifier_id` is None)."""
    plan = await locked(conn, plans, plan_id)
    if plan is None:
        raise not_found(f"plan {plan_id}")
    if plan.status != PLAN_ACTIVE:
        raise conflict("PLAN_NOT_ACTIVE", f"plan is {plan.status}; it cannot be released")
    if await open_request_of(conn, plan_id) is not None:
        raise conflict("REQUEST_EXISTS", "a release request is already open for this plan")
    accepted = await accepted_verifiers(conn, plan_id)
    if len(accepted) < plan.approval_threshold:
        raise conflict(
            "THRESHOLD_UNREACHABLE",
            f"{plan.approval_threshold} approvals are needed but only {len(accepted)} verifiers have accepted",
        )
    now = utcnow()
    try:
        async with conn.begin_nested():
            request_id = (
                await conn.execute(
                    requests.insert()
                    .values(
                        plan_id=plan_id,
                        initiator_verifier_id=verifier_id,
                        origin="verifier" if verifier_id else "checkin",
                        status=REQ_PENDING,
                        note=note,
                        created_at=now,
                        updated_at=now,
                        expires_at=now + services.settings.request_ttl,
                    )
                    .returning(requests.c.id)
                )
            ).scalar_one()
    except IntegrityError:
        raise conflict("REQUEST_EXISTS", "a release request is already open for this plan") from None
    await record(conn, actor, "release.requested", f"request:{request_id}", plan=plan_id)
    if verifier_id is not None:
        await conn.execute(
            votes.insert().values(request_id=request_id, verifier_id=verifier_id, approved=True, created_at=now)
        )
    for verifier in accepted:
        if verifier.id != verifier_id:
            await _mail(
                services,
                conn,
                plan,
                "vote",
                verifier.email,
                f"vote:{request_id}:{verifier.id}",
                verifier_id=verifier.id,
                request_id=request_id,
            )
    await _mail(
        services, conn, plan, "owner_request", plan.owner_email, f"owner:{request_id}:opened", request_id=request_id
    )
    await _notify_admin(services, conn, plan, "release requested", request_id)
    await evaluate(services, conn, request_id, actor)
    return int(request_id)


async def evaluate(services: VaultServices, conn: AsyncConnection, request_id: int, actor: str) -> str:
    """Apply the quorum rules to a pending request; returns its (possibly new) status."""
    request = await locked(conn, requests, request_id)
    plan = await locked(conn, plans, request.plan_id)
    if request.status != REQ_PENDING:
        return str(request.status)
    approvals = await count_approvals(conn, request_id)
    denials = len(
        (
            await conn.execute(
                select(votes.c.id)
                .join(verifiers, verifiers.c.id == votes.c.verifier_id)
                .where(
                    votes.c.request_id == request_id,
                    votes.c.approved.is_(False),
                    verifiers.c.status == VERIFIER_ACCEPTED,
                )
            )
        ).all()
    )
    accepted = len(await accepted_verifiers(conn, plan.id))
    now = utcnow()
    if approvals >= plan.approval_threshold:
        release_at = now + timedelta(seconds=plan.waiting_period_seconds)
        await _transition(
            conn,
            request_id,
            REQ_PENDING,
            REQ_WAITING,
            approved_at=now,
            release_at=release_at,
            next_reminder_at=now + services.settings.veto_reminder_interval,
        )
        await record(conn, actor, "release.approved", f"request:{request_id}", approvals=approvals)
        await _mail(
            services,
            conn,
            plan,
            "owner_waiting",
            plan.owner_email,
            f"owner:{request_id}:waiting:0",
            request_id=request_id,
        )
        return REQ_WAITING
    if accepted - denials < plan.approval_threshold:
        await close(conn, request_id, REQ_PENDING, REQ_DENIED, actor)
        return REQ_DENIED
    return REQ_PENDING


async def _transition(
    conn: AsyncConnection, request_id: int, current: str | tuple[str, ...], new: str, **values: Any
) -> None:
    states = (current,) if isinstance(current, str) else current
    result = await conn.execute(
        update(requests)
        .where(requests.c.id == request_id, requests.c.status.in_(states))
        .values(status=new, updated_at=utcnow(), **values)
    )
    if result.rowcount != 1:
        raise conflict("INVALID_STATUS", f"request {request_id} is no longer {' or '.join(states)}")


async def close(conn: AsyncConnection, request_id: int, current: str | tuple[str, ...], new: str, actor: str) -> None:
    await _transition(conn, request_id, current, new, closed_at=utcnow(), closed_by=actor)
    await links.revoke(conn, request_id=request_id)
    await record(conn, actor, f"release.{new}", f"request:{request_id}")


async def vote(
    services: VaultServices,
    conn: AsyncConnection,
    request_id: int,
    verifier_id: int,
    approved: bool,
    note: str | None,
    actor: str,
) -> str:
    request = await locked(conn, requests, request_id)
    if request is None:
        raise not_found(f"release request {request_id}")
    if request.status != REQ_PENDING:
        raise conflict("INVALID_STATUS", f"request is {request.status}; votes are taken while it is pending")
    verifier = await locked(conn, verifiers, verifier_id)
    if verifier is None or verifier.plan_id != request.plan_id or verifier.status != VERIFIER_ACCEPTED:
        raise VaultError(403, "NOT_AUTHORIZED", "not an accepted verifier of this plan")
    try:
        async with conn.begin_nested():
            await conn.execute(
                votes.insert().values(
                    request_id=request_id, verifier_id=verifier_id, approved=approved, note=note, created_at=utcnow()
                )
            )
    except IntegrityError:
        raise conflict("ALREADY_RESPONDED", "this verifier already voted on this request") from None
    await record(conn, actor, "release.vote", f"request:{request_id}", approved=approved)
    return await evaluate(services, conn, request_id, actor)


async def veto(conn: AsyncConnection, request_id: int, actor: str) -> None:
    await close(conn, request_id, REQ_OPEN, REQ_VETOED, actor)


async def cancel(conn: AsyncConnection, request_id: int, actor: str) -> None:
    await close(conn, request_id, REQ_OPEN, REQ_CANCELLED, actor)


async def requeue_after_revocation(services: VaultServices, conn: AsyncConnection, plan_id: int, actor: str) -> None:
    """A verifier left: an open request whose approvals fell below the threshold goes back to
    collecting votes (waiting) or is denied when k became unreachable (pending)."""
    request = await open_request_of(conn, plan_id)
    if request is None:
        return
    plan = await locked(conn, plans, plan_id)
    if request.status == REQ_WAITING and await count_approvals(conn, request.id) < plan.approval_threshold:
        await _transition(
            conn, request.id, REQ_WAITING, REQ_PENDING, approved_at=None, release_at=None, next_reminder_at=None
        )
        await record(conn, actor, "release.quorum_lost", f"request:{request.id}")
    await evaluate(services, conn, request.id, actor)


async def release_now(services: VaultServices, conn: AsyncConnection, request_id: int, actor: str, how: str) -> None:
    """Mark released and enqueue the delivery job, in this transaction (so neither happens alone)."""
    request = await locked(conn, requests, request_id)
    plan = await locked(conn, plans, request.plan_id)
    if plan.status != PLAN_ACTIVE:
        raise conflict("PLAN_NOT_ACTIVE", f"plan is {plan.status}; it cannot be released")
    await _transition(conn, request_id, REQ_OPEN, REQ_RELEASED, closed_at=utcnow(), closed_by=actor)
    await record(conn, actor, "release.released", f"request:{request_id}", how=how)
    await TaskQueue(conn.engine).enqueue(
        RELEASE_KIND,
        {"request_id": request_id},
        job_kind="vault.release",
        idempotency_key=f"vault.release:{request_id}",
        max_attempts=20,
        conn=conn,
    )


async def release_due(services: VaultServices, conn: AsyncConnection, now: datetime) -> list[int]:
    due = (
        await conn.execute(
            select(requests.c.id)
            .join(plans, plans.c.id == requests.c.plan_id)
            .where(
                requests.c.status == REQ_WAITING,
                requests.c.release_at <= now,
                requests.c.frozen_at.is_(None),
                plans.c.status == PLAN_ACTIVE,
            )
        )
    ).scalars()
    released = []
    for request_id in list(due):
        await release_now(services, conn, int(request_id), "system", "waiting period passed")
        released.append(int(request_id))
    return released


async def expire_stale(conn: AsyncConnection, now: datetime) -> list[int]:
    stale = (
        await conn.execute(select(requests.c.id).where(requests.c.status == REQ_PENDING, requests.c.expires_at <= now))
    ).scalars()
    expired = []
    for request_id in list(stale):
        await close(conn, int(request_id), REQ_PENDING, REQ_EXPIRED, "system")
        expired.append(int(request_id))
    return expired


async def remind_owners(services: VaultServices, conn: AsyncConnection, now: datetime) -> int:
    """Waiting requests whose next reminder is due mail the owner again (with a new veto link)."""
    rows = (
        await conn.execute(select(requests).where(requests.c.status == REQ_WAITING, requests.c.next_reminder_at <= now))
    ).all()
    for request in rows:
        plan = await locked(conn, plans, request.plan_id)
        number = int(request.reminders_sent) + 1
        await conn.execute(
            update(requests)
            .where(requests.c.id == request.id)
            .values(reminders_sent=number, next_reminder_at=now + services.settings.veto_reminder_interval)
        )
        await _mail(
            services,
            conn,
            plan,
            "owner_waiting",
            plan.owner_email,
            f"owner:{request.id}:waiting:{number}",
            request_id=request.id,
            context={"reminder": number},
        )
    return len(rows)
