"""`GET/PUT /config`: the runtime overrides (core/overrides.py) under vod-tender's route."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, create_model

from reelhouse.core.http.deps import Admin, JsonObject, RuntimeDep
from reelhouse.core.http.errors import errors, json_body_doc
from reelhouse.core.overrides import OverrideError, set_process_log_level
from reelhouse.core.runtime import Runtime
from reelhouse.core.security.audit import append as audit


def config_router(runtime: Runtime) -> APIRouter:
    """Built once the domains have registered their keys: the response model names each key."""
    fields: dict[str, Any] = dict.fromkeys(runtime.overrides.keys, (str | None, None))
    values_model: type[BaseModel] = create_model(
        "ConfigValues",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Effective values of the keys that can be overridden; empty ones are left out.",
        **fields,
    )
    router = APIRouter(tags=["config"])

    @router.get(
        "/config",
        response_model=values_model,
        response_model_exclude_none=True,
        summary="Effective values of the safe configuration keys",
    )
    async def get_config(runtime: RuntimeDep) -> Any:
        return await runtime.overrides.current()

    @router.put(
        "/config",
        status_code=204,
        responses=errors(400),
        summary="Override safe keys at run time (admin); null removes an override",
        openapi_extra=json_body_doc({"$ref": "#/components/schemas/ConfigValues"}),
    )
    async def put_config(body: JsonObject, runtime: RuntimeDep, principal: Admin) -> Response:
        try:
            changes = runtime.overrides.validate(body)
        except OverrideError as exc:
            raise HTTPException(400, str(exc)) from None
        await runtime.overrides.write(changes)
        level = changes.get("LOG_LEVEL")
        if level:
            set_process_log_level(level.lower())
        await audit(runtime.engine, principal.name, "config.update", "config", {"keys": sorted(changes)})
        return Response(status_code=204)

    return router
