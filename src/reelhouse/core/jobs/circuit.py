"""Circuit breakers persisted in `kv` under the runbook keys.

Keys (vod-tender's names, so its runbook SQL resets a breaker): `circuit_state`
(closed | open | half-open), `circuit_failures`, `circuit_open_until` (RFC 3339 UTC). A breaker's
scope is the kv `channel` column: a Twitch channel name for the archive pipeline, or
`provider:channel` (e.g. `youtube:somechannel`) for a provider-specific breaker. Deleting the
keys (the runbook's reset) leaves a closed breaker.

Half-open means one trial: the caller that moves a breaker to half-open (or finds it half-open
with no trial in flight) is the trial and gets `circuit_trial_until` (a lease on the trial, so
a trial whose caller vanished is not waited for forever). Every other caller, in any process,
is refused until then (tasks wait as for an open breaker, spending no attempt); the trial's
success closes the breaker, its failure opens it again. Decisions are made under a lock (an
advisory lock on PostgreSQL, the write lock on SQLite) against the database's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import kv
from reelhouse.core.jobs.dbtime import database_time
from reelhouse.core.jobs.kv import get_value, set_value

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the 0/1/2 gauge
KEYS = ("circuit_state", "circuit_failures", "circuit_open_until")
TRIAL_KEY = "circuit_trial_until"


@dataclass(frozen=True)
class BreakerState:
    scope: str
    state: str
    failures: int
    open_until: datetime | None


def breaker_scope(channel: str = "", provider: str | None = None) -> str:
    return f"{provider}:{channel}" if provider else channel


class CircuitBreaker:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        failure_threshold: int,
        cooldown: timedelta,
        trial_timeout: timedelta | None = None,
    ) -> None:
        self.engine = engine
        self.failure_threshold = failure_threshold  # 0 disables the breaker (vod-tender's default)
        self.cooldown = cooldown
        # How long the other callers wait for a trial before one of them becomes the trial.
        self.trial_timeout = trial_timeout or cooldown

    async def state(self, scope: str = "") -> BreakerState:
        async with self.engine.connect() as conn:
            rows = dict(
                (
                    await conn.execute(select(kv.c.key, kv.c.value).where(kv.c.channel == scope, kv.c.key.in_(KEYS)))
                ).all()
            )
        return _parse(scope, rows)

    async def all_states(self) -> list[BreakerState]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(kv.c.channel, kv.c.key, kv.c.value).where(kv.c.key.in_(KEYS)))).all()
        by_scope: dict[str, dict[str, str]] = {}
        for channel, key, value in rows:
            by_scope.setdefault(channel, {})[key] = value
        return [_parse(scope, values) for scope, values in sorted(by_scope.items())]

    async def allow(self, scope: str = "") -> tuple[bool, datetime | None]:
        """May work for this scope run now? Returns (allowed, retry_at). An open breaker whose
        cooldown has passed lets exactly one caller through as the trial (see the module doc);
        the others get the time the trial's lease ends."""
        if self.failure_threshold <= 0:
            return True, None
        if (await self.state(scope)).state == CLOSED:
            return True, None  # the hot path: one read, no lock
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await _lock_scope(conn, scope)
                current = _parse(scope, await _values(conn, scope))
                now = await database_time(conn)
                if current.state == CLOSED:
                    return True, None
                if current.state == OPEN and current.open_until and current.open_until > now:
                    return False, current.open_until
                if current.state == HALF_OPEN:
                    trial_until = _time(await get_value(conn, TRIAL_KEY, scope))
                    if trial_until and trial_until > now:
                        return False, trial_until
                await set_value(conn, "circuit_state", HALF_OPEN, scope)
                await set_value(conn, TRIAL_KEY, _rfc3339(now + self.trial_timeout), scope)
                return True, None
        finally:
            await conn.close()

    async def record_success(self, scope: str = "") -> None:
        if self.failure_threshold <= 0:
            return
        current = await self.state(scope)
        if current.state == CLOSED and current.failures == 0:
            return  # nothing to write on the hot path
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await _lock_scope(conn, scope)
                await set_value(conn, "circuit_state", CLOSED, scope)
                await set_value(conn, "circuit_failures", "0", scope)
                await conn.execute(
                    delete(kv).where(kv.c.channel == scope, kv.c.key.in_(("circuit_open_until", TRIAL_KEY)))
                )
        finally:
            await conn.close()

    async def record_failure(self, scope: str = "") -> BreakerState:
        """Count a failure; open the breaker at the threshold, or at once from half-open."""
        if self.failure_threshold <= 0:
            return BreakerState(scope, CLOSED, 0, None)
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                await _lock_scope(conn, scope)
                current = _parse(scope, await _values(conn, scope))
                failures = current.failures + 1
                await set_value(conn, "circuit_failures", str(failures), scope)
                if current.state == HALF_OPEN or failures >= self.failure_threshold:
                    until = await database_time(conn) + self.cooldown
                    await set_value(conn, "circuit_state", OPEN, scope)
                    await set_value(conn, "circuit_open_until", _rfc3339(until), scope)
                    await conn.execute(delete(kv).where(kv.c.channel == scope, kv.c.key == TRIAL_KEY))
                    return BreakerState(scope, OPEN, failures, until)
                await set_value(conn, "circuit_state", current.state, scope)
                return BreakerState(scope, current.state, failures, None)
        finally:
            await conn.close()


async def _lock_scope(conn: AsyncConnection, scope: str) -> None:
    """Serialise breaker decisions for one scope across processes (SQLite: the write lock)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"circuit:{scope}"))))


async def _values(conn: AsyncConnection, scope: str) -> dict[str, str]:
    rows = await conn.execute(select(kv.c.key, kv.c.value).where(kv.c.channel == scope, kv.c.key.in_(KEYS)))
    return {row.key: row.value for row in rows}


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _parse(scope: str, values: dict[str, str]) -> BreakerState:
    state = values.get("circuit_state") or CLOSED
    if state not in STATE_CODES:
        state = CLOSED
    try:
        failures = int(values.get("circuit_failures") or 0)
    except ValueError:
        failures = 0
    return BreakerState(scope, state, failures, _time(values.get("circuit_open_until")))
