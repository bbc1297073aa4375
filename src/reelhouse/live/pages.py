"""Live pages: streams (create, key shown once, rotate), a stream with its live preview
(hls.js), telemetry, destinations with their status, and recordings. Actions go through the
API from the page (web/static/app.js)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from reelhouse.core.http.deps import DbId
from reelhouse.core.media.profiles import BUILTIN_PROFILES
from reelhouse.core.runtime import NavLink, PageSet
from reelhouse.live.http.streams import destination_view, owns, stream_view
from reelhouse.live.services import LiveServices
from reelhouse.live.store import StreamNotFound
from reelhouse.web.shell import PageError, ViewerPage

TEMPLATES = Path(__file__).parent / "templates"


def build_pages(services: LiveServices) -> PageSet:
    router = APIRouter(include_in_schema=False)
    hls_profiles = [name for name, p in BUILTIN_PROFILES.items() if p.kind == "hls"]

    @router.get("/live/streams", response_class=HTMLResponse)
    async def streams_page(page: ViewerPage) -> HTMLResponse:
        caller = page.user
        assert caller is not None
        user = None if caller.has_role("admin") or caller.user_id is None else caller.user_id
        rows = await services.store.list_streams(user_id=user, limit=200)
        return page.render(
            "live/streams.html",
            streams=[stream_view(services, r) for r in rows],
            profiles=hls_profiles,
            default_profile=services.settings.default_profile,
        )

    @router.get("/live/streams/{stream_id}", response_class=HTMLResponse)
    async def stream_page(page: ViewerPage, stream_id: DbId) -> HTMLResponse:
        try:
            row = await services.store.get_stream(stream_id)
        except StreamNotFound:
            raise PageError(404, f"stream {stream_id} not found") from None
        if page.user is None or not owns(page.user, row):
            raise PageError(404, f"stream {stream_id} not found")
        return page.render(
            "live/stream.html",
            stream=stream_view(services, row),
            destinations=[destination_view(d) for d in await services.store.destinations_of(stream_id)],
            recordings=await services.store.recordings_of(stream_id),
            low_latency=services.settings.ll_hls,  # hls.js lowLatencyMode
        )

    return PageSet(
        name="live",
        title="Live",
        router=router,
        templates=TEMPLATES,
        static=Path(__file__).parent / "static",
        nav=(NavLink("Streams", "/live/streams"),),
    )
