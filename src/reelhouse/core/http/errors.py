"""One error body everywhere, and the OpenAPI that documents it.

Every error is `{"error", "status", "correlation_id"}` (plus `details` for invalid requests),
never a stack trace. Routes declare the 4xx they can return with `errors(404, 409)`; the
401/403 of role-protected routes and the 422 of routes with parameters are added to the
OpenAPI document by `document_errors`, so they cannot be forgotten.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from reelhouse.core.providers.errors import ProviderError, RateLimited, Rejected
from reelhouse.core.telemetry.correlation import current_correlation_id

log = logging.getLogger("reelhouse.http")

MESSAGES = {
    400: "Bad request: the body or a parameter cannot be used",
    401: "Authentication required, or the credentials are invalid",
    403: "The caller's role does not allow this",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported content type",
    422: "Invalid request: a parameter or field fails validation",
    429: "Too many requests; retry after the Retry-After seconds",
    502: "An upstream provider failed",
    503: "Not ready or unavailable",
}


class FieldProblem(BaseModel):
    field: str = Field(description="dotted path of the bad field or parameter")
    problem: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="what went wrong, for people")
    status: int = Field(description="the HTTP status, repeated for clients that log bodies")
    correlation_id: str | None = Field(description="quote it when reporting a problem; it is in the server logs")
    details: list[FieldProblem] | None = Field(None, description="per-field problems of an invalid request")
    code: str | None = Field(None, description="a stable machine-readable reason, where a domain defines one")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each code documented with the error body."""
    return {code: {"model": ErrorBody, "description": MESSAGES.get(code, "Error")} for code in codes}


def json_body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra=` for a route that reads its JSON body by hand (to answer malformed bodies
    with its own 400): documents the body's schema without FastAPI parsing it."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def object_schema(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "status": status, "correlation_id": current_correlation_id(), **extra}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's words
            detail = "request body is not valid JSON (or not UTF-8)"
        code = getattr(exc, "code", None)  # domains' coded errors (e.g. the vault's REQUEST_EXISTS)
        if code:
            body = error_body(exc.status_code, detail, code=code)
            return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
        return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            # A body that is not JSON at all is a bad request, not a field that fails validation.
            return error_response(400, "request body is not valid JSON")
        details = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "problem": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details) or "invalid request"
        return JSONResponse(error_body(422, f"invalid request: {summary}", details=details), status_code=422)

    @app.exception_handler(ProviderError)
    async def provider_error(_request: Request, exc: ProviderError) -> JSONResponse:
        # The one place a provider's failure becomes an HTTP answer: a refusal is the caller's
        # (400, with the provider's reason), a wait is 503 with Retry-After, anything else 502.
        if isinstance(exc, Rejected):
            return error_response(400, str(exc))
        if isinstance(exc, RateLimited):
            wait = max(1, int((exc.retry_at - datetime.now(UTC)).total_seconds()))
            return error_response(503, f"{exc}; retry in {wait}s", headers={"Retry-After": str(wait)})
        log.warning("provider failure: %s", exc, extra={"component": "http"})
        return error_response(502, f"{exc.provider} is unavailable; try again ({exc.reason})")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, extra={"component": "http"})
        return error_response(500, "internal error; see server logs for this correlation id")


def _required_role(route: APIRoute) -> str | None:
    for dependency in route.dependant.dependencies:
        role = getattr(dependency.call, "required_role", None)
        if role is not None:
            return str(role)
    return None


def _has_parameters(route: APIRoute) -> bool:
    dependant = route.dependant
    return bool(dependant.path_params or dependant.query_params or dependant.body_params) or any(
        dep.path_params or dep.query_params or dep.body_params for dep in dependant.dependencies
    )


def _schema_routes(app: FastAPI) -> list[Any]:
    """Every route with its effective path: FastAPI 0.16x keeps included routers as branches in
    `app.routes`, walked with `iter_route_contexts`; older versions list the routes flat."""
    walk = getattr(fastapi_routing, "iter_route_contexts", None)
    return list(walk(app.routes)) if walk is not None else list(app.routes)


def document_errors(app: FastAPI) -> None:
    """Make `/openapi.json` list, for every operation, the errors its dependencies can raise:
    401/403 for role-protected routes, 422 (with our body, not FastAPI's default) for routes
    with parameters."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ErrorBody, FieldProblem):
            components.setdefault(model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}"))
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        error_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        for context in _schema_routes(app):
            route = getattr(context, "original_route", context)
            if not isinstance(route, APIRoute) or not context.include_in_schema:
                continue
            extra: list[int] = []
            if _required_role(route) is not None:
                extra += [401, 403]
            if _has_parameters(route):
                extra.append(422)
            path = schema["paths"].get(context.path_format, {})
            for method in route.methods or ():
                operation = path.get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for code in extra:
                    responses.setdefault(str(code), {"description": MESSAGES[code]})
                for code, response in responses.items():
                    # 422 is always ours (FastAPI's default body names the HTTPValidationError
                    # schema removed above, which leaves ReDoc with a dangling reference).
                    if code.startswith(("4", "5")) and ("content" not in response or code == "422"):
                        response.update(error_ref)
                    if code.startswith(("4", "5")):
                        response.setdefault("description", MESSAGES.get(int(code), "Error"))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# One Server-Sent Event as OpenAPI tools (schemathesis) read a text/event-stream body: its
# fields are strings (`data` carries the JSON text).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in ("event", "data", "id", "retry")},
}


def event_stream_doc(description: str) -> dict[str, Any]:
    """The 200 response of a Server-Sent Events route."""
    return {"description": description, "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}}
