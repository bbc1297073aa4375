"""Encode domain registration: called by core through the `reelhouse.domains` entry point."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from reelhouse.core.jobs.registry import TaskKind
from reelhouse.core.runtime import Runtime
from reelhouse.core.security.audit_stream import AuditStream
from reelhouse.core.security.settings import AuditStreamSettings
from reelhouse.encode import models  # noqa: F401 - registers the encode tables on the metadata
from reelhouse.encode.events import EventFeed
from reelhouse.encode.metrics import count_event, counted, encode_status, refresh_metrics
from reelhouse.encode.pipeline import EncodePipeline
from reelhouse.encode.plugins import PluginState, build_registry
from reelhouse.encode.publish import KIND_PUBLISH, Publishing
from reelhouse.encode.service import JOB_KIND, EncodeService
from reelhouse.encode.services import EncodeServices
from reelhouse.encode.settings import EncodeSettings
from reelhouse.encode.webhooks import KIND_DELIVER, Webhooks


@dataclass(frozen=True)
class EncodeDomain:
    service: EncodeService
    pipeline: EncodePipeline


def webencode_job_fields(job: dict[str, Any]) -> dict[str, Any]:
    """WebEncode's `source_url` and `profiles` of an encode job (GET /v1/jobs[/{id}])."""
    payload = job.get("payload") or {}
    source = payload.get("source_url") or payload.get("source_key") or ""
    profile = payload.get("profile_name")
    more = [str(choice.get("name")) for choice in payload.get("more_profiles") or [] if isinstance(choice, dict)]
    return {"source_url": str(source), "profiles": [profile, *more] if profile else []}


async def audit_publisher(runtime: Runtime, stop: asyncio.Event) -> None:
    """WebEncode's audit copy on JetStream (seed 002: 90 days), when NATS_URL is set."""
    conf = runtime.settings.section(AuditStreamSettings)
    stream = AuditStream(
        runtime.engine, runtime.settings.jobs.nats_url, stream=conf.stream, subject=conf.subject, max_age=conf.max_age
    )
    await stream.run(stop)


def install_http(runtime: Runtime, *, service: EncodeService, plugins: PluginState) -> None:
    """The API routers, the media router and the browser pages (only when an app is built).
    The server loads the plugins now, so a broken one is logged at start-up."""
    from reelhouse.encode import http
    from reelhouse.encode.media import build_media_router
    from reelhouse.encode.pages import build_pages

    plugins.registry  # noqa: B018 - loads it
    runtime.routers.extend(http.routers())
    runtime.routers.append(build_media_router(service))
    runtime.add_pages(build_pages(service))


def setup(runtime: Runtime, settings: EncodeSettings | None = None) -> EncodeDomain:
    """Register the encode task kinds, HTTP routes, browser pages, /status section and /metrics gauges.

    Returns the domain's objects so the CLI and tests reach the same service and pipeline.
    """
    service = EncodeService(runtime, settings)
    pipeline = EncodePipeline(service)
    pipeline.register(runtime.registry)
    for name, kind in list(runtime.registry.kinds.items()):
        if name.startswith("encode."):
            runtime.registry.kinds[name] = replace(kind, handler=counted(kind.handler, name))
    conf = service.settings
    webhooks = Webhooks(runtime.engine, conf, runtime.settings)
    runtime.registry.register(
        TaskKind(
            KIND_DELIVER,
            webhooks.deliver,
            max_attempts=conf.webhook_max_attempts,
            backoff_base=conf.webhook_backoff_base.total_seconds(),
            backoff_cap=conf.webhook_backoff_cap.total_seconds(),
            timeout=conf.webhook_timeout.total_seconds() * 3,
        )
    )
    events = EventFeed(runtime.engine, stale_after=runtime.settings.jobs.worker_stale_after)
    events.listeners.extend([count_event, webhooks.on_event])
    plugins = PluginState(runtime.engine, partial(build_registry, conf.plugin_dir))
    publishing = Publishing(service, plugins)
    runtime.registry.register(
        TaskKind(
            KIND_PUBLISH,
            publishing.run,
            max_attempts=5,
            backoff_base=10.0,
            timeout=conf.transcode_timeout.total_seconds(),
        )
    )
    services = EncodeServices(service, pipeline, events, webhooks, plugins, publishing)
    runtime.provide(services)
    runtime.job_views[JOB_KIND] = webencode_job_fields

    async def feed(_runtime: Runtime, stop: asyncio.Event) -> None:
        await events.run(stop, conf.event_poll_interval.total_seconds())

    runtime.services.append(feed)
    if runtime.settings.jobs.nats_url:
        runtime.services.append(audit_publisher)
    runtime.http_installers.append(partial(install_http, service=service, plugins=plugins))
    runtime.status_providers.append(encode_status)
    runtime.metric_refreshers.append(refresh_metrics)
    runtime.closers.append(service.close_storage)
    return EncodeDomain(service, pipeline)
