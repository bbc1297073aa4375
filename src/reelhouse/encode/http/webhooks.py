"""Webhooks (WebEncode's `/v1/webhooks`): register, list, show, delete; plus reelhouse's
delivery log, test-send and enable/disable. Secrets are write-only: stored encrypted, never
returned (`has_secret` says whether one is set)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from reelhouse.core.http.deps import Admin, DbId, component
from reelhouse.core.http.errors import errors
from reelhouse.core.security.audit import append as audit
from reelhouse.encode.events import EVENT_TYPES
from reelhouse.encode.services import EncodeServices
from reelhouse.encode.webhooks import MAX_SECRET, MAX_URL, WebhookError

router = APIRouter(tags=["webhooks"])
Services = Annotated[EncodeServices, component(EncodeServices)]
EventName = Annotated[str, Field(max_length=64, pattern=r"^(\*|[a-z]+(\.[a-z_]+)+)$")]


class CreateWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str = Field(max_length=MAX_URL)
    secret: str | None = Field(None, max_length=MAX_SECRET, description="HMAC key; stored encrypted, never returned")
    events: list[EventName] = Field(min_length=1, max_length=32, description=f"'*' or of: {', '.join(EVENT_TYPES)}")


class WebhookView(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    user_id: str | None
    url: str
    events: list[str]
    is_active: bool
    failure_count: int
    disabled_reason: str | None = Field(description="why the webhook was disabled (repeated failures, an operator)")
    has_secret: bool
    last_triggered_at: str | None
    created_at: str
    updated_at: str


class DeliveryView(BaseModel):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    attempt: int
    status_code: int | None
    succeeded: bool
    error: str | None
    duration_ms: int | None
    created_at: str


class TestResult(BaseModel):
    succeeded: bool
    status_code: int | None
    error: str | None


def failed(exc: WebhookError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


@router.get("/v1/webhooks", response_model=list[WebhookView], summary="Webhooks (never their secrets; admin)")
async def list_webhooks(services: Services, _p: Admin) -> list[dict[str, Any]]:
    return await services.webhooks.all()


@router.post(
    "/v1/webhooks", status_code=201, response_model=WebhookView, responses=errors(400, 409), summary="Register (admin)"
)
async def create_webhook(body: CreateWebhook, services: Services, principal: Admin) -> dict[str, Any]:
    unknown = [e for e in body.events if e != "*" and e not in EVENT_TYPES]
    if unknown:
        raise HTTPException(400, f"unknown event {unknown[0]!r}; expected '*' or one of {', '.join(EVENT_TYPES)}")
    try:
        created = await services.webhooks.create(
            body.url, list(dict.fromkeys(body.events)), body.secret, principal.name
        )
    except WebhookError as exc:
        raise failed(exc) from None
    await audit(services.engine, principal.name, "webhook.create", f"webhook:{created['id']}")
    return created


@router.get("/v1/webhooks/{webhook_id}", response_model=WebhookView, responses=errors(404), summary="One webhook")
async def get_webhook(webhook_id: DbId, services: Services, _p: Admin) -> dict[str, Any]:
    try:
        return await services.webhooks.require(webhook_id)
    except WebhookError as exc:
        raise failed(exc) from None


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, responses=errors(404), summary="Delete (admin)")
async def delete_webhook(webhook_id: DbId, services: Services, principal: Admin) -> Response:
    try:
        await services.webhooks.delete(webhook_id)
    except WebhookError as exc:
        raise failed(exc) from None
    await audit(services.engine, principal.name, "webhook.delete", f"webhook:{webhook_id}")
    return Response(status_code=204)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=list[DeliveryView],
    responses=errors(404),
    summary="The delivery log: every attempt, newest first",
)
async def webhook_deliveries(
    webhook_id: DbId, services: Services, _p: Admin, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[dict[str, Any]]:
    try:
        return await services.webhooks.deliveries(webhook_id, limit)
    except WebhookError as exc:
        raise failed(exc) from None


@router.post(
    "/v1/webhooks/{webhook_id}/test",
    response_model=TestResult,
    responses=errors(404),
    summary="Send a webhook.test event now (one attempt, logged)",
)
async def test_webhook(webhook_id: DbId, services: Services, _p: Admin) -> dict[str, Any]:
    try:
        return await services.webhooks.test_send(webhook_id)
    except WebhookError as exc:
        raise failed(exc) from None


@router.post("/v1/webhooks/{webhook_id}/enable", response_model=WebhookView, responses=errors(404), summary="Enable")
async def enable_webhook(webhook_id: DbId, services: Services, principal: Admin) -> dict[str, Any]:
    try:
        view = await services.webhooks.set_active(webhook_id, True)
    except WebhookError as exc:
        raise failed(exc) from None
    await audit(services.engine, principal.name, "webhook.enable", f"webhook:{webhook_id}")
    return view


@router.post("/v1/webhooks/{webhook_id}/disable", response_model=WebhookView, responses=errors(404), summary="Disable")
async def disable_webhook(webhook_id: DbId, services: Services, principal: Admin) -> dict[str, Any]:
    try:
        view = await services.webhooks.set_active(webhook_id, False)
    except WebhookError as exc:
        raise failed(exc) from None
    await audit(services.engine, principal.name, "webhook.disable", f"webhook:{webhook_id}")
    return view
