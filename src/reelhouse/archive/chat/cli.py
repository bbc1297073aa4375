"""`reelhouse chat ...`: export a VOD's chat, reconcile a placeholder by hand.

Registered on the main CLI through the `reelhouse.cli` entry point (`chat = ...:chat_app`).
Imports inside the commands keep `reelhouse --help` fast.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import typer

chat_app = typer.Typer(help="Recorded Twitch chat.", no_args_is_help=True)


@chat_app.command("export")
def export(
    vod: str = typer.Argument(..., help="Twitch VOD id (or a live-<unix> placeholder)"),
    format: str = typer.Option("jsonl", "--format", "-f", help="json | jsonl | txt"),
    output: Path | None = typer.Option(None, "--output", "-o", help="File to write (default: stdout)"),
    from_: float = typer.Option(0.0, "--from", help="Start at this offset (seconds)"),
    to: float | None = typer.Option(None, "--to", help="Stop after this offset (seconds)"),
) -> None:
    """Stream a VOD's chat out in pages: memory stays flat for any length."""
    from reelhouse.archive.chat.export import FORMATS, ExportFormat, VodNotFound, export_chat
    from reelhouse.core.cli.common import err, with_runtime

    if format not in FORMATS:
        err.print(f"[red]unknown format {format!r}[/red]; expected one of {', '.join(FORMATS)}")
        raise typer.Exit(2)

    fmt = cast(ExportFormat, format)

    async def run(runtime: Any) -> int:
        if output is None:
            return await export_chat(runtime.engine, vod, sys.stdout, fmt, from_rel=from_, to_rel=to)
        partial = output.with_name(output.name + ".part")
        with partial.open("w", encoding="utf-8") as handle:
            count = await export_chat(runtime.engine, vod, handle, fmt, from_rel=from_, to_rel=to)
        partial.replace(output)  # a file under the final name is always complete
        return count

    try:
        count = with_runtime(run)
    except VodNotFound:
        err.print(f"[red]vod {vod} not found[/red]")
        raise typer.Exit(1) from None
    err.print(f"{count} chat rows exported" + (f" to {output}" if output else ""))


@chat_app.command("reconcile")
def reconcile(
    placeholder: str = typer.Argument(..., help="live-<unix> placeholder id"),
    vod: str = typer.Argument(..., help="The Twitch VOD id its chat belongs to"),
    vod_start: datetime = typer.Option(..., "--vod-start", help="The VOD's created_at (RFC 3339, with zone)"),
    stream_start: datetime | None = typer.Option(
        None, "--stream-start", help="The stream's started_at (default: the placeholder's date)"
    ),
    title: str = typer.Option("", help="Title for the VOD row, if it has to be created"),
) -> None:
    """Move a placeholder's chat to a VOD (when automatic reconciliation gave up)."""
    from reelhouse.archive.store import VodStore
    from reelhouse.archive.store.chat import move_chat
    from reelhouse.archive.twitch.helix import HelixVideo
    from reelhouse.core.cli.common import err, print_json, with_runtime

    for value, name in ((vod_start, "--vod-start"), (stream_start, "--stream-start")):
        if value is not None and value.tzinfo is None:
            err.print(f"[red]{name} needs a time zone (e.g. 2024-05-01T18:00:00Z)[/red]")
            raise typer.Exit(2)

    async def run(runtime: Any) -> dict[str, Any] | None:
        row = await VodStore(runtime.engine).get(placeholder)
        if row is None or not row.is_placeholder:
            return None
        started = stream_start or row.date
        video = HelixVideo(
            id=vod,
            user_id="",
            user_login=row.channel,
            title=title or vod,
            created_at=vod_start,
            url="",
            duration=0,
            type="archive",
        )
        result = await move_chat(runtime.engine, placeholder, video, started)
        return (
            None
            if result is None
            else {
                "vod_id": result.vod_id,
                "messages": result.messages,
                "shift_seconds": result.shift_seconds,
                "created_vod": result.created_vod,
            }
        )

    outcome = with_runtime(run)
    if outcome is None:
        err.print(f"[red]{placeholder} is not a placeholder VOD[/red]")
        raise typer.Exit(1)
    print_json(outcome)
