"""Admin routes (plans, releases, freeze, two-admin force, user lock, mail re-send) and the
owner's account data export and deletion.

Admins see plan metadata and release state, never message content or recipients' addresses:
LegacyVideo's admins could download any video."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import delete, select, update

from reelhouse.core.db.models import api_tokens, users
from reelhouse.core.db.types import utcnow
from reelhouse.core.http.deps import DB_INT_MAX, Admin, DbId
from reelhouse.core.http.errors import errors
from reelhouse.vault import outbox, release
from reelhouse.vault.audit import record
from reelhouse.vault.errors import VaultError, conflict, not_found
from reelhouse.vault.http.common import Done, Owner, PlanView, RequestView, Services, actor_of, plan_view
from reelhouse.vault.http.verifiers import request_view
from reelhouse.vault.models import (
    PLAN_ACTIVE,
    PLAN_SUSPENDED,
    REQ_OPEN,
    plans,
    requests,
    verifiers,
)
from reelhouse.vault.store import get_row, locked, messages_of, plans_of, recipients_of

router = APIRouter(prefix="/api", tags=["vault: admin and account"])


class Lock(BaseModel):
    user_id: int = Field(alias="userId", ge=1, le=DB_INT_MAX)
    locked: bool
    model_config = {"populate_by_name": True}


class LockResult(BaseModel):
    user_id: int
    locked: bool
    tokens_revoked: int


def _admin_user(principal: Any) -> str:
    """Force needs two distinct people: the shared ADMIN_TOKEN identifies nobody."""
    if principal.user_id is None:
        raise VaultError(403, "ADMIN_USER_REQUIRED", "forcing a release needs admin *users* (not ADMIN_TOKEN)")
    return actor_of(principal)


@router.get("/admin/plans")
async def admin_plans(principal: Admin, services: Services) -> list[PlanView]:
    async with services.store.read() as conn:
        return [plan_view(r) for r in (await conn.execute(select(plans).order_by(plans.c.id.desc()).limit(500))).all()]


@router.get("/admin/releases")
async def admin_releases(principal: Admin, services: Services) -> list[RequestView]:
    async with services.store.read() as conn:
        rows = (await conn.execute(select(requests).order_by(requests.c.id.desc()).limit(100))).all()
        return [await request_view(conn, r) for r in rows]


@router.get("/admin/releases/{request_id}", responses=errors(404))
async def admin_release(request_id: DbId, principal: Admin, services: Services) -> RequestView:
    async with services.store.read() as conn:
        row = await get_row(conn, requests, request_id)
        if row is None:
            raise not_found(f"release request {request_id}")
        return await request_view(conn, row)


async def _open(conn: Any, request_id: int) -> Any:
    row = await locked(conn, requests, request_id)
    if row is None:
        raise not_found(f"release request {request_id}")
    if row.status not in REQ_OPEN:
        raise conflict("INVALID_STATUS", f"request is {row.status}")
    return row


@router.post(
    "/admin/releases/{request_id}/freeze",
    summary="Stop the clock: a frozen request never releases",
    responses=errors(404, 409),
)
async def freeze(request_id: DbId, principal: Admin, services: Services) -> RequestView:
    async with services.store.tx() as conn:
        await _open(conn, request_id)
        await conn.execute(
            update(requests)
            .where(requests.c.id == request_id)
            .values(frozen_at=utcnow(), frozen_by=actor_of(principal))
        )
        await record(conn, actor_of(principal), "release.frozen", f"request:{request_id}")
        return await request_view(conn, await get_row(conn, requests, request_id))


@router.post("/admin/releases/{request_id}/unfreeze", responses=errors(404, 409))
async def unfreeze(request_id: DbId, principal: Admin, services: Services) -> RequestView:
    async with services.store.tx() as conn:
        await _open(conn, request_id)
        await conn.execute(update(requests).where(requests.c.id == request_id).values(frozen_at=None, frozen_by=None))
        await record(conn, actor_of(principal), "release.unfrozen", f"request:{request_id}")
        return await request_view(conn, await get_row(conn, requests, request_id))


@router.post(
    "/admin/releases/{request_id}/force",
    summary="Propose (first admin) or confirm (a second, different admin) an immediate release",
    responses=errors(403, 404, 409),
)
async def force(request_id: DbId, principal: Admin, services: Services) -> RequestView:
    actor = _admin_user(principal)
    async with services.store.tx() as conn:
        row = await _open(conn, request_id)
        if row.force_requested_by is None:
            await conn.execute(
                update(requests)
                .where(requests.c.id == request_id)
                .values(force_requested_by=actor, force_requested_at=utcnow())
            )
            await record(conn, actor, "release.force_proposed", f"request:{request_id}")
        elif row.force_requested_by == actor:
            raise conflict("SECOND_ADMIN_REQUIRED", "another admin must confirm the forced release")
        else:
            await release.release_now(
                services, conn, request_id, actor, f"forced by {row.force_requested_by} and {actor}"
            )
        return await request_view(conn, await get_row(conn, requests, request_id))


@router.post("/admin/releases/{request_id}/deny", responses=errors(404, 409))
async def admin_deny(request_id: DbId, principal: Admin, services: Services) -> RequestView:
    async with services.store.tx() as conn:
        row = await _open(conn, request_id)
        await release.close(conn, request_id, row.status, "denied", actor_of(principal))
        return await request_view(conn, await get_row(conn, requests, request_id))


@router.post("/admin/plans/{plan_id}/suspend", responses=errors(404, 409))
async def admin_suspend(plan_id: DbId, principal: Admin, services: Services) -> PlanView:
    return await _plan_status(plan_id, principal, services, PLAN_ACTIVE, PLAN_SUSPENDED)


@router.post("/admin/plans/{plan_id}/unsuspend", responses=errors(404, 409))
async def admin_unsuspend(plan_id: DbId, principal: Admin, services: Services) -> PlanView:
    return await _plan_status(plan_id, principal, services, PLAN_SUSPENDED, PLAN_ACTIVE)


async def _plan_status(plan_id: int, principal: Any, services: Any, current: str, new: str) -> PlanView:
    async with services.store.tx() as conn:
        plan = await locked(conn, plans, plan_id)
        if plan is None:
            raise not_found(f"plan {plan_id}")
        if plan.status != current:
            raise conflict("INVALID_STATUS", f"plan is {plan.status}")
        await conn.execute(update(plans).where(plans.c.id == plan_id).values(status=new, updated_at=utcnow()))
        await record(conn, actor_of(principal), f"plan.{new}", f"plan:{plan_id}", by="admin")
        return plan_view(await get_row(conn, plans, plan_id))


@router.post("/admin/users/lock", summary="Lock or unlock an account (seed 004's runbook call)", responses=errors(404))
async def lock_user(body: Lock, principal: Admin, services: Services) -> LockResult:
    """Locking disables sign-in and revokes the user's API tokens at once."""
    async with services.store.tx() as conn:
        found = await conn.execute(update(users).where(users.c.id == body.user_id).values(disabled=body.locked))
        if found.rowcount != 1:
            raise not_found(f"user {body.user_id}")
        revoked = 0
        if body.locked:
            revoked = (
                await conn.execute(
                    update(api_tokens)
                    .where(api_tokens.c.user_id == body.user_id, api_tokens.c.revoked.is_(False))
                    .values(revoked=True)
                )
            ).rowcount
        await record(
            conn, actor_of(principal), "user.locked" if body.locked else "user.unlocked", f"user:{body.user_id}"
        )
    return LockResult(user_id=body.user_id, locked=body.locked, tokens_revoked=revoked)


