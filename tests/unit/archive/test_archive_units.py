"""Archive building blocks without a database: envelope crypto, yt-dlp output parsing and error
classification, secret scrubbing, YouTube metadata rules, settings validation."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from reelhouse.archive.settings import ArchiveSettings
from reelhouse.archive.upload import DESCRIPTION_MAX_BYTES, clean_description, clean_title, video_metadata
from reelhouse.archive.ytdlp import (
    PROGRESS_PREFIX,
    classify_failure,
    parse_progress_line,
    redact_argv,
    scrub,
)
from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.security.crypto import CryptoError, DecryptionFailed, Keyring, KeyNotConfigured, derive_key


# ---- crypto ---------------------------------------------------------------------------------------

def test_envelope_round_trip_binds_context_and_detects_tampering():
    ring = Keyring.from_secrets(base64.b64encode(os.urandom(32)).decode())
    token = ring.encrypt("refresh-secret", "oauth_tokens|youtube||refresh_token")
    assert "refresh-secret" not in token and token.startswith(f"rh1.{ring.primary_id}.")
    assert ring.decrypt_text(token, "oauth_tokens|youtube||refresh_token") == "refresh-secret"
    with pytest.raises(DecryptionFailed):
        ring.decrypt(token, "oauth_tokens|youtube|other|refresh_token")  # moved to another row
    head, key_id, wrapped, sealed = token.split(".")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(DecryptionFailed):
        ring.decrypt(".".join((head, key_id, wrapped, flipped)), "oauth_tokens|youtube||refresh_token")
    assert ring.encrypt("x") != ring.encrypt("x"), "fresh data key and nonce per record"


def test_rotation_rewraps_without_the_plaintext_and_missing_keys_are_named():
    old, new = base64.b64encode(os.urandom(32)).decode(), "a long random passphrase for the new key"
    before = Keyring.from_secrets(old)
    token = before.encrypt(b"\x00secret", "ctx")
    after = Keyring.from_secrets(new, [old])
    assert after.needs_rewrap(token)
    rewrapped = after.rewrap(token)
    assert not after.needs_rewrap(rewrapped) and rewrapped.split(".")[3] == token.split(".")[3]
    assert after.decrypt(rewrapped, "ctx") == b"\x00secret"
    only_new = Keyring.from_secrets(new)
    assert only_new.decrypt(rewrapped, "ctx") == b"\x00secret"
    with pytest.raises(KeyNotConfigured) as missing:
        only_new.decrypt(token, "ctx")
    assert before.primary_id in str(missing.value) and old not in str(missing.value)


def test_key_text_is_raw_base64_or_a_passphrase():
    raw = os.urandom(32)
    assert derive_key(base64.b64encode(raw).decode()) == raw
    assert derive_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert derive_key("correct horse battery staple") == derive_key("correct horse battery staple")
    assert len(derive_key("short")) == 32
    with pytest.raises(CryptoError):
        derive_key("   ")


# ---- yt-dlp -----------------------------------------------------------------------------------------

def test_progress_lines_from_the_template_and_from_yt_dlp_defaults():
    line = f"{PROGRESS_PREFIX} 3026680 NA 6885752.0 3467491.3 1.5"
    progress = parse_progress_line(line)
    assert (progress.downloaded_bytes, progress.total_bytes, progress.eta) == (3026680, 6885752, 1.5)
    assert progress.exact_total is False and 0.43 < progress.fraction < 0.45
    done = parse_progress_line(f"{PROGRESS_PREFIX} NA 256556 NA NA NA")  # "already downloaded"
    assert done.downloaded_bytes == done.total_bytes == 256556 and done.fraction == 1.0
    default = parse_progress_line("[download]  50.0% of ~  10.00MiB at    2.00MiB/s ETA 01:05 (frag 3/10)")
    assert default.total_bytes == 10 * 1024 * 1024 and default.downloaded_bytes == 5 * 1024 * 1024
    assert default.speed == 2 * 1024 * 1024 and default.eta == 65
    assert parse_progress_line("[generic] index: Downloading webpage") is None


@pytest.mark.parametrize(("code", "lines", "kind", "text"), [
    (1, ["ERROR: [generic] index: Unable to download webpage: HTTP Error 404: Not Found"], PermanentError, "404"),
    (1, ["ERROR: [twitch:vod] 123: This video is only available to subscribers"], PermanentError, "subscriber"),
    (1, ["ERROR: Unsupported URL: https://example.com/x"], PermanentError, "not supported"),
    (2, ["Usage: yt-dlp [OPTIONS]", "yt-dlp: error: no such option: --bogus"], PermanentError, "YTDLP_ARGS"),
    (1, ["ERROR: unable to download video data: HTTP Error 503: Service Unavailable"], TransientError, "503"),
    (1, ["ERROR: fragment 3 not found, unable to continue"], TransientError, "fragment"),
    # A warning that happens to say "does not exist" must not make a network error permanent.
    (1, ["WARNING: ffmpeg-location ffmpeg does not exist!", "ERROR: Connection reset by peer"], TransientError,
     "reset"),
    (-9, ["WARNING: something does not exist"], TransientError, "status -9"),
])
def test_failure_classification(code, lines, kind, text):
    error = classify_failure(code, lines)
    assert type(error) is kind and text in error.reason


def test_secrets_are_scrubbed_from_output_and_argv():
    line = "GET https://usher.ttvnw.net/vod/1.m3u8?sig=abcdef123&token=%7B%22auth%22%7D&p=1 Cookie: auth-token=s3cret"
    cleaned = scrub(line)
    assert "abcdef123" not in cleaned and "s3cret" not in cleaned and "%7B%22auth" not in cleaned
    assert "p=1" in cleaned
    argv = redact_argv(["--password", "hunter2", "--add-header", "Authorization: Bearer t0k", "--username=bob",
                        "-o", "/data/x.mp4", "https://host/v.m3u8?token=zzz"])
    assert "hunter2" not in argv and "Authorization: Bearer t0k" not in argv and "--username=bob" not in argv
    assert "/data/x.mp4" in argv and not any("zzz" in a for a in argv)


# ---- YouTube metadata ---------------------------------------------------------------------------------

def _row(**values):
    base = {"twitch_vod_id": "1001", "title": "Big <stream>", "channel": "streamer", "description": "",
            "date": datetime(2024, 6, 1, 18, 0, tzinfo=UTC), "created_at": datetime(2024, 6, 2, tzinfo=UTC)}
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


@pytest.mark.parametrize(("name", "value"), [
    ("DOWNLOAD_RATE_LIMIT", "fast"), ("YOUTUBE_TITLE_TEMPLATE", "{nope}"), ("TWITCH_CHANNELS", "ok,../etc"),
    ("UPLOAD_CHUNK_BYTES", "1000"), ("TRANSCODE_BEFORE_UPLOAD", "hls-default"), ("YTDLP_ARGS", "--x 'unbalanced"),
])
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
