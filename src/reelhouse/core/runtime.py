"""The running system's shared parts, and the domain plug-in hook.

Domains (archive, encode, vault) are found through the `reelhouse.domains` entry-point group;
each exposes `setup(runtime)` that registers its task kinds, periodic tasks, HTTP routers,
browser pages and /status contributions. `core` never imports a domain: it only calls what was
registered.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.config import Settings
from reelhouse.core.backup import jobs as backup_jobs
from reelhouse.core.db.engine import create_engine
from reelhouse.core.jobs import retention
from reelhouse.core.jobs.circuit import CircuitBreaker
from reelhouse.core.jobs.kv import KV
from reelhouse.core.jobs.registry import TaskRegistry
from reelhouse.core.jobs.scheduler import PeriodicTask
from reelhouse.core.jobs.worker import WorkerOptions
from reelhouse.core.overrides import RuntimeOverrides
from reelhouse.core.security.audit import bind_master_keys
from reelhouse.core.security.keys import MasterKeys

log = logging.getLogger("reelhouse.runtime")

C = TypeVar("C")
StatusProvider = Callable[["Runtime"], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class NavLink:
    """One entry of the web UI's navigation; shown to callers with at least `role`."""

    label: str
    href: str
    role: str = "viewer"


@dataclass(frozen=True)
class PageSet:
    """A domain's browser pages: a router of HTML routes, the folder of its Jinja2 templates
    (addressed as `<name>/<file>` and extending the shell's `web/layout.html`), an optional
    folder of static files (served under `/static/<name>/`) and its navigation links, grouped
    under `title`. The web shell (`reelhouse.web`) mounts them."""

    name: str
    title: str
    router: APIRouter
    templates: Path
    nav: tuple[NavLink, ...] = ()
    static: Path | None = None


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    registry: TaskRegistry = field(default_factory=TaskRegistry)
    periodic: list[PeriodicTask] = field(default_factory=list)
    routers: list[APIRouter] = field(default_factory=list)
    # Each domain's HTTP surface (its API routers and browser pages), added to `routers` and
    # `pages` by `build_http()` when an HTTP app is made. Commands and workers never build one,
    # so they do not import route modules (FastAPI and pydantic set-up: about a second).
    http_installers: list[Callable[[Runtime], None]] = field(default_factory=list)
    # Browser pages by domain (`add_pages`), mounted by the web shell with its layout.
    pages: list[PageSet] = field(default_factory=list)
    status_providers: list[StatusProvider] = field(default_factory=list)
    # Called before each /metrics scrape to set gauges that mirror database state.
    metric_refreshers: list[Callable[[Runtime], Awaitable[None]]] = field(default_factory=list)
    # Long-running services (chat recorder...) started by `serve` next to the worker.
    services: list[Callable[[Runtime, Any], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # Run by `aclose()` when the process is done with the runtime (`serve` at shutdown, every
    # command and worker): domains release the clients with connection pools they opened
    # (storage, HTTP, SMTP), so no process ends with "Unclosed client session".
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    # What an operator should know at start-up (missing credentials...): `serve` logs each once.
    notes: list[str] = field(default_factory=list)
    # The services each domain's composition root built, by type: HTTP dependencies
    # (`core.http.deps.component`) hand them to route handlers. Per runtime, never global.
    components: dict[type, Any] = field(default_factory=dict)
    # Settings operators may change at run time (PUT /config); domains register their keys.
    overrides: RuntimeOverrides = field(init=False)
    # Job kind -> what a domain adds to its jobs in `GET /v1/jobs[/{id}]` (encode: WebEncode's
    # source_url and profiles), given the job view.
    job_views: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.overrides = RuntimeOverrides(self.engine)
        self.overrides.register(self.settings.logging, ["LOG_LEVEL"], startup_only=["LOG_FORMAT"])
        self.overrides.register(self.settings.server, [], startup_only=["DATA_DIR"])

    def provide(self, component: Any) -> None:
        """Make a domain's services object reachable by HTTP routes (`deps.component(type)`)."""
        kind = type(component)
        if kind in self.components:
            raise ValueError(f"{kind.__name__} provided twice")
        self.components[kind] = component

    def build_http(self) -> None:
        """Run the domains' HTTP installers (once): `routers` and `pages` are complete after it."""
        installers, self.http_installers = self.http_installers, []
        for install in installers:
            install(self)

    def add_pages(self, pages: PageSet) -> None:
        """Register a domain's browser pages; names are template prefixes, so they are unique."""
        if any(existing.name == pages.name for existing in self.pages):
            raise ValueError(f"pages {pages.name!r} registered twice")
        self.pages.append(pages)

    async def aclose(self) -> None:
        """Run the domains' closers (last registered first), then close the engine's pool."""
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:  # one client failing to close must not keep the others open
                log.warning("closing %s failed", getattr(close, "__qualname__", close), exc_info=True)
        await self.engine.dispose()

    def component(self, kind: type[C]) -> C:
        found = self.components.get(kind)
        if found is None:
            raise LookupError(f"no {kind.__name__} was provided; is its domain loaded?")
        return found

    def worker_options(self, capabilities: list[str] | None = None, **overrides: Any) -> WorkerOptions:
        """The worker settings of this deployment (WORKER_*, JOB_*), for `serve`, `worker` and
        commands that run work in-process."""
        jobs = self.settings.jobs
        options = WorkerOptions(
            worker_id=jobs.worker_id,
            concurrency=jobs.worker_concurrency,
            lease=timedelta(seconds=jobs.lease_seconds),
            poll_interval=jobs.poll_interval.total_seconds(),
            shutdown_grace=jobs.shutdown_grace.total_seconds(),
            capabilities=capabilities or [],
            progress_interval=self.settings.media.progress_save_interval,
        )
        for name, value in overrides.items():
            setattr(options, name, value)
        return options

    @property
    def kv(self) -> KV:
        return KV(self.engine)

    @property
    def breaker(self) -> CircuitBreaker:
        return CircuitBreaker(
            self.engine,
            failure_threshold=self.settings.jobs.circuit_failure_threshold,
            cooldown=self.settings.jobs.circuit_open_cooldown,
        )


def build_runtime(settings: Settings, *, engine: AsyncEngine | None = None, load_domains: bool = True) -> Runtime:
    runtime = Runtime(
        settings=settings, engine=engine or create_engine(settings.database_url, pool_size=settings.database.pool_size)
    )
    # Audit appends and secret stores find the master keys on the engine (loaded on first use).
    bind_master_keys(runtime.engine, MasterKeys.from_settings(settings))
    retention.install(runtime)  # core's own housekeeping: the periodic prune
    backup_jobs.install(runtime)  # the periodic restore test (and backups, when BACKUP_INTERVAL is set)
    if load_domains:
        for ep in entry_points(group="reelhouse.domains"):
            ep.load()(runtime)
            runtime.domains.append(ep.name)
            log.debug("domain loaded", extra={"component": "runtime", "domain": ep.name})
    return runtime


async def join_background(tasks: list[asyncio.Future[Any]], timeout: float) -> None:
    """Wait up to `timeout` seconds for background tasks told to stop; any still running is
    logged with its stack (so a hung shutdown names its culprit) and cancelled. Without the
    bound one stuck loop would keep `serve` from ever exiting on SIGTERM."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        stack = io.StringIO()
        if isinstance(task, asyncio.Task):
            task.print_stack(limit=12, file=stack)
        log.warning("background task did not stop within %.0fs; cancelling it\n%s", timeout, stack.getvalue())
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("background task ended with an error", exc_info=task.exception())
