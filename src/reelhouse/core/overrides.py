"""Runtime overrides of settings: operators change some variables without a restart.

An override is a kv row (channel '', key `cfg:<VARIABLE>`) holding the value as the environment
variable would be written; `PUT /config` writes them (vod-tender's route, whose rows no worker
ever read, reference §12.21). Each domain registers which of its settings may be overridden;
a value is checked by the settings section that owns the field, with the same validators as
the variable, so an override is accepted exactly when the same text in the environment would
be. Readers ask for effective values each time they start work:

    settings = await runtime.overrides.effective(archive_settings)   # env + overrides

Keys that are read once at start-up (moving the media directory or the log format under a
running process is not safe) are listed by `GET /config` but refused by `PUT` with a message.
`LOG_LEVEL` is applied to the serving process at once and followed by every process through
`watch_log_level`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.config import SettingsSection, format_duration
from reelhouse.core.db.models import kv
from reelhouse.core.jobs.kv import set_value

log = logging.getLogger("reelhouse.config")

PREFIX = "cfg:"
S = TypeVar("S", bound=SettingsSection)


class OverrideError(ValueError):
    """A key or value `PUT /config` cannot accept; the message names the key."""


@dataclass(frozen=True)
class _Key:
    name: str
    section: SettingsSection
    field: str
    live: bool


def field_for(model: type[SettingsSection], variable: str) -> str | None:
    """The field of `model` that reads environment variable `variable` (its validation alias)."""
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None)
        names = [alias] if isinstance(alias, str) else [c for c in (choices or []) if isinstance(c, str)]
        if variable in names or (not names and name.upper() == variable):
            return name
    return None


def _as_text(key: str, value: Any) -> str:
    """JSON bodies may carry numbers and booleans; store what the variable would hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value).strip()
    raise OverrideError(f"{key}: expected a string, number or boolean, got {type(value).__name__}")


def _render(value: Any) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bool):
        return "1" if value else ""
    return "" if value is None else str(value)


def set_process_log_level(level: str) -> None:
    logging.getLogger().setLevel({"warn": "WARNING"}.get(level, level.upper()))


class RuntimeOverrides:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._keys: dict[str, _Key] = {}

    def register(self, section: SettingsSection, variables: Iterable[str], *, startup_only: Iterable[str] = ()) -> None:
        """Let `variables` (fields of `section`, by environment name) be overridden at run time;
        `startup_only` ones are shown by GET /config and refused by PUT."""
        frozen = set(startup_only)
        for variable in [*variables, *frozen]:
            field = field_for(type(section), variable)
            if field is None:
                raise ValueError(f"{type(section).__name__} has no field read from {variable}")
            if variable in self._keys:
                raise ValueError(f"override key {variable} registered twice")
            self._keys[variable] = _Key(variable, section, field, live=variable not in frozen)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def _check(self, key: str, text: str) -> None:
        spec = self._keys[key]
        model = type(spec.section)
        try:
            model.model_validate({**spec.section.model_dump(), spec.field: text})
        except ValidationError as exc:
            raise OverrideError(f"{key}: invalid value {text!r}: {exc.errors()[0]['msg']}") from None

    def _unknown(self, key: str) -> OverrideError:
        return OverrideError(f"unknown config key {key[:64]!r}; allowed: {', '.join(self._keys)}")

    def validate(self, changes: Mapping[str, Any]) -> dict[str, str | None]:
        """Check a `PUT /config` body: every key known and live, every value valid. Returns
        {KEY: text to store, or None to remove the override}. Nothing is partially applied."""
        if not changes:
            raise OverrideError('empty body: send a JSON object such as {"VOD_PROCESS_INTERVAL": "5m"}')
        cleaned: dict[str, str | None] = {}
        for key, raw in changes.items():
            spec = self._keys.get(key)
            if spec is None:
                raise self._unknown(key)
            if not spec.live:
                raise OverrideError(f"{key} is read at start-up only; set the environment variable and restart")
            if raw is None:
                cleaned[key] = None  # null removes the override: back to the environment's value
                continue
            text = _as_text(key, raw)
            self._check(key, text)
            cleaned[key] = text
        return cleaned

    async def load(self) -> dict[str, str]:
        """Stored overrides {KEY: raw text}. Rows that no longer validate (written by hand with
        SQL) are skipped with a warning, so a typo never stops the pipeline."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(kv.c.key, kv.c.value).where(kv.c.channel == "", kv.c.key.like(f"{PREFIX}%")))
            ).all()
        overrides: dict[str, str] = {}
        for key, value in rows:
            name = key[len(PREFIX) :]
            try:
                if name not in self._keys:
                    raise self._unknown(name)
                self._check(name, value)
            except OverrideError as exc:
                log.warning("ignoring config override: %s", exc, extra={"component": "config"})
                continue
            overrides[name] = value
        return overrides

    async def write(self, changes: Mapping[str, str | None]) -> None:
        """Store validated changes (from `validate`) in one transaction."""
        async with self.engine.begin() as conn:
            for key, value in changes.items():
                if value is None:
                    await conn.execute(delete(kv).where(kv.c.channel == "", kv.c.key == PREFIX + key))
                else:
                    await set_value(conn, PREFIX + key, value)

    def apply(self, section: S, overrides: Mapping[str, str]) -> S:
        """A copy of `section` with the overrides of its own fields."""
        values = section.model_dump()
        for key, raw in overrides.items():
            spec = self._keys.get(key)
            if spec is not None and type(spec.section) is type(section):
                values[spec.field] = raw
        return type(section).model_validate(values)

    async def effective(self, section: S) -> S:
        """`section` with the stored overrides on top (what a task should use now)."""
        return self.apply(section, await self.load())

    async def current(self) -> dict[str, str]:
        """`GET /config`: each key's effective value (override, else the environment variable,
        else the setting's value); keys whose value is empty are left out, as in vod-tender."""
        overrides = await self.load()
        values: dict[str, str] = {}
        for key, spec in self._keys.items():
            value = overrides.get(key)
            if value is None:
                value = os.environ.get(key)
            if value is None:
                value = _render(getattr(spec.section, spec.field))
            if value != "":
                values[key] = value
        return values

    async def watch_log_level(self, stop: asyncio.Event, every: float = 30.0) -> None:
        """Keep this process's log level equal to the `LOG_LEVEL` override, so a change made
        through any API node reaches every serving process within `every` seconds."""
        applied: str | None = None
        while not stop.is_set():
            try:
                level = (await self.load()).get("LOG_LEVEL")
                if level and level != applied:
                    set_process_log_level(level.strip().lower())
                    applied = level
            except Exception:  # a database blip must not end the watcher; it retries next round
                log.warning("could not read the LOG_LEVEL override", exc_info=True, extra={"component": "config"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
