"""`live.finalize`: the recording of one session, remuxed into an MP4 in storage, then an
encode job with the stream's profile (created through the core job queue: the live domain
never imports encode) turns it into a VOD asset."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.media.ffmpeg import run_ffmpeg
from reelhouse.core.media.probe import probe_media
from reelhouse.core.media.profiles import builtin_profile
from reelhouse.live.hls import Track
from reelhouse.live.services import LiveServices
from reelhouse.live.store import StreamNotFound

# The encode domain's job contract (docs/API.md, POST /v1/jobs with a storage key): a job of
# kind `encode` whose first task `encode.probe` carries the source and the profile snapshot.
ENCODE_JOB_KIND = "encode"
ENCODE_FIRST_TASK = "encode.probe"
FINAL_CHUNK_GRACE = 2.0


async def finalize(services: LiveServices, ctx: TaskContext) -> dict[str, Any]:
    stream_id, session = int(ctx.payload["stream_id"]), int(ctx.payload["session"])
    store = services.store
    try:
        stream = await store.get_stream(stream_id)
    except StreamNotFound:
        raise PermanentError(f"stream {stream_id} was deleted") from None
    if stream["is_live"] and stream["session"] == session:
        raise TransientError("the session is still live")
    # nginx closes the last chunk around the time it reports the publish done; give its
    # callback a moment to land.
    await asyncio.sleep(FINAL_CHUNK_GRACE)
    recording = await store.recording(stream_id, session)
    if recording is None:
        raise PermanentError(f"stream {stream_id} has no recording of session {session}")
    if recording["encode_job_id"] is not None:
        return {"encode_job_id": recording["encode_job_id"], "already": True}
    storage = services.storage()
    folder = services.recording_folder(stream_id, session)
    track = await Track.load(storage, folder, None)
    if not stream["record"] or not track.segments:
        await store.update_recording(stream_id, session, state="empty", ended_at=utcnow())
        return {"recorded": False}
    await store.update_recording(stream_id, session, state="finalizing", segments=len(track.segments))
    target_key = f"{services.stream_prefix(stream_id)}/recordings/{session}.mp4"
    async with services.scratch(f"finalize-{stream_id}-{session}") as work:
        lines = []
        media = services.runtime_settings.media
        for index, segment in enumerate(track.segments):
            path = work / f"{index:06d}{Path(segment.uri).suffix}"
            with path.open("wb") as handle:
                async with contextlib.aclosing(storage.get(f"{folder}/{segment.uri}")) as body:
                    async for chunk in body:
                        handle.write(chunk)
            # nginx writes a chunk's streams in the order their first packets came (audio first
            # in some): one stream order for all, so the concat demuxer lines them up.
            normal = work / f"{index:06d}.mp4"
            await run_ffmpeg(
                ["-i", str(path), "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", str(normal)], settings=media
            )
            path.unlink()
            lines.append(f"file '{normal.name}'")
        (work / "list.txt").write_text("\n".join(lines) + "\n")
        out = work / "recording.mp4"
        await run_ffmpeg(
            ["-f", "concat", "-safe", "0", "-i", str(work / "list.txt"), "-map", "0", "-c", "copy",
             "-movflags", "+faststart", str(out)],
            settings=services.runtime_settings.media,
        )  # fmt: skip
        info = await probe_media(out, settings=services.runtime_settings.media)
        await ctx.check_lease("store recording")
        await storage.put(target_key, out)
    try:
        profile = builtin_profile(stream["profile"])
    except LookupError as exc:
        raise PermanentError(str(exc)) from None
    queue = TaskQueue(ctx.queue.engine)
    async with ctx.fenced("create the VOD encode") as conn:
        payload = {
            "source_kind": "key",
            "source_key": target_key,
            "source_url": None,
            "source_name": f"{stream['title'][:60]} ({session}).mp4",
            "profile_name": profile.name,
            "profile": profile.model_dump(mode="json"),
            "output_prefix": f"{services.settings.vod_output_prefix}/{stream_id}-{session}-{ctx.task.job_id}",
        }
        job_id = await queue.create_job(
            conn, ENCODE_JOB_KIND, {**payload, "requested_by": f"live stream {stream_id}"}, user_id=stream["user_id"]
        )
        await queue.add_task(
            conn, job_id, ENCODE_FIRST_TASK, payload, idempotency_key=f"encode:{job_id}:{ENCODE_FIRST_TASK}",
            max_attempts=3, timeout_seconds=600,
        )  # fmt: skip
        await store.update_recording(
            stream_id, session, conn, state="encoding", duration=info.duration, source_key=target_key,
            encode_job_id=job_id, ended_at=utcnow(), segments=len(track.segments),
        )  # fmt: skip
    for segment in track.segments:  # the MP4 holds them now
        await storage.delete(f"{folder}/{segment.uri}")
    return {"encode_job_id": job_id, "duration": info.duration}
