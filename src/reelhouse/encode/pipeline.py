"""The encode job's tasks: `encode.fetch` (URL sources) -> `encode.probe` -> `encode.transcode`.

Every task reads its source through `Storage` and writes its outputs there, so any worker can
run any step (WebEncode's stitch needed the other workers' local disks). Intermediate files
live in a per-task scratch directory that is removed however the task ends. A transcode that
fails deletes what it uploaded; one cancelled by an operator deletes its outputs and its asset
row too, after `run_ffmpeg` has stopped ffmpeg.

Fencing: outputs are written under `<prefix>/run-<fence>/` and published by marking the asset
ready in a fenced transaction; every write and delete a run makes is checked against its
lease (TaskContext), so a run that lost its task (paused past its lease, say) can neither
overwrite nor delete what the run that took over wrote. A rerun that finds its asset already
published (the earlier run's worker died before recording success) returns it as it is.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import LeaseLost, PermanentError, TaskError
from reelhouse.core.jobs.fencing import FencedOutputs
from reelhouse.core.jobs.registry import TaskKind, TaskRegistry
from reelhouse.core.media.encoders import H264_ENCODERS, HARDWARE_BACKENDS
from reelhouse.core.media.ffmpeg import Progress
from reelhouse.core.media.ladder import LadderResult, Mp4Result, encode_hls_ladder, encode_mp4
from reelhouse.core.media.probe import MediaInfo, probe_media
from reelhouse.core.media.profiles import Profile, plan_ladder
from reelhouse.core.net.outbound import OutboundPolicy, guarded_proxy
from reelhouse.core.storage import ObjectNotFound, Storage
from reelhouse.encode import assets as asset_store
from reelhouse.encode.fetch import FetchProgress, fetch_url
from reelhouse.encode.models import ASSET_READY
from reelhouse.encode.outputs import upload_outputs
from reelhouse.encode.segmented import SegmentedEncode
from reelhouse.encode.service import (
    EncodeService,
    EncodeSpec,
    download_to,
    local_path_of,
    probe_locator,
)
from reelhouse.encode.stages import (  # noqa: F401 (the kinds are imported from here elsewhere)
    DOWNLOAD_END,
    ENCODE_END,
    ENCODE_KINDS,
    KIND_FETCH,
    KIND_PROBE,
    KIND_SEGMENT,
    KIND_STITCH,
    KIND_TRANSCODE,
    PROBE_TIMEOUT,
    about_source,
    cancel_requested,
    done_result,
    enqueue_follow_up,
    profile_of,
    publish_run,
    published_result,
    quietly,
    traced,
)


class EncodePipeline:
    def __init__(self, service: EncodeService) -> None:
        self.service = service
        self.segmented = SegmentedEncode(service, self.follow_up_options)

    def register(self, registry: TaskRegistry) -> None:
        conf = self.service.settings
        fetch, probe, transcode = (
            traced(n, h)
            for n, h in (("encode.fetch", self.fetch), ("encode.probe", self.probe), ("encode", self.transcode))
        )
        registry.register(
            TaskKind(KIND_FETCH, fetch, max_attempts=conf.max_attempts, timeout=conf.fetch_timeout.total_seconds())
        )
        registry.register(TaskKind(KIND_PROBE, probe, max_attempts=conf.max_attempts, timeout=PROBE_TIMEOUT))
        # The three kinds that keep a core busy run on NATS workers too: the handler is the
        # database-free part (storage and ffmpeg only); the finish and settle hooks are the
        # database part (run by the worker, or by the kernel in NATS mode). A transcode and a
        # segment piece are limited per worker; a stitch copies streams and is not.
        for kind, handler, finish, settle, limited in (
            (KIND_TRANSCODE, transcode, self.publish, self.settle, True),
            (
                KIND_SEGMENT,
                self.segmented.encode_piece,
                self.segmented.finish_piece,
                self.segmented.settle_segmented,
                True,
            ),
            (
                KIND_STITCH,
                self.segmented.stitch_remote,
                self.segmented.finish_stitch_hook,
                self.segmented.settle_segmented,
                False,
            ),
        ):
            registry.register(
                TaskKind(
                    kind,
                    handler,
                    max_attempts=conf.max_attempts,
                    timeout=conf.transcode_timeout.total_seconds(),
                    concurrency_per_worker=conf.transcode_concurrency if limited else None,
                    remote=True,
                    finish=finish,
                    settle=settle,
                )
            )

    def follow_up_options(self, kind: str) -> dict[str, Any]:
        conf = self.service.settings
        timeout = {
            KIND_FETCH: conf.fetch_timeout.total_seconds(),
            KIND_PROBE: PROBE_TIMEOUT,
            KIND_TRANSCODE: conf.transcode_timeout.total_seconds(),
            KIND_SEGMENT: conf.transcode_timeout.total_seconds(),
            KIND_STITCH: conf.transcode_timeout.total_seconds(),
        }[kind]
        options: dict[str, Any] = {"max_attempts": conf.max_attempts, "timeout_seconds": timeout}
        settings = self.service.runtime.settings
        hw_accel = settings.media.hw_accel
        if kind == KIND_TRANSCODE and hw_accel in HARDWARE_BACKENDS and settings.jobs.nats_url:
            # With a fleet of NATS workers and HW_ACCEL naming a backend, the transcode goes only
            # to a worker whose test encode passed with it (seed 002's "job requires nvidia") and
            # waits for one otherwise; a single database worker falls back to libx264 instead.
            options["required_capability"] = H264_ENCODERS[hw_accel]
        return options

    # ---- encode.fetch ---------------------------------------------------------------------
    async def fetch(self, ctx: TaskContext) -> dict[str, Any]:
        spec = EncodeSpec.model_validate(ctx.payload)
        assert spec.source_url is not None
        storage = self.service.storage()
        key = None
        # A retried task still shows its previous attempt's detail until this replaces it.
        await ctx.report_progress(0.0, force=True, stage="fetching")

        async def on_progress(progress: FetchProgress) -> None:
            await ctx.report_progress(
                progress.fraction or 0.0,
                stage="fetching",
                downloaded_bytes=progress.downloaded,
                total_bytes=progress.total,
                speed_bytes=progress.speed,
                eta_seconds=progress.eta_seconds,
            )

        try:
            # Every connection yt-dlp makes (redirects included) goes through the SSRF guard.
            policy = OutboundPolicy.from_settings(self.service.runtime.settings)
            async with self.service.scratch(f"fetch-{ctx.task.job_id}") as tmp, guarded_proxy(policy) as proxy:
                path = await fetch_url(
                    spec.source_url,
                    tmp,
                    max_bytes=self.service.settings.max_upload_bytes,
                    on_progress=on_progress,
                    ffmpeg_path=self.service.runtime.settings.media.ffmpeg_path,
                    proxy=proxy,
                    downloader=self.service.runtime.settings.media.ytdlp_downloader,
                )
                source = ctx.outputs(storage, f"{self.service.settings.upload_prefix}/job-{ctx.task.job_id}")
                stored = await source.put(path.name, path)
                key = source.key(path.name)
            next_spec = spec.model_copy(update={"source_key": key, "source_name": path.name})
            await enqueue_follow_up(ctx, KIND_PROBE, next_spec.payload(), **self.follow_up_options(KIND_PROBE))
        except asyncio.CancelledError:
            if key is not None:
                await asyncio.shield(quietly(source.discard()))
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
            raise about_source(exc, locator, key) from None
        profile = profile_of(spec)
        if info.video is None:
            codecs = ", ".join(a.codec for a in info.audio_streams) or "none"
            raise PermanentError(f"source {key} has no video stream to encode (audio streams: {codecs})")
        specs = spec.per_profile()
        profiles = [(each, profile_of(each)) for each in specs]
        planned = plan_ladder(profile, info)
        pieces = await self.segmented.plan_pieces(ctx, locator, key, info, profiles)
        asset_ids: list[int] = []
        try:
            probe_doc = {**info.model_dump(mode="json"), "path": key}
            for each, each_profile in profiles:
                asset_id = await asset_store.ensure_asset(self.service.engine, ctx.task.job_id, each, info)
                asset_ids.append(asset_id)
                if len(pieces) > 1:
                    await self.segmented.enqueue_pieces(ctx, each, each_profile, asset_id, probe_doc, info, pieces)
                    continue
                idempotency = KIND_TRANSCODE if len(specs) == 1 else f"{KIND_TRANSCODE}:{each.profile_name}"
                await enqueue_follow_up(
                    ctx,
                    KIND_TRANSCODE,
                    each.payload(asset_id=asset_id, probe=probe_doc),
                    key=idempotency,
                    **self.follow_up_options(KIND_TRANSCODE),
                )
        except asyncio.CancelledError:
            if await asyncio.shield(cancel_requested(ctx)):
                await asyncio.shield(quietly(self._delete_asset(ctx)))
            raise
        asset_id = asset_ids[0]
        video = info.video
        return {
            "stage": "probed",
            "asset_id": asset_id,
            "duration": info.duration,
            "video": {
                "codec": video.codec,
                "width": video.display_width,
                "height": video.display_height,
                "fps": video.fps,
            },
            "audio": [{"codec": a.codec, "channels": a.channels} for a in info.audio_streams],
            "planned": [{"name": r.name, "width": r.width, "height": r.height} for r in planned],
            "profiles": [each.profile_name for each in specs],
            "asset_ids": asset_ids,
            "segments": [{"start": p.start, "end": p.end} for p in pieces] if len(pieces) > 1 else None,
        }

    # ---- encode.transcode -----------------------------------------------------------------
    async def transcode(self, ctx: TaskContext) -> dict[str, Any]:
        spec = EncodeSpec.model_validate(ctx.payload)
        info = MediaInfo.model_validate(ctx.payload["probe"])
        profile = profile_of(spec)
        storage = self.service.storage()
        if ctx.has_database:  # a NATS worker has none; its rerun re-encodes instead
            published_before = await asset_store.get_asset(
                self.service.engine, job_id=ctx.task.job_id, profile_name=spec.profile_name
            )
            if published_before and published_before["status"] == ASSET_READY and published_before["master_key"]:
                # An earlier run published the outputs, then its worker died before recording
                # success: the work is done.
                return done_result(published_before)
        outputs = ctx.outputs(storage, spec.output_prefix)
        asset_id: int | None = ctx.payload.get("asset_id") if not ctx.has_database else None
        if asset_id is None and not ctx.has_database:
            raise PermanentError("the transcode task carries no asset id (submitted by an older version?)")
        await ctx.report_progress(0.0, force=True, stage="preparing")
        try:
            if ctx.has_database:
                await ctx.check_lease("create the asset")
                asset_id = await asset_store.ensure_asset(self.service.engine, ctx.task.job_id, spec, info)
            async with self.service.scratch(f"transcode-{ctx.task.job_id}") as tmp:
                source = await self._local_source(ctx, storage, spec.source_key or "", tmp)
                out_dir = tmp / "out"
                try:
                    result = await self._encode(ctx, profile, source, info, out_dir)
                except TaskError as exc:
                    raise about_source(exc, str(source), spec.source_key or "") from None
                published = await upload_outputs(
                    ctx,
                    outputs,
                    out_dir,
                    result,
                    progress_from=ENCODE_END,
                    media_settings=self.service.runtime.settings.media,
                )
        except asyncio.CancelledError:
            await asyncio.shield(quietly(self._after_cancel(ctx, outputs, asset_id)))
            raise
        except Exception as exc:
            await asyncio.shield(quietly(self._after_failure(outputs, asset_id, exc)))
            raise
        return published_result(
            asset_id,
            profile.kind,
            published,
            outputs.scope,
            backend=result.backend,
            encode_seconds=round(result.ffmpeg.elapsed, 2),
        )

    async def publish(self, ctx: TaskContext, result: dict[str, Any]) -> dict[str, Any]:
        """The transcode's finish hook, on the database side (the worker that ran it, or the
        kernel that got a NATS worker's result): the compare-and-set that makes the run's
        outputs the asset's, only while the run holds the task; then other runs' leftovers go."""
        publish = result.pop("publish", None)
        if publish is None:
            return result  # reused: an earlier run published these outputs
        await publish_run(ctx, self.service.storage(), result, publish)
        return result

    async def settle(self, conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        """The transcode ended without success: a cancelled job keeps no asset (its run
        deleted the files), a failed or dead one shows why."""
        await self.segmented.settle_pieces(conn, job_id, status, reason)

    async def _local_source(self, ctx: TaskContext, storage: Storage, key: str, tmp: Path) -> Path:
        path = local_path_of(storage, key)
        if path is not None:
            return path

        async def on_bytes(done: int, total: int) -> None:
            await ctx.report_progress(
                DOWNLOAD_END * done / max(total, 1), stage="downloading", downloaded_bytes=done, total_bytes=total
            )

        try:
            return await download_to(storage, key, tmp / f"source{Path(key).suffix[:10]}", on_bytes)
        except ObjectNotFound:
            raise PermanentError(f"source {key!r} is no longer in storage") from None

    async def _encode(
        self, ctx: TaskContext, profile: Profile, source: Path, info: MediaInfo, out_dir: Path
    ) -> LadderResult | Mp4Result:
        async def on_progress(progress: Progress) -> None:
            percent = progress.percent or 0.0
            await ctx.report_progress(
                DOWNLOAD_END + (ENCODE_END - DOWNLOAD_END) * percent / 100,
                stage="encoding",
                percent=round(percent, 1),
                fps=progress.fps,
                speed=progress.speed,
                eta_seconds=round(progress.eta_seconds, 1) if progress.eta_seconds is not None else None,
                out_time=round(progress.out_time, 2),
            )

        await ctx.report_progress(DOWNLOAD_END, force=True, stage="encoding", percent=0.0)
        media = self.service.runtime.settings.media
        if profile.kind == "hls":
            return await encode_hls_ladder(source, out_dir, profile, info=info, on_progress=on_progress, settings=media)
        rung = plan_ladder(profile, info)[0]
        return await encode_mp4(
            source, out_dir / f"{rung.name}.mp4", profile, info=info, on_progress=on_progress, settings=media
        )

    async def _delete_asset(self, ctx: TaskContext) -> None:
        async with ctx.fenced("delete the asset") as conn:
            await asset_store.delete_asset_of_job(conn, ctx.task.job_id)

    async def _after_cancel(self, ctx: TaskContext, outputs: FencedOutputs, asset_id: int | None) -> None:
        # The asset row follows in `settle` (cancelled: deleted; dead: marked failed).
        if await ctx.cancel_requested():
            # An operator's cancel: no trace of the job may remain, neither files nor asset.
            if asset_id is not None:
                await outputs.delete_all()
            return
        # A timeout, a worker shutting down, a lost lease: the task runs again (or is dead);
        # only this run's uploads go (refused if the run lost its task).
        await outputs.discard()

    async def _after_failure(self, outputs: FencedOutputs, asset_id: int | None, exc: Exception) -> None:
        if asset_id is None or isinstance(exc, LeaseLost):
            return  # the prefix may belong to another job's asset, or the task to another run
        await outputs.discard()
