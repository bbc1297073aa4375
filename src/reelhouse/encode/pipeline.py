"""The encode job's tasks: `encode.fetch` (URL sources) -> `encode.probe` -> `encode.transcode`.

Every task reads its source through `Storage` and writes its outputs there, so any worker can
run any step (WebEncode's stitch needed the other workers' local disks). Intermediate files
live in a per-task scratch directory that is removed however the task ends. A transcode that
fails deletes what it uploaded; one cancelled by an operator deletes its outputs and its asset
row too, after `run_ffmpeg` has stopped ffmpeg.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from reelhouse.core.jobs import control
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TaskError, TransientError
from reelhouse.core.jobs.queue import Enqueued
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.media.ffmpeg import Progress
from reelhouse.core.media.ladder import LadderResult, Mp4Result, encode_hls_ladder, encode_mp4
from reelhouse.core.media.probe import MediaInfo, probe_media
from reelhouse.core.media.profiles import Profile, load_profile, plan_ladder
from reelhouse.core.storage import ObjectNotFound, Storage
from reelhouse.encode import assets as asset_store
from reelhouse.encode.fetch import FetchProgress, fetch_url
from reelhouse.encode.outputs import publish_outputs
from reelhouse.encode.service import (
    EncodeService,
    EncodeSpec,
    delete_prefix,
    download_to,
    local_path_of,
    probe_locator,
)

KIND_FETCH = "encode.fetch"
KIND_PROBE = "encode.probe"
KIND_TRANSCODE = "encode.transcode"
ENCODE_KINDS = (KIND_FETCH, KIND_PROBE, KIND_TRANSCODE)

PROBE_TIMEOUT = 300.0
# Share of the transcode task's progress bar each stage takes.
DOWNLOAD_END, ENCODE_END = 0.05, 0.95
# The worker notices a cancel request within its poll interval (0.5 s by default).
CANCEL_NOTICE_WAIT = 30.0


def _about_source(exc: TaskError, locator: str, key: str) -> TaskError:
    """The same error naming the source by its storage key instead of `locator` (a scratch path,
    or a presigned URL, which in a job's error would hand out a read credential)."""
    if not isinstance(exc, PermanentError | TransientError):
        return exc
    reason = exc.reason.replace(locator, f"source {key}")
    if key not in reason:
        reason = f"source {key}: {reason}"
    return type(exc)(reason)


async def _cancel_requested(ctx: TaskContext) -> bool:
    return ctx.task.id in await ctx.queue.cancel_requested([ctx.task.id])


async def _await_cancellation() -> NoReturn:
    """Our cancel was requested but the worker has not cancelled us yet; let it, so the task
    ends `cancelled` through the normal path instead of starting the next step."""
    await asyncio.sleep(CANCEL_NOTICE_WAIT)
    raise PermanentError("cancelled")


async def _enqueue_follow_up(ctx: TaskContext, kind: str, payload: dict[str, Any],
                             **options: Any) -> Enqueued:
    # Checked on both sides of the enqueue: a cancel that lands while this task finishes must
    # not let the job carry on with a follow-up the cancel never saw.
    if await _cancel_requested(ctx):
        await _await_cancellation()
    enqueued = await ctx.enqueue_next(kind, payload, idempotency_key=f"encode:{ctx.task.job_id}:{kind}",
                                      **options)
    if await _cancel_requested(ctx):
        await control.cancel_task(ctx.queue.engine, enqueued.task_id)
        await _await_cancellation()
    return enqueued


class EncodePipeline:
    def __init__(self, service: EncodeService) -> None:
        self.service = service

    def register(self, registry: TaskRegistry) -> None:
        conf = self.service.settings
        registry.register(TaskKind(KIND_FETCH, self.fetch, max_attempts=conf.max_attempts,
                                   timeout=conf.fetch_timeout.total_seconds()))
        registry.register(TaskKind(KIND_PROBE, self.probe, max_attempts=conf.max_attempts,
                                   timeout=PROBE_TIMEOUT))
        registry.register(TaskKind(KIND_TRANSCODE, self.transcode, max_attempts=conf.max_attempts,
                                   timeout=conf.transcode_timeout.total_seconds(),
                                   concurrency_per_worker=conf.transcode_concurrency))

    def follow_up_options(self, kind: str) -> dict[str, Any]:
        conf = self.service.settings
        timeout = {KIND_FETCH: conf.fetch_timeout.total_seconds(), KIND_PROBE: PROBE_TIMEOUT,
                   KIND_TRANSCODE: conf.transcode_timeout.total_seconds()}[kind]
        return {"max_attempts": conf.max_attempts, "timeout_seconds": timeout}

    # ---- encode.fetch ---------------------------------------------------------------------
    async def fetch(self, ctx: TaskContext) -> dict[str, Any]:
        spec = EncodeSpec.model_validate(ctx.payload)
        assert spec.source_url is not None
        storage = self.service.storage()
        key = None
        # A retried task still shows its previous attempt's detail until this replaces it.
        await ctx.report_progress(0.0, force=True, stage="fetching")

        async def on_progress(progress: FetchProgress) -> None:
            await ctx.report_progress(progress.fraction or 0.0, stage="fetching",
                                      downloaded_bytes=progress.downloaded, total_bytes=progress.total,
                                      speed_bytes=progress.speed, eta_seconds=progress.eta_seconds)

        try:
            async with self.service.scratch(f"fetch-{ctx.task.job_id}") as tmp:
                path = await fetch_url(spec.source_url, tmp, max_bytes=self.service.settings.max_upload_bytes,
                                       on_progress=on_progress,
                                       ffmpeg_path=self.service.runtime.settings.media.ffmpeg_path)
                key = f"{self.service.settings.upload_prefix}/job-{ctx.task.job_id}/{path.name}"
                stored = await storage.put(key, path)
            next_spec = spec.model_copy(update={"source_key": key, "source_name": path.name})
            await _enqueue_follow_up(ctx, KIND_PROBE, next_spec.payload(), **self.follow_up_options(KIND_PROBE))
        except asyncio.CancelledError:
            if key is not None:
                await asyncio.shield(storage.delete(key))
            raise
        return {"stage": "fetched", "source_key": key, "size_bytes": stored.size}

    # ---- encode.probe ---------------------------------------------------------------------
    async def probe(self, ctx: TaskContext) -> dict[str, Any]:
        spec = EncodeSpec.model_validate(ctx.payload)
        key = spec.source_key or ""
        storage = self.service.storage()
        await ctx.report_progress(0.0, force=True, stage="probing")
        try:
            locator = await probe_locator(storage, key)
        except ObjectNotFound:
            raise PermanentError(f"source {key!r} is not in storage (deleted after the job was submitted?)") from None
        try:
            info = await probe_media(locator, settings=self.service.runtime.settings.media)
        except TaskError as exc:
            raise _about_source(exc, locator, key) from None
        profile = _profile(spec)
        if info.video is None:
            codecs = ", ".join(a.codec for a in info.audio_streams) or "none"
            raise PermanentError(f"source {key} has no video stream to encode (audio streams: {codecs})")
        planned = plan_ladder(profile, info)
        try:
            asset_id = await asset_store.ensure_asset(self.service.engine, ctx.task.job_id, spec, info)
            probe_doc = {**info.model_dump(mode="json"), "path": key}
            await _enqueue_follow_up(ctx, KIND_TRANSCODE, spec.payload(asset_id=asset_id, probe=probe_doc),
                                     **self.follow_up_options(KIND_TRANSCODE))
        except asyncio.CancelledError:
            if await asyncio.shield(_cancel_requested(ctx)):
                await asyncio.shield(asset_store.delete_asset_of_job(self.service.engine, ctx.task.job_id))
            raise
        video = info.video
        return {
            "stage": "probed", "asset_id": asset_id, "duration": info.duration,
            "video": {"codec": video.codec, "width": video.display_width, "height": video.display_height,
                      "fps": video.fps},
            "audio": [{"codec": a.codec, "channels": a.channels} for a in info.audio_streams],
            "planned": [{"name": r.name, "width": r.width, "height": r.height} for r in planned],
        }

    # ---- encode.transcode -----------------------------------------------------------------
    async def transcode(self, ctx: TaskContext) -> dict[str, Any]:
        spec = EncodeSpec.model_validate(ctx.payload)
        info = MediaInfo.model_validate(ctx.payload["probe"])
        profile = _profile(spec)
        storage = self.service.storage()
        engine = self.service.engine
        uploaded: list[str] = []
        asset_id: int | None = None
        await ctx.report_progress(0.0, force=True, stage="preparing")
        try:
            asset_id = await asset_store.ensure_asset(engine, ctx.task.job_id, spec, info)
            async with self.service.scratch(f"transcode-{ctx.task.job_id}") as tmp:
                source = await self._local_source(ctx, storage, spec.source_key or "", tmp)
                out_dir = tmp / "out"
                try:
                    result = await self._encode(ctx, profile, source, info, out_dir)
                except TaskError as exc:
                    raise _about_source(exc, str(source), spec.source_key or "") from None
                published = await publish_outputs(ctx, storage, spec.output_prefix, out_dir, result, uploaded,
                                                  progress_from=ENCODE_END,
                                                  media_settings=self.service.runtime.settings.media)
            await asset_store.mark_ready(engine, asset_id, published.master_key, published.renditions,
                                         published.size_bytes)
        except asyncio.CancelledError:
            await asyncio.shield(self._after_cancel(ctx, storage, spec, asset_id, uploaded))
            raise
        except Exception as exc:
            await asyncio.shield(self._after_failure(ctx, storage, spec, asset_id, exc))
            raise
        return {
            "stage": "done", "asset_id": asset_id, "kind": profile.kind,
            "master_key": published.master_key, "master_url": published.master_url,
            "renditions": [{"name": r.name, "width": r.width, "height": r.height,
                            "bandwidth": r.bandwidth, "key": r.storage_key} for r in published.renditions],
            "size_bytes": published.size_bytes, "backend": result.backend,
            "encode_seconds": round(result.ffmpeg.elapsed, 2),
        }

    async def _local_source(self, ctx: TaskContext, storage: Storage, key: str, tmp: Path) -> Path:
        path = local_path_of(storage, key)
        if path is not None:
            return path

        async def on_bytes(done: int, total: int) -> None:
            await ctx.report_progress(DOWNLOAD_END * done / max(total, 1), stage="downloading",
                                      downloaded_bytes=done, total_bytes=total)

        try:
            return await download_to(storage, key, tmp / f"source{Path(key).suffix[:10]}", on_bytes)
        except ObjectNotFound:
            raise PermanentError(f"source {key!r} is no longer in storage") from None

    async def _encode(self, ctx: TaskContext, profile: Profile, source: Path, info: MediaInfo,
                      out_dir: Path) -> LadderResult | Mp4Result:
        async def on_progress(progress: Progress) -> None:
            percent = progress.percent or 0.0
            await ctx.report_progress(
                DOWNLOAD_END + (ENCODE_END - DOWNLOAD_END) * percent / 100, stage="encoding",
                percent=round(percent, 1), fps=progress.fps, speed=progress.speed,
                eta_seconds=round(progress.eta_seconds, 1) if progress.eta_seconds is not None else None,
                out_time=round(progress.out_time, 2))

        await ctx.report_progress(DOWNLOAD_END, force=True, stage="encoding", percent=0.0)
        media = self.service.runtime.settings.media
        if profile.kind == "hls":
            return await encode_hls_ladder(source, out_dir, profile, info=info, on_progress=on_progress,
                                           settings=media)
        rung = plan_ladder(profile, info)[0]
        return await encode_mp4(source, out_dir / f"{rung.name}.mp4", profile, info=info,
                                on_progress=on_progress, settings=media)

    async def _after_cancel(self, ctx: TaskContext, storage: Storage, spec: EncodeSpec,
                            asset_id: int | None, uploaded: list[str]) -> None:
        engine = self.service.engine
        if await _cancel_requested(ctx):
            # An operator's cancel: no trace of the job may remain, neither files nor asset.
            if asset_id is not None:
                await delete_prefix(storage, spec.output_prefix)
            await asset_store.delete_asset_of_job(engine, ctx.task.job_id)
            return
        # A timeout, a worker shutting down, a lost lease: the task runs again (or is dead);
        # only this attempt's uploads go, since another run may already own the prefix.
        for key in reversed(uploaded):
            await storage.delete(key)
        if asset_id is not None and ctx.attempt >= ctx.task.max_attempts:
            await asset_store.mark_failed(engine, asset_id, "interrupted on the last attempt (timeout or worker stop)")

    async def _after_failure(self, ctx: TaskContext, storage: Storage, spec: EncodeSpec,
                             asset_id: int | None, exc: Exception) -> None:
        if asset_id is None:
            return  # the prefix may belong to another job's asset: touch nothing
        await delete_prefix(storage, spec.output_prefix)
        final = isinstance(exc, PermanentError) or ctx.attempt >= ctx.task.max_attempts
        if final:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            await asset_store.mark_failed(self.service.engine, asset_id, reason)


def _profile(spec: EncodeSpec) -> Profile:
    try:
        return load_profile(spec.profile)
    except ValidationError as exc:
        raise PermanentError(f"profile {spec.profile_name!r} in the job is invalid: {exc}") from None
