"""Circuit breakers persisted in `kv` under the runbook keys.

Keys (vod-tender's names, so its runbook SQL resets a breaker): `circuit_state`
(closed | open | half-open), `circuit_failures`, `circuit_open_until` (RFC 3339 UTC). A breaker's
scope is the kv `channel` column: a Twitch channel name for the archive pipeline, or
`provider:channel` (e.g. `youtube:somechannel`) for a provider-specific breaker. Deleting the
keys (the runbook's reset) leaves a closed breaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import kv
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.kv import set_value

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the 0/1/2 gauge
KEYS = ("circuit_state", "circuit_failures", "circuit_open_until")


@dataclass(frozen=True)
class BreakerState:
    scope: str
    state: str
    failures: int
    open_until: datetime | None


def breaker_scope(channel: str = "", provider: str | None = None) -> str:
    return f"{provider}:{channel}" if provider else channel


class CircuitBreaker:
    def __init__(self, engine: AsyncEngine, *, failure_threshold: int, cooldown: timedelta) -> None:
        self.engine = engine
        self.failure_threshold = failure_threshold  # 0 disables the breaker (vod-tender's default)
        self.cooldown = cooldown

    async def state(self, scope: str = "") -> BreakerState:
        async with self.engine.connect() as conn:
            rows = dict((await conn.execute(
                select(kv.c.key, kv.c.value).where(kv.c.channel == scope, kv.c.key.in_(KEYS))
            )).all())
        return _parse(scope, rows)

    async def all_states(self) -> list[BreakerState]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(kv.c.channel, kv.c.key, kv.c.value).where(kv.c.key.in_(KEYS))
            )).all()
        by_scope: dict[str, dict[str, str]] = {}
        for channel, key, value in rows:
            by_scope.setdefault(channel, {})[key] = value
        return [_parse(scope, values) for scope, values in sorted(by_scope.items())]

    async def allow(self, scope: str = "") -> tuple[bool, datetime | None]:
        """May work for this scope run now? An open breaker whose cooldown has passed moves to
        half-open and lets work through as a trial; the next success or failure decides."""
        if self.failure_threshold <= 0:
            return True, None
        current = await self.state(scope)
        if current.state != OPEN:
            return True, None
        now = utcnow()
        if current.open_until and current.open_until > now:
            return False, current.open_until
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await set_value(conn, "circuit_state", HALF_OPEN, scope)
        finally:
            await conn.close()
        return True, None

    async def record_success(self, scope: str = "") -> None:
        if self.failure_threshold <= 0:
            return
        current = await self.state(scope)
        if current.state == CLOSED and current.failures == 0:
            return  # nothing to write on the hot path
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await set_value(conn, "circuit_state", CLOSED, scope)
                await set_value(conn, "circuit_failures", "0", scope)
                await conn.execute(delete(kv).where(kv.c.channel == scope,
                                                    kv.c.key == "circuit_open_until"))
        finally:
            await conn.close()

    async def record_failure(self, scope: str = "") -> BreakerState:
        """Count a failure; open the breaker at the threshold, or at once from half-open."""
        if self.failure_threshold <= 0:
            return BreakerState(scope, CLOSED, 0, None)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                rows = dict((await conn.execute(
                    select(kv.c.key, kv.c.value).where(kv.c.channel == scope, kv.c.key.in_(KEYS))
                )).all())
                current = _parse(scope, rows)
                failures = current.failures + 1
                await set_value(conn, "circuit_failures", str(failures), scope)
                if current.state == HALF_OPEN or failures >= self.failure_threshold:
                    until = utcnow() + self.cooldown
                    await set_value(conn, "circuit_state", OPEN, scope)
                    await set_value(conn, "circuit_open_until",
                                    until.isoformat().replace("+00:00", "Z"), scope)
                    return BreakerState(scope, OPEN, failures, until)
                await set_value(conn, "circuit_state", current.state, scope)
                return BreakerState(scope, current.state, failures, None)
        finally:
            await conn.close()


def _parse(scope: str, values: dict[str, str]) -> BreakerState:
    state = values.get("circuit_state") or CLOSED
    if state not in STATE_CODES:
        state = CLOSED
    try:
        failures = int(values.get("circuit_failures") or 0)
    except ValueError:
        failures = 0
    until_text = values.get("circuit_open_until")
    until = None
    if until_text:
        try:
            until = datetime.fromisoformat(until_text.replace("Z", "+00:00"))
        except ValueError:
            until = None
    return BreakerState(scope, state, failures, until)
