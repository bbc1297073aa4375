"""The live watch: live recording without chat. With CHAT_AUTO_START off nothing else asks
Helix whether a channel is live, so this runs chat auto mode's poller (chat/auto.py) without a
chat recorder over the watched channels whose `record_mode` is `live` or `both`, every
LIVE_RECORD_POLL_INTERVAL: a channel going live gets its placeholder and its `vod.live_record`
task (task.py's trigger), and when it ends its placeholder is reconciled with the real VOD
(`chat.reconcile`, which then has no chat to move) so the recording is settled as with chat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from reelhouse.archive.chat.auto import AutoChat
from reelhouse.archive.live.task import live_trigger

if TYPE_CHECKING:
    from reelhouse.archive.services import ArchiveServices

log = logging.getLogger("reelhouse.archive.live.watch")


def live_watch(services: ArchiveServices) -> AutoChat:
    assert services.helix is not None

    async def live_channels() -> list[str]:
        return await services.live.live_channels(await services.watched_channels())

    return AutoChat(
        services.vods.engine,
        services.helix,
        None,
        live_channels,
        poll_interval=services.live_settings.poll_interval,
        reconcile_delay=services.chat_settings.reconcile_delay,
        on_live=live_trigger(services),
    )


async def run_live_watch(services: ArchiveServices, stop: asyncio.Event) -> None:
    watch = live_watch(services)
    log.info(
        "watching live-recorded channels every %s (chat auto mode is off)",
        services.live_settings.poll_interval,
        extra={"component": "live"},
    )
    await watch.run(stop)
