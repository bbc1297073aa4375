"""Verifier and release routes: invitations, revocation, release requests, votes, cancel, and
the owner's veto and check-in (by account or by link).

A verifier acts with their account (bound when they accepted while signed in) or with their
verifier link; never by an email address in the body (LegacyVideo's release endpoints trusted
whoever typed a verifier's email)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select, update

from reelhouse.core.db.types import utcnow
from reelhouse.core.http.deps import DB_INT_MAX, DbId
from reelhouse.core.http.errors import errors
from reelhouse.vault import links, release
from reelhouse.vault.audit import email_hash, record
from reelhouse.vault.errors import VaultError, conflict, invalid_token, not_found
from reelhouse.vault.http.common import (
    Caller,
    Done,
    LinkToken,
    OptionalToken,
    Owner,
    RequestView,
    Services,
    VerifierView,
    VoteView,
    actor_of,
    limit,
    verifier_identity,
    verifier_view,
)
from reelhouse.vault.http.plans import Email
from reelhouse.vault.mails import approvals
from reelhouse.vault.models import (
    REQ_OPEN,
    VERIFIER_ACCEPTED,
    VERIFIER_DECLINED,
    VERIFIER_INVITED,
    VERIFIER_REVOKED,
    plans,
    requests,
    verifiers,
    votes,
)
from reelhouse.vault.outbox import queue_mail
from reelhouse.vault.store import get_row, locked, occupied_verifier_slots, owned_plan, verifier_plans_of_user
from reelhouse.vault.watch import check_in

router = APIRouter(prefix="/api", tags=["vault: verifiers and releases"])
PlanId = Annotated[int, Query(alias="planId", ge=1, le=DB_INT_MAX)]


class Invitation(BaseModel):
    plan_id: int = Field(alias="planId", ge=1, le=DB_INT_MAX)
    email: Email
    name: str | None = Field(None, max_length=100)
    model_config = {"populate_by_name": True}


class Accepted(BaseModel):
    verifier_id: int
    plan_id: int
    verifier_token: str = Field(description="your verifier link's token, shown once: keep it")
    bound_to_account: bool


class ReleaseAsk(BaseModel):
    plan_id: int = Field(alias="planId", ge=1, le=DB_INT_MAX)
    note: str | None = Field(None, max_length=1000)
    model_config = {"populate_by_name": True}


class Vote(BaseModel):
    request_id: int = Field(alias="requestId", ge=1, le=DB_INT_MAX)
    approved: bool
    note: str | None = Field(None, max_length=500)
    model_config = {"populate_by_name": True}


class VerifierPlan(BaseModel):
    plan_id: int
    verifier_id: int
    title: str
    status: str
    threshold: int
    open_request: RequestView | None


async def request_view(conn: Any, row: Any) -> RequestView:
    plan = await get_row(conn, plans, row.plan_id)
    vote_rows = (await conn.execute(select(votes).where(votes.c.request_id == row.id).order_by(votes.c.id))).all()
    return RequestView(
        **{k: row._mapping[k] for k in ("id", "plan_id", "origin", "status", "initiator_verifier_id", "note")},
        approvals=await approvals(conn, row.id),
        threshold=plan.approval_threshold,
        created_at=row.created_at,
        expires_at=row.expires_at,
        approved_at=row.approved_at,
        release_at=row.release_at,
        frozen=row.frozen_at is not None,
        force_requested=row.force_requested_by is not None,
        closed_at=row.closed_at,
        votes=[VoteView(verifier_id=v.verifier_id, approved=v.approved, created_at=v.created_at) for v in vote_rows],
    )


# ---- invitations ---------------------------------------------------------------------------
@router.get("/verifiers", responses=errors(404))
async def list_verifiers(plan_id: PlanId, principal: Owner, services: Services) -> list[VerifierView]:
    async with services.store.read() as conn:
        await owned_plan(conn, plan_id, principal.user_id)
        rows = (
            await conn.execute(select(verifiers).where(verifiers.c.plan_id == plan_id).order_by(verifiers.c.id))
        ).all()
    return [verifier_view(r) for r in rows]


@router.post("/verifiers", status_code=201, responses=errors(404, 409))
async def invite_verifier(body: Invitation, principal: Owner, services: Services) -> VerifierView:
    async with services.store.tx() as conn:
        plan = await owned_plan(conn, body.plan_id, principal.user_id, lock=True)
        existing = (
            await conn.execute(select(verifiers).where(verifiers.c.plan_id == plan.id, verifiers.c.email == body.email))
        ).first()
        if existing is not None and existing.status in (VERIFIER_ACCEPTED, VERIFIER_INVITED):
            raise conflict(
                "VERIFIER_EXISTS", "this address is already a verifier of the plan (resend the invitation instead)"
            )
        if await occupied_verifier_slots(conn, plan.id) >= plan.total_verifiers:
            raise conflict("VERIFIER_LIMIT_REACHED", f"the plan has {plan.total_verifiers} verifier slots, all taken")
        now = utcnow()
        values = {
            "status": VERIFIER_INVITED,
            "name": body.name,
            "invited_at": now,
            "invite_expires_at": now + services.settings.invitation_ttl,
            "accepted_at": None,
            "revoked_at": None,
            "user_id": None,
        }
        if existing is None:
            verifier_id = (
                await conn.execute(
                    verifiers.insert()
                    .values(plan_id=plan.id, email=body.email, created_at=now, **values)
                    .returning(verifiers.c.id)
                )
            ).scalar_one()
        else:
            verifier_id = existing.id
            await conn.execute(update(verifiers).where(verifiers.c.id == verifier_id).values(**values))
        await _send_invitation(services, conn, plan.id, verifier_id, body.email, now)
        await record(
            conn,
            actor_of(principal),
            "verifier.invited",
            f"verifier:{verifier_id}",
            plan=plan.id,
            email_hash=email_hash(services.audit_secret, body.email),
        )
        return verifier_view(await get_row(conn, verifiers, verifier_id))


async def _send_invitation(services: Any, conn: Any, plan_id: int, verifier_id: int, email: str, now: Any) -> None:
    await links.revoke(conn, verifier_id=verifier_id, purpose="invite")
    await queue_mail(
        conn,
        plan_id=plan_id,
        template="invite",
        to=email,
        dedupe_key=f"invite:{verifier_id}:{now.isoformat()}",
        max_attempts=services.settings.mail_max_attempts,
        verifier_id=verifier_id,
    )


@router.post("/verifiers/{verifier_id}/resend", responses=errors(404, 409))
async def resend_invitation(verifier_id: DbId, principal: Owner, services: Services) -> VerifierView:
    async with services.store.tx() as conn:
        verifier = await locked(conn, verifiers, verifier_id)
        if verifier is None:
            raise not_found(f"verifier {verifier_id}")
        await owned_plan(conn, verifier.plan_id, principal.user_id)
        if verifier.status != VERIFIER_INVITED:
            raise conflict("INVALID_STATUS", f"verifier is {verifier.status}; only invitations are resent")
        now = utcnow()
        await conn.execute(
            update(verifiers)
            .where(verifiers.c.id == verifier_id)
            .values(invited_at=now, invite_expires_at=now + services.settings.invitation_ttl)
        )
        await _send_invitation(services, conn, verifier.plan_id, verifier_id, verifier.email, now)
        await record(conn, actor_of(principal), "verifier.reinvited", f"verifier:{verifier_id}")
        return verifier_view(await get_row(conn, verifiers, verifier_id))


async def _invitation(conn: Any, token: str) -> tuple[Any, Any]:
    link = await links.find(conn, token, ("invite",))
    if link is None or link.revoked_at is not None or link.used_at is not None:
        raise invalid_token()
    if link.expires_at <= utcnow():
        raise VaultError(410, "INVITATION_EXPIRED", "this invitation expired; ask the owner to resend it")
    verifier = await locked(conn, verifiers, link.verifier_id or 0)
    if verifier is None or verifier.status != VERIFIER_INVITED:
        raise conflict("ALREADY_RESPONDED", "this invitation was already answered")
    if not await links.mark_used(conn, link.id):
        raise invalid_token()
    return link, verifier


@router.post(
    "/verifiers/accept",
    summary="Accept an invitation (link token; binds your account if signed in)",
    responses=errors(409, 410),
)
async def accept_invitation(token: LinkToken, caller: Caller, services: Services) -> Accepted:
    async with services.store.tx() as conn:
        _, verifier = await _invitation(conn, token)
        user_id = caller.user_id if caller is not None else None
        await conn.execute(
            update(verifiers)
            .where(verifiers.c.id == verifier.id)
            .values(status=VERIFIER_ACCEPTED, accepted_at=utcnow(), user_id=user_id)
        )
        verifier_token = await links.issue(
            conn, "verifier", verifier.plan_id, utcnow() + services.settings.verifier_link_ttl, verifier_id=verifier.id
        )
        await record(conn, f"verifier:{verifier.id}", "verifier.accepted", f"verifier:{verifier.id}", account=user_id)
    return Accepted(
        verifier_id=verifier.id,
        plan_id=verifier.plan_id,
        verifier_token=verifier_token,
        bound_to_account=user_id is not None,
    )


@router.post("/verifiers/decline", responses=errors(409, 410))
async def decline_invitation(token: LinkToken, services: Services) -> Done:
    async with services.store.tx() as conn:
        _, verifier = await _invitation(conn, token)
        await conn.execute(update(verifiers).where(verifiers.c.id == verifier.id).values(status=VERIFIER_DECLINED))
        await record(conn, f"verifier:{verifier.id}", "verifier.declined", f"verifier:{verifier.id}")
    return Done(status=VERIFIER_DECLINED)


@router.post("/verifiers/{verifier_id}/revoke", responses=errors(404, 409))
async def revoke_verifier(verifier_id: DbId, principal: Owner, services: Services) -> VerifierView:
    async with services.store.tx() as conn:
        verifier = await locked(conn, verifiers, verifier_id)
        if verifier is None:
            raise not_found(f"verifier {verifier_id}")
        await owned_plan(conn, verifier.plan_id, principal.user_id, lock=True)
        if verifier.status == VERIFIER_REVOKED:
            raise conflict("INVALID_STATUS", "verifier already revoked")
        await conn.execute(
            update(verifiers).where(verifiers.c.id == verifier_id).values(status=VERIFIER_REVOKED, revoked_at=utcnow())
        )
        await links.revoke(conn, verifier_id=verifier_id)
        await record(conn, actor_of(principal), "verifier.revoked", f"verifier:{verifier_id}")
        await release.requeue_after_revocation(services, conn, verifier.plan_id, actor_of(principal))
        return verifier_view(await get_row(conn, verifiers, verifier_id))


@router.get("/verifier/plans", summary="Plans the caller verifies (account or verifier link)")
async def my_verifier_plans(caller: Caller, token: OptionalToken, services: Services) -> list[VerifierPlan]:
    async with services.store.read() as conn:
        if token:
            link = await links.find(conn, token, ("verifier", "vote"))
            if link is None or not link.usable(utcnow()):
                raise invalid_token()
            plan = await get_row(conn, plans, link.plan_id)
            rows = [(link.verifier_id, plan)]
        elif caller is not None and caller.user_id is not None:
            rows = [(r.verifier_id, r) for r in await verifier_plans_of_user(conn, caller.user_id)]
        else:
            raise VaultError(401, "TOKEN_REQUIRED", "sign in or use your verifier link")
        out = []
        for verifier_id, plan in rows:
            open_row = (
                await conn.execute(
                    select(requests).where(requests.c.plan_id == plan.id, requests.c.status.in_(REQ_OPEN))
                )
            ).first()
            out.append(
                VerifierPlan(
                    plan_id=plan.id,
                    verifier_id=verifier_id,
                    title=plan.title,
                    status=plan.status,
                    threshold=plan.approval_threshold,
                    open_request=await request_view(conn, open_row) if open_row else None,
                )
            )
    return out


# ---- release requests ------------------------------------------------------------------------
@router.get("/releases", responses=errors(404))
async def list_releases(plan_id: PlanId, caller: Caller, token: OptionalToken, services: Services) -> list[RequestView]:
    """The plan's requests, for its owner or one of its verifiers."""
    async with services.store.read() as conn:
        plan = await get_row(conn, plans, plan_id)
        is_owner = plan is not None and caller is not None and caller.user_id == plan.owner_user_id
    if not is_owner:
        await verifier_identity(services, caller, token, plan_id, None)
    async with services.store.read() as conn:
        rows = (
            await conn.execute(select(requests).where(requests.c.plan_id == plan_id).order_by(requests.c.id.desc()))
        ).all()
        return [await request_view(conn, r) for r in rows]


