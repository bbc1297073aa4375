"""What the vault's routers share: the services dependency, callers (owner account, verifier by
account or link, link tokens), rate limits, response models and the decrypting media response."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from reelhouse.core.db.types import utcnow
from reelhouse.core.http.deps import component
from reelhouse.core.security.crypto import CryptoError
from reelhouse.core.security.http_auth import client_ip, require_viewer, resolve_principal
from reelhouse.core.security.ratelimit import SlidingWindowLimiter
from reelhouse.core.security.streaming import StreamingAead
from reelhouse.core.security.users import Principal
from reelhouse.core.storage import InvalidRange
from reelhouse.core.storage.signed_routes import parse_range_header
from reelhouse.vault import links
from reelhouse.vault.errors import VaultError, invalid_token
from reelhouse.vault.media import decrypted_reader, media_aad
from reelhouse.vault.models import requests
from reelhouse.vault.services import VaultServices
from reelhouse.vault.store import get_row, verifier_of_user
from reelhouse.vault.watch import owner_activity, plans_due_activity

Services = Annotated[VaultServices, component(VaultServices)]
TOKEN_HEADER = "X-Vault-Token"


def limit(services: VaultServices, limiter: SlidingWindowLimiter, key: str, what: str) -> None:
    if not services.limits.enabled:
        return
    allowed, wait = limiter.hit(key)
    if not allowed:
        seconds = int(wait) + 1
        raise VaultError(
            429, "RATE_LIMIT_EXCEEDED", f"too many {what}; retry in {seconds}s", {"Retry-After": str(seconds)}
        )


async def vault_token(
    request: Request, services: Services, x_vault_token: Annotated[str | None, Header(max_length=200)] = None
) -> str:
    """The link token of a link-authenticated call (401 without one), rate-limited per IP."""
    if not x_vault_token:
        raise VaultError(401, "TOKEN_REQUIRED", f"this action needs the {TOKEN_HEADER} header from your link")
    limit(services, services.limits.auth, f"ip:{client_ip(request)}", "link attempts")
    return x_vault_token


LinkToken = Annotated[str, Depends(vault_token)]


async def owner(principal: Annotated[Principal, Depends(require_viewer)], services: Services) -> Principal:
    """A signed-in user acting on their own vault; using it counts as a check-in."""
    if principal.user_id is None:
        raise VaultError(403, "USER_REQUIRED", "vault plans belong to users; the ADMIN_TOKEN identity has none")
    async with services.store.read() as conn:
        stale = await plans_due_activity(conn, principal.user_id)
    if stale:  # a writer transaction only when a check-in is actually recorded
        async with services.store.tx() as conn:
            await owner_activity(conn, principal.user_id)
    return principal


Owner = Annotated[Principal, Depends(owner)]
Caller = Annotated[Principal | None, Depends(resolve_principal)]


def actor_of(principal: Principal) -> str:
    return f"user:{principal.user_id}" if principal.user_id is not None else principal.name


async def verifier_identity(
    services: VaultServices, principal: Principal | None, token: str | None, plan_id: int | None, request_id: int | None
) -> tuple[int, str]:
    """(verifier id, audit actor) of the caller acting as a verifier of `plan_id` (or of the plan
    of `request_id`): by a `verifier`/`vote` link, or by the account bound to the verifier."""
    async with services.store.read() as conn:
        if plan_id is None and request_id is not None:
            row = await get_row(conn, requests, request_id)
            if row is None:
                raise VaultError(404, "NOT_FOUND", f"release request {request_id} not found")
            plan_id = row.plan_id
        if token:
            link = await links.find(conn, token, ("verifier", "vote"))
            if link is None or not link.usable(utcnow()) or link.verifier_id is None:
                raise invalid_token()
            # A vote link acts on its one request only (it cannot open a new one).
            if link.plan_id != plan_id or (link.purpose == "vote" and request_id != link.request_id):
                raise VaultError(403, "NOT_AUTHORIZED", "this link is for another plan or request")
            return link.verifier_id, f"verifier:{link.verifier_id}"
        if principal is None:
            raise VaultError(
                401, "TOKEN_REQUIRED", f"sign in, or use the {TOKEN_HEADER} header from your verifier link"
            )
        verifier = await verifier_of_user(conn, plan_id or 0, principal.user_id)
    if verifier is None:
        raise VaultError(404, "NOT_FOUND", f"no plan {plan_id} you verify")
    return int(verifier.id), f"verifier:{verifier.id}"


async def optional_token(x_vault_token: Annotated[str | None, Header(max_length=200)] = None) -> str | None:
    return x_vault_token


OptionalToken = Annotated[str | None, Depends(optional_token)]


# ---- response models -----------------------------------------------------------------------
class Done(BaseModel):
    ok: bool = True
    status: str | None = None


class PlanView(BaseModel):
    id: int
    title: str
    description: str | None
    status: str
    approval_threshold: int
    total_verifiers: int
    waiting_period_seconds: int
    checkin_interval_seconds: int | None
    last_checkin_at: datetime | None
    checkins_missed: int
    created_at: datetime
    released_at: datetime | None


class MessageView(BaseModel):
    id: int
    plan_id: int
    title: str
    description: str | None
    kind: str
    status: str
    key_id: str | None = Field(description="id of the master key that wraps this message's data key")
    content_type: str | None
    media_bytes: int | None
    duration_seconds: float | None
    error: str | None
    recipient_ids: list[int] = []
    created_at: datetime
    ready_at: datetime | None
    released_at: datetime | None


class VerifierView(BaseModel):
    id: int
    plan_id: int
    email: str
    name: str | None
    status: str
    has_account: bool
    invited_at: datetime
    invite_expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None


class VoteView(BaseModel):
    verifier_id: int
    approved: bool
    created_at: datetime


class RequestView(BaseModel):
    id: int
    plan_id: int
    origin: str
    status: str
    initiator_verifier_id: int | None
    note: str | None
    approvals: int
    threshold: int
    created_at: datetime
    expires_at: datetime
    approved_at: datetime | None
    release_at: datetime | None
    frozen: bool
    force_requested: bool
    closed_at: datetime | None
    votes: list[VoteView] = []


def plan_view(row: Any) -> PlanView:
    return PlanView.model_validate(row._mapping, from_attributes=False)


def message_view(row: Any, recipient_ids: list[int] | None = None) -> MessageView:
    return MessageView.model_validate({**row._mapping, "recipient_ids": recipient_ids or []})


def verifier_view(row: Any) -> VerifierView:
    return VerifierView.model_validate({**row._mapping, "has_account": row.user_id is not None})


# ---- decrypting media ------------------------------------------------------------------------
def media_response(services: VaultServices, message: Any, request: Request) -> Response:
    """The message's rendition, decrypted; one byte range (206) or the whole (200)."""
    if not message.media_key or message.cipher_bytes is None:
        raise VaultError(409, "NOT_READY", "this message has no playable media yet")
    size = int(message.media_bytes)
    try:
        span = parse_range_header(request.headers.get("range"), size)
    except InvalidRange:
        raise HTTPException(416, "range not satisfiable", headers={"Content-Range": f"bytes */{size}"}) from None
    try:
        data_key = services.unwrap_key(message)
    except CryptoError as exc:  # e.g. its master key version is not configured
        raise VaultError(503, "KEY_UNAVAILABLE", str(exc)) from None
    aead = StreamingAead(data_key, services.settings.segment_size)
    read = decrypted_reader(services, aead, message.media_key, int(message.cipher_bytes), media_aad(message.id))
    start, end = span or (0, size - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"

    async def body():
        async with contextlib.aclosing(read(start, end)) as chunks:
            async for chunk in chunks:
                yield chunk

    return StreamingResponse(
        body(), status_code=206 if span else 200, headers=headers, media_type=message.content_type or "video/mp4"
    )
