"""Webhooks: signed, retried deliveries of encode's job and worker events.

Each recorded event (events.py) becomes one delivery task per matching active webhook
(`encode.webhook.deliver`, idempotency key `webhook:<id>:<event key>`, so an event is queued
once per webhook), retried by the job engine with its backoff (`WEBHOOK_MAX_ATTEMPTS`,
`WEBHOOK_BACKOFF_BASE`/`_CAP`). Every attempt is logged in `webhook_deliveries`. A webhook is
disabled, with the reason, after `WEBHOOK_DISABLE_AFTER` consecutive failed attempts.

Signature (replay-safe): `X-Webhook-Timestamp: <unix seconds>` and
`X-Webhook-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; the body carries a
unique `event_id` (also `X-Webhook-Event-Id`), which stays the same across retries. A receiver
checks the HMAC, refuses timestamps older than a few minutes and drops event ids it has seen
(`verify_signature`). WebEncode's `X-WebEncode-Signature: sha256=<HMAC(body)>` is sent too, for
its existing receivers (it is not replay-safe; see docs/OPERATIONS.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.net.outbound import BlockedDestination, OutboundPolicy
from reelhouse.core.security.audit import master_keys_of
from reelhouse.core.security.crypto import Keyring
from reelhouse.core.security.keys import MasterKeys
from reelhouse.encode.assets import _writing as writing
from reelhouse.encode.metrics import ERRORS
from reelhouse.encode.models import encode_events, webhook_deliveries, webhooks
from reelhouse.encode.settings import EncodeSettings

KIND_DELIVER = "encode.webhook.deliver"
USER_AGENT = "reelhouse-webhooks/1"
MAX_WEBHOOKS = 100
MAX_URL = 2048
MAX_SECRET = 512
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept (verify_signature's default)


class WebhookError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None, tolerance: int = 300
) -> bool:
    """What a receiver checks: a well-formed recent timestamp and the HMAC over it and the body."""
    if not timestamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def view(row: Any) -> dict[str, Any]:
    """The API form: never the secret."""
    return {
        "id": str(row["id"]),
        "user_id": row["created_by"],
        "url": row["url"],
        "events": list(row["events"]),
        "is_active": bool(row["is_active"]),
        "failure_count": int(row["failure_count"]),
        "disabled_reason": row["disabled_reason"],
        "has_secret": row["secret_enc"] is not None,
        "last_triggered_at": _ts(row["last_triggered_at"]),
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
    }


def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class Delivery:
    succeeded: bool
    status_code: int | None
    error: str | None
    duration_ms: int


class Webhooks:
    def __init__(self, engine: AsyncEngine, settings: EncodeSettings, app_settings: Any) -> None:
        self.engine = engine
        self.settings = settings
        self.app_settings = app_settings
        self.outbound = OutboundPolicy.from_settings(app_settings)

    def _keyring(self) -> Keyring:
        keys = master_keys_of(self.engine) or MasterKeys.from_settings(self.app_settings)
        return keys.keyring()

    @staticmethod
    def _context(webhook_id: int) -> str:
        return f"encode/webhook-secret/{webhook_id}"

    # ---- store -----------------------------------------------------------------------------

    async def create(self, url: str, events: list[str], secret: str | None, actor: str | None) -> dict[str, Any]:
        await self._check_url(url)
        now = utcnow()
        async with writing(self.engine) as conn:
            count = len((await conn.execute(select(webhooks.c.id))).all())
            if count >= MAX_WEBHOOKS:
                raise WebhookError(409, f"at most {MAX_WEBHOOKS} webhooks")
            webhook_id = (
                await conn.execute(
                    insert(webhooks)
                    .values(
                        url=url,
                        events=events,
                        is_active=True,
                        failure_count=0,
                        created_by=actor,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(webhooks.c.id)
                )
            ).scalar_one()
            if secret:
                sealed = self._keyring().encrypt(secret, self._context(webhook_id))
                await conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(secret_enc=sealed))
        return await self.require(webhook_id)

    async def _check_url(self, url: str) -> None:
        if not url.startswith(("http://", "https://")) or len(url) > MAX_URL:
            raise WebhookError(400, f"url must be an http(s) URL of at most {MAX_URL} characters")
        try:
            await self.outbound.check_url(url)
        except BlockedDestination as exc:
            raise WebhookError(400, str(exc)) from None

    async def row(self, webhook_id: int) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(webhooks).where(webhooks.c.id == webhook_id))).mappings().first()

    async def require(self, webhook_id: int) -> dict[str, Any]:
        row = await self.row(webhook_id)
        if row is None:
            raise WebhookError(404, f"webhook {webhook_id} not found")
        return view(row)

    async def all(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(webhooks).order_by(webhooks.c.id))).mappings().all()
        return [view(r) for r in rows]

    async def delete(self, webhook_id: int) -> None:
        async with writing(self.engine) as conn:
            gone = await conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
        if not gone.rowcount:
            raise WebhookError(404, f"webhook {webhook_id} not found")

    async def set_active(self, webhook_id: int, active: bool) -> dict[str, Any]:
        async with writing(self.engine) as conn:
            values: dict[str, Any] = {"is_active": active, "updated_at": utcnow()}
            if active:
                values.update(failure_count=0, disabled_reason=None)
            else:
                values["disabled_reason"] = "disabled by an operator"
            await conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(**values))
        return await self.require(webhook_id)

    async def deliveries(self, webhook_id: int, limit: int = 50) -> list[dict[str, Any]]:
        await self.require(webhook_id)
        async with self.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(webhook_deliveries)
                        .where(webhook_deliveries.c.webhook_id == webhook_id)
                        .order_by(webhook_deliveries.c.id.desc())
                        .limit(limit)
                    )
                )
                .mappings()
                .all()
            )
        return [
            {**dict(r), "id": str(r["id"]), "webhook_id": str(r["webhook_id"]), "created_at": _ts(r["created_at"])}
            for r in rows
        ]

    # ---- fan-out ---------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        """An event this node recorded: queue one delivery per matching active webhook."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(webhooks.c.id, webhooks.c.events).where(webhooks.c.is_active))).all()
        queue = TaskQueue(self.engine)
        for webhook_id, events in rows:
            if "*" not in events and event["event_type"] not in events:
                continue
            await queue.enqueue(
                KIND_DELIVER,
                {"webhook_id": webhook_id, "event_row": event["id"]},
                job_kind="encode.webhook",
                system=True,
                max_attempts=self.settings.webhook_max_attempts,
                idempotency_key=f"webhook:{webhook_id}:{event['event_key']}"[:255],
            )

    # ---- delivery --------------------------------------------------------------------------

    def body_of(self, event: dict[str, Any]) -> bytes:
        payload = {
            "event_id": event["event_key"],
            "event": event["event_type"],
            "timestamp": _ts(event["created_at"]),
            "data": event["data"],
        }
        return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()

    async def send(self, row: Any, event: dict[str, Any]) -> Delivery:
        body = self.body_of(event)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Webhook-Event": event["event_type"],
            "X-Webhook-Event-Id": event["event_key"],
            "X-Webhook-Timestamp": str(timestamp),
            "X-WebEncode-Event": "true",
        }
        if row["secret_enc"]:
            secret = self._keyring().decrypt_text(row["secret_enc"], self._context(row["id"]))
            headers["X-Webhook-Signature"] = sign(secret, timestamp, body)
            headers["X-WebEncode-Signature"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        started = time.monotonic()
        try:
            await self.outbound.check_url(row["url"])
            async with httpx.AsyncClient(
                timeout=self.settings.webhook_timeout.total_seconds(), follow_redirects=False, trust_env=False
            ) as client:
                response = await client.post(row["url"], content=body, headers=headers)
        except BlockedDestination as exc:
            return Delivery(False, None, str(exc)[:500], _ms(started))
        except httpx.HTTPError as exc:
            return Delivery(False, None, f"{type(exc).__name__}: {str(exc)[:300]}", _ms(started))
        ok = 200 <= response.status_code < 300
        return Delivery(ok, response.status_code, None if ok else f"HTTP {response.status_code}", _ms(started))

    async def _log(self, row: Any, event: dict[str, Any], attempt: int, result: Delivery) -> dict[str, Any]:
        """Record the attempt and update the webhook's counters (disabling it at the bound)."""
        now = utcnow()
        async with writing(self.engine) as conn:
            await conn.execute(
                insert(webhook_deliveries).values(
                    webhook_id=row["id"],
                    event_id=event["event_key"],
                    event_type=event["event_type"],
                    attempt=attempt,
                    status_code=result.status_code,
                    succeeded=result.succeeded,
                    error=result.error,
                    duration_ms=result.duration_ms,
                    created_at=now,
                )
            )
            if result.succeeded:
                values: dict[str, Any] = {"failure_count": 0, "last_triggered_at": now, "updated_at": now}
            else:
                ERRORS.labels("webhook").inc()
                failures = (
                    await conn.execute(
                        update(webhooks)
                        .where(webhooks.c.id == row["id"])
                        .values(failure_count=webhooks.c.failure_count + 1, updated_at=now)
                        .returning(webhooks.c.failure_count)
                    )
                ).scalar_one()
                values = {}
                if failures >= self.settings.webhook_disable_after:
                    values = {
                        "is_active": False,
                        "disabled_reason": (
                            f"disabled after {failures} consecutive failed deliveries "
                            f"(WEBHOOK_DISABLE_AFTER={self.settings.webhook_disable_after}); last: {result.error}"
                        )[:1000],
                    }
            if values:
                await conn.execute(update(webhooks).where(webhooks.c.id == row["id"]).values(**values))
        return {"succeeded": result.succeeded, "status_code": result.status_code, "error": result.error}

    async def deliver(self, ctx: TaskContext) -> dict[str, Any]:
        """The task handler: one attempt; a failure is transient (retried with backoff) until
        the attempts run out or the webhook is disabled."""
        row = await self.row(int(ctx.payload["webhook_id"]))
        if row is None:
            return {"skipped": "webhook deleted"}
        if not row["is_active"]:
            raise PermanentError(f"webhook {row['id']} is disabled: {row['disabled_reason'] or 'inactive'}")
        async with self.engine.connect() as conn:
            found = (
                (await conn.execute(select(encode_events).where(encode_events.c.id == int(ctx.payload["event_row"]))))
                .mappings()
                .first()
            )
        if found is None:
            return {"skipped": "event pruned"}
        event = dict(found)
        result = await self.send(row, event)
        await ctx.check_lease("record the delivery")
        logged = await self._log(row, event, ctx.attempt, result)
        if not result.succeeded:
            raise TransientError(f"webhook {row['id']} delivery of {event['event_key']} failed: {result.error}")
        return logged

    async def test_send(self, webhook_id: int) -> dict[str, Any]:
        """Send a `webhook.test` event now (one attempt, logged) and say how it went."""
        row = await self.row(webhook_id)
        if row is None:
            raise WebhookError(404, f"webhook {webhook_id} not found")
        event = {
            "id": 0,
            "event_key": f"test:{webhook_id}:{time.time_ns()}",
            "event_type": "webhook.test",
            "data": {"webhook_id": str(webhook_id)},
            "created_at": utcnow(),
        }
        result = await self.send(row, event)
        return await self._log(row, event, 1, result)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
