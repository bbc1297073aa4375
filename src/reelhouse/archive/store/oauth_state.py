"""OAuth connect-flow `state` values: kv rows `oauth_state:<provider>:<sha256(state)>`, so any
API node can finish a flow another one started. Single use: taking one deletes it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.models import kv
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs.kv import set_value

STATE_PREFIX = "oauth_state:"


class OAuthStateStore:
    def __init__(self, engine: AsyncEngine, ttl: timedelta) -> None:
        self.engine = engine
        self.ttl = ttl

    async def save(self, key: str, record: dict[str, Any]) -> None:
        now = utcnow()
        async with self.engine.begin() as conn:
            # Abandoned flows leave rows behind; each new start sweeps the expired ones.
            await conn.execute(
                delete(kv).where(
                    kv.c.channel == "", kv.c.key.like(f"{STATE_PREFIX}%"), kv.c.updated_at < now - self.ttl
                )
            )
            await set_value(
                conn, STATE_PREFIX + key, json.dumps({**record, "expires_at": (now + self.ttl).isoformat()})
            )

    async def take(self, key: str) -> dict[str, Any] | None:
        """The record saved under `key`, removed; None if unknown, spent or expired."""
        async with self.engine.begin() as conn:
            value = (
                await conn.execute(
                    delete(kv).where(kv.c.channel == "", kv.c.key == STATE_PREFIX + key).returning(kv.c.value)
                )
            ).scalar()
        if value is None:
            return None
        record: dict[str, Any] = json.loads(value)
        record["expired"] = datetime.fromisoformat(record["expires_at"]) <= utcnow()
        return record
