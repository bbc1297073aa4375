"""Owner routes for plans (their messages are in messages.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import delete

from reelhouse.core.http.deps import DB_INT_MAX, DbId
from reelhouse.core.http.errors import errors
from reelhouse.core.notify.email import is_valid_address, normalize_address
from reelhouse.vault import outbox
from reelhouse.vault.audit import record
from reelhouse.vault.errors import VaultError, conflict
from reelhouse.vault.http.common import (
    Done,
    Owner,
    PlanView,
    Services,
    actor_of,
    plan_view,
)
from reelhouse.vault.models import (
    PLAN_ACTIVE,
    PLAN_SUSPENDED,
)
from reelhouse.vault.store import (
    insert_plan,
    messages_of,
    owned_plan,
    plans_of,
    require_no_open_request,
    update_plan,
)
from reelhouse.vault.watch import check_in

router = APIRouter(prefix="/api", tags=["vault: owner"])
PlanId = Annotated[int, Query(alias="planId", ge=1, le=DB_INT_MAX)]


def _email(value: str) -> str:
    address = normalize_address(value)
    if not is_valid_address(address):
        raise ValueError("not a valid email address")
    return address


Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]


class PlanFields(BaseModel):
    title: str = Field(min_length=1, max_length=100)
    description: str | None = Field(None, max_length=500)
    approval_threshold: int = Field(alias="approvalThreshold", ge=1, le=10)
    total_verifiers: int = Field(alias="totalVerifiers", ge=1, le=10)
    owner_email: Email = Field(alias="ownerEmail", description="where veto and check-in mails go")
    waiting_period_seconds: int | None = Field(None, alias="waitingPeriodSeconds", ge=1, le=365 * 86400)
    checkin_interval_seconds: int | None = Field(None, alias="checkinIntervalSeconds", ge=1, le=3 * 365 * 86400)

    model_config = {"populate_by_name": True}


class PlanChanges(BaseModel):
    title: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=500)
    approval_threshold: int | None = Field(None, alias="approvalThreshold", ge=1, le=10)
    total_verifiers: int | None = Field(None, alias="totalVerifiers", ge=1, le=10)
    owner_email: Email | None = Field(None, alias="ownerEmail")
    waiting_period_seconds: int | None = Field(None, alias="waitingPeriodSeconds", ge=1, le=365 * 86400)
    checkin_interval_seconds: int | None = Field(None, alias="checkinIntervalSeconds", ge=0, le=3 * 365 * 86400)

    model_config = {"populate_by_name": True}


def _timing(services: Any, waiting: int | None, checkin: int | None) -> dict[str, Any]:
    settings = services.settings
    waiting = waiting or int(settings.default_waiting_period.total_seconds())
    if waiting < settings.min_waiting_period.total_seconds():
        raise VaultError(
            400, "INVALID_WAITING_PERIOD", f"waiting period must be at least {settings.min_waiting_period}"
        )
    if checkin and checkin < settings.min_checkin_interval.total_seconds():
        raise VaultError(400, "INVALID_CHECKIN", f"check-in interval must be at least {settings.min_checkin_interval}")
    return {"waiting_period_seconds": waiting, "checkin_interval_seconds": checkin or None}


@router.get("/plans", summary="The caller's plans")
async def list_plans(principal: Owner, services: Services) -> list[PlanView]:
    async with services.store.read() as conn:
        return [plan_view(row) for row in await plans_of(conn, principal.user_id or 0)]


@router.post("/plans", status_code=201, responses=errors(400))
async def create_plan(body: PlanFields, principal: Owner, services: Services) -> PlanView:
    if body.approval_threshold > body.total_verifiers:
        raise VaultError(400, "INVALID_THRESHOLD", "approvalThreshold must be between 1 and totalVerifiers")
    values = body.model_dump(exclude={"waiting_period_seconds", "checkin_interval_seconds"})
    values.update(_timing(services, body.waiting_period_seconds, body.checkin_interval_seconds))
    async with services.store.tx() as conn:
        plan_id = await insert_plan(conn, principal.user_id or 0, values)
        await record(conn, actor_of(principal), "plan.created", f"plan:{plan_id}")
        return plan_view(await owned_plan(conn, plan_id, principal.user_id))


@router.get("/plans/{plan_id}", responses=errors(404))
async def get_plan(plan_id: DbId, principal: Owner, services: Services) -> PlanView:
    async with services.store.read() as conn:
        return plan_view(await owned_plan(conn, plan_id, principal.user_id))


@router.patch("/plans/{plan_id}", responses=errors(400, 404, 409))
async def change_plan(plan_id: DbId, body: PlanChanges, principal: Owner, services: Services) -> PlanView:
    changes = body.model_dump(exclude_unset=True)
    async with services.store.tx() as conn:
        plan = await owned_plan(conn, plan_id, principal.user_id, lock=True)
        if plan.status != PLAN_ACTIVE and plan.status != PLAN_SUSPENDED:
            raise conflict("INVALID_STATUS", f"plan is {plan.status}")
        if {"approval_threshold", "total_verifiers", "waiting_period_seconds"} & changes.keys():
            await require_no_open_request(conn, plan_id, "change the threshold or waiting period")
        threshold = changes.get("approval_threshold", plan.approval_threshold)
        if threshold > changes.get("total_verifiers", plan.total_verifiers):
            raise VaultError(400, "INVALID_THRESHOLD", "approvalThreshold must be between 1 and totalVerifiers")
        if "waiting_period_seconds" in changes or "checkin_interval_seconds" in changes:
            changes.update(
                _timing(
                    services,
                    changes.get("waiting_period_seconds", plan.waiting_period_seconds),
                    changes.get("checkin_interval_seconds", plan.checkin_interval_seconds),
                )
            )
        await update_plan(conn, plan_id, **changes)
        await record(conn, actor_of(principal), "plan.updated", f"plan:{plan_id}", fields=sorted(changes))
        return plan_view(await owned_plan(conn, plan_id, principal.user_id))


@router.post("/plans/{plan_id}/suspend", responses=errors(404, 409))
async def suspend_plan(plan_id: DbId, principal: Owner, services: Services) -> PlanView:
    return await _set_status(plan_id, principal, services, PLAN_ACTIVE, PLAN_SUSPENDED)


@router.post("/plans/{plan_id}/unsuspend", responses=errors(404, 409))
async def unsuspend_plan(plan_id: DbId, principal: Owner, services: Services) -> PlanView:
    return await _set_status(plan_id, principal, services, PLAN_SUSPENDED, PLAN_ACTIVE)


async def _set_status(plan_id: int, principal: Any, services: Any, current: str, new: str) -> PlanView:
    async with services.store.tx() as conn:
        plan = await owned_plan(conn, plan_id, principal.user_id, lock=True)
        if plan.status != current:
            raise conflict("INVALID_STATUS", f"plan is {plan.status}, not {current}")
        await update_plan(conn, plan_id, status=new)
        await record(conn, actor_of(principal), f"plan.{new}", f"plan:{plan_id}")
        return plan_view(await owned_plan(conn, plan_id, principal.user_id))


@router.post("/plans/{plan_id}/checkin", summary="Confirm liveness (signed in)", responses=errors(404))
async def checkin_signed_in(plan_id: DbId, principal: Owner, services: Services) -> Done:
    async with services.store.tx() as conn:
        await owned_plan(conn, plan_id, principal.user_id, lock=True)
        cancelled = await check_in(conn, plan_id, actor_of(principal), "button")
    return Done(status="cancelled a watchdog request" if cancelled else "checked in")


@router.delete("/plans/{plan_id}", status_code=204, responses=errors(404))
async def delete_plan(plan_id: DbId, principal: Owner, services: Services) -> Response:
    """Deletes the plan, its rows and every media object (and with the rows the wrapped data
    keys, so stray copies of the ciphertext, e.g. in backups, are unreadable)."""
    async with services.store.tx() as conn:
        await owned_plan(conn, plan_id, principal.user_id, lock=True)
        keys = [k for m in await messages_of(conn, plan_id) for k in (m.media_key, m.source_key) if k]
    for key in keys:
        await services.storage().delete(key)
    async with services.store.tx() as conn:
        from reelhouse.vault.models import plans

        await conn.execute(delete(plans).where(plans.c.id == plan_id))
        await record(conn, actor_of(principal), "plan.deleted", f"plan:{plan_id}", objects=len(keys))
    return Response(status_code=204)


@router.get("/plans/{plan_id}/mails", summary="Delivery state of the plan's mails", responses=errors(404))
async def plan_mails(plan_id: DbId, principal: Owner, services: Services) -> list[dict[str, Any]]:
    async with services.store.read() as conn:
        await owned_plan(conn, plan_id, principal.user_id)
        return await outbox.mail_rows(conn, plan_id)
