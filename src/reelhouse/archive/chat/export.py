"""Chat export as JSON, JSON Lines or plain text, written while it is read: pages of rows come
from the database one at a time and go straight to the output, so memory stays flat however
long the VOD's chat is."""

from __future__ import annotations

import json
from typing import Any, Literal, TextIO

from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.chat.replay import message_json, rfc3339_ms
from reelhouse.archive.chat.rows import KIND_ACTION, KIND_CLEARCHAT, KIND_CLEARMSG, KIND_NOTICE
from reelhouse.archive.store.chat import iter_rows
from reelhouse.archive.store.vods import VodNotFound, VodStore

ExportFormat = Literal["json", "jsonl", "txt"]
FORMATS: tuple[str, ...] = ("json", "jsonl", "txt")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _clock(seconds: float) -> str:
    # Negative offsets happen for chat sent just before the VOD's recorded start.
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    whole = int(seconds)
    return f"{sign}{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def text_line(row: Any) -> str:
    """`[0:01:23] Name: message`, TwitchDownloader's text layout; events say what happened."""
    stamp = f"[{_clock(row.rel_timestamp)}]"
    name = row.display_name or row.username or ""
    tags = row.tags or {}
    if row.kind == KIND_NOTICE:
        system = tags.get("system-msg") or tags.get("msg-id") or "notice"
        return f"{stamp} * {system}" + (f" — {name}: {row.message}" if row.message else "")
    if row.kind == KIND_CLEARCHAT:
        if not row.username:
            return f"{stamp} * chat was cleared by a moderator"
        duration = tags.get("ban-duration")
        what = f"timed out for {duration}s" if duration else "banned"
        return f"{stamp} * {row.username} was {what}"
    if row.kind == KIND_CLEARMSG:
        return f"{stamp} * a message from {row.username} was deleted: {row.message or ''}"
    if row.kind == KIND_ACTION:
        return f"{stamp} * {name} {row.message or ''}"  # how chat shows a /me line
    return f"{stamp} {name}: {row.message or ''}"


async def export_chat(
    engine: AsyncEngine,
    vod_id: str,
    out: TextIO,
    fmt: ExportFormat = "jsonl",
    *,
    from_rel: float = 0.0,
    to_rel: float | None = None,
) -> int:
    """Write the chat of `vod_id` to `out`; returns the number of rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    vod = await VodStore(engine).get(vod_id)
    if vod is None:
        raise VodNotFound(vod_id)
    count = 0
    if fmt == "json":
        header = {
            "vod_id": vod.twitch_vod_id,
            "channel": vod.channel,
            "title": vod.title,
            "date": rfc3339_ms(vod.date) if vod.date else None,
        }
        out.write(_dumps(header)[:-1] + ',"messages":[')
    async for row in iter_rows(engine, vod_id, from_rel=from_rel, to_rel=to_rel):
        if fmt == "txt":
            out.write(text_line(row) + "\n")
        elif fmt == "jsonl":
            out.write(_dumps(message_json(row)) + "\n")
        else:
            out.write(("," if count else "") + "\n" + _dumps(message_json(row)))
        count += 1
    if fmt == "json":
        out.write("\n]}\n")
    out.flush()
    return count
