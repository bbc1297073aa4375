"""The audit chain, also published to a NATS JetStream stream (seed 002: "JetStream limits are
configured to 90 days for audit logs"), when `NATS_URL` is set.

A publisher tails `audit_log` by id and publishes each row to `<AUDIT_STREAM_SUBJECT>.<action>`
with `Nats-Msg-Id: audit-<id>` (JetStream drops a duplicate within its window), then stores the
last published id in `kv`, so a restart resumes where it stopped and several nodes publishing
at once do not duplicate rows. The stream is created (or updated) with `max_age` =
`AUDIT_STREAM_MAX_AGE` (90 days). The database stays the source of truth: the hash chain is
verified there, the stream is a copy for consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import audit_log
from reelhouse.core.jobs.kv import get_value, set_value

log = logging.getLogger("reelhouse.security.audit_stream")
WATERMARK_KEY = "audit_stream_published"
BATCH = 500
_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")


def subject_for(prefix: str, action: str) -> str:
    tokens = [_TOKEN.sub("_", t) for t in action.split(".") if t] or ["unknown"]
    return ".".join([prefix, *tokens])[:255]


def message_of(row: Any) -> bytes:
    return json.dumps(
        {
            "id": row["id"],
            "at": row["at"].isoformat(),
            "actor": row["actor"],
            "action": row["action"],
            "target": row["target"],
            "details": row["details"],
            "hash": row["hash"],
            "prev_hash": row["prev_hash"],
        },
        separators=(",", ":"),
        default=str,
    ).encode()


class AuditStream:
    def __init__(
        self, engine: AsyncEngine, url: str, *, stream: str, subject: str, max_age: timedelta = timedelta(days=90)
    ) -> None:
        self.engine = engine
        self.url = url
        self.stream = stream
        self.subject = subject
        self.max_age = max_age
        self._nc: Any = None
        self._js: Any = None

    async def connect(self) -> None:
        import nats
        from nats.js.api import StreamConfig
        from nats.js.errors import BadRequestError

        self._nc = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=1)
        self._js = self._nc.jetstream()
        config = StreamConfig(name=self.stream, subjects=[f"{self.subject}.>"], max_age=self.max_age.total_seconds())
        try:
            await self._js.add_stream(config)
        except BadRequestError:
            await self._js.update_stream(config)  # exists with other settings: make them ours

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def publish_pending(self) -> int:
        """Publish rows past the watermark; returns how many."""
        async with self.engine.connect() as conn:
            done = int(await get_value(conn, WATERMARK_KEY, self.stream) or 0)
            rows = (
                (
                    await conn.execute(
                        select(audit_log).where(audit_log.c.id > done).order_by(audit_log.c.id).limit(BATCH)
                    )
                )
                .mappings()
                .all()
            )
        for row in rows:
            await self._js.publish(
                subject_for(self.subject, row["action"]),
                message_of(row),
                stream=self.stream,
                headers={"Nats-Msg-Id": f"audit-{row['id']}"},
            )
        if rows:
            conn = await write_connection(self.engine)
            try:
                async with conn.begin():
                    current = int(await get_value(conn, WATERMARK_KEY, self.stream) or 0)
                    if rows[-1]["id"] > current:
                        await set_value(conn, WATERMARK_KEY, str(rows[-1]["id"]), self.stream)
            finally:
                await conn.close()
        return len(rows)

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            try:
                if self._js is None:
                    await self.connect()
                while await self.publish_pending() == BATCH:
                    pass
            except Exception as exc:  # NATS down: keep the watermark, try again
                log.warning("audit stream publish failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
                with contextlib.suppress(Exception):
                    await self.close()
                self._js = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        await self.close()
