"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY, so BIGINT ids are INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# JSONB on PostgreSQL for indexable payloads; plain JSON text elsewhere.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class JsonText(TypeDecorator[Any]):
    """JSON stored as plain text on both backends, read back as Python objects.

    For bulk-written columns nobody queries inside: the writer hands the database a JSON string
    it already built, and PostgreSQL stores text without parsing it, where jsonb input parsing
    was a measurable share of a chat COPY (bench/chat.py)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends.

    PostgreSQL stores TIMESTAMPTZ. SQLite has no time zones, so values are stored as naive UTC
    in SQLAlchemy's fixed-width text format, which keeps lexical order equal to time order
    (the claim query compares them as strings).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(timezone.utc)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite returns text
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
