"""`reelhouse vault ...`: plans, messages, verifiers, releases, mail outbox, the clock, key rotation."""

from __future__ import annotations

from typing import Any

import typer
from sqlalchemy import select, update

from reelhouse.core.cli.common import console, fail, print_json, render_rows, with_runtime
from reelhouse.core.runtime import Runtime
from reelhouse.vault import outbox
from reelhouse.vault.audit import record
from reelhouse.vault.metrics import vault_snapshot
from reelhouse.vault.models import messages, plans, requests, verifiers
from reelhouse.vault.models import outbox as outbox_table
from reelhouse.vault.services import VaultServices, key_context
from reelhouse.vault.watch import tick

vault_app = typer.Typer(help="The vault: encrypted messages released by verifiers.", no_args_is_help=True)


def _services(runtime: Runtime) -> VaultServices:
    try:
        return runtime.component(VaultServices)
    except LookupError:
        raise fail("the vault is not enabled here (see VAULT_ENABLED and the start-up log)") from None


def _rows(query: Any) -> list[dict[str, Any]]:
    async def run(rt: Runtime) -> list[dict[str, Any]]:
        async with rt.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    return with_runtime(run)


@vault_app.command("status")
def status() -> None:
    """Release requests and mails by state, check-ins missed (as /status shows them)."""
    print_json(with_runtime(vault_snapshot))


@vault_app.command("plans")
def list_plans(limit: int = typer.Option(50, min=1, max=1000)) -> None:
    query = (
        select(
            plans.c.id,
            plans.c.owner_user_id,
            plans.c.title,
            plans.c.status,
            plans.c.approval_threshold,
            plans.c.total_verifiers,
            plans.c.last_checkin_at,
        )
        .order_by(plans.c.id.desc())
        .limit(limit)
    )
    render_rows(
        _rows(query),
        ["id", "owner_user_id", "title", "status", "approval_threshold", "total_verifiers", "last_checkin_at"],
        "plans",
    )


@vault_app.command("messages")
def list_messages(plan_id: int = typer.Argument(..., min=1)) -> None:
    query = (
        select(
            messages.c.id,
            messages.c.title,
            messages.c.kind,
            messages.c.status,
            messages.c.key_id,
            messages.c.media_bytes,
            messages.c.error,
        )
        .where(messages.c.plan_id == plan_id)
        .order_by(messages.c.id)
    )
    render_rows(_rows(query), ["id", "title", "kind", "status", "key_id", "media_bytes", "error"], f"plan {plan_id}")


@vault_app.command("verifiers")
def list_verifiers(plan_id: int = typer.Argument(..., min=1)) -> None:
    query = (
        select(
            verifiers.c.id,
            verifiers.c.status,
            verifiers.c.user_id,
            verifiers.c.invite_expires_at,
            verifiers.c.accepted_at,
        )
        .where(verifiers.c.plan_id == plan_id)
        .order_by(verifiers.c.id)
    )
    render_rows(_rows(query), ["id", "status", "user_id", "invite_expires_at", "accepted_at"], f"plan {plan_id}")


@vault_app.command("releases")
def list_releases(state: str | None = typer.Option(None, help="pending, waiting, released, vetoed, ...")) -> None:
    query = (
        select(
            requests.c.id,
            requests.c.plan_id,
            requests.c.origin,
            requests.c.status,
            requests.c.created_at,
            requests.c.release_at,
            requests.c.frozen_at,
        )
        .order_by(requests.c.id.desc())
        .limit(200)
    )
    if state:
        query = query.where(requests.c.status == state)
    render_rows(
        _rows(query), ["id", "plan_id", "origin", "status", "created_at", "release_at", "frozen_at"], "releases"
    )


@vault_app.command("outbox")
def list_outbox(state: str | None = typer.Option(None, help="pending, sending, sent, unconfirmed, failed")) -> None:
    """Mails and their delivery state (addresses are not printed)."""
    query = select(
        outbox_table.c.id,
        outbox_table.c.plan_id,
        outbox_table.c.template,
        outbox_table.c.state,
        outbox_table.c.attempts,
        outbox_table.c.last_error,
        outbox_table.c.sent_at,
    )
    query = query.order_by(outbox_table.c.id.desc()).limit(500)
    if state:
        query = query.where(outbox_table.c.state == state)
    render_rows(_rows(query), ["id", "plan_id", "template", "state", "attempts", "last_error", "sent_at"], "outbox")


@vault_app.command("resend")
def resend(outbox_id: int = typer.Argument(..., min=1)) -> None:
    """Queue a failed or unconfirmed mail again (a deliberate decision: it may arrive twice)."""

    async def run(runtime: Runtime) -> bool:
        services = _services(runtime)
        async with services.store.tx() as conn:
            done = await outbox.resend(conn, outbox_id, services.settings.mail_max_attempts)
            if done:
                await record(conn, "cli", "mail.resent", f"outbox:{outbox_id}")
            return done

    if not with_runtime(run):
        raise fail(f"mail {outbox_id} is not failed or unconfirmed")
    console.print(f"mail {outbox_id} queued")


@vault_app.command("tick")
def run_tick() -> None:
    """Run the vault's clock once now (expiries, due releases, reminders, check-ins)."""

    async def run(runtime: Runtime) -> dict[str, Any]:
        return await tick(_services(runtime))

    print_json(with_runtime(run))


@vault_app.command("rotate-key")
def rotate_key(batch: int = typer.Option(200, min=1, max=10_000)) -> None:
    """Re-wrap every message's data key under the primary MASTER_ENCRYPTION_KEY.

    Media is not re-encrypted: only the small wrapped keys change. Run it after moving the old
    key to MASTER_ENCRYPTION_KEY_PREVIOUS; when it reports 0 left, the old key can be retired.
    """

    async def run(runtime: Runtime) -> dict[str, int]:
        services = _services(runtime)
        keyring = services.keyring
        moved = 0
        while True:
            async with services.store.tx() as conn:
                rows = (
                    await conn.execute(
                        select(messages.c.id, messages.c.wrapped_key)
                        .where(messages.c.wrapped_key.is_not(None), messages.c.key_id != keyring.primary_id)
                        .limit(batch)
                    )
                ).all()
                for row in rows:
                    wrapped = keyring.rewrap(row.wrapped_key)
                    keyring.decrypt(wrapped, key_context(row.id))  # proves the new wrapping opens
                    await conn.execute(
                        update(messages)
                        .where(messages.c.id == row.id)
                        .values(wrapped_key=wrapped, key_id=keyring.key_id_of(wrapped))
                    )
                moved += len(rows)
                if rows:
                    await record(conn, "cli", "keys.rotated", None, messages=len(rows), key_id=keyring.primary_id)
            if len(rows) < batch:
                break
        async with services.store.read() as conn:
            left = len(
                (
                    await conn.execute(
                        select(messages.c.id).where(
                            messages.c.wrapped_key.is_not(None), messages.c.key_id != keyring.primary_id
                        )
                    )
                ).all()
            )
        return {"rewrapped": moved, "left": left, "primary_key_id": keyring.primary_id}  # type: ignore[dict-item]

    print_json(with_runtime(run))
