"""`reelhouse vod ...`: add, list, scan, retry and cancel VODs (`vod channels` is channels_cli.py).

Commands work on the database directly (the same stores the API uses), so they need no running
server. `--wait` follows the work with a progress bar; when no worker is serving the queue,
the command does the work itself instead of waiting on a queue nobody serves.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from reelhouse.archive.channels_cli import channel_login, channels_app, services_of
from reelhouse.archive.kinds import FILE_TASKS, ArchiveTask
from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.store import VodStore, new_vod_row
from reelhouse.archive.vod_jobs import PlaceholderVod
from reelhouse.core.cli.common import console, err, fail, with_runtime
from reelhouse.core.cli.work import NO_WORKER_HINT, start_local_worker, stop_local_worker, workers_serving
from reelhouse.core.jobs import control, states
from reelhouse.core.providers.errors import NotFound, ProviderError
from reelhouse.core.runtime import Runtime

vod_app = typer.Typer(help="Archived Twitch VODs.", no_args_is_help=True)
vod_app.add_typer(channels_app, name="channels")

_VIDEO_URL = re.compile(r"(?:https?://)?(?:www\.|m\.)?twitch\.tv/videos/(\d+)(?:[/?#].*)?")
_STATES = ("all", "pending", "errored", "processed")
POLL_SECONDS = 0.5


def parse_vod_ref(target: str) -> str:
    """A Twitch VOD id from `123456` or `https://www.twitch.tv/videos/123456?t=1h`."""
    text = target.strip()
    if text.isdigit():
        return text
    match = _VIDEO_URL.fullmatch(text)
    if match is None:
        raise typer.BadParameter(f"{target!r} is neither a VOD id nor a twitch.tv/videos/<id> URL")
    return match.group(1)


# ---- add -----------------------------------------------------------------------------------------


async def _new_row(services: ArchiveServices, vod_id: str, channel: str | None, title: str | None) -> dict[str, Any]:
    """The row for a VOD the archive does not know yet. Its channel is found the way the server
    would: --channel, then Helix (the video's owner), then TWITCH_CHANNEL, then the only watched
    channel; otherwise the command says exactly what to pass."""
    values: dict[str, Any] = {"title": title}
    if channel:
        return new_vod_row(vod_id, channel_login(channel), **values)
    if services.helix is not None:
        try:
            video = await services.helix.get_video(vod_id)
        except NotFound:
            raise fail(f"Twitch has no VOD {vod_id} (deleted, or not public)") from None
        except ProviderError as exc:
            raise fail(f"could not look up VOD {vod_id} on Twitch ({exc}); pass --channel NAME") from None
        values.update(title=title or video.title, date=video.created_at, duration_seconds=video.duration)
        return new_vod_row(vod_id, channel_login(video.user_login), **values)
    if services.settings.twitch_channel:
        return new_vod_row(vod_id, services.settings.twitch_channel, **values)
    watched = await services.watched_channels()
    if len(watched) == 1:
        return new_vod_row(vod_id, watched[0], **values)
    known = f" (watched: {', '.join(watched)})" if watched else ""
    raise fail(
        f"cannot tell which channel VOD {vod_id} belongs to: pass --channel NAME{known}, or set "
        "TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET so it is looked up on Twitch"
    )


async def _follow_download(store: VodStore, vod_id: str, job_id: int, timeout: float, runtime: Runtime) -> str:
    """Show the VOD's download as a progress bar until its job finishes; returns the job status."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"vod {vod_id}", total=None, state="queued")
        while True:
            row, job = await store.get(vod_id), await control.get_job(runtime.engine, job_id)
            status = job["status"] if job else None
            if row is not None:
                progress.update(
                    bar,
                    completed=row.download_bytes or 0,
                    total=row.download_total or None,
                    state=row.download_state or status or "",
                )
            if status in states.JOB_FINAL or status is None:
                return status or "missing"
            if time.monotonic() >= deadline:
                return "timeout"
            await asyncio.sleep(POLL_SECONDS)


@vod_app.command("add")
def add(
    target: str = typer.Argument(..., help="VOD id or https://www.twitch.tv/videos/<id>"),
    channel: str | None = typer.Option(None, help="The VOD's channel (default: looked up on Twitch)"),
    title: str | None = typer.Option(None, help="Title, until discovery fills it in"),
    priority: int = typer.Option(0, help="Higher runs first", min=-(2**31), max=2**31 - 1),
    wait: bool = typer.Option(False, "--wait", help="Follow the download with a progress bar"),
    timeout: float = typer.Option(6 * 3600, help="Seconds --wait follows before giving up", min=1),
) -> None:
    """Archive one VOD: record it and queue its download (and upload)."""
    vod_id = parse_vod_ref(target)

    async def run(runtime: Runtime) -> tuple[bool, int, str | None]:
        services = services_of(runtime)
        created = False
        if await services.vods.get(vod_id) is None:
            row = await _new_row(services, vod_id, channel, title)
            created = bool(await services.vods.insert_new([{**row, "priority": priority}]))
        try:
            job_id = await services.vod_jobs.enqueue(vod_id)
        except PlaceholderVod as exc:
            raise fail(str(exc)) from None
        if not wait:
            if not await workers_serving(runtime, [ArchiveTask.DOWNLOAD]):
                err.print(f"[yellow]no worker is running, so the download waits: {NO_WORKER_HINT}[/yellow]")
            return created, job_id, None
        worker = task = None
        if not await workers_serving(runtime, [ArchiveTask.DOWNLOAD]):
            err.print("no worker is running: downloading in this process (Ctrl-C stops; a worker resumes it)")
            worker, task = start_local_worker(runtime, FILE_TASKS)
        try:
            return created, job_id, await _follow_download(services.vods, vod_id, job_id, timeout, runtime)
        finally:
            await stop_local_worker(worker, task)

    created, job_id, status = with_runtime(run)
    console.print(f"vod {vod_id} {'added' if created else 'already known'}; job {job_id}")
    if status is not None and status != states.JOB_COMPLETED:
        if status == "timeout":
            raise fail(f"job {job_id} still running after {timeout:g}s (it continues in the background)")
        raise fail(f"job {job_id} ended {status}; `reelhouse jobs show {job_id}` says why")


# ---- list ----------------------------------------------------------------------------------------

# Columns in the order they are dropped when the terminal is narrow (last dropped first).
_COLUMNS = ("id", "state", "progress", "date", "title", "channel", "error", "youtube")
_MIN_WIDTHS = {"id": 10, "state": 11, "progress": 4, "date": 16, "title": 16, "channel": 10, "error": 16, "youtube": 28}


def columns_for(width: int) -> list[str]:
    """As many columns as fit in `width` characters (3 per column for borders and padding)."""
    chosen: list[str] = []
    used = 1
    for column in _COLUMNS:
        need = _MIN_WIDTHS[column] + 3
        if used + need > width and chosen:
            break
        chosen.append(column)
        used += need
    return chosen


@vod_app.command("list")
def list_vods(
    channel: str | None = typer.Option(None, help="Only this channel"),
    status: str = typer.Option("all", help="all | pending | errored | processed"),
    limit: int = typer.Option(50, min=1, max=1000),
) -> None:
    """VODs, newest first, with their state and progress (columns chosen to fit the terminal)."""
    from reelhouse.archive.http.vods import progress_percent

    if status not in _STATES:
        raise typer.BadParameter(f"expected one of {', '.join(_STATES)}", param_hint="--status")

    async def run(runtime: Runtime) -> list[Any]:
        rows, _ = await services_of(runtime).vods.page(
            limit=limit, channel=channel.lower() if channel else None, state=None if status == "all" else status
        )
        return rows

    rows = with_runtime(run)
    shown = columns_for(console.width)
    table = Table(title=f"vods ({status})")
    for column in shown:
        table.add_column(column, overflow="ellipsis", no_wrap=True, min_width=_MIN_WIDTHS[column])
    for row in rows:
        cells = {
            "id": row.twitch_vod_id,
            "channel": row.channel,
            "date": row.date.strftime("%Y-%m-%d %H:%M") if row.date else "",
            "title": row.title or "",
            "state": row.download_state or ("processed" if row.processed else ""),
            "progress": f"{progress_percent(row):.0f}%",
            "error": row.processing_error or "",
            "youtube": row.youtube_url or "",
        }
        table.add_row(*(cells[c] for c in shown))
    console.print(table)


# ---- scan ----------------------------------------------------------------------------------------


async def _follow_tasks(runtime: Runtime, task_ids: list[int], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} tasks"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("scanning", total=len(task_ids))
        while True:
            found = [await control.get_task(runtime.engine, task_id) for task_id in task_ids]
            rows = [row for row in found if row is not None]
            done = [row for row in rows if row["status"] in states.TASK_FINAL]
            progress.update(bar, completed=len(done))
            if len(done) == len(task_ids) or time.monotonic() >= deadline:
                return rows
            await asyncio.sleep(POLL_SECONDS)


@vod_app.command("scan")
def scan(
    channel: list[str] = typer.Option([], "--channel", "-c", help="Channel(s); default all watched"),
    catalog: bool = typer.Option(False, "--catalog", help="Also walk the whole back catalog"),
    wait: bool = typer.Option(False, "--wait", help="Wait for the scan tasks to finish"),
    timeout: float = typer.Option(600, help="Seconds --wait waits", min=1),
) -> None:
    """Queue discovery of new VODs (like POST /admin/vod/scan) for one or all channels."""

    async def run(runtime: Runtime) -> tuple[list[tuple[str, str, int]], list[dict[str, Any]]]:
        services = services_of(runtime)
        names = [channel_login(name) for name in channel] or await services.watched_channels()
        if not names:
            raise fail("no channel is watched; pass --channel or run `reelhouse vod channels add NAME`")
        kinds = (ArchiveTask.DISCOVER, ArchiveTask.CATALOG) if catalog else (ArchiveTask.DISCOVER,)
        queued = []
        for name in names:
            for kind in kinds:
                enqueued = await services.queue.enqueue(kind, {"channel": name}, max_attempts=3)
                queued.append((name, str(kind), enqueued.task_id))
        if not wait:
            return queued, []
        worker = task = None
        if not await workers_serving(runtime, kinds):
            err.print("no worker is running: scanning in this process")
            worker, task = start_local_worker(runtime, kinds)
        try:
            return queued, await _follow_tasks(runtime, [t for *_, t in queued], timeout)
        finally:
            await stop_local_worker(worker, task)

    queued, rows = with_runtime(run)
    for name, kind, task_id in queued:
        console.print(f"{kind} for {name}: task {task_id}")
    if wait:
        channel_of = {task_id: name for name, _kind, task_id in queued}
        for row in rows:
            console.print(
                f"task {row['id']} {row['kind']} {channel_of.get(row['id'], '')}: {row['status']} {row['result'] or ''}"
            )
        unfinished = [row for row in rows if row["status"] != states.SUCCEEDED]
        if unfinished:
            raise fail(f"{len(unfinished)} scan task(s) did not succeed")


# ---- retry / cancel ------------------------------------------------------------------------------


@vod_app.command("retry")
def retry(target: str = typer.Argument(..., help="VOD id or URL")) -> None:
    """Requeue a VOD's failed, dead or cancelled tasks with a fresh attempt budget."""
    vod_id = parse_vod_ref(target)

    async def run(runtime: Runtime) -> list[int]:
        row = await services_of(runtime).vods.get(vod_id)
        if row is None:
            raise fail(f"vod {vod_id} not found")
        if row.job_id is None:
            raise fail(f"vod {vod_id} has no job yet; `reelhouse vod add {vod_id}` queues one")
        retried = await control.retry_job(runtime.engine, row.job_id)
        if not retried:
            job = await control.get_job(runtime.engine, row.job_id)
            raise fail(
                f"vod {vod_id}: job {row.job_id} is {job['status'] if job else 'gone'}, nothing to retry "
                f"(POST /vods/{vod_id}/reprocess starts over)"
            )
        return retried

    retried = with_runtime(run)
    console.print(f"vod {vod_id}: requeued task(s) {', '.join(map(str, retried))}")


@vod_app.command("cancel")
def cancel(target: str = typer.Argument(..., help="VOD id or URL")) -> None:
    """Cancel a VOD's queued or running work (a running download is stopped)."""
    vod_id = parse_vod_ref(target)

    async def run(runtime: Runtime) -> list[tuple[int, str]]:
        row = await services_of(runtime).vods.get(vod_id)
        if row is None:
            raise fail(f"vod {vod_id} not found")
        outcome = await control.cancel_job(runtime.engine, row.job_id) if row.job_id is not None else []
        if not outcome:
            raise fail(f"vod {vod_id}: nothing queued or running")
        return outcome

    outcome = with_runtime(run)
    console.print(", ".join(f"task {task_id}: {status}" for task_id, status in outcome))
