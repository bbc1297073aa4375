"""Encoding profiles: the built-ins from core.media plus custom ones stored in `profiles`.

WebEncode stored custom profiles and then encoded with a hard-coded preset map anyway
(unknown names silently became 720p). Here a name resolves to exactly one `Profile`, built-in or
custom, an unknown name is an error listing the known ones, and the resolved definition is what
the transcode runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.types import utcnow
from reelhouse.core.http.bounds import excerpt
from reelhouse.core.media.profiles import BUILTIN_PROFILES, X264_PRESETS, Profile, load_profile
from reelhouse.encode.models import profiles

KNOWN_LISTED = 20  # an unknown-profile error names this many of the known ones


class ProfileError(Exception):
    """A profile request that cannot be honoured; `status` is the HTTP status it maps to."""

    status = 400


class UnknownProfile(ProfileError):
    status = 404


class ProfileConflict(ProfileError):
    status = 409


def describe_validation(exc: ValidationError) -> str:
    """`renditions.0.width: must be even ...; name: ...` — one clause per problem, fields named."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "profile"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "invalid profile: " + "; ".join(parts)


def validate_definition(data: Mapping[str, Any]) -> Profile:
    if not isinstance(data, Mapping):
        raise ProfileError("a profile must be a JSON object with name, kind and renditions")
    try:
        return load_profile(data)
    except ValidationError as exc:
        raise ProfileError(describe_validation(exc)) from None


def with_preset(profile: Profile, preset: str | None) -> Profile:
    """Apply a per-job x264 preset override (e.g. `ultrafast` for previews)."""
    if preset is None:
        return profile
    if preset not in X264_PRESETS:
        raise ProfileError(f"unknown preset {excerpt(preset, 32)}; expected one of {', '.join(X264_PRESETS)}")
    return profile.with_preset(preset)  # type: ignore[arg-type]


def _view(profile: Profile, *, builtin: bool, row: Any = None) -> dict[str, Any]:
    view = {
        "name": profile.name,
        "kind": profile.kind,
        "builtin": builtin,
        "definition": profile.model_dump(mode="json"),
    }
    if row is not None:
        view.update(
            created_by=row.created_by, created_at=row.created_at.isoformat(), updated_at=row.updated_at.isoformat()
        )
    return view


async def list_profiles(engine: AsyncEngine) -> list[dict[str, Any]]:
    listed = [_view(p, builtin=True) for p in BUILTIN_PROFILES.values()]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(profiles).order_by(profiles.c.name))).all()
    # A stored row that no longer validates (older schema) is shown, not hidden, with its error.
    for row in rows:
        try:
            listed.append(_view(load_profile(row.definition), builtin=False, row=row))
        except ValidationError as exc:
            listed.append(
                {
                    "name": row.name,
                    "kind": row.kind,
                    "builtin": False,
                    "definition": row.definition,
                    "error": describe_validation(exc),
                }
            )
    return listed


async def get_profile(engine: AsyncEngine, name: str) -> dict[str, Any]:
    if name in BUILTIN_PROFILES:
        return _view(BUILTIN_PROFILES[name], builtin=True)
    async with engine.connect() as conn:
        row = (await conn.execute(select(profiles).where(profiles.c.name == name))).first()
    if row is None:
        raise await _unknown(engine, name)
    return _view(validate_definition(row.definition), builtin=False, row=row)


async def resolve_profile(engine: AsyncEngine, name: str) -> Profile:
    """The profile an encode of `name` runs, built-in or custom."""
    if name in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[name]
    async with engine.connect() as conn:
        definition = (await conn.execute(select(profiles.c.definition).where(profiles.c.name == name))).scalar()
    if definition is None:
        raise await _unknown(engine, name)
    return validate_definition(definition)


async def _unknown(engine: AsyncEngine, name: str) -> UnknownProfile:
    async with engine.connect() as conn:
        custom = (await conn.execute(select(profiles.c.name).order_by(profiles.c.name))).scalars().all()
    known = [*BUILTIN_PROFILES, *custom]
    listed = ", ".join(known[:KNOWN_LISTED]) + (
        f" and {len(known) - KNOWN_LISTED} more" if len(known) > KNOWN_LISTED else ""
    )
    return UnknownProfile(f"unknown profile {excerpt(name)}; known profiles: {listed}")


async def create_profile(engine: AsyncEngine, data: Mapping[str, Any], actor: str) -> Profile:
    profile = validate_definition(data)
    if profile.name in BUILTIN_PROFILES:
        raise ProfileConflict(f"{profile.name!r} is a built-in profile; choose another name")
    now = utcnow()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                profiles.insert().values(
                    name=profile.name,
                    kind=profile.kind,
                    definition=profile.model_dump(mode="json"),
                    created_by=actor,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        raise ProfileConflict(f"profile {profile.name!r} already exists; use PUT to change it") from None
    return profile


async def replace_profile(engine: AsyncEngine, name: str, data: Mapping[str, Any]) -> Profile:
    if name in BUILTIN_PROFILES:
        raise ProfileConflict(f"{name!r} is a built-in profile and cannot be changed")
    profile = validate_definition({**data, "name": data.get("name", name)})
    if profile.name != name:
        raise ProfileError(f"the body names profile {excerpt(profile.name)} but the URL names {excerpt(name)}")
    async with engine.begin() as conn:
        result = await conn.execute(
            update(profiles)
            .where(profiles.c.name == name)
            .values(kind=profile.kind, definition=profile.model_dump(mode="json"), updated_at=utcnow())
        )
    if result.rowcount == 0:
        raise await _unknown(engine, name)
    return profile


async def delete_profile(engine: AsyncEngine, name: str) -> None:
    if name in BUILTIN_PROFILES:
        raise ProfileConflict(f"{name!r} is a built-in profile and cannot be deleted")
    async with engine.begin() as conn:
        result = await conn.execute(delete(profiles).where(profiles.c.name == name))
    if result.rowcount == 0:
        raise await _unknown(engine, name)
