"""Asset and rendition records: created by the probe, completed by the transcode, removed on cancel."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_transaction
from reelhouse.core.db.models import jobs
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.media.probe import MediaInfo
from reelhouse.encode.models import (
    ASSET_ENCODING,
    ASSET_FAILED,
    ASSET_READY,
    assets,
    renditions,
)
from reelhouse.encode.service import JOB_KIND, EncodeSpec, media_url


@dataclass(frozen=True)
class RenditionRecord:
    name: str
    width: int
    height: int
    bandwidth: int
    codecs: str | None
    storage_key: str
    content_type: str
    segment_count: int | None
    size_bytes: int


@contextlib.asynccontextmanager
async def _writing(engine: AsyncEngine | AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """A transaction that holds the write lock from its first statement (BEGIN IMMEDIATE on
    SQLite): a read-then-write transaction that upgrades later fails with "database is locked"
    when another writer got in between, instead of waiting its turn. Given a connection (a
    task's fenced transaction), the writes join that transaction instead."""
    if isinstance(engine, AsyncConnection):
        yield engine
        return
    async with write_transaction(engine) as conn:
        yield conn


async def ensure_asset(engine: AsyncEngine, job_id: int, spec: EncodeSpec, info: MediaInfo) -> int:
    """The job's asset id, creating the row if needed (first probe, or a retry after a cancel
    deleted it). The unique output prefix makes a second job aiming at the same prefix fail
    here, before it could overwrite or delete the first one's files."""
    video = info.video
    values = {
        "status": ASSET_ENCODING,
        "source_kind": spec.source_kind,
        "source_key": spec.source_key or "",
        "source_url": spec.source_url,
        "profile_name": spec.profile_name,
        "kind": spec.profile.get("kind", "hls"),
        "output_prefix": spec.output_prefix,
        "probe": info.model_dump(mode="json", exclude={"path"}),
        "duration": info.duration,
        "width": video.display_width if video else None,
        "height": video.display_height if video else None,
        "error": None,
        "updated_at": utcnow(),
    }
    async with _writing(engine) as conn:
        existing = (
            await conn.execute(
                select(assets.c.id).where(assets.c.job_id == job_id, assets.c.profile_name == spec.profile_name)
            )
        ).scalar()
        if existing is not None:
            await conn.execute(update(assets).where(assets.c.id == existing).values(**values))
            return int(existing)
    overlapping = await prefix_taken(engine, spec.output_prefix, except_job=job_id)
    if overlapping is not None:
        raise PermanentError(
            f"output prefix {spec.output_prefix!r} overlaps the outputs of asset {overlapping}; "
            "choose another output_prefix"
        )
    try:
        async with _writing(engine) as conn:
            result = await conn.execute(
                assets.insert().values(job_id=job_id, created_at=values["updated_at"], **values).returning(assets.c.id)
            )
            return int(result.scalar_one())
    except IntegrityError:
        async with engine.connect() as conn:
            holder = (
                await conn.execute(
                    select(assets.c.id, assets.c.job_id).where(assets.c.output_prefix == spec.output_prefix)
                )
            ).first()
        if holder is None:
            raise
        raise PermanentError(
            f"output prefix {spec.output_prefix!r} already belongs to asset {holder.id} "
            f"(job {holder.job_id}); choose another output_prefix"
        ) from None


async def asset_exists(conn: AsyncConnection, asset_id: int) -> bool:
    return (await conn.execute(select(assets.c.id).where(assets.c.id == asset_id))).first() is not None


async def mark_ready(
    engine: AsyncEngine | AsyncConnection,
    asset_id: int,
    master_key: str,
    records: list[RenditionRecord],
    size_bytes: int,
) -> None:
    now = utcnow()
    async with _writing(engine) as conn:
        await conn.execute(delete(renditions).where(renditions.c.asset_id == asset_id))
        if records:
            await conn.execute(renditions.insert(), [{"asset_id": asset_id, **record.__dict__} for record in records])
        await conn.execute(
            update(assets)
            .where(assets.c.id == asset_id)
            .values(
                status=ASSET_READY,
                master_key=master_key,
                size_bytes=size_bytes,
                error=None,
                updated_at=now,
                completed_at=now,
            )
        )


async def mark_failed(engine: AsyncEngine | AsyncConnection, asset_id: int, error: str) -> None:
    async with _writing(engine) as conn:
        await conn.execute(delete(renditions).where(renditions.c.asset_id == asset_id))
        await conn.execute(
            update(assets)
            .where(assets.c.id == asset_id)
            .values(status=ASSET_FAILED, master_key=None, size_bytes=None, error=error, updated_at=utcnow())
        )


async def delete_asset_of_job(engine: AsyncEngine | AsyncConnection, job_id: int) -> None:
    async with _writing(engine) as conn:
        ids = (await conn.execute(select(assets.c.id).where(assets.c.job_id == job_id))).scalars().all()
        if ids:
            # Explicit, not only ON DELETE CASCADE: the schema must not depend on a pragma.
            await conn.execute(delete(renditions).where(renditions.c.asset_id.in_(ids)))
            await conn.execute(delete(assets).where(assets.c.id.in_(ids)))


async def delete_asset(engine: AsyncEngine, asset_id: int) -> None:
    async with _writing(engine) as conn:
        await conn.execute(delete(renditions).where(renditions.c.asset_id == asset_id))
        await conn.execute(delete(assets).where(assets.c.id == asset_id))


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _rendition_view(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "width": row.width,
        "height": row.height,
        "bandwidth": row.bandwidth,
        "codecs": row.codecs,
        "key": row.storage_key,
        "url": media_url(row.storage_key),
        "content_type": row.content_type,
        "segment_count": row.segment_count,
        "size_bytes": row.size_bytes,
    }


def _asset_view(row: Any, rungs: list[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_id": row.job_id,
        "status": row.status,
        "kind": row.kind,
        "profile": row.profile_name,
        "output_prefix": row.output_prefix,
        "source": {"kind": row.source_kind, "key": row.source_key, "url": row.source_url},
        "master_key": row.master_key,
        "master_url": media_url(row.master_key) if row.master_key else None,
        "duration": row.duration,
        "width": row.width,
        "height": row.height,
        "size_bytes": row.size_bytes,
        "error": row.error,
        "renditions": [_rendition_view(r) for r in rungs],
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "completed_at": _iso(row.completed_at),
    }


async def get_asset(
    engine: AsyncEngine, *, asset_id: int | None = None, job_id: int | None = None, profile_name: str | None = None
) -> dict[str, Any] | None:
    """By id, or the job's asset (its first profile's, unless `profile_name` says which)."""
    condition = assets.c.id == asset_id if asset_id is not None else assets.c.job_id == job_id
    if profile_name is not None:
        condition = condition & (assets.c.profile_name == profile_name)
    async with engine.connect() as conn:
        row = (await conn.execute(select(assets).where(condition).order_by(assets.c.id).limit(1))).first()
        if row is None:
            return None
        rungs = (
            await conn.execute(
                select(renditions).where(renditions.c.asset_id == row.id).order_by(renditions.c.height.desc())
            )
        ).all()
    return _asset_view(row, list(rungs))


async def asset_rows_of_job(conn: AsyncConnection, job_id: int) -> list[dict[str, Any]]:
    """The job's asset rows (no renditions), read in the caller's transaction: a settle hook
    runs inside the task's fenced transition."""
    query = select(assets).where(assets.c.job_id == job_id).order_by(assets.c.id)
    return [dict(row) for row in (await conn.execute(query)).mappings()]


async def list_assets_of_job(engine: AsyncEngine, job_id: int) -> list[dict[str, Any]]:
    """Every asset of a job, one per profile, in the order the profiles were given."""
    async with engine.connect() as conn:
        ids = (await conn.execute(select(assets.c.id).where(assets.c.job_id == job_id).order_by(assets.c.id))).all()
    found = [await get_asset(engine, asset_id=row.id) for row in ids]
    return [asset for asset in found if asset is not None]


async def list_assets(
    engine: AsyncEngine, *, status: str | None = None, limit: int = 50, before_id: int | None = None
) -> list[dict[str, Any]]:
    query = select(assets).order_by(assets.c.id.desc()).limit(limit)
    if status:
        query = query.where(assets.c.status == status)
    if before_id is not None:
        query = query.where(assets.c.id < before_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        ids = [row.id for row in rows]
        rungs = (
            (
                await conn.execute(
                    select(renditions).where(renditions.c.asset_id.in_(ids)).order_by(renditions.c.height.desc())
                )
            ).all()
            if ids
            else []
        )
    by_asset: dict[int, list[Any]] = {}
    for rung in rungs:
        by_asset.setdefault(rung.asset_id, []).append(rung)
    return [_asset_view(row, by_asset.get(row.id, [])) for row in rows]


async def count_by_status(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(assets.c.status, func.count()).group_by(assets.c.status))).all()
    return dict(rows)


def _overlapping(prefix: str) -> Any:
    """Assets whose prefix is `prefix`, one of its parents, or below it: deleting either one's
    outputs (a cancel, DELETE /v1/assets) would delete files of the other."""
    parts = prefix.split("/")
    parents = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return or_(assets.c.output_prefix.in_(parents), assets.c.output_prefix.startswith(prefix + "/", autoescape=True))


async def prefix_taken(engine: AsyncEngine, prefix: str, *, except_job: int | None = None) -> int | None:
    """The id of an asset whose outputs overlap `prefix`, if any."""
    query = select(assets.c.id).where(_overlapping(prefix)).limit(1)
    if except_job is not None:
        query = query.where(or_(assets.c.job_id.is_(None), assets.c.job_id != except_job))
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar()


async def list_jobs_with_assets(
    engine: AsyncEngine, *, status: str | None, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """Encode jobs newest first with their asset's source and profile, in one query (the web
    job list; the asset is None until the probe task created it)."""
    query = (
        select(
            jobs.c.id,
            jobs.c.status,
            jobs.c.progress,
            jobs.c.created_at,
            assets.c.profile_name,
            assets.c.source_kind,
            assets.c.source_key,
            assets.c.source_url,
        )
        .outerjoin(assets, assets.c.job_id == jobs.c.id)
        .where(jobs.c.kind == JOB_KIND)
        .order_by(jobs.c.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(jobs.c.status == status)
    if before_id is not None:
        query = query.where(jobs.c.id < before_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "id": row.id,
            "status": row.status,
            "progress": row.progress,
            "created_at": row.created_at,
            "asset": None
            if row.source_kind is None
            else {"profile": row.profile_name, "source": row.source_url or row.source_key.rsplit("/", 1)[-1]},
        }
        for row in rows
    ]
