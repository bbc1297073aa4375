"""The vault's task kinds, bound to the services object by plugin.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.jobs.scheduler import PeriodicTask
from reelhouse.core.telemetry.tracing import span
from reelhouse.vault.delivery import deliver_release
from reelhouse.vault.media import TRANSCODE_KIND, transcode
from reelhouse.vault.outbox import MAIL_KIND, send_outbox_mail
from reelhouse.vault.release import RELEASE_KIND
from reelhouse.vault.services import VaultServices
from reelhouse.vault.watch import TICK_KIND, tick

VAULT_KINDS = (TRANSCODE_KIND, RELEASE_KIND, MAIL_KIND, TICK_KIND)


def bind(handler: Callable[[VaultServices, TaskContext], Awaitable[Any]], services: VaultServices, name: str = ""):
    """The task handler; with `name`, its run is a span of that name (`release`, `release.mail`)."""

    async def run(ctx: TaskContext) -> Any:
        if not name:
            return await handler(services, ctx)
        scalars = {f"vault.{k}": v for k, v in ctx.payload.items() if isinstance(v, (str, int, float, bool))}
        with span(name, scalars):
            return await handler(services, ctx)

    run.__name__ = handler.__name__
    return run


async def run_tick(services: VaultServices, ctx: TaskContext) -> dict[str, Any]:
    return await tick(services)


def register(registry: TaskRegistry, services: VaultServices) -> None:
    settings = services.settings
    registry.register(
        TaskKind(TRANSCODE_KIND, bind(transcode, services, "vault.transcode"), max_attempts=3, concurrency_per_worker=1)
    )
    registry.register(
        TaskKind(RELEASE_KIND, bind(deliver_release, services, "release"), max_attempts=20, backoff_cap=60)
    )
    registry.register(
        TaskKind(
            MAIL_KIND,
            bind(send_outbox_mail, services, "release.mail"),
            max_attempts=settings.mail_max_attempts,
            backoff_cap=1800,
            timeout=120,
        )
    )
    registry.register(TaskKind(TICK_KIND, bind(run_tick, services), max_attempts=1, timeout=300))


def periodic(services: VaultServices) -> PeriodicTask:
    return PeriodicTask(name="vault.tick", kind=TICK_KIND, every=services.settings.tick_interval)
