"""archive/tasks/upload.py: YouTube titles, descriptions and metadata from templates."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from reelhouse.archive.settings import ArchiveSettings
from reelhouse.archive.tasks.upload import DESCRIPTION_MAX_BYTES, clean_description, clean_title, video_metadata


def _row(**values):
    base = {
        "twitch_vod_id": "1001",
        "title": "Big <stream>",
        "channel": "streamer",
        "description": "",
        "date": datetime(2024, 6, 1, 18, 0, tzinfo=UTC),
        "created_at": datetime(2024, 6, 2, tzinfo=UTC),
    }
    return SimpleNamespace(**{**base, **values})


def test_titles_and_descriptions_fit_youtube_rules():
    assert clean_title("a <b> \n c\td") == "a ‹b› c d"
    assert clean_title("  \x00 ") == "Twitch VOD"
    long = clean_title("x" * 150)
    assert len(long) == 100 and long.endswith("...")
    description = clean_description("é" * 4000)  # 8000 bytes of UTF-8
    assert len(description.encode()) <= DESCRIPTION_MAX_BYTES and description.endswith("...")
    assert "<" not in clean_description("<b>hi</b>")


def test_metadata_from_templates(monkeypatch):
    monkeypatch.setenv("YOUTUBE_TITLE_TEMPLATE", "[{channel}] {title} ({date})")
    monkeypatch.setenv("YOUTUBE_PRIVACY", "unlisted")
    settings = ArchiveSettings()
    meta = video_metadata(settings, _row(description="Custom words"))
    assert meta.title == "[streamer] Big ‹stream› (2024-06-01)"
    assert meta.privacy_status == "unlisted"
    assert meta.description.startswith("Custom words\n\nOriginal stream date: 2024-06-01T18:00:00Z")
    assert "Original Twitch VOD ID: 1001" in meta.description and "twitch.tv/videos/1001" in meta.description
    assert video_metadata(settings, _row()).description.startswith("Original stream date:")
