"""The FastAPI application: API, embedded worker and scheduler in one process (`reelhouse serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from reelhouse import __version__
from reelhouse.config import Settings, get_settings
from reelhouse.core.db.migrate import run_migrations
from reelhouse.core.http import auth, health, jobs, status
from reelhouse.core.http.config import config_router
from reelhouse.core.http.errors import document_errors, install_error_handlers
from reelhouse.core.http.middleware import RequestGuard
from reelhouse.core.http.settings import HttpSettings
from reelhouse.core.http.status import StatusCache, export_audit_head, refresh_loop
from reelhouse.core.jobs.scheduler import Scheduler
from reelhouse.core.jobs.worker import Worker
from reelhouse.core.media.hw import detect_capabilities
from reelhouse.core.runtime import Runtime, build_runtime, join_background
from reelhouse.core.security.audit import bind_master_keys, master_keys_of
from reelhouse.core.security.http_auth import AuthService
from reelhouse.core.security.keys import MasterKeys
from reelhouse.core.security.secret_stores import seal_all_plaintext
from reelhouse.core.telemetry.profiling import ProfilingSettings, check_profiling, start_profiling
from reelhouse.core.telemetry.tracing import CorrelationSpanMiddleware, instrument_app, setup_tracing
from reelhouse.web.mount import install_web

log = logging.getLogger("reelhouse.app")


def log_startup_summary(runtime: Runtime, worker: Worker | None) -> None:
    """One short line an operator reads at start-up, then one warning per note (missing
    credentials...). Details (domains loaded, hardware probes) are at debug level."""
    settings = runtime.settings
    storage = settings.storage
    where = storage.s3_bucket and f"s3 {storage.s3_endpoint or 'aws'}/{storage.s3_bucket}"
    host, port = settings.server.bind
    url = settings.server.public_base_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"
    capabilities = ", ".join(worker.options.capabilities) if worker else "no embedded worker"
    log.info(
        "reelhouse %s serving %s | database %s | storage %s | domains %s | worker: %s",
        __version__,
        url,
        settings.database_label(),
        where if storage.storage_backend == "s3" else f"fs {settings.server.data_dir}",
        ", ".join(runtime.domains) or "none",
        capabilities,
        extra={"component": "app"},
    )
    for note in runtime.notes:
        log.warning("%s", note, extra={"component": "app"})


def start_nats_kernel(runtime: Runtime, stop: asyncio.Event, tasks: list[asyncio.Future[Any]]) -> list[str] | None:
    """With NATS_URL: run the kernel side of remote workers (dispatch, events, registry) and
    return the kinds the embedded worker keeps (None: all of them)."""
    from reelhouse.core.jobs.remote.kernel import KernelBridge, nats_status
    from reelhouse.core.jobs.remote.settings import NatsSettings

    nats_settings = runtime.settings.section(NatsSettings)
    if not nats_settings.kernel:
        return None
    jobs_settings = runtime.settings.jobs
    bridge = KernelBridge(
        runtime.engine,
        runtime.registry,
        url=jobs_settings.nats_url,
        settings=nats_settings,
        lease=timedelta(seconds=jobs_settings.lease_seconds),
        stale_after=jobs_settings.worker_stale_after,
    )
    tasks.append(asyncio.create_task(bridge.run(stop), name="nats-kernel"))

    async def provider(_runtime: Runtime) -> dict[str, Any]:
        return await nats_status(bridge)

    runtime.status_providers.append(provider)
    if nats_settings.embedded_remote_kinds:
        return None
    return [name for name, kind in runtime.registry.kinds.items() if not kind.remote]


# On top of the worker's shutdown grace: what the other background loops get to finish.
SHUTDOWN_SLACK_SECONDS = 10.0


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None, background: bool = True) -> FastAPI:
    """Build the app. `background=False` serves the API only (tests, API-only nodes)."""
    settings = settings or get_settings()
    runtime = runtime or build_runtime(settings)
    keys = master_keys_of(runtime.engine)
    if keys is None:
        keys = MasterKeys.from_settings(settings)
        bind_master_keys(runtime.engine, keys)
    http_settings = settings.section(HttpSettings)
    profiling = settings.section(ProfilingSettings)
    check_profiling(profiling)
    status_cache = StatusCache(runtime, http_settings.metrics_refresh_interval.total_seconds())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.server.data_dir.mkdir(parents=True, exist_ok=True)
        await run_migrations(runtime.engine)
        await seal_all_plaintext(runtime.engine, keys)
        profiler = start_profiling(profiling, asyncio.get_running_loop())
        stop = asyncio.Event()
        tasks: list[asyncio.Future[Any]] = [
            asyncio.create_task(refresh_loop(status_cache, stop)),
            asyncio.create_task(export_audit_head(runtime.engine, http_settings.audit_head_export_interval, stop)),
        ]
        worker = None
        if background:
            scheduler = Scheduler(runtime.engine, runtime.periodic)
            tasks.append(asyncio.create_task(scheduler.run(stop), name="scheduler"))
            tasks.extend(
                asyncio.create_task(service(runtime, stop), name=getattr(service, "__qualname__", None))
                for service in runtime.services
            )
            tasks.append(asyncio.create_task(runtime.overrides.watch_log_level(stop)))
            kinds = None
            if settings.jobs.nats_url:
                kinds = start_nats_kernel(runtime, stop, tasks)
            if settings.server.embedded_worker and runtime.registry.kinds and kinds != []:
                caps = await detect_capabilities(settings.media)
                worker = Worker(
                    runtime.engine, runtime.registry, runtime.worker_options(caps.capability_list(), kinds=kinds)
                )
                tasks.append(asyncio.create_task(worker.run(), name="embedded-worker"))
        log_startup_summary(runtime, worker)
        try:
            yield
        finally:
            stop.set()
            if worker:
                worker.request_stop()
            await join_background(tasks, settings.jobs.shutdown_grace.total_seconds() + SHUTDOWN_SLACK_SECONDS)
            if profiler:
                profiler.close()
            app.state.auth.passwords.close()
            if app.state.auth.oidc is not None:
                await app.state.auth.oidc.aclose()
            await runtime.aclose()

    app = FastAPI(
        title="reelhouse",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted video operations: archive, encode, vault.",
        # Served by the web shell from the npm packages, so they work without network access.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.auth = AuthService.from_runtime(runtime)
    app.state.status_cache = status_cache
    install_error_handlers(app)
    document_errors(app)
    runtime.build_http()
    for router in (health.router, status.router, jobs.router, auth.router, config_router(runtime), *runtime.routers):
        app.include_router(router)
    install_web(app, runtime)
    _install_middleware(app, settings, http_settings)
    if setup_tracing(settings.logging.otel_exporter_otlp_endpoint, settings.logging.otel_trace_sample_rate):
        instrument_app(app)
    return app


def _install_middleware(app: FastAPI, settings: Settings, http: HttpSettings) -> None:
    app.add_middleware(RequestGuard, max_body_bytes=http.max_request_body_bytes, access_log=http.access_log)
    origins = settings.server.cors_allowed_origins
    if settings.server.permissive_cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["X-Correlation-ID"],
        )
    elif origins:
        # `*.example.com` (vod-tender's wildcard form) becomes an origin regex.
        wildcard = [re.escape(o[2:]) for o in origins if o.startswith("*.")]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o for o in origins if not o.startswith("*.")],
            allow_origin_regex="|".join(rf"https?://[^/]+\.{domain}" for domain in wildcard) or None,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Correlation-ID"],
        )
    if settings.logging.otel_exporter_otlp_endpoint:
        app.add_middleware(CorrelationSpanMiddleware)  # the `http-server` span gets the id set below
    # Outermost: every log line and enqueued job of a request carries its correlation id.
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Correlation-ID",
        validator=lambda value: 0 < len(value) <= 64 and value.isprintable(),
    )
