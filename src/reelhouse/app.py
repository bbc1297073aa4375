"""The FastAPI application: API, embedded worker and scheduler in one process (`reelhouse serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from datetime import timedelta
from collections.abc import AsyncIterator

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from reelhouse import __version__
from reelhouse.config import Settings, get_settings
from reelhouse.core.db.migrate import run_migrations
from reelhouse.core.http import auth, health, jobs, status
from reelhouse.core.http.errors import install_error_handlers
from reelhouse.core.jobs.scheduler import Scheduler
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.media.hw import detect_capabilities
from reelhouse.core.runtime import Runtime, build_runtime
from reelhouse.core.security.ratelimit import SlidingWindowLimiter
from reelhouse.core.telemetry import metrics
from reelhouse.core.telemetry.tracing import instrument_app, setup_tracing

log = logging.getLogger("reelhouse.app")


def worker_options(settings: Settings, capabilities: list[str] | None = None) -> WorkerOptions:
    jobs_cfg = settings.jobs
    return WorkerOptions(
        worker_id=jobs_cfg.worker_id, concurrency=jobs_cfg.worker_concurrency,
        lease=timedelta(seconds=jobs_cfg.lease_seconds),
        poll_interval=jobs_cfg.poll_interval.total_seconds(),
        shutdown_grace=jobs_cfg.shutdown_grace.total_seconds(),
        capabilities=capabilities or [], progress_interval=settings.media.progress_save_interval,
    )


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None,
               background: bool = True) -> FastAPI:
    """Build the app. `background=False` serves the API only (tests, API-only nodes)."""
    settings = settings or get_settings()
    runtime = runtime or build_runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.server.data_dir.mkdir(parents=True, exist_ok=True)
        await run_migrations(runtime.engine)
        stop = asyncio.Event()
        tasks: list[asyncio.Task] = []
        worker = None
        if background:
            scheduler = Scheduler(runtime.engine, runtime.periodic)
            tasks.append(asyncio.create_task(scheduler.run(stop)))
            tasks.extend(asyncio.create_task(service(runtime, stop)) for service in runtime.services)
            if settings.server.embedded_worker and runtime.registry.kinds:
                caps = await detect_capabilities(settings.media)
                worker = Worker(runtime.engine, runtime.registry,
                                worker_options(settings, caps.capability_list()))
                tasks.append(asyncio.create_task(worker.run()))
        log.info("reelhouse %s serving", __version__, extra={"component": "app",
                                                            "domains": ",".join(runtime.domains)})
        try:
            yield
        finally:
            stop.set()
            if worker:
                worker.request_stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runtime.engine.dispose()

    app = FastAPI(title="reelhouse", version=__version__, lifespan=lifespan,
                  description="Self-hosted video operations: archive, encode, vault.")
    app.state.runtime = runtime
    app.state.settings = settings
    sec = settings.security
    app.state.login_limiter = (SlidingWindowLimiter(sec.rate_limit_requests_per_ip, sec.rate_limit_window_seconds)
                               if sec.rate_limit_enabled else None)
    install_error_handlers(app)
    for router in (health.router, status.router, jobs.router, auth.router, *runtime.routers):
        app.include_router(router)
    _install_middleware(app, settings)
    if setup_tracing(settings.logging.otel_exporter_otlp_endpoint, settings.logging.otel_trace_sample_rate):
        instrument_app(app)
    return app


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    @app.middleware("http")
    async def record_request(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.HTTP_REQUESTS.labels(template, request.method, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(template).observe(time.perf_counter() - started)
        return response

    origins = settings.server.cors_allowed_origins
    if origins:
        # `*.example.com` (vod-tender's wildcard form) becomes an origin regex.
        wildcard = [re.escape(o[2:]) for o in origins if o.startswith("*.")]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o for o in origins if not o.startswith("*.")],
            allow_origin_regex="|".join(rf"https?://[^/]+\.{domain}" for domain in wildcard) or None,
            allow_methods=["*"], allow_headers=["*"], expose_headers=["X-Correlation-ID"],
        )
    # Outermost: every log line and enqueued job of a request carries its correlation id.
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Correlation-ID",
                       validator=lambda value: 0 < len(value) <= 64 and value.isprintable())
