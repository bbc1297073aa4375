"""The chat recording service of one process: the IRC client, the writer, the recorder, and in
auto mode the live poller, wired from ChatSettings and ArchiveSettings.

`run_chat_service(service, stop)` records until `stop` is set; the archive's composition root
(plugin.py) runs it next to the worker when CHAT_AUTO_START or manual mode (TWITCH_VOD_ID) is
configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.chat.auto import AutoChat, LiveStart
from reelhouse.archive.chat.recorder import ChatRecorder, manual_start
from reelhouse.archive.chat.settings import ChatSettings
from reelhouse.archive.chat.writer import ChatWriter
from reelhouse.archive.settings import ArchiveSettings
from reelhouse.archive.store.chat import ensure_vod
from reelhouse.archive.tokens import TokenStore
from reelhouse.archive.twitch.helix import HelixClient
from reelhouse.archive.twitch.irc_client import TwitchChatClient

log = logging.getLogger("reelhouse.archive.chat")


@dataclass
class ChatService:
    """What the chat parts of one process share: settings, the Helix client (the archive's),
    the watched channels, and the live state. Built by the archive's composition root."""

    engine: AsyncEngine
    chat: ChatSettings
    archive: ArchiveSettings
    tokens: TokenStore
    channels: Callable[[], Awaitable[list[str]]]
    helix: HelixClient | None = None
    auto: AutoChat | None = None
    # Called when auto mode sees a channel go live (the archive's live recording, live/task.py).
    on_live: Callable[[LiveStart], Awaitable[None]] | None = None
    recorder: ChatRecorder | None = field(default=None, repr=False)

    def is_recording(self, vod_id: str) -> bool:
        return self.auto is not None and self.auto.is_recording(vod_id)

    def status(self) -> dict[str, Any]:
        mode = "auto" if self.chat.auto_start else ("manual" if self.chat.manual_mode else "off")
        body: dict[str, Any] = {"mode": mode, "running": self.recorder is not None}
        if self.recorder is not None:
            client, writer = self.recorder.client, self.recorder.writer
            body.update(
                connected=client.connected,
                channels=sorted(client.channels),
                recording={c: b.vod_id for c, b in self.recorder.bindings.items()},
                reconnections=client.reconnections,
                written=writer.written,
                queued=writer.pending,
                dropped=writer.dropped + client.dropped,
                late=writer.late + client.late,
            )
        return body


def build_client(chat: ChatSettings, channels: list[str], tokens: TokenStore) -> TwitchChatClient:
    """TWITCH_OAUTH_TOKEN wins; else the stored `twitch` OAuth token (read at every connect,
    so a refreshed token is used); without TWITCH_BOT_USERNAME chat is read anonymously, which
    Twitch allows for reading."""
    token: Any = None
    if chat.bot_username:
        if chat.oauth_token:
            token = chat.oauth_token
        else:

            async def stored_token() -> str | None:
                saved = await tokens.load("twitch", "")
                return saved.access_token if saved is not None else None

            token = stored_token
    return TwitchChatClient(
        channels,
        token=token,
        nick=chat.bot_username or None,
        host=chat.irc_host,
        port=chat.irc_port,
        tls=chat.irc_tls,
        queue_size=chat.queue_size,
        late_after=chat.late_after.total_seconds(),
    )


async def run_chat_service(service: ChatService, stop: asyncio.Event) -> None:
    """Record chat (auto or manual mode) until `stop` is set; returns at once when neither mode
    is configured. Everything read before `stop` is written before this returns."""
    chat = service.chat
    if not chat.enabled:
        log.info(
            "chat recorder disabled (set CHAT_AUTO_START=1, or TWITCH_VOD_ID for manual mode)",
            extra={"component": "chat"},
        )
        return
    engine = service.engine
    channels = await service.channels()
    helix = service.helix if chat.auto_start else None
    if chat.auto_start and helix is None:
        log.error(
            "chat auto mode needs TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET for live detection",
            extra={"component": "chat"},
        )
        return
    if chat.manual_mode:
        # One VOD is one channel: TWITCH_CHANNEL, as in vod-tender, else the first watched one.
        channels = [service.archive.twitch_channel] if service.archive.twitch_channel else channels[:1]
        if not channels:
            log.error("chat manual mode needs TWITCH_CHANNEL", extra={"component": "chat"})
            return
    client = build_client(chat, channels, service.tokens)
    writer = ChatWriter(
        engine,
        batch_size=chat.batch_size,
        flush_interval=chat.flush_interval,
        queue_size=chat.queue_size,
        late_after=chat.late_after.total_seconds(),
    )
    recorder = ChatRecorder(client, writer)
    service.recorder = recorder
    await writer.start()
    consuming: asyncio.Task[None] | None = None
    try:
        if chat.manual_mode:
            started_at = manual_start(chat.vod_start)
            # vod-tender's manual mode wrote into a VOD row nothing created (FK failure, §12.15).
            await ensure_vod(
                engine, chat.vod_id, channel=channels[0], started_at=started_at, title=f"Chat recording {chat.vod_id}"
            )
            recorder.bind(channels[0], chat.vod_id, started_at)
        await client.start()
        consuming = asyncio.create_task(recorder.run(), name="chat-recorder")
        if chat.auto_start and helix is not None:
            service.auto = AutoChat(
                engine,
                helix,
                recorder,
                service.channels,
                poll_interval=chat.auto_poll_interval,
                reconcile_delay=chat.reconcile_delay,
                on_live=service.on_live,
            )
            await service.auto.run(stop)
        else:
            await stop.wait()
    finally:
        await client.stop()
        if consuming is not None:
            await consuming
        await writer.stop()
        service.recorder = None
        service.auto = None
        log.info(
            "chat recorder stopped (%d messages written, %d dropped)",
            writer.written,
            writer.dropped + client.dropped,
            extra={"component": "chat"},
        )
