"""Runtime configuration overrides: `PUT /config` writes them, the pipeline reads them.

vod-tender's `/config` stored `cfg:<KEY>` rows that no worker ever read (reference §12.21).
Here an override is a kv row (channel '', key `cfg:<KEY>`) holding the value as an operator
would write the environment variable, validated with the same parsing as the variable, and
the pipeline asks for effective values each time it starts work:

    overrides = await load_overrides(engine)                     # {"VOD_PROCESS_INTERVAL": "5m"}
    settings = apply_overrides(archive_settings, overrides)      # a new, validated settings object
    interval = await effective_setting(engine, "VOD_PROCESS_INTERVAL", default)

Only vod-tender's "safe keys" exist. `DATA_DIR` and `LOG_FORMAT` are shown by `GET /config`
but are read once at start-up (moving the media directory or the log format under a running
process is not safe), so `PUT` refuses them with a message rather than accepting a value that
would not take effect. `LOG_LEVEL` is applied to the serving process at once and polled by
the `watch_log_level` service in every `serve` process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.config import format_duration, parse_duration
from reelhouse.core.db.models import kv
from reelhouse.core.jobs.kv import set_value

log = logging.getLogger("reelhouse.archive.config")

PREFIX = "cfg:"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LEVELS = {"debug", "info", "warn", "warning", "error"}


class OverrideError(ValueError):
    """A key or value `PUT /config` cannot accept; the message names the key."""


def _duration(minimum: timedelta) -> Callable[[str], timedelta]:
    def parse(raw: str) -> timedelta:
        value = parse_duration(raw)
        if value < minimum:
            raise ValueError(f"must be at least {format_duration(minimum)}")
        return value
    return parse


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        text = raw.strip()
        if not text.lstrip("-").isdigit():
            raise ValueError(f"expected an integer, got {raw!r}")
        value = int(text)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        if value > 2**31 - 1:
            raise ValueError("too large")
        return value
    return parse


def _boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected 1/0/true/false, got {raw!r}")


def _log_level(raw: str) -> str:
    text = raw.strip().lower()
    if text not in _LEVELS:
        raise ValueError(f"expected one of {', '.join(sorted(_LEVELS))}")
    return text


def _text(raw: str) -> str:
    return raw.strip()


@dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[str], Any]
    default: str  # vod-tender's default, as the env var would be written; "" = unset
    live: bool = True  # False: read at start-up only, so PUT refuses it


# vod-tender's safe keys (reference §1 #8), in its order, with its defaults (§2).
KEYS: dict[str, Key] = {k.name: k for k in (
    Key("LOG_LEVEL", _log_level, "info"),
    Key("LOG_FORMAT", _text, "text", live=False),
    Key("DATA_DIR", _text, "data", live=False),
    Key("VOD_PROCESS_INTERVAL", _duration(timedelta(seconds=1)), "1m"),
    Key("PROCESSING_RETRY_COOLDOWN", _duration(timedelta(0)), "600s"),
    Key("DOWNLOAD_MAX_ATTEMPTS", _integer(1), "5"),
    Key("DOWNLOAD_BACKOFF_BASE", _duration(timedelta(0)), "2s"),
    Key("UPLOAD_MAX_ATTEMPTS", _integer(1), "5"),
    Key("UPLOAD_BACKOFF_BASE", _duration(timedelta(0)), "2s"),
    Key("RETAIN_KEEP_NEWER_THAN_DAYS", _integer(0), "7"),
    Key("RETENTION_KEEP_DAYS", _integer(0), ""),
    Key("RETENTION_KEEP_COUNT", _integer(0), ""),
    Key("RETENTION_DRY_RUN", _boolean, ""),
    Key("RETENTION_INTERVAL", _duration(timedelta(seconds=1)), "6h"),
    Key("BACKFILL_UPLOAD_DAILY_LIMIT", _integer(0), "10"),
)}
SAFE_KEYS = tuple(KEYS)


def _as_text(key: str, value: Any) -> str:
    """JSON bodies may carry numbers and booleans; store what the env var would hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value).strip()
    raise OverrideError(f"{key}: expected a string, number or boolean, got {type(value).__name__}")


def parse_value(key: str, raw: Any) -> Any:
    """Validate `raw` for `key` exactly as the environment variable is parsed."""
    spec = KEYS.get(key)
    if spec is None:
        raise OverrideError(f"unknown config key {key!r}; allowed: {', '.join(SAFE_KEYS)}")
    text = _as_text(key, raw)
    try:
        return spec.parse(text)
    except ValueError as exc:
        raise OverrideError(f"{key}: invalid value {text!r}: {exc}") from None


def validate_changes(changes: Mapping[str, Any]) -> dict[str, str | None]:
    """Check a `PUT /config` body: every key known and live, every value parseable.
    Returns {KEY: text to store, or None to remove the override}. Nothing is partially applied."""
    if not changes:
        raise OverrideError("empty body: send a JSON object such as {\"VOD_PROCESS_INTERVAL\": \"5m\"}")
    cleaned: dict[str, str | None] = {}
    for key, raw in changes.items():
        spec = KEYS.get(key)
        if spec is None:
            raise OverrideError(f"unknown config key {key!r}; allowed: {', '.join(SAFE_KEYS)}")
        if not spec.live:
            raise OverrideError(f"{key} is read at start-up only; set the environment variable and restart")
        if raw is None:
            cleaned[key] = None  # null removes the override: back to the environment's value
            continue
        parse_value(key, raw)
        cleaned[key] = _as_text(key, raw)
    return cleaned


