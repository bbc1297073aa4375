"""Page filters: sizes, durations and progress written one way on every page."""

from __future__ import annotations

from datetime import UTC, datetime

from jinja2 import Undefined

from reelhouse.web import filters


def test_durations():
    assert filters.duration(42) == "42s"
    assert filters.duration(187) == "3m 07s"
    assert filters.duration(3725) == "1h 02m"
    assert filters.duration(None) == "–"
    assert filters.duration(Undefined()) == "–"


def test_sizes():
    assert filters.size(512) == "512 B"
    assert filters.size(1536) == "1.5 KiB"
    assert filters.size(3 * 1024**3) == "3.0 GiB"


def test_times_accept_iso_strings_and_naive_datetimes_as_utc():
    assert filters.when("2026-12-01T22:34:03+00:00") == "2026-12-01 22:34:03 UTC"
    assert filters.when(datetime(2026, 12, 1, 22, 34, 3)) == "2026-12-01 22:34:03 UTC"
    assert filters.when(datetime(2026, 12, 1, 23, 34, 3, tzinfo=UTC)) == "2026-12-01 23:34:03 UTC"
    assert filters.when("not a time") == ""
    assert filters.ago(None) == "never"


def test_percent():
    assert filters.percent(0.4249) == "42 %"
    assert filters.percent(1) == "100 %"