@router.post("/releases", status_code=201, summary="Request a release (verifier)", responses=errors(404, 409, 429))
async def request_release(body: ReleaseAsk, caller: Caller, token: OptionalToken, services: Services) -> RequestView:
    verifier_id, actor = await verifier_identity(services, caller, token, body.plan_id, None)
    limit(services, services.limits.release, actor, "release requests")
    async with services.store.tx() as conn:
        request_id = await release.open_request(services, conn, body.plan_id, verifier_id, body.note, actor)
        return await request_view(conn, await get_row(conn, requests, request_id))


@router.post(
    "/releases/approve", summary="Approve or deny a pending request (verifier)", responses=errors(403, 404, 409)
)
async def vote_on_release(body: Vote, caller: Caller, token: OptionalToken, services: Services) -> RequestView:
    verifier_id, actor = await verifier_identity(services, caller, token, None, body.request_id)
    async with services.store.tx() as conn:
        await release.vote(services, conn, body.request_id, verifier_id, body.approved, body.note, actor)
        return await request_view(conn, await get_row(conn, requests, body.request_id))


@router.post(
    "/releases/{request_id}/cancel",
    summary="Withdraw a request (its initiator or the plan's owner)",
    responses=errors(403, 404, 409),
)
async def cancel_release(request_id: DbId, caller: Caller, token: OptionalToken, services: Services) -> RequestView:
    async with services.store.read() as conn:
        row = await get_row(conn, requests, request_id)
        plan = await get_row(conn, plans, row.plan_id) if row else None
    if row is None or plan is None:
        raise not_found(f"release request {request_id}")
    if caller is not None and caller.user_id == plan.owner_user_id and not token:
        actor = actor_of(caller)
    else:
        verifier_id, actor = await verifier_identity(services, caller, token, None, request_id)
        if verifier_id != row.initiator_verifier_id:
            raise VaultError(403, "NOT_AUTHORIZED", "only the verifier who asked, or the owner, can cancel a request")
    async with services.store.tx() as conn:
        await release.cancel(conn, request_id, actor)
        return await request_view(conn, await get_row(conn, requests, request_id))


