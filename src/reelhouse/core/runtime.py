"""The running system's shared parts, and the domain plug-in hook.

Domains (archive, encode, vault) are found through the `reelhouse.domains` entry-point group;
each exposes `setup(runtime)` that registers its task kinds, periodic tasks, HTTP routers and
/status contributions. `core` never imports a domain: it only calls what was registered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.config import Settings
from reelhouse.core.db.engine import create_engine
from reelhouse.core.jobs.circuit import CircuitBreaker
from reelhouse.core.jobs.kv import KV
from reelhouse.core.jobs.registry import TaskRegistry
from reelhouse.core.jobs.scheduler import PeriodicTask

log = logging.getLogger("reelhouse.runtime")

StatusProvider = Callable[["Runtime"], Awaitable[dict[str, Any]]]


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    registry: TaskRegistry = field(default_factory=TaskRegistry)
    periodic: list[PeriodicTask] = field(default_factory=list)
    routers: list[APIRouter] = field(default_factory=list)
    status_providers: list[StatusProvider] = field(default_factory=list)
    # Called before each /metrics scrape to set gauges that mirror database state.
    metric_refreshers: list[Callable[["Runtime"], Awaitable[None]]] = field(default_factory=list)
    # Long-running services (chat recorder...) started by `serve` next to the worker.
    services: list[Callable[["Runtime", Any], Awaitable[None]]] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)

    @property
    def kv(self) -> KV:
        return KV(self.engine)

    @property
    def breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.engine, failure_threshold=self.settings.jobs.circuit_failure_threshold,
                              cooldown=self.settings.jobs.circuit_open_cooldown)


def build_runtime(settings: Settings, *, engine: AsyncEngine | None = None,
                  load_domains: bool = True) -> Runtime:
    runtime = Runtime(settings=settings, engine=engine or create_engine(
        settings.database_url, pool_size=settings.database.pool_size))
    if load_domains:
        for ep in entry_points(group="reelhouse.domains"):
            ep.load()(runtime)
            runtime.domains.append(ep.name)
            log.info("domain loaded", extra={"component": "runtime", "domain": ep.name})
    return runtime
