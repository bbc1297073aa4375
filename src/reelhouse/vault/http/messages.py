"""Owner routes for messages: recipients, the encrypted upload, the owner's decrypted preview."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import delete, update

from reelhouse.core.db.types import utcnow
from reelhouse.core.http.deps import DB_INT_MAX, DbId
from reelhouse.core.http.errors import errors
from reelhouse.core.http.middleware import raise_body_limit
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.vault.audit import record
from reelhouse.vault.errors import VaultError, conflict
from reelhouse.vault.http.common import (
    MessageView,
    Owner,
    Services,
    actor_of,
    limit,
    media_response,
    message_view,
)
from reelhouse.vault.http.plans import Email, PlanId
from reelhouse.vault.media import ACCEPTED_TYPES, TRANSCODE_KIND, store_upload
from reelhouse.vault.models import (
    MSG_DRAFT,
    MSG_FAILED,
    MSG_PROCESSING,
    MSG_READY,
    MSG_RELEASED,
    MSG_REVOKED,
    PLAN_ACTIVE,
    grants,
    message_recipients,
    messages,
)
from reelhouse.vault.store import (
    assign,
    ensure_recipient,
    messages_of,
    owned_message,
    owned_plan,
    recipient_ids_of,
    recipients_of,
)

router = APIRouter(prefix="/api", tags=["vault: owner"])


class RecipientFields(BaseModel):
    email: Email
    name: str | None = Field(None, max_length=100)


class MessageFields(BaseModel):
    plan_id: int = Field(alias="planId", ge=1, le=DB_INT_MAX)
    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=1000)
    recipients: list[RecipientFields] = Field(default_factory=list, max_length=50)

    model_config = {"populate_by_name": True}


class RecipientView(BaseModel):
    id: int
    email: str
    name: str | None
    message_ids: list[int]


@router.get("/messages", responses=errors(404))
async def list_messages(plan_id: PlanId, principal: Owner, services: Services) -> list[MessageView]:
    async with services.store.read() as conn:
        await owned_plan(conn, plan_id, principal.user_id)
        return [message_view(m, await recipient_ids_of(conn, m.id)) for m in await messages_of(conn, plan_id)]


@router.post("/messages", status_code=201, responses=errors(404, 409))
async def create_message(body: MessageFields, principal: Owner, services: Services) -> MessageView:
    async with services.store.tx() as conn:
        plan = await owned_plan(conn, body.plan_id, principal.user_id, lock=True)
        if plan.status != PLAN_ACTIVE:
            raise conflict("INVALID_STATUS", f"plan is {plan.status}")
        now = utcnow()
        message_id = (
            await conn.execute(
                messages.insert()
                .values(
                    plan_id=plan.id,
                    title=body.title,
                    description=body.description,
                    status=MSG_DRAFT,
                    created_at=now,
                    updated_at=now,
                )
                .returning(messages.c.id)
            )
        ).scalar_one()
        for person in body.recipients:
            await assign(conn, message_id, await ensure_recipient(conn, plan.id, person.email, person.name))
        await record(
            conn, actor_of(principal), "message.created", f"message:{message_id}", recipients=len(body.recipients)
        )
        message = await owned_message(conn, message_id, principal.user_id)
        return message_view(message, await recipient_ids_of(conn, message_id))


@router.get("/messages/{message_id}", responses=errors(404))
async def get_message(message_id: DbId, principal: Owner, services: Services) -> MessageView:
    async with services.store.read() as conn:
        message = await owned_message(conn, message_id, principal.user_id)
        return message_view(message, await recipient_ids_of(conn, message_id))


@router.post("/messages/{message_id}/recipients", status_code=201, responses=errors(404, 409))
async def add_recipient(message_id: DbId, body: RecipientFields, principal: Owner, services: Services) -> MessageView:
    async with services.store.tx() as conn:
        message = await owned_message(conn, message_id, principal.user_id, lock=True)
        if message.status in (MSG_RELEASED, MSG_REVOKED):
            raise conflict("INVALID_STATUS", f"message is {message.status}")
        recipient_id = await ensure_recipient(conn, message.plan_id, body.email, body.name)
        await assign(conn, message_id, recipient_id)
        await record(
            conn, actor_of(principal), "message.recipient_added", f"message:{message_id}", recipient=recipient_id
        )
        return message_view(message, await recipient_ids_of(conn, message_id))


@router.delete("/messages/{message_id}/recipients/{recipient_id}", responses=errors(404, 409))
async def remove_recipient(message_id: DbId, recipient_id: DbId, principal: Owner, services: Services) -> MessageView:
    async with services.store.tx() as conn:
        message = await owned_message(conn, message_id, principal.user_id, lock=True)
        await conn.execute(
            delete(message_recipients).where(
                message_recipients.c.message_id == message_id, message_recipients.c.recipient_id == recipient_id
            )
        )
        await conn.execute(
            update(grants)
            .where(
                grants.c.message_id == message_id, grants.c.recipient_id == recipient_id, grants.c.revoked_at.is_(None)
            )
            .values(revoked_at=utcnow())
        )
        await record(
            conn, actor_of(principal), "message.recipient_removed", f"message:{message_id}", recipient=recipient_id
        )
        return message_view(message, await recipient_ids_of(conn, message_id))


@router.get("/plans/{plan_id}/recipients", responses=errors(404))
async def list_recipients(plan_id: DbId, principal: Owner, services: Services) -> list[RecipientView]:
    async with services.store.read() as conn:
        await owned_plan(conn, plan_id, principal.user_id)
        return [RecipientView(**r) for r in await recipients_of(conn, plan_id)]


@router.post("/messages/{message_id}/revoke", responses=errors(404))
async def revoke_message(message_id: DbId, principal: Owner, services: Services) -> MessageView:
    """Revoked for good: recipients' access ends, the media is deleted and the data key destroyed."""
    async with services.store.tx() as conn:
        message = await owned_message(conn, message_id, principal.user_id, lock=True)
        keys = [k for k in (message.media_key, message.source_key) if k]
        await conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(status=MSG_REVOKED, wrapped_key=None, media_key=None, source_key=None, updated_at=utcnow())
        )
        await conn.execute(
            update(grants)
            .where(grants.c.message_id == message_id, grants.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        await record(conn, actor_of(principal), "message.revoked", f"message:{message_id}")
        message = await owned_message(conn, message_id, principal.user_id)
    for key in keys:
        await services.storage().delete(key)
    return message_view(message)


@router.delete("/messages/{message_id}", status_code=204, responses=errors(404))
async def delete_message(message_id: DbId, principal: Owner, services: Services) -> Response:
    async with services.store.tx() as conn:
        message = await owned_message(conn, message_id, principal.user_id, lock=True)
        await conn.execute(delete(messages).where(messages.c.id == message_id))
        await record(conn, actor_of(principal), "message.deleted", f"message:{message_id}")
    for key in (message.media_key, message.source_key):
        if key:
            await services.storage().delete(key)
    return Response(status_code=204)


@router.post(
    "/uploads/{message_id}",
    status_code=202,
    summary="Upload the message's video or audio (raw body); it is encrypted as it streams",
    responses=errors(404, 409, 413, 415, 429),
)
async def upload(message_id: DbId, request: Request, principal: Owner, services: Services) -> MessageView:
    limit(services, services.limits.upload, f"user:{principal.user_id}", "uploads")
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise VaultError(
            415, "UNSUPPORTED_TYPE", f"content type {content_type or '(none)'} is not a video or audio upload"
        )
    # The raw body streams to storage under the vault's own cap (`bounded`, with its own 413), not the
    # API's JSON body limit; the slack lets that cap answer first.
    raise_body_limit(request, services.settings.max_upload_bytes + (1 << 20))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > services.settings.max_upload_bytes:
        raise VaultError(413, "FILE_TOO_LARGE", f"upload exceeds {services.settings.max_upload_bytes} bytes")
    async with services.store.tx() as conn:
        message = await owned_message(conn, message_id, principal.user_id, lock=True)
        if message.status not in (MSG_DRAFT, MSG_FAILED, MSG_READY):
            raise conflict(
                "INVALID_STATUS", f"message is {message.status}; uploads replace draft, failed or ready media"
            )
        if message.wrapped_key:
            data_key = services.unwrap_key(message)
        else:
            data_key, wrapped, key_id = services.new_wrapped_key(message_id)
            await conn.execute(
                update(messages).where(messages.c.id == message_id).values(wrapped_key=wrapped, key_id=key_id)
            )
    key, size = await store_upload(services, message, request.stream(), data_key)
    if size == 0:
        await services.storage().delete(key)
        raise VaultError(400, "EMPTY_UPLOAD", "the upload is empty")
    async with services.store.tx() as conn:
        current = await owned_message(conn, message_id, principal.user_id, lock=True)
        if current.status not in (MSG_DRAFT, MSG_FAILED, MSG_READY):
            await services.storage().delete(key)
            raise conflict("INVALID_STATUS", f"message became {current.status} during the upload")
        await conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(status=MSG_PROCESSING, source_key=key, uploaded_at=utcnow(), updated_at=utcnow(), error=None)
        )
        await TaskQueue(conn.engine).enqueue(
            TRANSCODE_KIND,
            {"message_id": message_id, "source_key": key},
            job_kind="vault.transcode",
            user_id=principal.user_id,
            idempotency_key=f"vault.transcode:{key}",
            max_attempts=3,
            timeout_seconds=timedelta(hours=6).total_seconds(),
            conn=conn,
        )
        await record(conn, actor_of(principal), "message.uploaded", f"message:{message_id}", bytes=size)
        return message_view(await owned_message(conn, message_id, principal.user_id))


@router.get(
    "/messages/{message_id}/media",
    summary="The owner's preview: the decrypted rendition, with Range",
    response_class=Response,
    responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "one byte range"}, **errors(404, 409, 416)},
)
async def owner_media(message_id: DbId, request: Request, principal: Owner, services: Services) -> Response:
    async with services.store.read() as conn:
        message = await owned_message(conn, message_id, principal.user_id)
    if message.status not in (MSG_READY, MSG_RELEASED):
        raise conflict("NOT_READY", f"message is {message.status}")
    return media_response(services, message, request)
