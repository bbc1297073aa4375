"""Every vault route x every role: owner, verifier of this plan, verifier of another plan,
recipient, other user, anonymous, admin. No one reaches what is not theirs.

A forbidden caller must get 401, 403 or 404 (404 where existence itself is not theirs to
know); an allowed one anything else but a 5xx (a 409 for a state conflict still proves the
route let them in). Routes that list "your" things are open to every signed-in user and are
checked to show nothing of the plan to anyone but its people. The table must name every
vault route the app serves, so a new route without a row fails this test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from reelhouse.app import create_app
from reelhouse.core.db.types import utcnow
from reelhouse.vault import links
from reelhouse.vault.models import grants, message_recipients, messages, plans, verifiers
from reelhouse.vault.release import open_request
from reelhouse.vault.store import ensure_recipient

from .conftest import make_user

ROLES = ("owner", "verifier", "other_verifier", "recipient", "other_user", "anonymous", "admin")
SIGNED_IN = {"owner", "verifier", "other_verifier", "other_user", "admin"}
NEW_PLAN = {"title": "mine", "approvalThreshold": 1, "totalVerifiers": 1, "ownerEmail": "me@example.org"}


@dataclass
class World:
    plan: int
    other_plan: int
    message: int
    spare_message: int
    doomed_message: int
    recipient: int
    verifier: int
    second_verifier: int
    request: int
    spare_user: int
    headers: dict[str, dict[str, str]] = field(default_factory=dict)


async def build_world(runtime: Any, services: Any, client: httpx.AsyncClient) -> World:
    users = {role: await make_user(runtime, role) for role in ("owner", "verifier", "other_verifier", "other_user")}
    users["admin"] = await make_user(runtime, "admin", "admin")
    other_owner = await make_user(runtime, "other_owner")
    spare = await make_user(runtime, "spare")
    now = utcnow()

    async def plan_of(user: Any) -> int:
        response = await client.post(
            "/api/plans",
            json={"title": "P", "approvalThreshold": 2, "totalVerifiers": 2, "ownerEmail": f"{user.name}@example.org"},
            headers=user.headers,
        )
        return int(response.json()["id"])

    plan, other_plan = await plan_of(users["owner"]), await plan_of(other_owner)
    async with services.store.tx() as conn:

        async def message(status: str) -> int:
            return int(
                (
                    await conn.execute(
                        messages.insert()
                        .values(plan_id=plan, title="m", status=status, created_at=now, updated_at=now)
                        .returning(messages.c.id)
                    )
                ).scalar_one()
            )

        def verifier_row(plan_id: int, email: str, user_id: int | None) -> Any:
            return (
                verifiers.insert()
                .values(
                    plan_id=plan_id,
                    user_id=user_id,
                    email=email,
                    status="accepted",
                    invited_at=now,
                    invite_expires_at=now,
                    accepted_at=now,
                    created_at=now,
                )
                .returning(verifiers.c.id)
            )

        released, spare_message, doomed = await message("released"), await message("released"), await message("draft")
        recipient = await ensure_recipient(conn, plan, "rita@example.org", "Rita")
        await conn.execute(message_recipients.insert().values(message_id=released, recipient_id=recipient))
        await conn.execute(grants.insert().values(recipient_id=recipient, message_id=released, created_at=now))
        session = await links.issue(conn, "session", plan, now + timedelta(hours=1), recipient_id=recipient)
        verifier = (await conn.execute(verifier_row(plan, "v@example.org", users["verifier"].id))).scalar_one()
        second = (await conn.execute(verifier_row(plan, "v2@example.org", None))).scalar_one()
        await conn.execute(verifier_row(other_plan, "w@example.org", users["other_verifier"].id))
        request = await open_request(services, conn, plan, verifier, None, "test")
        assert (await conn.execute(plans.select().where(plans.c.id == plan))).first().status == "active"
    world = World(plan, other_plan, released, spare_message, doomed, recipient, verifier, second, request, spare.id)
    world.headers = {role: user.headers for role, user in users.items()}
    world.headers.update(recipient={"Cookie": f"rh_vault_view={session}"}, anonymous={})
    return world


@dataclass
class Case:
    method: str
    template: str
    allowed: set[str]
    path: str = ""
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hidden_from_others: bool = False  # a "mine" listing: must not show the plan to outsiders


def cases(w: World) -> list[Case]:
    owner, verifier, admin, recipient = {"owner"}, {"verifier"}, {"admin"}, {"recipient"}
    return [
        Case("GET", "/api/plans", SIGNED_IN, hidden_from_others=True),
        Case("POST", "/api/plans", SIGNED_IN, json=NEW_PLAN),
        Case("GET", "/api/plans/{plan_id}", owner),
        Case("PATCH", "/api/plans/{plan_id}", owner, json={"title": "renamed"}),
        Case("POST", "/api/plans/{plan_id}/suspend", owner),
        Case("POST", "/api/plans/{plan_id}/unsuspend", owner),
        Case("POST", "/api/plans/{plan_id}/checkin", owner),
        Case("GET", "/api/plans/{plan_id}/mails", owner),
        Case("GET", "/api/messages", owner, path=f"/api/messages?planId={w.plan}"),
        Case("POST", "/api/messages", owner, json={"planId": w.plan, "title": "new"}),
        Case("GET", "/api/messages/{message_id}", owner),
        Case("POST", "/api/messages/{message_id}/recipients", owner, json={"email": "x@example.org"}),
        Case("GET", "/api/plans/{plan_id}/recipients", owner),
        Case("POST", "/api/uploads/{message_id}", owner, content=b"not a video", headers={"Content-Type": "video/mp4"}),
        Case("GET", "/api/messages/{message_id}/media", owner),
        Case("GET", "/api/verifiers", owner, path=f"/api/verifiers?planId={w.plan}"),
        Case("POST", "/api/verifiers", owner, json={"planId": w.plan, "email": "new@example.org"}),
        Case("POST", "/api/verifiers/{verifier_id}/resend", owner),
        Case("POST", "/api/verifiers/accept", set()),
        Case("POST", "/api/verifiers/decline", set()),
        Case("GET", "/api/verifier/plans", SIGNED_IN, hidden_from_others=True),
        Case("GET", "/api/releases", {"owner", "verifier"}, path=f"/api/releases?planId={w.plan}"),
        Case("POST", "/api/releases", verifier, json={"planId": w.plan}),
        Case("POST", "/api/releases/approve", verifier, json={"requestId": w.request, "approved": True}),
        Case("POST", "/api/releases/veto", set()),
        Case("POST", "/api/checkin", set()),
        Case("POST", "/api/view/open", set()),
        Case("POST", "/api/view/renew", set()),
        Case("GET", "/api/view/messages", recipient),
        Case("GET", "/api/view/messages/{message_id}/media", recipient),
        Case("GET", "/api/admin/plans", admin),
        Case("GET", "/api/admin/releases", admin),
        Case("GET", "/api/admin/releases/{request_id}", admin),
        Case("POST", "/api/admin/releases/{request_id}/freeze", admin),
        Case("POST", "/api/admin/releases/{request_id}/unfreeze", admin),
        Case("POST", "/api/admin/releases/{request_id}/force", admin),
        Case("POST", "/api/admin/plans/{plan_id}/suspend", admin),
        Case("POST", "/api/admin/plans/{plan_id}/unsuspend", admin),
        Case("POST", "/api/admin/users/lock", admin, json={"userId": w.spare_user, "locked": True}),
        Case("GET", "/api/admin/mails", admin, path="/api/admin/mails?state=failed"),
        Case("POST", "/api/admin/mails/{outbox_id}/resend", admin),
        Case("GET", "/api/account/export", SIGNED_IN, hidden_from_others=True),
        # Destructive last: each ends something the rows above use.
        Case(
            "DELETE",
            "/api/messages/{message_id}/recipients/{recipient_id}",
            owner,
            path=f"/api/messages/{w.spare_message}/recipients/{w.recipient}",
        ),
        Case("POST", "/api/messages/{message_id}/revoke", owner, path=f"/api/messages/{w.spare_message}/revoke"),
        Case("DELETE", "/api/messages/{message_id}", owner, path=f"/api/messages/{w.doomed_message}"),
        Case("POST", "/api/releases/{request_id}/cancel", {"owner", "verifier"}),
        Case("POST", "/api/releases/{request_id}/veto", owner),
        Case("POST", "/api/admin/releases/{request_id}/deny", admin),
        Case("POST", "/api/verifiers/{verifier_id}/revoke", owner, path=f"/api/verifiers/{w.second_verifier}/revoke"),
        Case("DELETE", "/api/plans/{plan_id}", owner),
        Case("DELETE", "/api/account", SIGNED_IN),
    ]


def fill(case: Case, w: World) -> str:
    if case.path:
        return case.path
    return (
        case.template.replace("{plan_id}", str(w.plan))
        .replace("{message_id}", str(w.message))
        .replace("{verifier_id}", str(w.verifier))
        .replace("{request_id}", str(w.request))
        .replace("{recipient_id}", str(w.recipient))
        .replace("{outbox_id}", "999999")
    )


def shows_plan(body: Any, plan_id: int) -> bool:
    text = str(body)
    return f"'id': {plan_id}," in text or f"'plan_id': {plan_id}" in text


async def test_every_route_for_every_role(client: httpx.AsyncClient, runtime, domain, settings) -> None:
    w = world = await build_world(runtime, domain.services, client)
    table = cases(world)
    app = create_app(settings, runtime=runtime, background=False)
    prefixes = ("/api/plans", "/api/messages", "/api/uploads", "/api/verifier", "/api/releases", "/api/checkin",
                "/api/view", "/api/admin", "/api/account")  # fmt: skip
    served = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(prefixes)
        for method in operations
    }
    assert served == {(c.method, c.template) for c in table}, "every vault route needs a row in this table"
    problems = []
    for case in table:
        url = fill(case, world)
        ordered = [r for r in ROLES if r not in case.allowed] + [r for r in ROLES if r in case.allowed]
        for role in ordered:
            response = await client.request(
                case.method,
                url,
                json=case.json,
                content=case.content,
                headers={**world.headers[role], **case.headers},
            )
            status = response.status_code
            if role in case.allowed:
                if status in (401, 403, 404) or status >= 500:
                    problems.append(f"{role} refused {case.method} {url}: {status} {response.text[:120]}")
                elif (
                    case.hidden_from_others
                    and role not in ("owner", "verifier")
                    and shows_plan(response.json(), w.plan)
                ):
                    problems.append(f"{role} sees the plan in {case.method} {url}")
            elif status not in (401, 403, 404):
                problems.append(f"{role} reached {case.method} {url}: {status} {response.text[:120]}")
    assert problems == [], "\n".join(problems)
