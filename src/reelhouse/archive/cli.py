"""`reelhouse vod ...`: add, list, scan, retry and cancel VODs; manage watched channels.

Commands work on the database directly (the same functions the API uses), so they need no
running server; the work itself is done by whichever worker claims the queued tasks. `--wait`
follows that work with a progress bar.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

vod_app = typer.Typer(help="Archived Twitch VODs.", no_args_is_help=True)
channels_app = typer.Typer(help="Channels the archive watches.", no_args_is_help=True)
vod_app.add_typer(channels_app, name="channels")

_VIDEO_URL = re.compile(r"(?:https?://)?(?:www\.|m\.)?twitch\.tv/videos/(\d+)(?:[/?#].*)?")
_STATUSES = ("all", "pending", "errored", "processed")
_FINAL_JOB = ("completed", "failed", "cancelled", "dead")
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


def _cli():
    # Imported late: reelhouse.cli loads this module through its entry points while it is
    # itself still being imported.
    import reelhouse.cli as core_cli

    return core_cli


def _fail(message: str) -> typer.Exit:
    _cli().err.print(f"[red]{message}[/red]")
    return typer.Exit(1)


async def _vod(engine, vod_id: str):
    from sqlalchemy import select

    from reelhouse.archive.models import vods

    async with engine.connect() as conn:
        return (await conn.execute(select(vods).where(vods.c.twitch_vod_id == vod_id))).first()


async def _job_status(engine, job_id: int) -> str | None:
    from sqlalchemy import select

    from reelhouse.core.db.models import jobs

    async with engine.connect() as conn:
        return (await conn.execute(select(jobs.c.status).where(jobs.c.id == job_id))).scalar()


# ---- add -----------------------------------------------------------------------------------------

async def _follow_download(engine, vod_id: str, job_id: int, timeout: float) -> str:
    """Show the VOD's download as a progress bar until its job finishes; returns the job status."""
    deadline = time.monotonic() + timeout
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TextColumn("{task.fields[state]}"), TimeElapsedColumn())
    with Progress(*columns, console=_cli().console) as progress:
        bar = progress.add_task(f"vod {vod_id}", total=None, state="queued")
        while True:
            row, status = await _vod(engine, vod_id), await _job_status(engine, job_id)
            if row is not None:
                progress.update(bar, completed=row.download_bytes or 0, total=row.download_total or None,
                                state=row.download_state or status or "")
            if status in _FINAL_JOB:
                return status
            if time.monotonic() >= deadline:
                return "timeout"
            await asyncio.sleep(POLL_SECONDS)


@vod_app.command("add")
def add(target: str = typer.Argument(..., help="VOD id or https://www.twitch.tv/videos/<id>"),
        channel: Optional[str] = typer.Option(None, help="Channel the VOD belongs to (default TWITCH_CHANNEL)"),
        title: Optional[str] = typer.Option(None, help="Title, until discovery fills it in"),
        priority: int = typer.Option(0, help="Higher runs first"),
        wait: bool = typer.Option(False, "--wait", help="Follow the download with a progress bar"),
        timeout: float = typer.Option(6 * 3600, help="Seconds --wait follows before giving up")) -> None:
    """Archive one VOD: record it and queue its download (and upload)."""
    vod_id = parse_vod_ref(target)

    async def run(runtime) -> tuple[bool, int, str | None]:
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        from reelhouse.archive import pipeline
        from reelhouse.archive.models import vods
        from reelhouse.archive.settings import archive_settings, check_channel_name
        from reelhouse.core.db.types import utcnow

        engine = runtime.engine
        name = channel or archive_settings(runtime.settings).twitch_channel
        if not name:
            raise _fail("--channel is required (no TWITCH_CHANNEL is configured)")
        try:
            name = check_channel_name(name)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        now = utcnow()
        async with engine.begin() as conn:
            created = (await conn.execute(insert(vods).values(
                twitch_vod_id=vod_id, channel=name, title=title, priority=priority, created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=[vods.c.twitch_vod_id]).returning(vods.c.id))).first()
        try:
            job_id = await pipeline.enqueue_vod(engine, vod_id)
        except ValueError as exc:  # a live-chat placeholder
            raise _fail(str(exc)) from None
        status = await _follow_download(engine, vod_id, job_id, timeout) if wait else None
        return created is not None, job_id, status

    created, job_id, status = _cli().with_runtime(run)
    verb = "added" if created else "already known"
    _cli().console.print(f"vod {vod_id} {verb}; job {job_id}")
    if status is not None and status != "completed":
        raise _fail(f"job {job_id} ended {status}" if status != "timeout" else
                    f"job {job_id} still running after {timeout:g}s (it continues in the background)")


