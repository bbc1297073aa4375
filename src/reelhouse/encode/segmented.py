"""Segment-parallel encoding: the source split at keyframes into pieces, one `encode.segment`
task per (rung, piece) on whichever workers are idle, then `encode.stitch` joins them into the
ladder (or MP4).

Each kind is a database-free part (`encode_piece`, `stitch_pieces`: payload, storage, ffmpeg,
progress, fenced outputs) and a database part (`finish_piece`, `finish_stitch`,
`settle_pieces`), so a worker without database credentials runs the first (the NATS
transport's finish/settle hooks) while the kernel records the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from reelhouse.core.jobs import states
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import PermanentError, TaskError, TransientError
from reelhouse.core.media.ffmpeg import Progress
from reelhouse.core.media.ladder import MP4_KEYFRAME_SECONDS, LadderResult, Mp4Result
from reelhouse.core.media.probe import MediaInfo
from reelhouse.core.media.profiles import Profile, Rendition, plan_ladder
from reelhouse.core.media.segments import Piece, encode_segment, keyframe_times, plan_segments, stitch_hls, stitch_mp4
from reelhouse.core.storage import ObjectNotFound, Storage
from reelhouse.encode import assets as asset_store
from reelhouse.encode import segments as segment_store
from reelhouse.encode.models import ASSET_READY
from reelhouse.encode.outputs import upload_outputs
from reelhouse.encode.service import EncodeService, EncodeSpec, delete_prefix, download_to, local_path_of
from reelhouse.encode.stages import (
    ENCODE_END,
    KIND_SEGMENT,
    KIND_STITCH,
    STITCH_DOWNLOAD_END,
    about_source,
    await_cancellation,
    cancel_requested,
    done_result,
    profile_of,
    publish_run,
    published_result,
    quietly,
)


class SegmentedEncode:
    def __init__(self, service: EncodeService, follow_up_options: Callable[[str], dict[str, Any]]) -> None:
        self.service = service
        self.follow_up_options = follow_up_options

    # ---- segment-parallel: planning ---------------------------------------------------------
    async def plan_pieces(
        self, ctx: TaskContext, locator: str, key: str, info: MediaInfo, profiles: list[tuple[EncodeSpec, Profile]]
    ) -> list[Piece]:
        """The pieces to encode in parallel, or a single piece (the one-task path)."""
        conf = self.service.settings
        duration = info.duration or 0.0
        if conf.segmented == "never" or duration < 2 * conf.segment_min_seconds:
            return [Piece(0, 0.0, None)]
        idle = await segment_store.idle_capable_workers(
            self.service.engine,
            KIND_SEGMENT,
            stale_after=self.service.runtime.settings.jobs.worker_stale_after,
            ignore_task=ctx.task.id,
        )
        count = segment_store.segment_count(
            idle, per_worker=conf.segments_per_worker, maximum=conf.max_segments, mode=conf.segmented
        )
        if count < 2:
            return [Piece(0, 0.0, None)]
        try:
            keyframes = await keyframe_times(locator, self.service.runtime.settings.media)
        except TaskError as exc:
            raise about_source(exc, locator, key) from None
        grid = min(self.grid_seconds(profile) for _spec, profile in profiles)
        return plan_segments(duration, keyframes, count, min_seconds=conf.segment_min_seconds, grid_seconds=grid)

    def grid_seconds(self, profile: Profile) -> int:
        if profile.kind == "mp4":
            return MP4_KEYFRAME_SECONDS
        return profile.segment_seconds or self.service.runtime.settings.media.hls_segment_seconds

    async def enqueue_pieces(
        self,
        ctx: TaskContext,
        spec: EncodeSpec,
        profile: Profile,
        asset_id: int,
        probe_doc: dict[str, Any],
        info: MediaInfo,
        pieces: list[Piece],
    ) -> None:
        """One `encode.segment` task per (rung, piece) and their rows, in one fenced transaction."""
        rungs = plan_ladder(profile, info)
        if profile.kind == "mp4":
            rungs = rungs[:1]
        if await cancel_requested(ctx):
            await await_cancellation()
        options = self.follow_up_options(KIND_SEGMENT)
        async with ctx.fenced("plan the segments") as conn:
            if not await segment_store.create_rows(conn, asset_id, [r.name for r in rungs], pieces):
                return
            for rung in rungs:
                for piece in pieces:
                    length = piece.duration if piece.duration is not None else (info.duration or 0.0) - piece.start
                    payload = spec.payload(
                        asset_id=asset_id,
                        probe=probe_doc,
                        rung=rung.model_dump(mode="json"),
                        piece={"index": piece.index, "start": piece.start, "end": piece.end, "length": length},
                        grid_seconds=self.grid_seconds(profile),
                    )
                    await ctx.queue.enqueue(
                        KIND_SEGMENT,
                        payload,
                        job_id=ctx.task.job_id,
                        conn=conn,
                        idempotency_key=f"encode:{ctx.task.job_id}:segment:{spec.profile_name}:{rung.name}:{piece.index}",
                        **options,
                    )

    async def source_locator(self, storage: Storage, key: str) -> str:
        """Where ffmpeg reads the source: the file itself, or a signed URL that outlives the
        task (ffmpeg seeks over HTTP ranges, so a piece reads only its part of the source)."""
        path = local_path_of(storage, key)
        if path is not None:
            return str(path)
        try:
            await storage.stat(key)
        except ObjectNotFound:
            raise PermanentError(f"source {key!r} is no longer in storage") from None
        return await storage.signed_url(key, int(self.service.settings.transcode_timeout.total_seconds()) + 600)

    # ---- encode.segment ----------------------------------------------------------------------
    # Each kind is a database-free part (`encode_piece`, `stitch_pieces`: payload, storage,
    # ffmpeg, progress, fenced outputs) and a database part (`finish_piece`, `finish_stitch`,
    # `settle_pieces`), so a worker without database credentials can run the first (the
    # NATS transport's finish/settle hooks) while the kernel records the outcome.
    async def encode_piece(self, ctx: TaskContext) -> dict[str, Any]:
        """Encode one piece of one rung and store it in this run's scope (no database)."""
        spec = EncodeSpec.model_validate(ctx.payload)
        info = MediaInfo.model_validate(ctx.payload["probe"])
        rung = Rendition.model_validate(ctx.payload["rung"])
        doc = ctx.payload["piece"]
        piece = Piece(int(doc["index"]), float(doc["start"]), doc["end"])
        storage = self.service.storage()
        outputs = ctx.outputs(storage, f"{spec.output_prefix}/parts/{rung.name}/{piece.index:04d}")
        await ctx.report_progress(0.0, force=True, stage="encoding", rung=rung.name, piece=piece.index)
        key = spec.source_key or ""
        try:
            locator = await self.source_locator(storage, key)

            async def on_progress(progress: Progress) -> None:
                await ctx.report_progress(
                    ENCODE_END * (progress.percent or 0.0) / 100,
                    stage="encoding",
                    rung=rung.name,
                    piece=piece.index,
                    speed=progress.speed,
                    eta_seconds=round(progress.eta_seconds, 1) if progress.eta_seconds is not None else None,
                )

            async with self.service.scratch(f"segment-{ctx.task.job_id}") as tmp:
                try:
                    result = await encode_segment(
                        locator,
                        tmp / "part.ts",
                        rung,
                        info,
                        piece,
                        grid_seconds=int(ctx.payload["grid_seconds"]),
                        on_progress=on_progress,
                        settings=self.service.runtime.settings.media,
                    )
                except TaskError as exc:
                    raise about_source(exc, locator, key) from None
                stored = await outputs.put("part.ts", tmp / "part.ts")
        except BaseException:
            await asyncio.shield(quietly(outputs.discard()))
            raise
        return {
            "stage": "segment done",
            "worker": ctx.owner,
            "asset_id": int(ctx.payload["asset_id"]),
            "rung": rung.name,
            "piece": piece.index,
            "start": piece.start,
            "end": piece.end,
            "key": outputs.key("part.ts"),
            "size_bytes": stored.size,
            "encode_seconds": round(result.elapsed, 2),
        }

    async def finish_piece(self, ctx: TaskContext, result: dict[str, Any]) -> dict[str, Any]:
        """Record the piece (fenced); the run that records the last one enqueues the stitch,
        with every piece's key in its payload."""
        spec = EncodeSpec.model_validate(ctx.payload)
        asset_id = int(result["asset_id"])
        async with ctx.fenced("record the segment") as conn:
            if not await asset_store.asset_exists(conn, asset_id):
                raise PermanentError(f"asset {asset_id} is gone (the job was cancelled); submit the job again")
            pending = await segment_store.mark_done(
                conn,
                asset_id,
                result["rung"],
                result["piece"],
                result["key"],
                result["size_bytes"],
                result["encode_seconds"],
            )
            if pending == 0:
                parts = [
                    {
                        "rung": row.rung,
                        "idx": row.idx,
                        "key": row.storage_key,
                        "start": row.start_seconds,
                        "end": row.end_seconds,
                    }
                    for row in await segment_store.rows_of(conn, asset_id)
                ]
                await ctx.queue.enqueue(
                    KIND_STITCH,
                    spec.payload(asset_id=asset_id, probe=ctx.payload["probe"], parts=parts),
                    job_id=ctx.task.job_id,
                    conn=conn,
                    idempotency_key=f"encode:{ctx.task.job_id}:stitch:{spec.profile_name}",
                    **self.follow_up_options(KIND_STITCH),
                )
        return {**result, "stitch": pending == 0}

    async def stitch_remote(self, ctx: TaskContext) -> dict[str, Any]:
        """The stitch as a remote kind: the published-before shortcut needs the database."""
        if ctx.has_database:
            asset = await asset_store.get_asset(self.service.engine, asset_id=int(ctx.payload["asset_id"]))
            if asset and asset["status"] == ASSET_READY and asset["master_key"]:
                return done_result(asset)
        return await self.stitch_pieces(ctx)

    async def finish_stitch_hook(self, ctx: TaskContext, result: dict[str, Any]) -> dict[str, Any]:
        if "publish" not in result:
            return result  # an earlier run published the ladder
        return await self.finish_stitch(ctx, result)

    async def settle_segmented(self, conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        """A piece or the stitch ended without success (inside that transition's transaction).
        An operator's cancel: the job's other pieces may never run, so every profile's outputs
        (pieces included) and the assets go; otherwise every unpublished asset shows why."""
        if status == states.CANCELLED:
            # The storage deletes hold the job's row lock while they run (cancels are rare). A
            # crash before the commit leaves the task running: the reaper hands it on and the
            # cancel is settled again, so no asset row outlives its deleted files.
            storage = self.service.storage()
            for asset in await asset_store.asset_rows_of_job(conn, job_id):
                await delete_prefix(storage, asset["output_prefix"])
        await self.settle_pieces(conn, job_id, status, reason)

    async def settle_pieces(self, conn: AsyncConnection, job_id: int, status: str, reason: str) -> None:
        """A piece, stitch or transcode ended without success (database side, in that
        transition's transaction): a cancelled job keeps no asset, a failed one shows why on
        every profile's asset."""
        if status == states.CANCELLED:
            await asset_store.delete_asset_of_job(conn, job_id)
            return
        for asset in await asset_store.asset_rows_of_job(conn, job_id):
            if asset["status"] != ASSET_READY:
                await asset_store.mark_failed(conn, asset["id"], reason)

    # ---- encode.stitch -----------------------------------------------------------------------
    async def stitch_pieces(self, ctx: TaskContext) -> dict[str, Any]:
        """Join the stored pieces into the ladder (or MP4) and store it in this run's scope (no
        database: the pieces' keys are in the payload)."""
        spec = EncodeSpec.model_validate(ctx.payload)
        info = MediaInfo.model_validate(ctx.payload["probe"])
        profile = profile_of(spec)
        asset_id = int(ctx.payload["asset_id"])
        rows = list(ctx.payload["parts"])
        storage = self.service.storage()
        outputs = ctx.outputs(storage, spec.output_prefix)
        await ctx.report_progress(0.0, force=True, stage="downloading segments")
        rungs = plan_ladder(profile, info)
        if profile.kind == "mp4":
            rungs = rungs[:1]
        try:
            async with self.service.scratch(f"stitch-{ctx.task.job_id}") as tmp:
                parts: dict[str, list[tuple[Path, float | None]]] = {}
                for number, row in enumerate(sorted(rows, key=lambda r: (r["rung"], r["idx"])), 1):
                    target = tmp / "parts" / row["rung"] / f"{row['idx']:04d}.ts"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        await download_to(storage, row["key"], target)
                    except ObjectNotFound:
                        raise TransientError(f"segment {row['key']} is missing from storage") from None
                    end = row["end"]
                    parts.setdefault(row["rung"], []).append((target, None if end is None else end - row["start"]))
                    await ctx.report_progress(STITCH_DOWNLOAD_END * number / len(rows), stage="downloading segments")
                missing = [r.name for r in rungs if r.name not in parts]
                if missing:
                    raise PermanentError(f"no encoded segments for rung(s) {', '.join(missing)}")
                locator = await self.source_locator(storage, spec.source_key or "")

                async def on_progress(progress: Progress) -> None:
                    percent = progress.percent or 0.0
                    await ctx.report_progress(
                        STITCH_DOWNLOAD_END + (ENCODE_END - STITCH_DOWNLOAD_END) * percent / 100,
                        stage="stitching",
                        percent=round(percent, 1),
                    )

                out_dir = tmp / "out"
                media = self.service.runtime.settings.media
                result: LadderResult | Mp4Result
                try:
                    if profile.kind == "hls":
                        result = await stitch_hls(
                            parts,
                            locator,
                            out_dir,
                            rungs,
                            info,
                            segment_seconds=self.grid_seconds(profile),
                            on_progress=on_progress,
                            settings=media,
                        )
                    else:
                        result = await stitch_mp4(
                            parts[rungs[0].name],
                            locator,
                            out_dir / f"{rungs[0].name}.mp4",
                            rungs[0],
                            info,
                            on_progress=on_progress,
                            settings=media,
                        )
                except TaskError as exc:
                    raise about_source(exc, locator, spec.source_key or "") from None
                published = await upload_outputs(
                    ctx, outputs, out_dir, result, progress_from=ENCODE_END, media_settings=media
                )
        except BaseException:
            await asyncio.shield(quietly(outputs.discard()))
            raise
        return published_result(
            asset_id,
            profile.kind,
            published,
            outputs.scope,
            segments=len(rows),
            stitch_seconds=round(result.ffmpeg.elapsed, 2),
        )

    async def finish_stitch(self, ctx: TaskContext, result: dict[str, Any]) -> dict[str, Any]:
        """Publish the stitched outputs (fenced compare-and-set), then remove other runs'
        leftovers and the pieces."""
        storage = self.service.storage()
        await publish_run(ctx, storage, result, result.pop("publish"))
        spec = EncodeSpec.model_validate(ctx.payload)
        await ctx.check_lease("delete the segments")
        await delete_prefix(storage, f"{spec.output_prefix}/parts")
        return result
