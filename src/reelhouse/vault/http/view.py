"""Recipient routes: a recipient's link opens a playback session (an HttpOnly cookie bound to
that recipient), which lists their released messages and streams them decrypted with seeking.
An expired link can ask for a fresh one, which goes to the recipient's own address."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import func, select, update

from reelhouse.core.db.types import utcnow
from reelhouse.core.http.deps import DbId
from reelhouse.core.http.errors import errors
from reelhouse.vault import links
from reelhouse.vault.audit import record
from reelhouse.vault.errors import VaultError, invalid_token, not_found
from reelhouse.vault.http.common import LinkToken, Services, media_response
from reelhouse.vault.models import MSG_RELEASED, grants, messages, recipients, views
from reelhouse.vault.outbox import queue_mail
from reelhouse.vault.store import get_row

router = APIRouter(prefix="/api/view", tags=["vault: recipients"])
COOKIE = "rh_vault_view"


class ViewMessage(BaseModel):
    id: int
    title: str
    description: str | None
    kind: str
    content_type: str | None
    duration_seconds: float | None
    media_url: str


class Session(BaseModel):
    recipient_name: str | None
    expires_at: datetime
    messages: list[ViewMessage]


class Renewal(BaseModel):
    status: str = "if this link was yours, a fresh one is on its way to your mailbox"


async def _released_for(conn: Any, recipient_id: int) -> list[Any]:
    query = (
        select(messages, grants.c.id.label("access_id"))
        .join(grants, grants.c.message_id == messages.c.id)
        .where(grants.c.recipient_id == recipient_id, grants.c.revoked_at.is_(None), messages.c.status == MSG_RELEASED)
        .order_by(messages.c.id)
    )
    return list((await conn.execute(query)).all())


def _listing(rows: list[Any]) -> list[ViewMessage]:
    return [
        ViewMessage(
            id=r.id,
            title=r.title,
            description=r.description,
            kind=r.kind,
            content_type=r.content_type,
            duration_seconds=r.duration_seconds,
            media_url=f"/api/view/messages/{r.id}/media",
        )
        for r in rows
    ]


@router.post("/open", summary="Exchange the link from the mail for a playback session", responses=errors(401, 410))
async def open_session(token: LinkToken, request: Request, services: Services) -> JSONResponse:
    now = utcnow()
    async with services.store.tx() as conn:
        link = await links.find(conn, token, ("view",))
        if link is None or link.revoked_at is not None or link.recipient_id is None:
            raise invalid_token()
        if link.expires_at <= now:
            raise VaultError(410, "LINK_EXPIRED", "this link expired; ask for a fresh one (POST /api/view/renew)")
        rows = await _released_for(conn, link.recipient_id)
        if not rows:
            raise VaultError(410, "NOTHING_RELEASED", "no messages are available to you any more")
        for row in rows:
            await conn.execute(views.insert().values(access_id=row.access_id, viewed_at=now))
            await conn.execute(
                update(grants)
                .where(grants.c.id == row.access_id)
                .values(
                    view_count=grants.c.view_count + 1, first_viewed_at=func.coalesce(grants.c.first_viewed_at, now)
                )
            )
        expires = now + services.settings.view_session_ttl
        session = await links.issue(conn, "session", link.plan_id, expires, recipient_id=link.recipient_id)
        recipient = await get_row(conn, recipients, link.recipient_id)
        await record(
            conn, f"recipient:{link.recipient_id}", "message.viewed", f"plan:{link.plan_id}", messages=len(rows)
        )
    body = Session(recipient_name=recipient.name, expires_at=expires, messages=_listing(rows))
    response = JSONResponse(body.model_dump(mode="json"))
    response.set_cookie(
        COOKIE,
        session,
        max_age=int(services.settings.view_session_ttl.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/api/view",
    )
    return response


@router.post("/renew", status_code=202, summary="Mail a fresh link to the recipient an expired link was for")
async def renew(token: LinkToken, services: Services) -> Renewal:
    async with services.store.tx() as conn:
        link = await links.find(conn, token, ("view",))
        if link is not None and link.revoked_at is None and link.recipient_id is not None:
            recipient = await get_row(conn, recipients, link.recipient_id)
            if await _released_for(conn, recipient.id):
                # One fresh link per recipient per hour, however often this is called.
                bucket = utcnow().strftime("%Y%m%d%H")
                await queue_mail(
                    conn,
                    plan_id=link.plan_id,
                    template="view_link",
                    to=recipient.email,
                    dedupe_key=f"view_link:{recipient.id}:{bucket}",
                    max_attempts=services.settings.mail_max_attempts,
                    recipient_id=recipient.id,
                )
    return Renewal()


async def _session(services: Any, cookie: str | None) -> links.Link:
    if not cookie:
        raise VaultError(401, "SESSION_REQUIRED", "open your link first")
    async with services.store.read() as conn:
        link = await links.find(conn, cookie, ("session",))
    if link is None or not link.usable(utcnow()) or link.recipient_id is None:
        raise invalid_token()
    return link


SessionCookie = Annotated[str | None, Cookie(alias=COOKIE, max_length=200)]


@router.get("/messages", summary="The recipient's released messages", responses=errors(401))
async def my_messages(services: Services, rh_vault_view: SessionCookie = None) -> list[ViewMessage]:
    link = await _session(services, rh_vault_view)
    async with services.store.read() as conn:
        return _listing(await _released_for(conn, link.recipient_id or 0))


@router.get(
    "/messages/{message_id}/media",
    summary="Stream a released message, decrypted, with Range (seeking)",
    response_class=Response,
    responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "one byte range"}, **errors(401, 404, 416)},
)
async def play(message_id: DbId, request: Request, services: Services, rh_vault_view: SessionCookie = None) -> Response:
    link = await _session(services, rh_vault_view)
    async with services.store.read() as conn:
        rows = [r for r in await _released_for(conn, link.recipient_id or 0) if r.id == message_id]
    if not rows:
        raise not_found(f"message {message_id}")
    return media_response(services, rows[0], request)
