"""`reelhouse vod channels ...`: which Twitch channels the archive watches (add, remove, pause,
resume, mode, list); the same store the `/channels` API uses."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from reelhouse.archive.services import ArchiveServices
from reelhouse.archive.settings import check_channel_name
from reelhouse.archive.store.live import RECORD_MODES
from reelhouse.core.cli.common import console, fail, with_runtime
from reelhouse.core.runtime import Runtime

channels_app = typer.Typer(help="Channels the archive watches.", no_args_is_help=True)


def services_of(runtime: Runtime) -> ArchiveServices:
    return runtime.component(ArchiveServices)


def channel_login(name: str) -> str:
    try:
        return check_channel_name(name)
    except ValueError as exc:
        raise fail(str(exc)) from None


@channels_app.command("add")
def channels_add(name: str) -> None:
    """Watch a channel (no restart needed: every node reads the channels table)."""
    login = channel_login(name)

    async def run(runtime: Runtime) -> bool:
        return await services_of(runtime).channels.add_channel(login, source="cli")

    if not with_runtime(run):
        raise fail(f"channel {login} is already watched")
    console.print(f"watching {login}")


@channels_app.command("remove")
def channels_remove(name: str) -> None:
    """Stop watching a channel; its VODs, files and chat are kept."""
    login = channel_login(name)

    async def run(runtime: Runtime) -> bool:
        return await services_of(runtime).channels.remove_channel(login)

    if not with_runtime(run):
        raise fail(f"channel {login} is not watched")
    console.print(f"stopped watching {login}")


def _set_paused(name: str, paused: bool) -> None:
    login = channel_login(name)

    async def run(runtime: Runtime) -> Any:
        return await services_of(runtime).channels.set_paused(login, paused)

    if with_runtime(run) is None:
        raise fail(f"channel {login} is not watched")
    console.print(f"{'paused' if paused else 'resumed'} {login}")


@channels_app.command("pause")
def channels_pause(name: str) -> None:
    """Pause a channel: no discovery and no chat recording until resumed (queued VODs go on)."""
    _set_paused(name, True)


@channels_app.command("resume")
def channels_resume(name: str) -> None:
    """Resume a paused channel."""
    _set_paused(name, False)


@channels_app.command("mode")
def channels_mode(
    name: str, mode: str = typer.Argument(..., help="vod (download the VOD) | live (record live) | both")
) -> None:
    """How a channel is archived: the VOD after the stream, the live stream, or both (better kept)."""
    login = channel_login(name)
    if mode not in RECORD_MODES:
        raise fail(f"mode must be one of {', '.join(RECORD_MODES)}")

    async def run(runtime: Runtime) -> bool:
        return await services_of(runtime).live.set_record_mode(login, mode)

    if not with_runtime(run):
        raise fail(f"channel {login} is not watched")
    console.print(f"{login}: record mode {mode}")


@channels_app.command("list")
def channels_list(all_: bool = typer.Option(False, "--all", help="Include disabled channels")) -> None:
    """Watched channels."""

    async def run(runtime: Runtime) -> list[Any]:
        return await services_of(runtime).channels.list_channels(include_disabled=all_)

    table = Table(title="channels")
    for column in ("name", "state", "source", "record_mode", "twitch_user_id", "created_at"):
        table.add_column(column)
    for item in with_runtime(run):
        table.add_row(
            item.name,
            "removed" if not item.enabled else ("paused" if item.paused else "watching"),
            item.source,
            item.record_mode,
            item.twitch_user_id or "",
            item.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
