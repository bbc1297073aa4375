"""Encode domain registration: called by core through the `reelhouse.domains` entry point."""

from __future__ import annotations

from dataclasses import dataclass

from reelhouse.core.runtime import Runtime
from reelhouse.encode import models  # noqa: F401 - registers the encode tables on the metadata
from reelhouse.encode.api import build_api_router
from reelhouse.encode.media import build_media_router
from reelhouse.encode.metrics import encode_status, refresh_metrics
from reelhouse.encode.pipeline import EncodePipeline
from reelhouse.encode.service import EncodeService
from reelhouse.encode.settings import EncodeSettings


@dataclass(frozen=True)
class EncodeDomain:
    service: EncodeService
    pipeline: EncodePipeline


def setup(runtime: Runtime, settings: EncodeSettings | None = None) -> EncodeDomain:
    """Register the encode task kinds, HTTP routes, /status section and /metrics gauges.

    Returns the domain's objects so the CLI and tests reach the same service and pipeline.
    """
    service = EncodeService(runtime, settings)
    pipeline = EncodePipeline(service)
    pipeline.register(runtime.registry)
    runtime.routers.append(build_api_router(service, pipeline))
    runtime.routers.append(build_media_router(service))
    runtime.status_providers.append(encode_status)
    runtime.metric_refreshers.append(refresh_metrics)
    runtime.services.append(service.run_service)
    return EncodeDomain(service, pipeline)
