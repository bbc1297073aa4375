"""The release rules LegacyVideo got wrong, one by one: quorum at request time, revoked
verifiers' votes, racing approvals, suspended and frozen plans, two-admin force, stale
requests, the inactivity watchdog, the seed's rate limits, and audit rows without PII."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from reelhouse.config import ConfigError, Settings
from reelhouse.core.db.models import audit_log
from reelhouse.core.db.types import utcnow
from reelhouse.core.runtime import build_runtime
from reelhouse.core.security.audit import verify
from reelhouse.vault.models import outbox, plans, verifiers
from reelhouse.vault.plugin import setup
from reelhouse.vault.watch import tick

from .conftest import User, link_token, make_user, token_header


async def plan_with_verifiers(client: httpx.AsyncClient, runtime: Any, services: Any, k: int, n: int, **fields: Any):
    """A plan of k-of-n whose n verifiers accepted with accounts; returns (owner, plan, verifiers)."""
    owner = await make_user(runtime, f"owner-{uuid.uuid4().hex[:8]}")
    body = {"title": "Rules", "approvalThreshold": k, "totalVerifiers": n, "ownerEmail": "owner@example.org", **fields}
    plan = (await client.post("/api/plans", json=body, headers=owner.headers)).json()
    people: list[User] = [await make_user(runtime, f"verifier{plan['id']}x{i}") for i in range(n)]
    now = utcnow()
    async with services.store.tx() as conn:
        for i, person in enumerate(people):
            await conn.execute(
                verifiers.insert().values(
                    plan_id=plan["id"],
                    user_id=person.id,
                    email=f"v{i}@example.org",
                    status="accepted",
                    invited_at=now,
                    invite_expires_at=now,
                    accepted_at=now,
                    created_at=now,
                )
            )
    return owner, plan, people


async def ask(client: httpx.AsyncClient, plan: dict, who: User) -> httpx.Response:
    return await client.post("/api/releases", json={"planId": plan["id"]}, headers=who.headers)


async def approve(client: httpx.AsyncClient, request_id: int, who: User, yes: bool = True) -> httpx.Response:
    return await client.post(
        "/api/releases/approve", json={"requestId": request_id, "approved": yes}, headers=who.headers
    )


async def outbox_templates(services: Any, plan_id: int) -> list[str]:
    async with services.store.read() as conn:
        rows = await conn.execute(select(outbox.c.template).where(outbox.c.plan_id == plan_id).order_by(outbox.c.id))
        return list(rows.scalars())


async def test_one_of_n_needs_no_admin_and_an_unreachable_threshold_is_refused(client, runtime, domain) -> None:
    _, plan, (v0,) = await plan_with_verifiers(client, runtime, domain.services, 1, 1)
    asked = await ask(client, plan, v0)
    assert asked.status_code == 201 and asked.json()["status"] == "waiting"  # the request is the approval
    _, plan2, (w0, _w1) = await plan_with_verifiers(client, runtime, domain.services, 2, 2)
    async with domain.services.store.tx() as conn:
        await conn.execute(
            verifiers.update()
            .where(verifiers.c.plan_id == plan2["id"], verifiers.c.user_id != w0.id)
            .values(status="revoked")
        )
    refused = await ask(client, plan2, w0)
    assert refused.status_code == 409 and refused.json()["code"] == "THRESHOLD_UNREACHABLE"


async def test_revoked_verifiers_votes_stop_counting(client, runtime, domain) -> None:
    owner, plan, (v0, v1, _v2) = await plan_with_verifiers(client, runtime, domain.services, 2, 3)
    request = (await ask(client, plan, v0)).json()
    assert (await approve(client, request["id"], v1)).json()["status"] == "waiting"
    async with domain.services.store.read() as conn:
        v1_row = (await conn.execute(select(verifiers.c.id).where(verifiers.c.user_id == v1.id))).scalar_one()
    revoked = await client.post(f"/api/verifiers/{v1_row}/revoke", headers=owner.headers)
    assert revoked.status_code == 200
    state = (await client.get(f"/api/releases?planId={plan['id']}", headers=owner.headers)).json()[0]
    assert state["status"] == "pending" and state["approvals"] == 1 and state["release_at"] is None
    assert (await approve(client, request["id"], v1)).status_code in (403, 404)  # a revoked verifier cannot vote


async def test_racing_approvals_make_one_transition(client, runtime, domain) -> None:
    _, plan, people = await plan_with_verifiers(client, runtime, domain.services, 2, 4)
    request = (await ask(client, plan, people[0])).json()
    results = await asyncio.gather(*(approve(client, request["id"], v) for v in people[1:]))
    assert sorted(r.status_code for r in results) == [200, 409, 409]  # after the quorum, votes are closed
    assert (await outbox_templates(domain.services, plan["id"])).count("owner_waiting") == 1
    async with domain.services.store.read() as conn:
        actions = (
            (await conn.execute(select(audit_log.c.action).where(audit_log.c.target == f"request:{request['id']}")))
            .scalars()
            .all()
        )
    assert actions.count("vault.release.approved") == 1


async def test_denials_that_make_k_unreachable_deny(client, runtime, domain) -> None:
    _, plan, (v0, v1, v2) = await plan_with_verifiers(client, runtime, domain.services, 3, 3)
    request = (await ask(client, plan, v0)).json()
    denied = await approve(client, request["id"], v1, yes=False)
    assert denied.json()["status"] == "denied"
    assert (await approve(client, request["id"], v2)).json()["code"] == "INVALID_STATUS"


async def test_suspended_plans_and_frozen_requests_do_not_release(client, runtime, domain) -> None:
    services = domain.services
    owner, plan, (v0,) = await plan_with_verifiers(client, runtime, services, 1, 1, waitingPeriodSeconds=1)
    admin = await make_user(runtime, "root", "admin")
    request = (await ask(client, plan, v0)).json()
    await client.post(f"/api/plans/{plan['id']}/suspend", headers=owner.headers)
    later = utcnow() + timedelta(seconds=5)
    assert (await tick(services, later))["released"] == []
    assert (await ask(client, plan, v0)).json()["code"] in ("REQUEST_EXISTS", "PLAN_NOT_ACTIVE")
    await client.post(f"/api/plans/{plan['id']}/unsuspend", headers=owner.headers)
    frozen = await client.post(f"/api/admin/releases/{request['id']}/freeze", headers=admin.headers)
    assert frozen.json()["frozen"] is True
    assert (await tick(services, later))["released"] == []
    await client.post(f"/api/admin/releases/{request['id']}/unfreeze", headers=admin.headers)
    assert (await tick(services, later))["released"] == [request["id"]]


async def test_force_needs_a_second_admin_user(client, runtime, domain, env) -> None:
    _, plan, (v0, _v1) = await plan_with_verifiers(client, runtime, domain.services, 2, 2)
    first, second = await make_user(runtime, "admin1", "admin"), await make_user(runtime, "admin2", "admin")
    request = (await ask(client, plan, v0)).json()
    url = f"/api/admin/releases/{request['id']}/force"
    shared = {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}
    assert (await client.post(url, headers=shared)).json()["code"] == "ADMIN_USER_REQUIRED"
    assert (await client.post(url, headers=first.headers)).json()["force_requested"] is True
    again = await client.post(url, headers=first.headers)
    assert again.status_code == 409 and again.json()["code"] == "SECOND_ADMIN_REQUIRED"
    forced = await client.post(url, headers=second.headers)
    assert forced.status_code == 200 and forced.json()["status"] == "released"


async def test_stale_requests_expire(client, runtime, domain) -> None:
    _, plan, (v0, _v1) = await plan_with_verifiers(client, runtime, domain.services, 2, 2)
    request = (await ask(client, plan, v0)).json()
    result = await tick(domain.services, utcnow() + domain.services.settings.request_ttl + timedelta(seconds=1))
    assert result["expired"] == [request["id"]]
    assert (await ask(client, plan, v0)).status_code == 201  # a new one may be opened


async def test_missed_checkins_remind_then_open_a_request_that_a_checkin_cancels(
    client, runtime, domain, worker, mailbox
) -> None:
    services = domain.services
    _, plan, _people = await plan_with_verifiers(client, runtime, services, 1, 2, checkinIntervalSeconds=60)
    start = utcnow()
    due = start + timedelta(seconds=61)
    grace = services.settings.checkin_grace
    assert (await tick(services, start + timedelta(seconds=30)))["checkin_reminders"] == 0
    assert (await tick(services, due))["checkin_reminders"] == 1
    assert (await tick(services, due + grace * 0.5))["checkin_reminders"] == 1
    assert (await tick(services, due + grace * 0.8))["checkin_reminders"] == 1
    opened = await tick(services, due + grace + timedelta(seconds=1))
    (request_id,) = opened["checkin_requests"]
    reminders = await mailbox.wait_for("owner@example.org", 3, subject="check in")
    assert sorted(r.subject.split("reminder ")[1] for r in reminders) == ["1)", "2)", "3)"]
    await mailbox.wait_for("owner@example.org", subject="was requested")
    checked = await client.post("/api/checkin", headers=token_header(link_token(reminders[-1])))
    assert checked.status_code == 200 and checked.json()["status"] == "cancelled a watchdog request"
    replay = await client.post("/api/checkin", headers=token_header(link_token(reminders[-1])))
    assert replay.status_code == 401  # single use
    async with services.store.read() as conn:
        row = (await conn.execute(select(plans).where(plans.c.id == plan["id"]))).first()
    assert row.checkins_missed == 1 and row.checkin_reminders_sent == 0
    assert request_id is not None


async def test_the_seeds_rate_limits(client, runtime, domain) -> None:
    services = domain.services
    services.limits.enabled = True
    owner = await make_user(runtime, "limited")
    statuses = [
        (await client.post("/api/verifiers/accept", headers=token_header(f"rhv_guess{i}"))).status_code
        for i in range(11)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429  # auth: 10 per minute per IP
    body = {"title": "L", "approvalThreshold": 1, "totalVerifiers": 1, "ownerEmail": "l@example.org"}
    plan = (await client.post("/api/plans", json=body, headers=owner.headers)).json()
    message = (
        await client.post("/api/messages", json={"planId": plan["id"], "title": "m"}, headers=owner.headers)
    ).json()
    uploads = [
        (
            await client.post(
                f"/api/uploads/{message['id']}",
                content=b"x" * 100,
                headers={**owner.headers, "Content-Type": "video/mp4"},
            )
        ).status_code
        for _ in range(6)
    ]
    assert uploads[5] == 429 and 429 not in uploads[:5]  # upload: 5 per hour per user
    _, plan2, (v0,) = await plan_with_verifiers(client, runtime, services, 1, 1)
    asks = []
    for _ in range(4):
        response = await ask(client, plan2, v0)
        asks.append(response.status_code)
        if response.status_code == 201:
            await client.post(f"/api/releases/{response.json()['id']}/cancel", headers=v0.headers)
    assert asks == [201, 201, 201, 429]  # release requests: 3 per hour per verifier


async def test_audit_chain_holds_and_names_no_one_by_address(client, runtime, domain) -> None:
    owner, plan, (v0,) = await plan_with_verifiers(client, runtime, domain.services, 1, 1)
    patched = await client.patch(f"/api/plans/{plan['id']}", json={"totalVerifiers": 2}, headers=owner.headers)
    assert patched.status_code == 200, patched.text
    invite = {"planId": plan["id"], "email": "Secret.Person@Example.org"}
    assert (await client.post("/api/verifiers", json=invite, headers=owner.headers)).status_code == 201
    await ask(client, plan, v0)
    assert (await verify(runtime.engine)).ok
    async with runtime.engine.connect() as conn:
        rows = (await conn.execute(select(audit_log))).all()
    dumped = " ".join(f"{r.actor} {r.action} {r.target} {r.details}" for r in rows).lower()
    assert "vault.verifier.invited" in dumped and "@" not in dumped


def test_enabled_vault_without_its_secrets_stops_start_up(monkeypatch: pytest.MonkeyPatch, env) -> None:
    monkeypatch.setenv("VAULT_ENABLED", "true")
    monkeypatch.delenv("SMTP_HOST")
    monkeypatch.setenv("MASTER_ENCRYPTION_KEY", "")
    runtime = build_runtime(Settings(), load_domains=False)
    with pytest.raises(ConfigError, match=r"MASTER_ENCRYPTION_KEY.*SMTP_HOST or RESEND_API_KEY"):
        setup(runtime)
    monkeypatch.setenv("VAULT_ENABLED", "auto")
    assert setup(build_runtime(Settings(), load_domains=False)) is None
