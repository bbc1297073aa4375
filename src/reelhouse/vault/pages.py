"""Vault pages on the web shell: the owner's plans (messages with upload or in-browser
recording, recipients, verifiers, releases with veto, check-in), the verifier's plans and link
pages (invitation, request, vote), the owner's veto and check-in links, the recipient's player,
and the admin's releases (freeze).

Pages read through the store like the API and act through the API (`/api/...`) from the
browser, so rules and messages are the API's. Link pages are open to anyone: the token sits in
the URL fragment, which never reaches the server; `vault.js` sends it as `X-Vault-Token`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from reelhouse.core.http.deps import DbId
from reelhouse.core.runtime import NavLink, PageSet
from reelhouse.vault import outbox
from reelhouse.vault.errors import VaultError
from reelhouse.vault.models import requests, verifiers
from reelhouse.vault.services import VaultServices
from reelhouse.vault.store import (
    messages_of,
    owned_plan,
    plans_of,
    recipient_ids_of,
    recipients_of,
    verifier_plans_of_user,
)
from reelhouse.web.shell import AdminPage, AnyPage, PageError, ViewerPage

HERE = Path(__file__).parent
LINK_PAGES = {
    "invite": "Your invitation",
    "verifier": "Verifier",
    "vote": "Release request",
    "veto": "Stop a release",
    "checkin": "Check in",
    "view": "Messages for you",
}


def build_pages(services: VaultServices) -> PageSet:
    router = APIRouter(include_in_schema=False)
    store = services.store

    @router.get("/vault", response_class=HTMLResponse)
    async def my_plans(page: ViewerPage) -> HTMLResponse:
        async with store.read() as conn:
            plans = await plans_of(conn, page.user.user_id or 0) if page.user else []
        return page.render("vault/plans.html", plans=plans)

    @router.get("/vault/plans/{plan_id}", response_class=HTMLResponse)
    async def plan_page(page: ViewerPage, plan_id: DbId) -> HTMLResponse:
        async with store.read() as conn:
            try:
                plan = await owned_plan(conn, plan_id, page.user.user_id if page.user else None)
            except VaultError as exc:
                raise PageError(exc.status_code, str(exc.detail)) from None
            messages = [(m, await recipient_ids_of(conn, m.id)) for m in await messages_of(conn, plan_id)]
            people = await recipients_of(conn, plan_id)
            verifier_rows = (await conn.execute(select(verifiers).where(verifiers.c.plan_id == plan_id))).all()
            request_rows = (
                await conn.execute(select(requests).where(requests.c.plan_id == plan_id).order_by(requests.c.id.desc()))
            ).all()
            mails = await outbox.mail_rows(conn, plan_id)
        return page.render(
            "vault/plan.html",
            plan=plan,
            messages=messages,
            recipients={r["id"]: r for r in people},
            verifiers=verifier_rows,
            requests=request_rows,
            mails=mails,
            max_upload=services.settings.max_upload_bytes,
        )

    @router.get("/vault/verifying", response_class=HTMLResponse)
    async def verifying(page: ViewerPage) -> HTMLResponse:
        async with store.read() as conn:
            rows = await verifier_plans_of_user(conn, page.user.user_id or 0) if page.user else []
        return page.render("vault/verifying.html", plans=rows)

    @router.get("/vault/admin", response_class=HTMLResponse)
    async def admin(page: AdminPage) -> HTMLResponse:
        async with store.read() as conn:
            rows = (await conn.execute(select(requests).order_by(requests.c.id.desc()).limit(100))).all()
        return page.render("vault/admin.html", requests=rows)

    def link_page(kind: str):
        async def render(page: AnyPage) -> HTMLResponse:
            return page.render("vault/link.html", kind=kind, heading=LINK_PAGES[kind])

        return render

    for kind in LINK_PAGES:
        router.add_api_route(f"/vault/{kind}", link_page(kind), methods=["GET"], response_class=HTMLResponse)

    return PageSet(
        name="vault",
        title="Vault",
        router=router,
        templates=HERE / "templates",
        static=HERE / "static",
        nav=(
            NavLink("My plans", "/vault"),
            NavLink("Plans I verify", "/vault/verifying"),
            NavLink("Releases (admin)", "/vault/admin", "admin"),
        ),
    )