@router.get("/admin/mails", summary="Vault mails by state across plans (failed and unconfirmed need a decision)")
async def admin_mails(
    principal: Admin, services: Services, state: Annotated[str | None, Query(pattern="^[a-z]{4,12}$")] = None
) -> list[dict[str, Any]]:
    async with services.store.read() as conn:
        return await outbox.mail_rows(conn, None, state=state)


@router.post(
    "/admin/mails/{outbox_id}/resend", summary="Queue a failed or unconfirmed mail again", responses=errors(409)
)
async def resend_mail(outbox_id: DbId, principal: Admin, services: Services) -> Done:
    async with services.store.tx() as conn:
        if not await outbox.resend(conn, outbox_id, services.settings.mail_max_attempts):
            raise conflict("INVALID_STATUS", "only failed or unconfirmed mails are re-sent")
        await record(conn, actor_of(principal), "mail.resent", f"outbox:{outbox_id}")
    return Done(status="queued")


# ---- account data ------------------------------------------------------------------------------
@router.get("/account/export", summary="Everything the vault holds about the caller (no media, no tokens)")
async def export_account(principal: Owner, services: Services) -> dict[str, Any]:
    async with services.store.read() as conn:
        owned = []
        for plan in await plans_of(conn, principal.user_id or 0):
            plan_requests = (await conn.execute(select(requests).where(requests.c.plan_id == plan.id))).all()
            owned.append(
                {
                    "plan": plan_view(plan).model_dump(mode="json"),
                    "owner_email": plan.owner_email,
                    "messages": [
                        {"id": m.id, "title": m.title, "status": m.status, "created_at": m.created_at.isoformat()}
                        for m in await messages_of(conn, plan.id)
                    ],
                    "recipients": await recipients_of(conn, plan.id),
                    "verifiers": [
                        {"id": v.id, "email": v.email, "name": v.name, "status": v.status}
                        for v in (await conn.execute(select(verifiers).where(verifiers.c.plan_id == plan.id))).all()
                    ],
                    "release_requests": [(await request_view(conn, r)).model_dump(mode="json") for r in plan_requests],
                }
            )
        verifying = (
            await conn.execute(
                select(verifiers.c.id, verifiers.c.plan_id).where(verifiers.c.user_id == principal.user_id)
            )
        ).all()
    return {
        "user_id": principal.user_id,
        "plans": owned,
        "verifier_of": [{"verifier_id": v.id, "plan_id": v.plan_id} for v in verifying],
    }


@router.delete("/account", status_code=204, summary="Delete the caller's vault data: plans, media, keys")
async def delete_account(principal: Owner, services: Services) -> Response:
    async with services.store.read() as conn:
        owned = await plans_of(conn, principal.user_id or 0)
        keys = [k for p in owned for m in await messages_of(conn, p.id) for k in (m.media_key, m.source_key) if k]
    for key in keys:
        await services.storage().delete(key)
    async with services.store.tx() as conn:
        for plan in owned:
            await conn.execute(delete(plans).where(plans.c.id == plan.id))
        await conn.execute(update(verifiers).where(verifiers.c.user_id == principal.user_id).values(user_id=None))
        await record(
            conn,
            actor_of(principal),
            "account.deleted",
            f"user:{principal.user_id}",
            plans=len(owned),
            objects=len(keys),
        )
    return Response(status_code=204)
