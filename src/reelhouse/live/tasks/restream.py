"""`live.restream`: one destination of a live stream, its own ffmpeg (codec copy) pulling from
the ingest and pushing to the destination. A destination that fails is retried with backoff
(core/jobs/retry.py) inside the task, and its state says so; other destinations and the ingest
never notice. The task ends when the stream ends or the destination is stopped.

`live.restream_file`: a file in storage or a URL, sent `-re` (at its own pace), once or looped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.jobs.retry import BackoffPolicy
from reelhouse.core.security.crypto import CryptoError
from reelhouse.live import kinds
from reelhouse.live.services import LiveServices
from reelhouse.live.store import StreamNotFound
from reelhouse.live.tasks.process import LiveProcess

log = logging.getLogger("reelhouse.live.restream")
STABLE_AFTER = 30.0  # a connection that lasted this long resets the backoff
CHECK_INTERVAL = 1.0


def target_url(url: str, key: str | None) -> str:
    if not key:
        return url
    return url.rstrip("/") + "/" + key


def output_format(url: str) -> list[str]:
    return ["-f", "flv"] if url.startswith(("rtmp://", "rtmps://")) else ["-f", "mpegts"]


async def restream(services: LiveServices, ctx: TaskContext) -> dict[str, Any]:
    destination_id = int(ctx.payload["destination_id"])
    stream_id, session = int(ctx.payload["stream_id"]), int(ctx.payload["session"])
    store = services.store
    settings = services.settings
    backoff = BackoffPolicy(base=1.0, cap=settings.restream_backoff_cap.total_seconds())
    failures = 0
    loop = asyncio.get_running_loop()
    media = services.runtime_settings.media
    timeout_us = int(settings.input_timeout.total_seconds() * 1e6)
    while True:
        try:
            stream = await store.get_stream(stream_id)
        except StreamNotFound:
            return {"ended": "stream deleted"}
        destination = await store.get_destination(destination_id)
        if destination is None:
            return {"ended": "destination deleted"}
        if not destination["enabled"]:
            await store.update_destination(destination_id, state=kinds.DEST_STOPPED, state_at=utcnow())
            return {"ended": "stopped"}
        if not stream["is_live"] or stream["session"] != session:
            await store.update_destination(destination_id, state=kinds.DEST_IDLE, state_at=utcnow())
            return {"ended": "stream ended"}
        key = None
        if destination["key_ciphertext"]:
            try:
                key = services.keyring.decrypt_text(
                    destination["key_ciphertext"], services.destination_key_context(destination_id)
                )
            except CryptoError as exc:
                raise PermanentError(f"destination key cannot be decrypted: {exc}") from None
        url = target_url(destination["url"], key)
        argv = [
            media.ffmpeg_path, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-progress", "pipe:1",
            "-rw_timeout", str(timeout_us), "-i", settings.ingest_url(stream["playback_id"]),
            "-map", "0", "-c", "copy", *output_format(url), url,
        ]  # fmt: skip
        await ctx.check_lease("start restream")
        await store.update_destination(
            destination_id, state=kinds.DEST_CONNECTING, task_id=ctx.task.id, state_at=utcnow()
        )
        started = loop.time()
        process = await LiveProcess.start(argv)
        marked_live = False
        try:
            while process.running:
                await process.wait(CHECK_INTERVAL)
                if not marked_live and process.out_time > 0.5:
                    marked_live = True
                    await store.update_destination(
                        destination_id, state=kinds.DEST_LIVE, last_error=None, state_at=utcnow()
                    )
                current = await store.get_destination(destination_id)
                if current is None or not current["enabled"]:
                    break
        finally:
            await process.stop()
        lasted = loop.time() - started
        if lasted >= STABLE_AFTER:
            failures = 0
        current = await store.get_destination(destination_id)
        if current is None or not current["enabled"]:
            continue  # the top of the loop records why it ends
        try:
            stream = await store.get_stream(stream_id)
        except StreamNotFound:
            return {"ended": "stream deleted"}
        if not stream["is_live"] or stream["session"] != session:
            continue
        failures += 1
        delay = backoff.delay(failures)
        log.warning(
            "restream destination failed; retrying in %.1fs", delay,
            extra={"component": "live", "destination_id": destination_id, "error": process.error_text()},
        )  # fmt: skip
        await store.update_destination(
            destination_id,
            state=kinds.DEST_RETRYING,
            last_error=process.error_text(),
            reconnects=int(current["reconnects"]) + 1,
            state_at=utcnow(),
        )
        await asyncio.sleep(delay)


async def restream_file(services: LiveServices, ctx: TaskContext) -> dict[str, Any]:
    restream_id = int(ctx.payload["restream_id"])
    store = services.store
    row = await store.get_restream(restream_id)
    if row is None:
        raise PermanentError(f"restream {restream_id} was deleted")
    key = None
    if row["key_ciphertext"]:
        try:
            key = services.keyring.decrypt_text(row["key_ciphertext"], services.restream_key_context(restream_id))
        except CryptoError as exc:
            raise PermanentError(f"restream key cannot be decrypted: {exc}") from None
    url = target_url(row["url"], key)
    media = services.runtime_settings.media
    if row["source_kind"] == "key":
        storage = services.storage()
        local = getattr(storage, "local_path", None)
        source = str(local(row["source"])) if local is not None else await storage.signed_url(row["source"], 24 * 3600)
    else:
        source = row["source"]
    loop_args = ["-stream_loop", "-1"] if row["mode"] == "loop" else []
    argv = [
        media.ffmpeg_path, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-progress", "pipe:1",
        "-re", *loop_args, "-i", source, "-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy", *output_format(url), url,
    ]  # fmt: skip
    await store.update_restream(restream_id, state="running", last_error=None)
    process = await LiveProcess.start(argv)
    try:
        while process.running:
            await process.wait(CHECK_INTERVAL)
            with contextlib.suppress(Exception):
                await ctx.report_progress(0.0, out_time=round(process.out_time, 1))
    except asyncio.CancelledError:
        await process.stop()
        await store.update_restream(restream_id, state="stopped")
        raise
    await process.stop()
    if process.process.returncode != 0:
        await store.update_restream(restream_id, state="retrying", last_error=process.error_text())
        raise TransientError(f"restream failed: {process.error_text()}")
    await store.update_restream(restream_id, state="finished")
    return {"sent_seconds": round(process.out_time, 1)}
