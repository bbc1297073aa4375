"""Vault media: encrypted upload, transcode to a playable rendition, decrypting playback.

1. Upload: the request body is encrypted as it arrives (streaming AEAD, the message's own data
   key) and streamed into storage as the *source*; the data key is stored wrapped under the
   master key. Memory holds one segment; nothing plaintext is written anywhere.
2. `vault.transcode`: ffmpeg reads the source through a loopback server that decrypts ranges
   on demand, and writes a fragmented MP4 (H.264/AAC, or AAC alone for audio) back through
   it, which is encrypted into storage as the *media*. Then the source is deleted.
3. Playback: a byte range of the plaintext media maps to the segments that hold it; only
   those are fetched and decrypted (`StreamingAead.decrypt_range`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media import builtin_profile, plan_ladder, probe_media, run_ffmpeg
from reelhouse.core.media.encoders import video_pipeline
from reelhouse.core.media.ladder import build_mp4_args
from reelhouse.core.security.streaming import SegmentLayout, StreamingAead
from reelhouse.core.storage import ObjectInfo
from reelhouse.vault.errors import VaultError
from reelhouse.vault.loopback import LoopbackMedia, Source
from reelhouse.vault.models import MSG_FAILED, MSG_PROCESSING, MSG_READY, messages
from reelhouse.vault.store import get_row

if TYPE_CHECKING:
    from reelhouse.core.jobs.context import TaskContext
    from reelhouse.vault.services import VaultServices

TRANSCODE_KIND = "vault.transcode"
FRAGMENTED = "+frag_keyframe+empty_moov+default_base_moof"
ACCEPTED_TYPES = {
    "video/mp4",
    "video/webm",
    "video/quicktime",
    "video/x-matroska",
    "audio/webm",
    "audio/mp4",
    "audio/mpeg",
    "audio/ogg",
    "application/octet-stream",
}


def source_aad(message_id: int) -> bytes:
    return f"vault/message/{message_id}/source".encode()


def media_aad(message_id: int) -> bytes:
    return f"vault/message/{message_id}/media".encode()


class UploadTooLarge(VaultError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "FILE_TOO_LARGE", f"upload exceeds the {limit} byte limit (VAULT_MAX_UPLOAD_BYTES)")


async def bounded(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise UploadTooLarge(limit)
        if chunk:
            yield chunk


async def store_upload(
    services: VaultServices, message: Any, body: AsyncIterator[bytes], data_key: bytes
) -> tuple[str, int]:
    """Encrypt `body` into storage as the message's new source; returns (key, plaintext bytes)."""
    key = f"{services.settings.storage_prefix}/{message.plan_id}/{message.id}/source-{uuid.uuid4().hex}.rhs"
    aead = StreamingAead(data_key, services.settings.segment_size)
    storage = services.storage()
    try:
        info = await storage.put(
            key, aead.encrypt_stream(bounded(body, services.settings.max_upload_bytes), source_aad(message.id))
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await storage.delete(key)
        raise
    return key, SegmentLayout(services.settings.segment_size, info.size).plaintext_size


def decrypted_reader(
    services: VaultServices, aead: StreamingAead, key: str, cipher_size: int, aad: bytes
) -> Callable[[int, int], AsyncGenerator[bytes, None]]:
    storage = services.storage()

    def read(start: int, end: int) -> AsyncGenerator[bytes, None]:
        return aead.decrypt_range(lambda s, e: storage.get(key, (s, e)), cipher_size, aad, start, end)  # type: ignore[return-value]

    return read


async def transcode(services: VaultServices, ctx: TaskContext) -> dict[str, Any]:
    message_id, source_key = int(ctx.payload["message_id"]), str(ctx.payload["source_key"])
    async with services.store.read() as conn:
        message = await get_row(conn, messages, message_id)
    if message is None or message.status != MSG_PROCESSING or message.source_key != source_key:
        return {"skipped": "message changed since this upload"}
    storage = services.storage()
    data_key = services.unwrap_key(message)
    aead = StreamingAead(data_key, services.settings.segment_size)
    source_info = await storage.stat(source_key)
    plain_size = SegmentLayout(aead.segment_size, source_info.size).plaintext_size
    media_key = f"{services.settings.storage_prefix}/{message.plan_id}/{message.id}/media-{uuid.uuid4().hex}.rhs"

    async def store_output(chunks: AsyncIterator[bytes]) -> ObjectInfo:
        return await storage.put(media_key, aead.encrypt_stream(chunks, media_aad(message_id)))

    media_settings = services.runtime_settings.media
    source = Source(plain_size, decrypted_reader(services, aead, source_key, source_info.size, source_aad(message_id)))
    try:
        async with LoopbackMedia(source, store_output) as loop:
            info = await probe_media(loop.source_url, settings=media_settings)
            kind = "video" if info.video is not None else "audio"
            if kind == "video":
                rendition = plan_ladder(builtin_profile(services.settings.rendition_profile), info)[0]
                args = build_mp4_args(
                    loop.source_url,
                    loop.output_url,
                    rendition,
                    info,
                    pipeline=video_pipeline("cpu", info),
                    movflags=FRAGMENTED,
                )
            else:
                args = ["-i", loop.source_url, "-vn", "-map", "0:a:0", "-c:a", "aac", "-b:a", "128k"]
                args += ["-movflags", FRAGMENTED, "-f", "mp4", loop.output_url]

            async def progress(p) -> None:
                if p.percent is not None:
                    await ctx.report_progress(p.percent / 100)

            await run_ffmpeg(args, duration=info.duration, on_progress=progress, settings=media_settings)
            if loop.output is None:
                raise PermanentError("ffmpeg produced no output")
            media_info = await loop.output
    except PermanentError as exc:
        with contextlib.suppress(Exception):
            await storage.delete(media_key)
        await _fail(services, message_id, source_key, exc.reason)
        raise
    except BaseException:
        with contextlib.suppress(Exception):
            await storage.delete(media_key)
        raise
    media_plain = SegmentLayout(aead.segment_size, media_info.size).plaintext_size
    async with services.store.tx() as conn:
        result = await conn.execute(
            update(messages)
            .where(
                messages.c.id == message_id, messages.c.source_key == source_key, messages.c.status == MSG_PROCESSING
            )
            .values(
                status=MSG_READY,
                kind=kind,
                media_key=media_key,
                source_key=None,
                content_type="video/mp4" if kind == "video" else "audio/mp4",
                media_bytes=media_plain,
                cipher_bytes=media_info.size,
                duration_seconds=info.duration,
                error=None,
                ready_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    if result.rowcount != 1:  # replaced or revoked meanwhile: this output is nobody's
        await storage.delete(media_key)
        return {"skipped": "message changed during the transcode"}
    if message.media_key:
        await storage.delete(message.media_key)
    await storage.delete(source_key)
    return {"media_key": media_key, "bytes": media_plain, "kind": kind, "duration": info.duration}


async def _fail(services: VaultServices, message_id: int, source_key: str, reason: str) -> None:
    async with services.store.tx() as conn:
        await conn.execute(
            update(messages)
            .where(messages.c.id == message_id, messages.c.source_key == source_key)
            .values(status=MSG_FAILED, error=reason[:500], source_key=None, updated_at=utcnow())
        )
    with contextlib.suppress(Exception):
        await services.storage().delete(source_key)
