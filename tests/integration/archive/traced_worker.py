"""Runs in a subprocess (the tracer provider is process-global): with OTEL_EXPORTER_OTLP_ENDPOINT
set, enqueues one channel's discovery and runs a worker until the channel's VOD is uploaded,
then flushes the spans. JSON logs go to stderr for the test to match correlation ids."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy import func, select

from reelhouse.archive.models import vods
from reelhouse.archive.plugin import setup
from reelhouse.config import Settings
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.jobs.worker import Worker, WorkerOptions
from reelhouse.core.runtime import build_runtime
from reelhouse.core.telemetry.logging import setup_logging
from reelhouse.core.telemetry.tracing import flush_tracing, setup_tracing


async def main(channel: str) -> None:
    settings = Settings()
    setup_logging("info", "json")
    assert setup_tracing(settings.logging.otel_exporter_otlp_endpoint, 1.0)
    runtime = build_runtime(settings, load_domains=False)
    setup(runtime)
    await TaskQueue(runtime.engine).enqueue("vod.discover", {"channel": channel})
    worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.1, concurrency=2))
    run = asyncio.create_task(worker.run())
    try:
        for _ in range(1200):
            async with runtime.engine.connect() as conn:
                done = (
                    await conn.execute(select(func.count()).select_from(vods).where(vods.c.youtube_url.is_not(None)))
                ).scalar_one()
            if done:
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("the VOD was not uploaded in time")
    finally:
        worker.request_stop()
        await run
        flush_tracing()
        await runtime.aclose()


asyncio.run(main(sys.argv[1]))
