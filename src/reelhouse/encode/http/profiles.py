"""Encoding profiles: built-in presets and custom profiles (admin edits them)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response

from reelhouse.core.http.bounds import SAFE_NAME_PATTERN
from reelhouse.core.http.deps import Admin, Engine, Viewer
from reelhouse.core.http.errors import errors
from reelhouse.core.security.audit import append as audit
from reelhouse.encode import profiles_store
from reelhouse.encode.http.schemas import PROFILE_BODY_DOC, ProfileView

router = APIRouter(tags=["profiles"])
ProfileNamePath = Annotated[str, Path(pattern=SAFE_NAME_PATTERN, max_length=64, description="profile name")]


async def body_of(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "request body is not valid JSON (UTF-8)") from None


CODEC_ENCODERS = {"h264": "libx264"}


def webencode_view(profile: dict[str, Any]) -> dict[str, Any]:
    """reelhouse's profile with WebEncode's fields (its first rendition describes the profile)."""
    definition = profile.get("definition") or {}
    rungs = definition.get("renditions") or [{}]
    top = rungs[0] if isinstance(rungs[0], dict) else {}
    return {
        **profile,
        "id": profile["name"],
        "is_system": bool(profile.get("builtin")),
        "description": f"{profile.get('kind', '')} ladder of {len(rungs)} rendition(s)",
        "video_codec": CODEC_ENCODERS.get(str(top.get("codec", "h264")), str(top.get("codec", ""))),
        "audio_codec": "aac",
        "width": int(top.get("width") or 0),
        "height": int(top.get("height") or 0),
        "bitrate_kbps": int(top.get("video_bitrate") or 0) // 1000,
        "preset": str(top.get("preset", "")),
        "container": "mp4" if profile.get("kind") == "mp4" else "hls",
        "config": definition,
    }


def failed(exc: profiles_store.ProfileError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


@router.get("/v1/profiles", response_model=list[ProfileView], summary="Built-in and custom encoding profiles")
async def list_profiles(engine: Engine, _p: Viewer) -> list[dict[str, Any]]:
    return [webencode_view(p) for p in await profiles_store.list_profiles(engine)]


@router.get("/v1/profiles/{name}", response_model=ProfileView, responses=errors(404), summary="One profile")
async def get_profile(name: ProfileNamePath, engine: Engine, _p: Viewer) -> dict[str, Any]:
    try:
        return webencode_view(await profiles_store.get_profile(engine, name))
    except profiles_store.ProfileError as exc:
        raise failed(exc) from None


@router.post(
    "/v1/profiles",
    status_code=201,
    response_model=ProfileView,
    responses=errors(400, 409),
    openapi_extra=PROFILE_BODY_DOC,
    summary="Create a custom profile (admin)",
)
async def create_profile(request: Request, engine: Engine, principal: Admin) -> dict[str, Any]:
    try:
        profile = await profiles_store.create_profile(engine, await body_of(request), principal.name)
    except profiles_store.ProfileError as exc:
        raise failed(exc) from None
    await audit(engine, principal.name, "encode.profile.create", f"profile:{profile.name}")
    return webencode_view(await profiles_store.get_profile(engine, profile.name))


@router.put(
    "/v1/profiles/{name}",
    response_model=ProfileView,
    responses=errors(400, 404, 409),
    openapi_extra=PROFILE_BODY_DOC,
    summary="Replace a custom profile (admin)",
)
async def replace_profile(name: ProfileNamePath, request: Request, engine: Engine, principal: Admin) -> dict[str, Any]:
    body = await body_of(request)
    if not isinstance(body, dict):
        raise HTTPException(400, "a profile must be a JSON object with kind and renditions")
    try:
        await profiles_store.replace_profile(engine, name, body)
    except profiles_store.ProfileError as exc:
        raise failed(exc) from None
    await audit(engine, principal.name, "encode.profile.update", f"profile:{name}")
    return webencode_view(await profiles_store.get_profile(engine, name))


@router.delete(
    "/v1/profiles/{name}", status_code=204, responses=errors(404, 409), summary="Delete a custom profile (admin)"
)
async def delete_profile(name: ProfileNamePath, engine: Engine, principal: Admin) -> Response:
    try:
        await profiles_store.delete_profile(engine, name)
    except profiles_store.ProfileError as exc:
        raise failed(exc) from None
    await audit(engine, principal.name, "encode.profile.delete", f"profile:{name}")
    return Response(status_code=204)
