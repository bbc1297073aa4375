"""Jinja2 filters: times, durations, sizes and percentages written the same way on every page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Undefined

from reelhouse.core.db.types import utcnow


def missing(value: Any) -> bool:
    return value is None or value == "" or isinstance(value, Undefined)


def _as_datetime(value: Any) -> datetime | None:
    if missing(value):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(value: Any) -> str:
    """`2026-12-01 22:34:03 UTC`; an empty string when there is no time."""
    moment = _as_datetime(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def iso(value: Any) -> str:
    moment = _as_datetime(value)
    return moment.isoformat() if moment else ""


def ago(value: Any) -> str:
    moment = _as_datetime(value)
    if moment is None:
        return "never"
    seconds = int((utcnow() - moment).total_seconds())
    if seconds < 0:
        return "in " + duration(-seconds)
    return "just now" if seconds < 5 else duration(seconds) + " ago"


def duration(value: Any) -> str:
    """Seconds as `1h 02m`, `3m 07s`, `42s`."""
    if missing(value):
        return "–"
    total = int(float(value))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def size(value: Any) -> str:
    if missing(value):
        return "–"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def percent(value: Any) -> str:
    """Progress fractions (0..1) as `42 %`."""
    if missing(value):
        return "–"
    return f"{float(value) * 100:.0f} %"


ALL = {"when": when, "iso": iso, "ago": ago, "duration": duration, "size": size, "percent": percent}
