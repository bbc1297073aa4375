"""HTTP Range header parsing for the signed-object router (RFC 9110 single ranges)."""

from __future__ import annotations

import pytest

from reelhouse.core.storage.base import InvalidRange
from reelhouse.core.storage.signed_routes import parse_range_header


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("", 100, None),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=0-99", 100, (0, 99)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=90-1000", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        (" bytes = 5 - 6 ", 100, (5, 6)),
        # Ignored, so the whole object is sent: multiple ranges, other units, garbage, end < start.
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=-", 100, None),
        ("bytes=abc", 100, None),
        ("bytes=9-3", 100, None),
    ],
)
def test_satisfiable_or_ignored(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range_header(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(InvalidRange):
        parse_range_header(header, size)
