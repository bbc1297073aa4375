"""Encoded assets: list, show, a signed playback link, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Response

from reelhouse.core.http.bounds import Limit
from reelhouse.core.http.deps import BeforeId, DbId, Operator, Viewer, component
from reelhouse.core.http.errors import errors
from reelhouse.core.jobs import control, states
from reelhouse.core.security.audit import append as audit
from reelhouse.encode import assets as asset_store
from reelhouse.encode.http.schemas import AssetStatus, AssetView, PlaybackLink
from reelhouse.encode.media import playback_link
from reelhouse.encode.models import ASSET_ENCODING
from reelhouse.encode.service import delete_prefix
from reelhouse.encode.services import EncodeServices

router = APIRouter(tags=["encode"])
Services = Annotated[EncodeServices, component(EncodeServices)]


async def find_asset(services: EncodeServices, asset_id: int) -> dict[str, Any]:
    asset = await asset_store.get_asset(services.engine, asset_id=asset_id)
    if asset is None:
        raise HTTPException(404, f"asset {asset_id} not found")
    return asset


@router.get("/v1/assets", response_model=list[AssetView], summary="Encoded assets, newest first")
async def list_assets(
    services: Services, _p: Viewer, status: AssetStatus = None, limit: Limit = 50, before_id: BeforeId = None
) -> list[dict[str, Any]]:
    return await asset_store.list_assets(services.engine, status=status, limit=limit, before_id=before_id)


@router.get(
    "/v1/assets/{asset_id}", response_model=AssetView, responses=errors(404), summary="An asset with its renditions"
)
async def get_asset(asset_id: DbId, services: Services, _p: Viewer) -> dict[str, Any]:
    return await find_asset(services, asset_id)


@router.get(
    "/v1/assets/{asset_id}/link",
    response_model=PlaybackLink,
    responses=errors(404),
    summary="A signed, expiring playback link (no credentials needed)",
)
async def asset_link(asset_id: DbId, services: Services, _p: Viewer) -> PlaybackLink:
    asset = await asset_store.get_asset(services.engine, asset_id=asset_id)
    if asset is None or not asset["master_key"]:
        raise HTTPException(404, f"asset {asset_id} not found or not ready")
    path, expires = playback_link(services.service, asset["output_prefix"], asset["master_key"])
    return PlaybackLink(url=path, expires_at=expires)


@router.delete(
    "/v1/assets/{asset_id}",
    status_code=204,
    responses=errors(404, 409),
    summary="Delete an asset and its files (operator)",
)
async def delete_asset(asset_id: DbId, services: Services, principal: Operator) -> Response:
    engine = services.engine
    asset = await find_asset(services, asset_id)
    if asset["status"] == ASSET_ENCODING and asset["job_id"] is not None:
        job = await control.get_job(engine, asset["job_id"])
        if job is not None and job["status"] not in states.JOB_FINAL:
            raise HTTPException(409, f"asset {asset_id} is being encoded by job {asset['job_id']}; cancel it first")
    await delete_prefix(services.service.storage(), asset["output_prefix"])
    await asset_store.delete_asset(engine, asset_id)
    await audit(engine, principal.name, "encode.asset.delete", f"asset:{asset_id}")
    return Response(status_code=204)
