"""Front-end packages from npm, served from `node_modules` (installed by `npm ci`, never a CDN).

Only the files the pages load are reachable, by a short name; the rest of `node_modules`
is not served.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

log = logging.getLogger("reelhouse.web")

SOURCE_TREE = Path(__file__).resolve().parents[3]

# short name -> path inside node_modules
VENDOR_FILES = {
    "htmx.js": "htmx.org/dist/htmx.min.js",
    "hls.js": "hls.js/dist/hls.min.js",
    "uplot.js": "uplot/dist/uPlot.iife.min.js",
    "uplot.css": "uplot/dist/uPlot.min.css",
    "swagger-ui.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "redoc.js": "redoc/bundles/redoc.standalone.js",
}


def find_node_modules(configured: Path | None) -> Path | None:
    candidates = [configured] if configured else [Path.cwd() / "node_modules", SOURCE_TREE / "node_modules"]
    for candidate in candidates:
        if candidate is not None and (candidate / "htmx.org").is_dir():
            return candidate
    log.warning(
        "front-end packages not found (looked in %s); run `npm ci` (make run does) or set WEB_NODE_MODULES",
        ", ".join(str(c) for c in candidates),
        extra={"component": "web"},
    )
    return None


def vendor_router(node_modules: Path | None) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/static/vendor/{name}")
    async def vendor_file(name: str) -> FileResponse:
        relative = VENDOR_FILES.get(name)
        if relative is None:
            raise HTTPException(404, f"no vendored file {name!r}")
        if node_modules is None or not (node_modules / relative).is_file():
            raise HTTPException(404, f"{relative} is not installed; run `npm ci`")
        # Versioned by the lockfile, so browsers may keep a copy for a day without asking.
        return FileResponse(node_modules / relative, headers={"Cache-Control": "public, max-age=86400"})

    return router
