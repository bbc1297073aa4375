"""All of the live domain's SQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reelhouse.core.db.engine import write_transaction
from reelhouse.core.db.types import utcnow
from reelhouse.live.models import destinations, recordings, restreams, streams

Row = dict[str, Any]


class StreamNotFound(LookupError):
    """No stream with that id (or not the caller's)."""


def _row(result: Any) -> Row | None:
    found = result.mappings().first()
    return dict(found) if found is not None else None


class LiveStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncConnection]:
        """A writer transaction (BEGIN IMMEDIATE on SQLite) for read-then-write sequences."""
        async with write_transaction(self.engine) as conn:
            yield conn

    # ---- streams ---------------------------------------------------------------------------
    async def create_stream(self, values: Row) -> Row:
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(streams).values(**values, created_at=now, updated_at=now).returning(*streams.c)
            )
            return dict(result.mappings().one())

    async def count_for_user(self, user_id: int | None) -> int:
        async with self.engine.connect() as conn:
            query = select(func.count()).select_from(streams).where(streams.c.user_id == user_id)
            return int((await conn.execute(query)).scalar_one())

    async def get_stream(self, stream_id: int, conn: AsyncConnection | None = None) -> Row:
        query = select(streams).where(streams.c.id == stream_id)
        if conn is not None:
            found = _row(await conn.execute(query))
        else:
            async with self.engine.connect() as own:
                found = _row(await own.execute(query))
        if found is None:
            raise StreamNotFound(stream_id)
        return found

    async def list_streams(
        self, *, user_id: int | None = None, live: bool | None = None, limit: int = 100, before: int | None = None
    ) -> list[Row]:
        query = select(streams).order_by(streams.c.id.desc()).limit(limit)
        if user_id is not None:
            query = query.where(streams.c.user_id == user_id)
        if live is not None:
            query = query.where(streams.c.is_live == live)
        if before is not None:
            query = query.where(streams.c.id < before)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def update_stream(self, stream_id: int, **values: Any) -> Row:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(streams)
                .where(streams.c.id == stream_id)
                .values(**values, updated_at=utcnow())
                .returning(*streams.c)
            )
            found = _row(result)
        if found is None:
            raise StreamNotFound(stream_id)
        return found

    async def delete_stream(self, stream_id: int) -> bool:
        async with self.engine.begin() as conn:
            await conn.execute(delete(destinations).where(destinations.c.stream_id == stream_id))
            await conn.execute(delete(recordings).where(recordings.c.stream_id == stream_id))
            result = await conn.execute(delete(streams).where(streams.c.id == stream_id))
            return bool(result.rowcount)

    async def by_key_hash(self, conn: AsyncConnection, hashed: str) -> Row | None:
        query = select(streams).where(streams.c.key_hash == hashed)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return _row(await conn.execute(query))

    async def by_playback_id(self, playback_id: str) -> Row | None:
        async with self.engine.connect() as conn:
            return _row(await conn.execute(select(streams).where(streams.c.playback_id == playback_id)))

    async def by_client(self, conn: AsyncConnection, client: str) -> Row | None:
        query = select(streams).where(and_(streams.c.is_live.is_(True), streams.c.ingest_client == client))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return _row(await conn.execute(query))

    async def set_stream(self, conn: AsyncConnection, stream_id: int, **values: Any) -> None:
        await conn.execute(update(streams).where(streams.c.id == stream_id).values(**values, updated_at=utcnow()))

    async def live_streams(self) -> list[Row]:
        return await self.list_streams(live=True, limit=10_000)

    async def count_live(self) -> int:
        async with self.engine.connect() as conn:
            query = select(func.count()).select_from(streams).where(streams.c.is_live.is_(True))
            return int((await conn.execute(query)).scalar_one())

    async def save_telemetry(self, stream_id: int, telemetry: Row, at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(streams).where(streams.c.id == stream_id).values(telemetry=telemetry, telemetry_at=at)
            )

    # ---- destinations ------------------------------------------------------------------------
    async def add_destination(self, values: Row) -> Row:
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(destinations).values(**values, created_at=now, updated_at=now).returning(*destinations.c)
            )
            return dict(result.mappings().one())

    async def destinations_of(self, stream_id: int, conn: AsyncConnection | None = None) -> list[Row]:
        query = select(destinations).where(destinations.c.stream_id == stream_id).order_by(destinations.c.id)
        if conn is not None:
            return [dict(r) for r in (await conn.execute(query)).mappings()]
        async with self.engine.connect() as own:
            return [dict(r) for r in (await own.execute(query)).mappings()]

    async def get_destination(self, destination_id: int) -> Row | None:
        async with self.engine.connect() as conn:
            return _row(await conn.execute(select(destinations).where(destinations.c.id == destination_id)))

    async def update_destination(
        self, destination_id: int, conn: AsyncConnection | None = None, **values: Any
    ) -> Row | None:
        statement = (
            update(destinations)
            .where(destinations.c.id == destination_id)
            .values(**values, updated_at=utcnow())
            .returning(*destinations.c)
        )
        if conn is not None:
            return _row(await conn.execute(statement))
        async with self.engine.begin() as own:
            return _row(await own.execute(statement))

    async def delete_destination(self, stream_id: int, destination_id: int) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(destinations).where(
                    and_(destinations.c.id == destination_id, destinations.c.stream_id == stream_id)
                )
            )
            return bool(result.rowcount)

    # ---- recordings --------------------------------------------------------------------------
    async def add_recording(self, conn: AsyncConnection, stream_id: int, session: int) -> None:
        await conn.execute(
            insert(recordings).values(stream_id=stream_id, session=session, state="recording", started_at=utcnow())
        )

    async def recording(self, stream_id: int, session: int) -> Row | None:
        async with self.engine.connect() as conn:
            query = select(recordings).where(and_(recordings.c.stream_id == stream_id, recordings.c.session == session))
            return _row(await conn.execute(query))

    async def update_recording(self, stream_id: int, session: int, conn: AsyncConnection | None = None, **values: Any):
        statement = (
            update(recordings)
            .where(and_(recordings.c.stream_id == stream_id, recordings.c.session == session))
            .values(**values)
        )
        if conn is not None:
            await conn.execute(statement)
            return
        async with self.engine.begin() as own:
            await own.execute(statement)

    async def recordings_of(self, stream_id: int) -> list[Row]:
        async with self.engine.connect() as conn:
            query = select(recordings).where(recordings.c.stream_id == stream_id).order_by(recordings.c.session.desc())
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    # ---- restreams ---------------------------------------------------------------------------
    async def add_restream(self, values: Row) -> Row:
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(restreams).values(**values, created_at=now, updated_at=now).returning(*restreams.c)
            )
            return dict(result.mappings().one())

    async def get_restream(self, restream_id: int) -> Row | None:
        async with self.engine.connect() as conn:
            return _row(await conn.execute(select(restreams).where(restreams.c.id == restream_id)))

    async def list_restreams(self, user_id: int | None, limit: int = 100) -> Sequence[Row]:
        query = select(restreams).order_by(restreams.c.id.desc()).limit(limit)
        if user_id is not None:
            query = query.where(restreams.c.user_id == user_id)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def update_restream(self, restream_id: int, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(restreams).where(restreams.c.id == restream_id).values(**values, updated_at=utcnow())
            )
