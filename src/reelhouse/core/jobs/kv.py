"""The `kv` table: small named values scoped by channel (vod-tender's layout), and EMAs."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_connection
from reelhouse.core.db.models import kv
from reelhouse.core.jobs.dbtime import db_now

EMA_ALPHA = 0.2  # weight of the newest sample in `avg_*_ms` trends


def _upsert(conn: AsyncConnection, channel: str, key: str, value: str):
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(kv).values(channel=channel, key=key, value=value, updated_at=db_now())
    return stmt.on_conflict_do_update(
        index_elements=[kv.c.channel, kv.c.key],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
    )


class KV:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, key: str, channel: str = "") -> str | None:
        async with self.engine.connect() as conn:
            return await get_value(conn, key, channel)

    async def get_many(self, keys: list[str], channel: str = "") -> dict[str, str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(kv.c.key, kv.c.value).where(kv.c.channel == channel, kv.c.key.in_(keys)))
            return {row.key: row.value for row in rows}

    async def set(self, key: str, value: str, channel: str = "") -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_upsert(conn, channel, key, value))

    async def delete(self, keys: list[str], channel: str = "") -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(kv).where(kv.c.channel == channel, kv.c.key.in_(keys)))

    async def update_ema(self, key: str, sample: float, channel: str = "") -> int:
        """Fold a new sample (e.g. a download's milliseconds) into the stored moving average.

        Read and write share one writer transaction so concurrent workers neither lose a sample
        nor hit SQLite's lock upgrade error."""
        conn = await write_connection(self.engine)
        try:
            async with conn.begin():
                previous = await get_value(conn, key, channel)
                value = sample if previous is None else EMA_ALPHA * sample + (1 - EMA_ALPHA) * float(previous)
                await conn.execute(_upsert(conn, channel, key, str(round(value))))
                return round(value)
        finally:
            await conn.close()


async def get_value(conn: AsyncConnection, key: str, channel: str = "") -> str | None:
    row = (await conn.execute(select(kv.c.value).where(kv.c.channel == channel, kv.c.key == key))).first()
    return row.value if row else None


async def set_value(conn: AsyncConnection, key: str, value: str, channel: str = "") -> None:
    await conn.execute(_upsert(conn, channel, key, value))
