"""FastAPI dependencies every route module uses: the running system's parts and the caller.

Route handlers declare what they need as typed parameters instead of reaching into
`request.app.state`:

    @router.get("/vods/{vod_id}", responses=errors(404))
    async def get_vod(vod_id: VodId, store: Annotated[VodStore, component(VodStore)]) -> VodDetail: ...

    @router.post("/v1/jobs/{job_id}/cancel")
    async def cancel(job_id: DbId, engine: Engine, principal: Operator) -> CancelOutcome: ...

A domain's composition root registers its services with `runtime.provide(services)`;
`component(ServicesType)` is the dependency that hands them to a route.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.config import Settings
from reelhouse.core.http.bounds import DB_INT_MAX, Limit, Offset, StatusFilter
from reelhouse.core.http.settings import HttpSettings
from reelhouse.core.runtime import Runtime
from reelhouse.core.security.http_auth import (
    AuthService,
    auth_service,
    require_admin,
    require_operator,
    require_viewer,
    resolve_principal,
)
from reelhouse.core.security.users import Principal

__all__ = ["DB_INT_MAX", "Limit", "Offset", "StatusFilter"]

T = TypeVar("T")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_engine(runtime: RuntimeDep) -> AsyncEngine:
    return runtime.engine


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


Engine = Annotated[AsyncEngine, Depends(get_engine)]
AppSettings = Annotated[Settings, Depends(get_settings)]

Auth = Annotated[AuthService, Depends(auth_service)]
# The caller if credentials came with the request, else None (anonymous reads).
Caller = Annotated[Principal | None, Depends(resolve_principal)]

Viewer = Annotated[Principal, Depends(require_viewer)]
Operator = Annotated[Principal, Depends(require_operator)]
Admin = Annotated[Principal, Depends(require_admin)]

DbId = Annotated[int, Path(ge=1, le=DB_INT_MAX, description="numeric id")]
DbIdQuery = Annotated[int | None, Query(ge=1, le=DB_INT_MAX, description="numeric id")]
BeforeId = Annotated[int | None, Query(ge=1, le=DB_INT_MAX, description="keyset cursor: rows with a smaller id")]


def component(kind: type[T]) -> Any:
    """Dependency on the domain services object of type `kind` (see `Runtime.provide`)."""

    def get(runtime: RuntimeDep) -> T:
        return runtime.component(kind)

    get.__name__ = f"component_{kind.__name__}"
    return Depends(get)


async def public_reader(request: Request) -> Principal | None:
    """The caller of an anonymous-readable route (`/status`, `/metrics`, the VOD list): None for
    anonymous callers, unless `REQUIRE_AUTH_FOR_READS` is set, then 401 without credentials."""
    principal = await resolve_principal(request)
    if principal is None and get_runtime(request).settings.section(HttpSettings).require_auth_for_reads:
        raise HTTPException(
            401, "authentication required (REQUIRE_AUTH_FOR_READS)", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


PublicReader = Annotated[Principal | None, Depends(public_reader)]


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it (bodies that are not
    UTF-8 included)."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "expected a JSON object")
    return body


JsonObject = Annotated[dict[str, Any], Depends(read_json_object)]


def provided(value: T) -> Callable[[], T]:
    """A dependency that returns `value` (tests override components with it)."""
    return lambda: value
