"""The release job under SIGKILL: a worker delivering a release to 20 recipients is killed 10
times at random moments; after a last worker finishes, every recipient has exactly one mail.

The SMTP server is slowed down at RCPT (before the point of no return), so each mail takes
long enough for kills to land mid-transaction, mid-batch and between mails."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from reelhouse.core.db.types import utcnow
from reelhouse.vault.models import MAIL_SENT, MAIL_UNCONFIRMED, messages, outbox
from reelhouse.vault.watch import tick
from tests.fakes.mailbox import Mailbox

from .conftest import link_token, make_user, token_header, wait_until

WORKER = Path(__file__).with_name("vault_worker.py")
LEASE = 2.0
RECIPIENTS = [f"heir{i}@example.org" for i in range(20)]
KILLS = 10


def start_worker(name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(WORKER), name, str(LEASE)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
async def test_ten_random_sigkills_during_release_leave_exactly_one_mail_each(
    client, runtime, domain, mailbox: Mailbox, monkeypatch
):
    services = domain.services
    owner, verifier = await make_user(runtime, "owner"), await make_user(runtime, "verifier")
    plan = (
        await client.post(
            "/api/plans",
            json={"title": "Kill me", "approvalThreshold": 1, "totalVerifiers": 1, "ownerEmail": "o@example.org",
                  "waitingPeriodSeconds": 1},
            headers=owner.headers,
        )
    ).json()  # fmt: skip
    message = await client.post(
        "/api/messages",
        json={"planId": plan["id"], "title": "To all", "recipients": [{"email": e} for e in RECIPIENTS]},
        headers=owner.headers,
    )
    async with services.store.tx() as conn:  # media is beside the point here: mark it ready
        ready = update(messages).where(messages.c.id == message.json()["id"]).values(status="ready", ready_at=utcnow())
        await conn.execute(ready)
    await client.post("/api/verifiers", json={"planId": plan["id"], "email": "v@example.org"}, headers=owner.headers)

    workers: list[subprocess.Popen] = []
    try:
        workers.append(start_worker("setup"))
        (invite,) = await mailbox.wait_for("v@example.org", subject="trusted verifier")
        headers = {**token_header(link_token(invite)), **verifier.headers}
        accepted = await client.post("/api/verifiers/accept", headers=headers)
        assert accepted.status_code == 200
        asked = await client.post("/api/releases", json={"planId": plan["id"]}, headers=verifier.headers)
        assert asked.json()["status"] == "waiting", asked.text
        await mailbox.wait_for("o@example.org", subject="will be released")
        workers[-1].send_signal(signal.SIGTERM)
        workers[-1].wait(timeout=20)

        mailbox.faults.rcpt_delay = 0.5

        async def released():
            return (await tick(services))["released"]

        await wait_until(released, 10, "the waiting period")
        rng = random.Random()
        mid_job = 0
        for i in range(KILLS):
            proc = start_worker(f"kill-{i}")
            workers.append(proc)
            await asyncio.sleep(rng.uniform(0.05, 1.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            mid_job += sum(1 for r in RECIPIENTS if mailbox.to(r)) < len(RECIPIENTS)
            await asyncio.sleep(LEASE + 0.2)  # its leases expire, so the next worker reclaims them
        assert mid_job >= KILLS // 2, f"only {mid_job} kills landed before the release was done"
        workers.append(start_worker("finisher"))

        async def all_final():
            async with services.store.read() as conn:
                states = (
                    (await conn.execute(select(outbox.c.state).where(outbox.c.template == "release"))).scalars().all()
                )
            return len(states) == len(RECIPIENTS) and set(states) <= {MAIL_SENT, MAIL_UNCONFIRMED}

        try:
            await wait_until(all_final, 120, "every release mail to be final")
        except AssertionError:
            async with services.store.read() as conn:
                mails = (await conn.execute(select(outbox.c.state).where(outbox.c.template == "release"))).all()
                queue = (await conn.execute(text("SELECT kind, status, attempts, error FROM tasks"))).all()
            raise AssertionError(f"mails {sorted(m[0] for m in mails)}; tasks {queue}") from None
        await asyncio.sleep(1.0)  # a duplicate would arrive now
        counts = {r: len(mailbox.to(r)) for r in RECIPIENTS}
        assert counts == dict.fromkeys(RECIPIENTS, 1), counts
        message_ids = {mailbox.to(r)[0].message_id for r in RECIPIENTS}
        assert len(message_ids) == len(RECIPIENTS)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
