"""The per-mail outbox: one row per mail that must go out, written in the same transaction as
the change that calls for it, each sent by its own `vault.mail` task.

Exactly once, under crashes and retries:
- A row's `dedupe_key` is unique (`release:<request>:<recipient>`), so replaying the change
  that queues a mail (a retried release job) cannot queue it twice; its task has the idempotency
  key `vault.mail:<row id>`.
- The row moves `pending -> sending` by compare-and-set at the transport's point of no return
  (core.notify.email): only one sender ever passes it, and a crash before it sent nothing.
- A row found in `sending` after a crash was on the wire when the sender died. With Resend the
  same Idempotency-Key is sent again (Resend delivers it at most once); with SMTP it is marked
  `unconfirmed` (almost surely delivered, never sent twice) and shown to the owner and admins,
  who can re-send it deliberately (`reelhouse vault outbox resend`).
- Tokens are issued at send time and only their hashes stored; an attempt that never reached
  the point of no return has its unsent links revoked by the next attempt.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import PermanentError, RateLimitedError, TransientError
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.notify.email import (
    MailAborted,
    MailDeferred,
    MailOutcomeUnknown,
    MailRejected,
    OutgoingMail,
)
from reelhouse.vault import links
from reelhouse.vault.audit import record
from reelhouse.vault.mails import build_content
from reelhouse.vault.models import (
    MAIL_FAILED,
    MAIL_PENDING,
    MAIL_SENDING,
    MAIL_SENT,
    MAIL_UNCONFIRMED,
    outbox,
)

if TYPE_CHECKING:
    from reelhouse.core.jobs.context import TaskContext
    from reelhouse.vault.services import VaultServices

log = logging.getLogger("reelhouse.vault.mail")
MAIL_KIND = "vault.mail"
# Workers that may die under one mail before its task is dead. The engine's default (5) guards
# against a poison task; a mail is cheap to retry and safe to (`sending` -> `unconfirmed`), and a
# dead mail task would leave its row `pending` with nobody to send it: workers killed while a
# release mails its recipients (deploys, OOM kills; the SIGKILL test kills ten) all hold the same
# first mails.
LOST_SENDERS_BOUND = 50


def _counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
    existing = REGISTRY._names_to_collectors.get(name)
    return existing or Counter(name.removesuffix("_total"), doc, labels)  # type: ignore[return-value]


EMAILS_SENT = _counter("vault_emails_sent_total", "Vault mails delivered to the transport", ("template",))
EMAILS_FAILED = _counter("vault_emails_failed_total", "Vault mails that failed for good", ("template", "reason"))


async def queue_mail(
    conn: AsyncConnection,
    *,
    plan_id: int,
    template: str,
    to: str,
    dedupe_key: str,
    max_attempts: int,
    recipient_id: int | None = None,
    verifier_id: int | None = None,
    request_id: int | None = None,
    context: dict[str, Any] | None = None,
) -> int | None:
    """Queue one mail in the caller's transaction; None when `dedupe_key` was queued before."""
    now = utcnow()
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    row = (
        await conn.execute(
            insert(outbox)
            .values(
                plan_id=plan_id,
                template=template,
                to_email=to,
                recipient_id=recipient_id,
                verifier_id=verifier_id,
                request_id=request_id,
                context=context or {},
                dedupe_key=dedupe_key,
                state=MAIL_PENDING,
                message_id=f"<vault-{dedupe_key.replace(':', '-')}@reelhouse.invalid>",
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(outbox.c.id)
        )
    ).first()
    if row is None:
        return None
    await TaskQueue(conn.engine).enqueue(
        MAIL_KIND,
        {"outbox_id": row.id},
        job_kind="vault.mail",
        idempotency_key=f"vault.mail:{row.id}",
        max_attempts=max_attempts,
        max_lost_attempts=LOST_SENDERS_BOUND,
        conn=conn,
    )
    return int(row.id)


class SendingMark:
    """The `pending -> sending` compare-and-set at the transport's point of no return.

    The row is updated (and locked) first; the COMMIT is then put on the wire without waiting
    for the database's answer, so the mail's last bytes follow it within microseconds. Waiting
    for the answer first would leave a round trip (milliseconds on a busy PostgreSQL) during
    which a killed worker has committed `sending` but never finished the mail: measured, that
    lost about one mail in ten kills in the SIGKILL test. The answer is awaited in `settle()`.
    """

    def __init__(self, services: VaultServices, outbox_id: int, claimable: list[str]) -> None:
        self.services, self.outbox_id, self.claimable = services, outbox_id, claimable
        self._conn: Any = None
        self._commit: asyncio.Future[Any] | None = None

    async def claim(self) -> bool:
        self._conn = conn = await write_connection(self.services.store.engine)
        transaction = await conn.begin()
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.id == self.outbox_id, outbox.c.state.in_(self.claimable))
            .values(state=MAIL_SENDING, attempts=outbox.c.attempts + 1, updated_at=utcnow())
        )
        if result.rowcount != 1:
            await transaction.rollback()
            return False
        self._commit = asyncio.ensure_future(transaction.commit())
        for _ in range(3):  # let the commit task write COMMIT to the database socket
            await asyncio.sleep(0)
        return True

    async def settle(self) -> None:
        try:
            if self._commit is not None:
                await self._commit
        finally:
            if self._conn is not None:
                await self._conn.close()


