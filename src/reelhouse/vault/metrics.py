"""Vault metrics. Gauges mirror the database at scrape time (every API node reports the same);
the mail counters (`vault_emails_sent_total`, `vault_emails_failed_total`) are in outbox.py,
counted by the process that sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Gauge
from sqlalchemy import func, select

from reelhouse.core.db.types import utcnow
from reelhouse.vault import outbox
from reelhouse.vault.models import MAIL_STATES, REQ_STATES, REQ_WAITING, plans, requests

if TYPE_CHECKING:
    from reelhouse.core.runtime import Runtime


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return REGISTRY._names_to_collectors.get(name) or Gauge(name, doc, labels)  # type: ignore[return-value]


RELEASES = _gauge("vault_releases", "Release requests by state", ("state",))
MAILS = _gauge("vault_outbox_mails", "Vault mails by delivery state", ("state",))
CHECKINS_MISSED = _gauge("vault_checkins_missed", "Check-ins missed, summed over plans")
CHECKINS_OVERDUE = _gauge("vault_checkins_overdue", "Plans whose owner is past a check-in now")
RELEASES_OVERDUE = _gauge(
    "vault_releases_overdue", "Waiting, unfrozen release requests whose release time has passed (should be 0)"
)


async def vault_snapshot(runtime: Runtime) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        by_state: dict[str, int] = dict(
            (await conn.execute(select(requests.c.status, func.count()).group_by(requests.c.status))).all()
        )
        missed = (await conn.execute(select(func.coalesce(func.sum(plans.c.checkins_missed), 0)))).scalar_one()
        overdue = (
            await conn.execute(select(func.count()).select_from(plans).where(plans.c.checkin_reminders_sent != 0))
        ).scalar_one()
        mails = await outbox.counts_by_state(conn)
        overdue_releases = (
            await conn.execute(
                select(func.count())
                .select_from(requests)
                .where(
                    requests.c.status == REQ_WAITING,
                    requests.c.frozen_at.is_(None),
                    requests.c.release_at < utcnow(),
                )
            )
        ).scalar_one()
    return {
        "releases": {state: int(by_state.get(state, 0)) for state in REQ_STATES},
        "mails": {state: int(mails.get(state, 0)) for state in MAIL_STATES},
        "checkins_missed": int(missed),
        "checkins_overdue": int(overdue),
        "releases_overdue": int(overdue_releases),
    }


async def refresh_metrics(runtime: Runtime) -> None:
    snap = await vault_snapshot(runtime)
    for state, count in snap["releases"].items():
        RELEASES.labels(state).set(count)
    for state, count in snap["mails"].items():
        MAILS.labels(state).set(count)
    CHECKINS_MISSED.set(snap["checkins_missed"])
    CHECKINS_OVERDUE.set(snap["checkins_overdue"])
    RELEASES_OVERDUE.set(snap["releases_overdue"])


async def vault_status(runtime: Runtime) -> dict[str, Any]:
    return {"vault": await vault_snapshot(runtime)}
