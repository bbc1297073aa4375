"""JSON errors everywhere: a message and the correlation id, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reelhouse.core.telemetry.correlation import current_correlation_id

log = logging.getLogger("reelhouse.http")


def error_body(status: int, message: str, **extra) -> dict:
    return {"error": message, "status": status, "correlation_id": current_correlation_id(), **extra}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": ".".join(str(p) for p in err["loc"] if p != "body"), "problem": err["msg"]}
                   for err in exc.errors()]
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details) or "invalid request"
        return JSONResponse(error_body(422, f"invalid request: {summary}", details=details), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path,
                      extra={"component": "http"})
        return JSONResponse(error_body(500, "internal error; see server logs for this correlation id"),
                            status_code=500)
