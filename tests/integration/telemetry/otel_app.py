"""Runs in a subprocess (the tracer provider is process-global): serves one request and runs one
task with OTEL_EXPORTER_OTLP_ENDPOINT set, then flushes spans."""

from __future__ import annotations

import asyncio

import httpx
from opentelemetry import trace

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.db.migrate import run_migrations
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime


async def main() -> None:
    settings = Settings()
    runtime = build_runtime(settings, load_domains=False)
    await run_migrations(runtime.engine)
    done = asyncio.Event()

    async def traced(ctx):
        done.set()

    runtime.registry.register(TaskKind("traced.kind", traced))
    app = create_app(settings, runtime=runtime, background=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.get("/v1/health", headers={"X-Correlation-ID": "corr-http-1"})
    from reelhouse.core.telemetry.correlation import correlation_scope
    from reelhouse.core.telemetry.tracing import span

    with correlation_scope("corr-enqueue-1"), span("enqueuer"):
        await TaskQueue(runtime.engine).enqueue("traced.kind")
    worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.05))
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(done.wait(), 20)
    worker.request_stop()
    await run
    trace.get_tracer_provider().force_flush()
    await runtime.aclose()


asyncio.run(main())
