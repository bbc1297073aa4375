"""Bounds every input has: string lengths, safe names, URL size, paging, and how much of a bad
value an error message may quote.

Routes use these types for fields and parameters so the limits are the same everywhere and
appear in the OpenAPI document (`maxLength`, `pattern`, `minimum`/`maximum`, `enum`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import StringConstraints

# Ids and counts are stored in 64-bit integer columns; a larger number can name nothing.
DB_INT_MAX = 2**63 - 1
MAX_URL_LENGTH = 8192
MAX_TEXT_LENGTH = 4096
MAX_LIST_LIMIT = 500
SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Names of profiles, channels, prefixes' parts: no slashes, no dot-dot, no spaces or controls."""

SafeName = Annotated[str, StringConstraints(pattern=SAFE_NAME_PATTERN, max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=255)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_LENGTH)]
UrlText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH)]
StorageKeyText = Annotated[str, StringConstraints(min_length=1, max_length=1024)]

Limit = Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="page size")]
Offset = Annotated[int, Query(ge=0, le=DB_INT_MAX, description="rows to skip")]


StatusFilter = Query(description="only rows in this state")
"""For a `status` filter: `Annotated[Literal["queued", ...] | None, StatusFilter]` (anything else
is a 422, and OpenAPI lists the states as an enum)."""


def excerpt(value: object, limit: int = 64) -> str:
    """A bad value as an error message may quote it: its start, and its length when cut."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