@router.post("/releases/{request_id}/veto", summary="The owner stops a release (signed in)", responses=errors(404, 409))
async def veto_signed_in(request_id: DbId, principal: Owner, services: Services) -> RequestView:
    async with services.store.tx() as conn:
        row = await locked(conn, requests, request_id)
        if row is None:
            raise not_found(f"release request {request_id}")
        await owned_plan(conn, row.plan_id, principal.user_id)
        await release.veto(conn, request_id, actor_of(principal))
        await check_in(conn, row.plan_id, actor_of(principal), "veto")
        return await request_view(conn, await get_row(conn, requests, request_id))


@router.post("/releases/veto", summary="The owner stops a release with the link from the mail", responses=errors(409))
async def veto_by_link(token: LinkToken, services: Services) -> RequestView:
    async with services.store.tx() as conn:
        link = await links.find(conn, token, ("veto",))
        if link is None or not link.usable(utcnow()) or link.request_id is None:
            raise invalid_token()
        request_id: int = link.request_id
        row = await locked(conn, requests, request_id)
        if row is None or row.status not in REQ_OPEN:
            raise conflict("INVALID_STATUS", f"request is already {row.status}")
        await links.mark_used(conn, link.id)
        await release.veto(conn, row.id, "owner:link")
        await check_in(conn, row.plan_id, "owner:link", "veto")
        return await request_view(conn, await get_row(conn, requests, row.id))


@router.post("/checkin", summary="The owner confirms liveness with the link from the reminder", responses=errors(401))
async def checkin_by_link(token: LinkToken, services: Services) -> Done:
    async with services.store.tx() as conn:
        link = await links.find(conn, token, ("checkin",))
        if link is None or not link.usable(utcnow()):
            raise invalid_token()
        await links.mark_used(conn, link.id)
        cancelled = await check_in(conn, link.plan_id, "owner:link", "link")
    return Done(status="cancelled a watchdog request" if cancelled else "checked in")