async def _set_state(services: VaultServices, outbox_id: int, state: str, **values: Any) -> None:
    async with services.store.tx() as conn:
        await conn.execute(
            update(outbox).where(outbox.c.id == outbox_id).values(state=state, updated_at=utcnow(), **values)
        )
        if state in (MAIL_FAILED, MAIL_UNCONFIRMED):
            await record(conn, "system", f"mail.{state}", f"outbox:{outbox_id}", reason=values.get("last_error"))


async def send_outbox_mail(services: VaultServices, ctx: TaskContext) -> dict[str, Any]:
    outbox_id = int(ctx.payload["outbox_id"])
    async with services.store.engine.connect() as conn:
        row = (await conn.execute(select(outbox).where(outbox.c.id == outbox_id))).first()
    if row is None or row.state in (MAIL_SENT, MAIL_FAILED, MAIL_UNCONFIRMED):
        return {"state": row.state if row else "gone"}
    transport = services.mail_transport()
    if row.state == MAIL_SENDING and not transport.idempotent:
        await _set_state(services, outbox_id, MAIL_UNCONFIRMED, last_error="sender died after the point of no return")
        return {"state": MAIL_UNCONFIRMED}
    async with services.store.tx() as conn:
        if row.state == MAIL_PENDING:
            await links.revoke(conn, outbox_id=outbox_id)
        content = await build_content(services, conn, row)
    mail = OutgoingMail(
        to=row.to_email, subject=content.subject, text=content.text, html=content.html, message_id=row.message_id
    )
    passed = False

    claimable = [MAIL_PENDING, MAIL_SENDING] if row.state == MAIL_SENDING else [MAIL_PENDING]

    marking = SendingMark(services, outbox_id, claimable)

    async def commit_point() -> bool:
        nonlocal passed
        passed = await marking.claim()
        return passed

    try:
        try:
            sent = await transport.send(
                mail, idempotency_key=f"reelhouse-vault-{row.dedupe_key}", commit_point=commit_point
            )
        finally:
            await marking.settle()
    except MailAborted:
        return {"state": "aborted"}
    except MailRejected as exc:
        await _set_state(services, outbox_id, MAIL_FAILED, last_error=str(exc))
        EMAILS_FAILED.labels(row.template, "rejected").inc()
        raise PermanentError(f"mail {outbox_id} rejected: {exc}") from None
    except MailOutcomeUnknown as exc:
        if transport.idempotent:
            raise TransientError(str(exc)) from None
        await _set_state(services, outbox_id, MAIL_UNCONFIRMED, last_error=str(exc))
        return {"state": MAIL_UNCONFIRMED}
    except MailDeferred as exc:
        if passed:  # refused after the body (4xx): nothing was delivered, try again later
            await _set_state(services, outbox_id, MAIL_PENDING, last_error=str(exc))
        if ctx.attempt >= ctx.task.max_attempts:
            await _set_state(services, outbox_id, MAIL_FAILED, last_error=f"gave up after {ctx.attempt} tries: {exc}")
            EMAILS_FAILED.labels(row.template, "deferred").inc()
            raise PermanentError(str(exc)) from None
        if exc.retry_after:
            raise RateLimitedError(str(exc), utcnow() + timedelta(seconds=exc.retry_after)) from None
        raise TransientError(str(exc)) from None
    await _set_state(services, outbox_id, MAIL_SENT, sent_at=utcnow(), provider_id=sent.provider_id, last_error=None)
    EMAILS_SENT.labels(row.template).inc()
    log.info("vault mail sent", extra={"component": "vault", "outbox_id": outbox_id, "template": row.template})
    return {"state": MAIL_SENT}


async def resend(conn: AsyncConnection, outbox_id: int, max_attempts: int) -> bool:
    """Queue a failed or unconfirmed mail again (a deliberate operator or owner decision)."""
    row = (await conn.execute(select(outbox).where(outbox.c.id == outbox_id))).first()
    if row is None or row.state not in (MAIL_FAILED, MAIL_UNCONFIRMED):
        return False
    await conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(state=MAIL_PENDING, updated_at=utcnow()))
    attempt = int(row.attempts) + 1
    await TaskQueue(conn.engine).enqueue(
        MAIL_KIND,
        {"outbox_id": outbox_id},
        job_kind="vault.mail",
        idempotency_key=f"vault.mail:{outbox_id}:resend:{attempt}",
        max_attempts=max_attempts,
        max_lost_attempts=LOST_SENDERS_BOUND,
        conn=conn,
    )
    return True


async def counts_by_state(conn: AsyncConnection, plan_id: int | None = None) -> dict[str, int]:
    query = select(outbox.c.state, func.count()).group_by(outbox.c.state)
    if plan_id is not None:
        query = query.where(outbox.c.plan_id == plan_id)
    return {state: int(n) for state, n in (await conn.execute(query)).all()}


async def mail_rows(conn: AsyncConnection, plan_id: int | None, state: str | None = None) -> list[dict[str, Any]]:
    """Mails (of one plan, or all) for owners and admins: who (by row id), state and error; no
    addresses."""
    query = (
        select(
            outbox.c.id,
            outbox.c.plan_id,
            outbox.c.template,
            outbox.c.state,
            outbox.c.attempts,
            outbox.c.last_error,
            outbox.c.recipient_id,
            outbox.c.verifier_id,
            outbox.c.request_id,
            outbox.c.created_at,
            outbox.c.sent_at,
        )
        .order_by(outbox.c.id)
        .limit(1000)
    )
    if plan_id is not None:
        query = query.where(outbox.c.plan_id == plan_id)
    if state is not None:
        query = query.where(outbox.c.state == state)
    return [dict(r._mapping) for r in (await conn.execute(query)).all()]
