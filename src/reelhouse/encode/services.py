"""What encode's routes and handlers share, built once by plugin.py and provided to the routes
(`component(EncodeServices)`): the service (settings, storage, scratch), the pipeline, the
event feed and the webhooks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.encode.events import EventFeed
from reelhouse.encode.pipeline import EncodePipeline
from reelhouse.encode.plugins import PluginState
from reelhouse.encode.publish import Publishing
from reelhouse.encode.service import EncodeService
from reelhouse.encode.webhooks import Webhooks


@dataclass(frozen=True)
class EncodeServices:
    service: EncodeService
    pipeline: EncodePipeline
    events: EventFeed
    webhooks: Webhooks
    plugins: PluginState
    publishing: Publishing

    @property
    def engine(self) -> AsyncEngine:
        return self.service.engine