# ---- list ----------------------------------------------------------------------------------------

@vod_app.command("list")
def list_vods(channel: Optional[str] = typer.Option(None, help="Only this channel"),
              status: str = typer.Option("all", help="all | pending | errored | processed"),
              limit: int = typer.Option(50, min=1, max=1000)) -> None:
    """VODs, newest first, with their state and progress."""
    if status not in _STATUSES:
        raise typer.BadParameter(f"expected one of {', '.join(_STATUSES)}", param_hint="--status")

    async def run(runtime) -> list[Any]:
        from sqlalchemy import func, select

        from reelhouse.archive.models import vods

        errored = vods.c.processing_error.is_not(None) & (vods.c.processing_error != "")
        query = select(vods).order_by(func.coalesce(vods.c.date, vods.c.created_at).desc(), vods.c.id.desc())
        conditions = {"pending": vods.c.processed.is_(False) & ~errored, "errored": errored,
                      "processed": vods.c.processed.is_(True)}
        if status in conditions:
            query = query.where(conditions[status])
        if channel:
            query = query.where(vods.c.channel == channel.lower())
        async with runtime.engine.connect() as conn:
            return (await conn.execute(query.limit(limit))).all()

    from reelhouse.archive.api import progress_percent

    rows = _cli().with_runtime(run)
    table = Table(title=f"vods ({status})")
    for column in ("id", "channel", "date", "title", "state", "progress", "error", "youtube"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.twitch_vod_id, row.channel, row.date.strftime("%Y-%m-%d %H:%M") if row.date else "",
                      (row.title or "")[:48], row.download_state or ("processed" if row.processed else ""),
                      f"{progress_percent(row):.0f}%", (row.processing_error or "")[:60], row.youtube_url or "")
    _cli().console.print(table)


# ---- scan ----------------------------------------------------------------------------------------

async def _follow_tasks(engine, task_ids: list[int], timeout: float) -> list[Any]:
    from sqlalchemy import select

    from reelhouse.core.db.models import tasks
    from reelhouse.core.jobs.states import TASK_FINAL

    deadline = time.monotonic() + timeout
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} tasks"), TimeElapsedColumn())
    with Progress(*columns, console=_cli().console) as progress:
        bar = progress.add_task("scanning", total=len(task_ids))
        while True:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(tasks).where(tasks.c.id.in_(task_ids)))).all()
            done = [row for row in rows if row.status in TASK_FINAL]
            progress.update(bar, completed=len(done))
            if len(done) == len(task_ids) or time.monotonic() >= deadline:
                return rows
            await asyncio.sleep(POLL_SECONDS)


@vod_app.command("scan")
def scan(channel: list[str] = typer.Option([], "--channel", "-c", help="Channel(s); default all watched"),
         catalog: bool = typer.Option(False, "--catalog", help="Also walk the whole back catalog"),
         wait: bool = typer.Option(False, "--wait", help="Wait for the scan tasks to finish"),
         timeout: float = typer.Option(600, help="Seconds --wait waits")) -> None:
    """Queue discovery of new VODs (like GET /admin/vod/scan) for one or all channels."""

    async def run(runtime) -> tuple[list[tuple[str, str, int]], list[Any]]:
        from reelhouse.archive.channels import watched_channels
        from reelhouse.archive.settings import archive_settings, check_channel_name
        from reelhouse.core.jobs.queue import TaskQueue

        try:
            names = [check_channel_name(name) for name in channel]
        except ValueError as exc:
            raise _fail(str(exc)) from None
        names = names or await watched_channels(runtime.engine, archive_settings(runtime.settings).channels)
        if not names:
            raise _fail("no channel is watched; pass --channel or run `reelhouse vod channels add NAME`")
        queue, queued = TaskQueue(runtime.engine), []
        for name in names:
            for kind in ("vod.discover", "vod.catalog") if catalog else ("vod.discover",):
                queued.append((name, kind, (await queue.enqueue(kind, {"channel": name}, max_attempts=3)).task_id))
        rows = await _follow_tasks(runtime.engine, [t for *_, t in queued], timeout) if wait else []
        return queued, rows

    queued, rows = _cli().with_runtime(run)
    for name, kind, task_id in queued:
        _cli().console.print(f"{kind} for {name}: task {task_id}")
    if wait:
        unfinished = [row for row in rows if row.status != "succeeded"]
        for row in rows:
            _cli().console.print(f"task {row.id} {row.kind} {row.payload.get('channel')}: {row.status} {row.result or ''}")
        if unfinished:
            raise _fail(f"{len(unfinished)} scan task(s) did not succeed")


