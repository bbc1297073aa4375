"""`vault_releases_overdue` (the VaultReleaseStuck alert's metric): waiting, unfrozen requests
whose release time passed; 0 once the tick released them, frozen ones never count."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from reelhouse.core.db.types import utcnow
from reelhouse.vault.models import requests
from reelhouse.vault.watch import tick

from .conftest import make_user
from .test_vault_release_rules import ask, plan_with_verifiers


def overdue(body: str) -> float:
    return next(float(line.split()[1]) for line in body.splitlines() if line.startswith("vault_releases_overdue "))


async def test_overdue_releases_are_exported_until_the_tick_releases_them(client, runtime, domain) -> None:
    services = domain.services
    _, plan, (v0,) = await plan_with_verifiers(client, runtime, services, 1, 1, waitingPeriodSeconds=3600)
    admin = await make_user(runtime, "root", "admin")
    request = (await ask(client, plan, v0)).json()
    assert overdue((await client.get("/metrics")).text) == 0  # waiting, release time an hour away
    async with services.store.tx() as conn:  # the hour passed with no tick running
        await conn.execute(
            update(requests).where(requests.c.id == request["id"]).values(release_at=utcnow() - timedelta(minutes=5))
        )
    assert overdue((await client.get("/metrics")).text) == 1
    await client.post(f"/api/admin/releases/{request['id']}/freeze", headers=admin.headers)
    assert overdue((await client.get("/metrics")).text) == 0  # frozen on purpose: not stuck
    await client.post(f"/api/admin/releases/{request['id']}/unfreeze", headers=admin.headers)
    assert overdue((await client.get("/metrics")).text) == 1
    assert (await tick(services, utcnow()))["released"] == [request["id"]]
    assert overdue((await client.get("/metrics")).text) == 0
