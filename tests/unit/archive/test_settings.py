"""archive/settings.py: vod-tender's variables, validated at start-up."""

from __future__ import annotations

import pytest

from reelhouse.archive.settings import ArchiveSettings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DOWNLOAD_RATE_LIMIT", "fast"),
        ("YOUTUBE_TITLE_TEMPLATE", "{nope}"),
        ("TWITCH_CHANNELS", "ok,../etc"),
        ("UPLOAD_CHUNK_BYTES", "1000"),
        ("TRANSCODE_BEFORE_UPLOAD", "hls-default"),
        ("YTDLP_ARGS", "--x 'unbalanced"),
    ],
)
def test_invalid_settings_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):
        ArchiveSettings()


def test_settings_defaults_blank_values_and_channel_lists(monkeypatch):
    monkeypatch.setenv("RETENTION_KEEP_DAYS", "")
    monkeypatch.setenv("TWITCH_CHANNEL", "Solo")
    monkeypatch.setenv("TWITCH_CHANNELS", "A_one, b2 ,a_one")
    monkeypatch.setenv("DOWNLOAD_MAX_BYTES", "1.5G")
    settings = ArchiveSettings()
    assert settings.retention_keep_days == 0
    assert settings.channels == ["a_one", "b2"], "TWITCH_CHANNELS wins, lower-cased, deduplicated"
    assert settings.download_max_bytes == int(1.5 * 1024**3)
    assert settings.transcode_profile is None and settings.youtube_privacy == "private"