# ---- retry / cancel ------------------------------------------------------------------------------

@vod_app.command("retry")
def retry(target: str = typer.Argument(..., help="VOD id or URL")) -> None:
    """Requeue a VOD's failed, dead or cancelled tasks with a fresh attempt budget."""
    vod_id = parse_vod_ref(target)

    async def run(runtime) -> list[int]:
        from reelhouse.core.jobs import control

        row = await _vod(runtime.engine, vod_id)
        if row is None:
            raise _fail(f"vod {vod_id} not found")
        if row.job_id is None:
            raise _fail(f"vod {vod_id} has no job yet; `reelhouse vod add {vod_id}` queues one")
        retried = await control.retry_job(runtime.engine, row.job_id)
        if not retried:
            status = await _job_status(runtime.engine, row.job_id)
            raise _fail(f"vod {vod_id}: job {row.job_id} is {status}, nothing to retry "
                        f"(POST /vods/{vod_id}/reprocess starts over)")
        return retried

    retried = _cli().with_runtime(run)
    _cli().console.print(f"vod {vod_id}: requeued task(s) {', '.join(map(str, retried))}")


@vod_app.command("cancel")
def cancel(target: str = typer.Argument(..., help="VOD id or URL")) -> None:
    """Cancel a VOD's queued or running work (a running download is stopped)."""
    vod_id = parse_vod_ref(target)

    async def run(runtime) -> list[tuple[int, str]]:
        from reelhouse.core.jobs import control

        row = await _vod(runtime.engine, vod_id)
        if row is None:
            raise _fail(f"vod {vod_id} not found")
        outcome = await control.cancel_job(runtime.engine, row.job_id) if row.job_id is not None else []
        if not outcome:
            raise _fail(f"vod {vod_id}: nothing queued or running")
        return outcome

    outcome = _cli().with_runtime(run)
    _cli().console.print(", ".join(f"task {task_id}: {status}" for task_id, status in outcome))


# ---- channels ------------------------------------------------------------------------------------

@channels_app.command("add")
def channels_add(name: str) -> None:
    """Watch a channel (no restart needed: every node reads the channels table)."""

    async def run(runtime) -> tuple[str, bool]:
        from reelhouse.archive import channels
        from reelhouse.archive.settings import check_channel_name

        try:
            login = check_channel_name(name)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        return login, await channels.add_channel(runtime.engine, login, source="cli")

    login, added = _cli().with_runtime(run)
    if not added:
        raise _fail(f"channel {login} is already watched")
    _cli().console.print(f"watching {login}")


@channels_app.command("remove")
def channels_remove(name: str) -> None:
    """Stop watching a channel; its VODs, files and chat are kept."""

    async def run(runtime) -> bool:
        from reelhouse.archive import channels

        try:
            return await channels.remove_channel(runtime.engine, name)
        except ValueError as exc:
            raise _fail(str(exc)) from None

    if not _cli().with_runtime(run):
        raise _fail(f"channel {name.lower()} is not watched")
    _cli().console.print(f"stopped watching {name.lower()}")


@channels_app.command("list")
def channels_list(all_: bool = typer.Option(False, "--all", help="Include disabled channels")) -> None:
    """Watched channels."""

    async def run(runtime) -> list[Any]:
        from reelhouse.archive import channels

        return await channels.list_channels(runtime.engine, include_disabled=all_)

    table = Table(title="channels")
    for column in ("name", "enabled", "source", "twitch_user_id", "created_at"):
        table.add_column(column)
    for item in _cli().with_runtime(run):
        table.add_row(item.name, "yes" if item.enabled else "no", item.source, item.twitch_user_id or "",
                      item.created_at.strftime("%Y-%m-%d %H:%M"))
    _cli().console.print(table)
