"""Encode HTTP API: submit jobs (upload, URL or storage key), assets and their outputs, profiles.

Job inspection and control stay on core's routes (`GET /v1/jobs[/{id}]`, `/cancel`, `/retry`);
this module adds `POST /v1/jobs` and the encode-specific views.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from reelhouse.core.jobs import control, states
from reelhouse.core.security.audit import append as audit
from reelhouse.core.security.http_auth import require_admin, require_operator, require_viewer
from reelhouse.core.security.users import Principal
from reelhouse.encode import assets as asset_store
from reelhouse.encode import profiles_store
from reelhouse.encode.media import playback_link
from reelhouse.encode.models import ASSET_ENCODING
from reelhouse.encode.pipeline import EncodePipeline
from reelhouse.encode.service import EncodeService, delete_prefix
from reelhouse.encode.submit import EncodeRequest, SubmitError, create_encode_job, prepare_encode, submit_encode
from reelhouse.encode.uploads import UploadInvalid, UploadTooLarge, receive_upload

# Multipart framing and form fields on top of the file itself.
UPLOAD_OVERHEAD = 256 << 10

_JOB_BODY_DOC = {
    "requestBody": {"content": {
        "application/json": {"schema": {"type": "object", "properties": {
            "source_url": {"type": "string", "description": "http(s) URL fetched with yt-dlp"},
            "source_key": {"type": "string", "description": "key of an object already in storage"},
            "profile": {"type": "string"}, "preset": {"type": "string"},
            "output_prefix": {"type": "string", "description": "relative to ENCODE_OUTPUT_PREFIX"}}}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "profile": {"type": "string"},
            "preset": {"type": "string"}, "output_prefix": {"type": "string"}}}},
    }},
}


class JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_url: str | None = None
    source_key: str | None = None
    profile: str | None = None
    profiles: list[str] | None = None  # WebEncode's field; one profile per job here
    preset: str | None = None
    output_prefix: str | None = None


def _job_request(body: JobBody) -> EncodeRequest:
    if (body.source_url is None) == (body.source_key is None):
        raise HTTPException(400, "give exactly one of source_url or source_key (or upload a file as multipart 'file')")
    profile = body.profile
    if body.profiles is not None:
        if profile is not None or len(body.profiles) != 1:
            raise HTTPException(400, "one profile per job: give 'profile' (or 'profiles' with exactly one name); "
                                     "submit one job per profile for several")
        profile = body.profiles[0]
    kind = "url" if body.source_url is not None else "key"
    return EncodeRequest(source_kind=kind, source_url=body.source_url, source_key=body.source_key,
                         profile=profile, preset=body.preset, output_prefix=body.output_prefix)


def _created(result: dict[str, Any]) -> JSONResponse:
    return JSONResponse(result, status_code=201, headers={"Location": f"/v1/jobs/{result['job_id']}"})


def build_api_router(service: EncodeService, pipeline: EncodePipeline) -> APIRouter:
    router = APIRouter(tags=["encode"])
    engine = service.engine

    async def from_json(request: Request, principal: Principal) -> JSONResponse:
        try:
            body = JobBody.model_validate(json.loads(await request.body() or b"{}"))
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"request body is not valid JSON: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise HTTPException(400, f"invalid request: {problems}") from None
        result = await submit_encode(service, pipeline, _job_request(body), actor=principal.name,
                                     user_id=principal.user_id)
        return _created(result)

    async def from_upload(request: Request, principal: Principal) -> JSONResponse:
        limit = service.settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + UPLOAD_OVERHEAD:
            raise HTTPException(413, f"upload of {declared} bytes exceeds MAX_UPLOAD_BYTES ({limit} bytes)")
        async with service.scratch("upload") as tmp:
            try:
                received = await receive_upload(request, tmp / "upload", max_bytes=limit)
            except UploadTooLarge as exc:
                raise HTTPException(413, str(exc)) from None
            except UploadInvalid as exc:
                raise HTTPException(400, str(exc)) from None
            if received.size == 0:
                raise HTTPException(400, "the uploaded file is empty")
            fields = received.fields
            request_ = EncodeRequest(source_kind="upload", source_name=received.filename,
                                     profile=fields.get("profile") or None, preset=fields.get("preset") or None,
                                     output_prefix=fields.get("output_prefix") or None)
            prepared = await prepare_encode(service, request_, check_source=False)
            key = service.upload_key(received.filename)
            storage = service.storage()
            await storage.put(key, tmp / "upload")
        try:
            result = await create_encode_job(service, pipeline, _with_key(request_, key), prepared,
                                             actor=principal.name, user_id=principal.user_id)
        except BaseException:
            await storage.delete(key)
            raise
        result["upload"] = {"key": key, "size_bytes": received.size, "filename": received.filename}
        return _created(result)

    @router.post("/v1/jobs", status_code=201, openapi_extra=_JOB_BODY_DOC,
                 summary="Submit an encode: multipart upload `file`, or JSON source_url / source_key (operator)")
    async def create_job(request: Request, principal: Principal = Depends(require_operator)) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == "multipart/form-data":
                response = await from_upload(request, principal)
            elif content_type in ("application/json", ""):
                response = await from_json(request, principal)
            else:
                raise HTTPException(415, f"unsupported Content-Type {content_type!r}; "
                                         "use application/json or multipart/form-data")
        except SubmitError as exc:
            raise HTTPException(exc.status, exc.message) from None
        job_id = json.loads(response.body)["job_id"]
        await audit(engine, principal.name, "encode.submit", f"job:{job_id}")
        return response

    @router.get("/v1/jobs/{job_id}/outputs", summary="The encode job's asset: renditions and playback URLs")
    async def job_outputs(job_id: int, _p: Principal = Depends(require_viewer)) -> dict[str, Any]:
        asset = await asset_store.get_asset(engine, job_id=job_id)
        if asset is not None:
            return asset
        job = await control.get_job(engine, job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id} not found")
        raise HTTPException(404, f"job {job_id} has no outputs (status {job['status']}"
                                 + (f": {job['error']}" if job.get("error") else "") + ")")

    @router.get("/v1/assets", summary="Encoded assets, newest first")
    async def list_assets(status: str | None = None, limit: int = Query(50, ge=1, le=500),
                          before_id: int | None = None, _p: Principal = Depends(require_viewer)) -> list[dict]:
        return await asset_store.list_assets(engine, status=status, limit=limit, before_id=before_id)

    @router.get("/v1/assets/{asset_id}", summary="An asset with its renditions")
    async def get_asset(asset_id: int, _p: Principal = Depends(require_viewer)) -> dict[str, Any]:
        asset = await asset_store.get_asset(engine, asset_id=asset_id)
        if asset is None:
            raise HTTPException(404, f"asset {asset_id} not found")
        return asset

    @router.get("/v1/assets/{asset_id}/link", summary="A signed, expiring playback link (no credentials needed)")
    async def asset_link(asset_id: int, _p: Principal = Depends(require_viewer)) -> dict[str, Any]:
        asset = await asset_store.get_asset(engine, asset_id=asset_id)
        if asset is None or not asset["master_key"]:
            raise HTTPException(404, f"asset {asset_id} not found or not ready")
        path, expires = playback_link(service, asset["output_prefix"], asset["master_key"])
        return {"url": path, "expires_at": expires}

    @router.delete("/v1/assets/{asset_id}", status_code=204, summary="Delete an asset and its files (operator)")
    async def delete_asset(asset_id: int, principal: Principal = Depends(require_operator)) -> Response:
        asset = await asset_store.get_asset(engine, asset_id=asset_id)
        if asset is None:
            raise HTTPException(404, f"asset {asset_id} not found")
        if asset["status"] == ASSET_ENCODING and asset["job_id"] is not None:
            job = await control.get_job(engine, asset["job_id"])
            if job is not None and job["status"] not in states.JOB_FINAL:
                raise HTTPException(409, f"asset {asset_id} is being encoded by job {asset['job_id']}; cancel it first")
        await delete_prefix(service.storage(), asset["output_prefix"])
        await asset_store.delete_asset(engine, asset_id)
        await audit(engine, principal.name, "encode.asset.delete", f"asset:{asset_id}")
        return Response(status_code=204)

    router.include_router(_profiles_router(service))
    return router


def _with_key(request: EncodeRequest, key: str) -> EncodeRequest:
    return EncodeRequest(source_kind=request.source_kind, source_key=key, source_name=request.source_name,
                         profile=request.profile, preset=request.preset, output_prefix=request.output_prefix)


def _profiles_router(service: EncodeService) -> APIRouter:
    router = APIRouter(tags=["profiles"])
    engine = service.engine

    async def body_of(request: Request) -> Any:
        try:
            return json.loads(await request.body() or b"null")
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"request body is not valid JSON: {exc}") from None

    def failed(exc: profiles_store.ProfileError) -> HTTPException:
        return HTTPException(exc.status, str(exc))

    @router.get("/v1/profiles", summary="Built-in and custom encoding profiles")
    async def list_profiles(_p: Principal = Depends(require_viewer)) -> list[dict[str, Any]]:
        return await profiles_store.list_profiles(engine)

    @router.get("/v1/profiles/{name}")
    async def get_profile(name: str, _p: Principal = Depends(require_viewer)) -> dict[str, Any]:
        try:
            return await profiles_store.get_profile(engine, name)
        except profiles_store.ProfileError as exc:
            raise failed(exc) from None

    @router.post("/v1/profiles", status_code=201, summary="Create a custom profile (admin)")
    async def create_profile(request: Request, principal: Principal = Depends(require_admin)) -> dict[str, Any]:
        try:
            profile = await profiles_store.create_profile(engine, await body_of(request), principal.name)
        except profiles_store.ProfileError as exc:
            raise failed(exc) from None
        await audit(engine, principal.name, "encode.profile.create", f"profile:{profile.name}")
        return await profiles_store.get_profile(engine, profile.name)

    @router.put("/v1/profiles/{name}", summary="Replace a custom profile (admin)")
    async def replace_profile(name: str, request: Request,
                              principal: Principal = Depends(require_admin)) -> dict[str, Any]:
        body = await body_of(request)
        if not isinstance(body, dict):
            raise HTTPException(400, "a profile must be a JSON object with kind and renditions")
        try:
            await profiles_store.replace_profile(engine, name, body)
        except profiles_store.ProfileError as exc:
            raise failed(exc) from None
        await audit(engine, principal.name, "encode.profile.update", f"profile:{name}")
        return await profiles_store.get_profile(engine, name)

    @router.delete("/v1/profiles/{name}", status_code=204, summary="Delete a custom profile (admin)")
    async def delete_profile(name: str, principal: Principal = Depends(require_admin)) -> Response:
        try:
            await profiles_store.delete_profile(engine, name)
        except profiles_store.ProfileError as exc:
            raise failed(exc) from None
        await audit(engine, principal.name, "encode.profile.delete", f"profile:{name}")
        return Response(status_code=204)

    return router
