"""The outbox's recovery rules, each from the state a crash leaves behind: a row caught in
`sending` is never re-sent over SMTP (it becomes `unconfirmed`), is re-sent over Resend with the
same Idempotency-Key (Resend delivers once), and a refused address ends `failed` with the
server's reason, visible to the owner and admins; an operator's re-send is deliberate."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, update

from reelhouse.core.db.models import tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.notify.email import EmailSettings
from reelhouse.vault.models import outbox, recipients
from reelhouse.vault.outbox import queue_mail, resend
from tests.fakes.mailbox import FakeResend, Mailbox
from tests.fakes.server import serve

from .conftest import make_user, wait_until


async def queued_release_mail(client, runtime, services, to: str) -> int:
    owner = await make_user(runtime, f"o-{to.split('@')[0]}")
    body = {"title": "Box", "approvalThreshold": 1, "totalVerifiers": 1, "ownerEmail": "o@example.org"}
    plan = (await client.post("/api/plans", json=body, headers=owner.headers)).json()
    async with services.store.tx() as conn:
        recipient_id = (
            await conn.execute(
                recipients.insert().values(plan_id=plan["id"], email=to, created_at=utcnow()).returning(recipients.c.id)
            )
        ).scalar_one()
        outbox_id = await queue_mail(
            conn,
            plan_id=plan["id"],
            template="view_link",
            to=to,
            dedupe_key=f"test:{to}",
            max_attempts=3,
            recipient_id=recipient_id,
        )
    assert outbox_id is not None
    return outbox_id


async def state_of(services: Any, outbox_id: int) -> Any:
    async with services.store.read() as conn:
        return (await conn.execute(select(outbox).where(outbox.c.id == outbox_id))).first()


async def final_state(services: Any, outbox_id: int) -> str:
    async def final():
        row = await state_of(services, outbox_id)
        return row.state if row.state in ("sent", "failed", "unconfirmed") else None

    return await wait_until(final, 30, f"mail {outbox_id} to settle")


async def test_smtp_row_caught_sending_becomes_unconfirmed_and_is_not_resent(
    client, runtime, domain, mailbox: Mailbox
) -> None:
    services = domain.services
    outbox_id = await queued_release_mail(client, runtime, services, "crash@example.org")
    async with services.store.tx() as conn:  # what a worker killed after the point of no return leaves
        await conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(state="sending"))
    from reelhouse.core.jobs.worker import Worker, WorkerOptions

    worker = Worker(
        runtime.engine, runtime.registry, WorkerOptions(worker_id="ob", poll_interval=0.05, kinds=["vault.mail"])
    )
    running = asyncio.create_task(worker.run())
    try:
        assert await final_state(services, outbox_id) == "unconfirmed"
        assert mailbox.to("crash@example.org") == []
        async with services.store.tx() as conn:
            assert await resend(conn, outbox_id, 3)  # the operator decides to send it again
        assert await final_state(services, outbox_id) == "sent"
        assert len(await mailbox.wait_for("crash@example.org")) == 1
    finally:
        worker.request_stop()
        await asyncio.wait_for(running, 30)


async def test_refused_address_fails_visibly(client, runtime, domain, worker, mailbox: Mailbox, env) -> None:
    services = domain.services
    mailbox.faults.refuse.add("gone@example.org")
    outbox_id = await queued_release_mail(client, runtime, services, "gone@example.org")
    assert await final_state(services, outbox_id) == "failed"
    row = await state_of(services, outbox_id)
    assert "550" in row.last_error
    admin = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    listed = (await client.get("/api/admin/mails?state=failed", headers=admin)).json()
    assert [m["id"] for m in listed] == [outbox_id] and "@" not in str(listed)

    async def mail_task_settled() -> Any:
        # The row is marked failed inside the handler; the task settles when the worker
        # records the run, a moment later.
        async with runtime.engine.connect() as conn:
            task = (await conn.execute(select(tasks).where(tasks.c.kind == "vault.mail"))).first()
        return task if task is not None and task.status != states.RUNNING else None

    task = await wait_until(mail_task_settled, 30, "the mail task to settle")
    assert task.status == states.FAILED and "rejected" in task.last_error


@pytest.mark.parametrize("crashed_while_sending", [False, True])
async def test_resend_row_caught_sending_is_sent_again_and_delivered_once(
    client, runtime, domain, monkeypatch, crashed_while_sending: bool
) -> None:
    services = domain.services
    fake = FakeResend()
    with serve(fake.app) as served:
        services.email = EmailSettings(
            from_email="v@example.org", resend_api_key=fake.api_key, resend_api_url=served.base_url
        )
        services._transports.clear()
        outbox_id = await queued_release_mail(client, runtime, services, "heir@example.org")
        queue = TaskQueue(runtime.engine)
        from reelhouse.core.jobs.worker import Worker, WorkerOptions

        worker = Worker(
            runtime.engine, runtime.registry, WorkerOptions(worker_id="rs", poll_interval=0.05, kinds=["vault.mail"])
        )
        running = asyncio.create_task(worker.run())
        try:
            assert await final_state(services, outbox_id) == "sent"
            assert len(fake.sent) == 1
            if crashed_while_sending:  # the provider got it, the worker died before recording it
                async with services.store.tx() as conn:
                    await conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(state="sending"))
                await queue.enqueue("vault.mail", {"outbox_id": outbox_id}, idempotency_key="again", max_attempts=3)
                await wait_until(lambda: _sent_again(services, outbox_id), 30, "the retry")
                assert fake.requests == 2 and len(fake.sent) == 1  # same Idempotency-Key: one mail
        finally:
            worker.request_stop()
            await asyncio.wait_for(running, 30)
            await services.aclose()


async def _sent_again(services: Any, outbox_id: int) -> bool:
    row = await state_of(services, outbox_id)
    return row.state == "sent" and row.attempts == 2