async def load_overrides(engine: AsyncEngine) -> dict[str, str]:
    """Stored overrides {KEY: raw text}. Rows that no longer parse (written by hand with SQL)
    are skipped with a warning, so a typo never stops the pipeline."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(kv.c.key, kv.c.value).where(
            kv.c.channel == "", kv.c.key.like(f"{PREFIX}%")))).all()
    overrides: dict[str, str] = {}
    for key, value in rows:
        name = key[len(PREFIX):]
        try:
            parse_value(name, value)
        except OverrideError as exc:
            log.warning("ignoring config override: %s", exc, extra={"component": "archive_config"})
            continue
        overrides[name] = value
    return overrides


async def write_overrides(engine: AsyncEngine, changes: Mapping[str, str | None]) -> None:
    """Store validated changes (from `validate_changes`) in one transaction."""
    async with engine.begin() as conn:
        for key, value in changes.items():
            if value is None:
                await conn.execute(delete(kv).where(kv.c.channel == "", kv.c.key == PREFIX + key))
            else:
                await set_value(conn, PREFIX + key, value)


async def effective_setting(engine: AsyncEngine, key: str, default: Any) -> Any:
    """The parsed override for `key` if one is stored, else `default` (the pipeline passes its
    environment-derived value). Durations come back as timedelta, counts as int."""
    if key not in KEYS:
        raise KeyError(f"{key} is not an overridable setting")
    raw = (await load_overrides(engine)).get(key)
    return default if raw is None else parse_value(key, raw)


def _field_for(model: type[BaseModel], key: str) -> str | None:
    """The settings field read from environment variable `key` (its validation alias)."""
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None)
        names = [alias] if isinstance(alias, str) else [c for c in (choices or []) if isinstance(c, str)]
        if key in names or (not names and name.upper() == key):
            return name
    return None


def apply_overrides(settings: BaseModel, overrides: Mapping[str, str], *, strict: bool = False) -> BaseModel:
    """A copy of `settings` (ArchiveSettings or any section) with the overrides whose env var
    names match one of its fields, run through the model's own validators, so an override is
    parsed exactly like the variable. Keys the model does not have are left alone. An override
    the model rejects raises `OverrideError` when `strict` (PUT /config), else is skipped with a
    warning (the pipeline keeps running on the environment's value)."""
    model = type(settings)
    values = settings.model_dump()
    for key, raw in overrides.items():
        field = _field_for(model, key)
        if field is None:
            continue
        candidate = {**values, field: raw}
        try:
            model.model_validate(candidate)
        except ValidationError as exc:
            if strict:
                raise OverrideError(f"{key}: invalid value {raw!r}: {exc.errors()[0]['msg']}") from None
            log.warning("ignoring config override %s=%r: %s", key, raw, exc.errors()[0]["msg"],
                        extra={"component": "archive_config"})
            continue
        values = candidate
    return model.model_validate(values)


def env_value(key: str, settings_objects: tuple[BaseModel, ...] = ()) -> str:
    """The value a key has without an override: the environment variable, else the value of the
    settings field that reads it, else vod-tender's default."""
    raw = os.environ.get(key)
    if raw is not None:
        return raw
    for settings in settings_objects:
        field = _field_for(type(settings), key)
        if field is not None:
            return _render(getattr(settings, field))
    return KEYS[key].default


def _render(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bool):
        return "1" if value else ""
    return "" if value is None else str(value)


async def current_config(engine: AsyncEngine, settings_objects: tuple[BaseModel, ...] = ()) -> dict[str, str]:
    """`GET /config`: each safe key's effective value (override, else environment/default);
    like vod-tender, keys whose value is empty are left out."""
    overrides = await load_overrides(engine)
    values = {key: overrides.get(key, env_value(key, settings_objects)) for key in SAFE_KEYS}
    return {key: value for key, value in values.items() if value not in ("", None)}


def set_process_log_level(level: str) -> None:
    logging.getLogger().setLevel({"warn": "WARNING"}.get(level, level.upper()))


async def watch_log_level(engine: AsyncEngine, stop: asyncio.Event, every: float = 30.0) -> None:
    """Keep this process's log level equal to the `LOG_LEVEL` override, so a change made through
    any API node reaches every serving process within `every` seconds."""
    applied: str | None = None
    while not stop.is_set():
        try:
            level = (await load_overrides(engine)).get("LOG_LEVEL")
            if level and level != applied:
                set_process_log_level(_log_level(level))
                applied = level
        except Exception:  # a database blip must not end the watcher; it retries next round
            log.warning("could not read the LOG_LEVEL override", exc_info=True,
                        extra={"component": "archive_config"})
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass
