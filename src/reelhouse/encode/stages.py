"""What the encode tasks share: the task kinds, the progress bar's stages, the cancel checks
around a follow-up enqueue, and the errors that name a source by its storage key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from pydantic import ValidationError

from reelhouse.core.jobs import control
from reelhouse.core.jobs.context import TaskContext
from reelhouse.core.jobs.errors import LeaseLost, PermanentError, TaskError, TransientError
from reelhouse.core.jobs.queue import Enqueued
from reelhouse.core.media.profiles import Profile, load_profile
from reelhouse.core.storage import Storage
from reelhouse.core.telemetry.tracing import span
from reelhouse.encode import assets as asset_store
from reelhouse.encode.assets import RenditionRecord
from reelhouse.encode.outputs import Published
from reelhouse.encode.service import EncodeSpec

KIND_FETCH = "encode.fetch"
KIND_PROBE = "encode.probe"
KIND_TRANSCODE = "encode.transcode"
KIND_SEGMENT = "encode.segment"
KIND_STITCH = "encode.stitch"
ENCODE_KINDS = (KIND_FETCH, KIND_PROBE, KIND_TRANSCODE, KIND_SEGMENT, KIND_STITCH)

PROBE_TIMEOUT = 300.0
# Share of the transcode task's progress bar each stage takes.
DOWNLOAD_END, ENCODE_END = 0.05, 0.95
STITCH_DOWNLOAD_END = 0.2
# The worker notices a cancel request within its poll interval (0.5 s by default).
CANCEL_NOTICE_WAIT = 30.0


def about_source(exc: TaskError, locator: str, key: str) -> TaskError:
    """The same error naming the source by its storage key instead of `locator` (a scratch path,
    or a presigned URL, which in a job's error would hand out a read credential)."""
    if not isinstance(exc, PermanentError | TransientError):
        return exc
    reason = exc.reason.replace(locator, f"source {key}")
    if key not in reason:
        reason = f"source {key}: {reason}"
    return type(exc)(reason)


async def cancel_requested(ctx: TaskContext) -> bool:
    return ctx.task.id in await ctx.queue.cancel_requested([ctx.task.id])


async def await_cancellation() -> NoReturn:
    """Our cancel was requested but the worker has not cancelled us yet; let it, so the task
    ends `cancelled` through the normal path instead of starting the next step."""
    await asyncio.sleep(CANCEL_NOTICE_WAIT)
    raise PermanentError("cancelled")


async def enqueue_follow_up(ctx: TaskContext, kind: str, payload: dict[str, Any], **options: Any) -> Enqueued:
    # Checked on both sides of the enqueue: a cancel that lands while this task finishes must
    # not let the job carry on with a follow-up the cancel never saw.
    if await cancel_requested(ctx):
        await await_cancellation()
    key = options.pop("key", kind)
    enqueued = await ctx.enqueue_next(kind, payload, idempotency_key=f"encode:{ctx.task.job_id}:{key}", **options)
    if await cancel_requested(ctx):
        await control.cancel_task(ctx.queue.engine, enqueued.task_id)
        await await_cancellation()
    return enqueued


def traced(
    name: str, handler: Callable[[TaskContext], Awaitable[dict[str, Any]]]
) -> Callable[[TaskContext], Awaitable[dict[str, Any]]]:
    """`handler` run inside a span `name` (`encode` for the transcode) with the job's ids."""

    async def run(ctx: TaskContext) -> dict[str, Any]:
        attributes = {"encode.job_id": ctx.task.job_id, "encode.task_id": ctx.task.id}
        with span(name, attributes):
            return await handler(ctx)

    return run


async def quietly(cleanup: Any) -> None:
    """Run a cleanup whose refusal (the run lost its task) is already logged by the context."""
    with contextlib.suppress(LeaseLost):
        await cleanup


def done_result(asset: dict[str, Any]) -> dict[str, Any]:
    return {
        "stage": "done",
        "asset_id": asset["id"],
        "kind": asset["kind"],
        "master_key": asset["master_key"],
        "master_url": asset["master_url"],
        "renditions": [
            {
                "name": r["name"],
                "width": r["width"],
                "height": r["height"],
                "bandwidth": r["bandwidth"],
                "key": r["key"],
            }
            for r in asset["renditions"]
        ],
        "size_bytes": asset["size_bytes"],
        "reused": "published by an earlier run of this task",
    }


def profile_of(spec: EncodeSpec) -> Profile:
    try:
        return load_profile(spec.profile)
    except ValidationError as exc:
        raise PermanentError(f"profile {spec.profile_name!r} in the job is invalid: {exc}") from None


def published_result(asset_id: int | None, kind: str, published: Published, scope: str, **extra: Any) -> dict[str, Any]:
    """A transcode's or stitch's result: what it stored, plus under `publish` what the finish
    hook records (`publish_run`, which removes it from the result)."""
    return {
        "stage": "done",
        "asset_id": asset_id,
        "kind": kind,
        "master_key": published.master_key,
        "master_url": published.master_url,
        "renditions": [
            {"name": r.name, "width": r.width, "height": r.height, "bandwidth": r.bandwidth, "key": r.storage_key}
            for r in published.renditions
        ],
        "size_bytes": published.size_bytes,
        **extra,
        "publish": {
            "master_key": published.master_key,
            "renditions": [r.__dict__ for r in published.renditions],
            "size_bytes": published.size_bytes,
            "scope": scope,
        },
    }


async def publish_run(ctx: TaskContext, storage: Storage, result: dict[str, Any], publish: dict[str, Any]) -> None:
    """The compare-and-set that makes this run's outputs the asset's, only while the run holds
    the task; then other runs' leftovers go."""
    records = [RenditionRecord(**record) for record in publish["renditions"]]
    async with ctx.fenced("publish outputs") as conn:
        await asset_store.mark_ready(conn, result["asset_id"], publish["master_key"], records, publish["size_bytes"])
    spec = EncodeSpec.model_validate(ctx.payload)
    await ctx.outputs(storage, spec.output_prefix).sweep_other_runs(keep=publish["scope"])
