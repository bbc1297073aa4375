"""Pure parsing and policy pieces of the provider clients: Twitch durations, Helix payloads,
retry-at headers, YouTube quota reset time, backoff bounds, secret hygiene."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reelhouse.archive.twitch.helix import HelixVideo, parse_twitch_duration
from reelhouse.archive.twitch.oauth import OAuthTokens, TwitchOAuth
from reelhouse.core.jobs.retry import backoff_delay
from reelhouse.core.providers.errors import Rejected
from reelhouse.core.providers.http import parse_retry_at
from reelhouse.core.providers.youtube import (
    QUOTA_TIMEZONE,
    VideoMetadata,
    YouTubeClient,
    YouTubeTokens,
    next_quota_reset,
)

small = st.integers(min_value=0, max_value=10_000)


@given(hours=small, minutes=st.integers(0, 59), seconds=st.integers(0, 59))
def test_go_style_durations_as_twitch_prints_them(hours, minutes, seconds):
    # Twitch formats like Go's time.Duration: leading zero units are dropped, inner ones kept.
    if hours:
        text = f"{hours}h{minutes}m{seconds}s"
    elif minutes:
        text = f"{minutes}m{seconds}s"
    else:
        text = f"{seconds}s"
    assert parse_twitch_duration(text) == hours * 3600 + minutes * 60 + seconds


@given(parts=st.dictionaries(st.sampled_from("hms"), small, min_size=1))
def test_any_ordered_subset_of_units_parses(parts):
    text = "".join(f"{parts[unit]}{unit}" for unit in "hms" if unit in parts)
    expected = parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
    assert parse_twitch_duration(text) == expected


@pytest.mark.parametrize("text", ["", "  ", "42", "3x", "h", "5s3m", "1h2h", "-5s", "1.5h", "PT1H"])
def test_malformed_durations_are_rejected(text):
    with pytest.raises(ValueError):
        parse_twitch_duration(text)


def test_helix_video_payload_becomes_typed_model():
    payload = {
        "id": "335921245",
        "stream_id": "",
        "user_id": "141981764",
        "user_login": "twitchdev",
        "user_name": "TwitchDev",
        "title": "Twitch Developers 101",
        "description": "Welcome",
        "created_at": "2018-11-14T21:30:18Z",
        "published_at": "2018-11-14T22:04:30Z",
        "url": "https://www.twitch.tv/videos/335921245",
        "thumbnail_url": "https://x/%{width}x%{height}.jpg",
        "viewable": "public",
        "view_count": 1863062,
        "language": "en",
        "type": "upload",
        "duration": "3m21s",
        "muted_segments": None,
    }
    video = HelixVideo.model_validate(payload)
    assert video.duration == 201
    assert video.stream_id is None
    assert video.created_at == datetime(2018, 11, 14, 21, 30, 18, tzinfo=UTC)
    assert video.published_at == datetime(2018, 11, 14, 22, 4, 30, tzinfo=UTC)


NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Ratelimit-Reset": "1717243260"}, datetime.fromtimestamp(1717243260, UTC)),
        ({"Retry-After": "30"}, NOW + timedelta(seconds=30)),
        ({"Retry-After": "Sat, 01 Jun 2024 12:05:00 GMT"}, datetime(2024, 6, 1, 12, 5, tzinfo=UTC)),
        # Helix's own header wins over the generic one.
        ({"Ratelimit-Reset": "1717243260", "Retry-After": "5"}, datetime.fromtimestamp(1717243260, UTC)),
        ({"Retry-After": "garbage"}, NOW + timedelta(seconds=1)),
        ({}, NOW + timedelta(seconds=1)),
    ],
)
def test_retry_at_from_rate_limit_headers(headers, expected):
    assert parse_retry_at(httpx.Headers(headers), NOW) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Summer (PDT, UTC-7): one second before local midnight.
        (datetime(2024, 7, 1, 6, 59, 59, tzinfo=UTC), datetime(2024, 7, 1, 7, 0, tzinfo=UTC)),
        # Exactly at local midnight the quota has just reset: the next reset is a day later.
        (datetime(2024, 7, 1, 7, 0, 0, tzinfo=UTC), datetime(2024, 7, 2, 7, 0, tzinfo=UTC)),
        # Winter (PST, UTC-8).
        (datetime(2024, 1, 15, 12, 0, tzinfo=UTC), datetime(2024, 1, 16, 8, 0, tzinfo=UTC)),
        # DST starts 2024-03-10 02:00 local: midnight of the 11th is already PDT.
        (datetime(2024, 3, 10, 9, 0, tzinfo=UTC), datetime(2024, 3, 11, 7, 0, tzinfo=UTC)),
        # DST ends 2024-11-03 02:00 local: midnight of the 4th is PST again.
        (datetime(2024, 11, 3, 7, 30, tzinfo=UTC), datetime(2024, 11, 4, 8, 0, tzinfo=UTC)),
    ],
)
def test_quota_reset_is_next_pacific_midnight(now, expected):
    assert next_quota_reset(now) == expected


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_quota_reset_properties(now):
    reset = next_quota_reset(now)
    local = reset.astimezone(QUOTA_TIMEZONE)
    assert (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)
    assert timedelta(0) < reset - now <= timedelta(hours=25)  # 25 h on the day DST ends


@given(attempt=st.integers(1, 40), base=st.floats(0.001, 10), cap=st.floats(0.001, 60))
def test_backoff_is_bounded_and_jittered_within_half(attempt, base, cap):
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 <= backoff_delay(attempt, base=base, cap=cap).total_seconds() <= ceiling


def test_video_metadata_resource_shape():
    resource = VideoMetadata(title="t", description="d", tags=("a", "b"), category_id="22").to_resource()
    assert resource == {
        "snippet": {"title": "t", "description": "d", "categoryId": "22", "tags": ["a", "b"]},
        "status": {"privacyStatus": "private"},
    }
    assert "tags" not in VideoMetadata(title="t").to_resource()["snippet"]


def test_tokens_never_in_repr():
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    for tokens in (OAuthTokens("acc-SECRET", "ref-SECRET", expiry), YouTubeTokens("acc-SECRET", "ref-SECRET", expiry)):
        assert "SECRET" not in repr(tokens)


def test_twitch_authorize_url_requires_redirect_and_carries_state():
    with pytest.raises(ValueError):
        TwitchOAuth("cid", "secret").authorize_url("s")
    url = TwitchOAuth("cid", "secret", redirect_uri="https://r/cb", scopes=["chat:read"]).authorize_url(
        "abc", force_verify=True
    )
    assert url.startswith("https://id.twitch.tv/oauth2/authorize?")
    assert parse_qs(urlsplit(url).query)["force_verify"] == ["true"]
    assert "secret" not in url


async def _no_tokens() -> None:
    return None


async def _discard(tokens: YouTubeTokens) -> None:
    raise AssertionError("nothing should be saved")


@pytest.mark.parametrize("chunk_size", [0, 100_000, 256 * 1024 + 1])
async def test_upload_rejects_unaligned_chunk_sizes_before_any_request(tmp_path, chunk_size):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    async with YouTubeClient(
        "c", "s", load_tokens=_no_tokens, save_tokens=_discard, transport=httpx.MockTransport(record)
    ) as client:
        with pytest.raises(ValueError, match="multiple of 262144"):
            await client.upload("https://up.example/upload?upload_id=x", path, chunk_size=chunk_size)
    assert sent == []


async def test_session_uri_on_a_foreign_host_never_gets_the_token(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(308)

    async def tokens() -> YouTubeTokens:
        return YouTubeTokens("acc", "ref", datetime.now(UTC) + timedelta(hours=1))

    async with YouTubeClient(
        "c", "s", load_tokens=tokens, save_tokens=_discard, transport=httpx.MockTransport(record)
    ) as client:
        with pytest.raises(Rejected, match="configured API host"):
            await client.upload("https://evil.example/upload?upload_id=x", path)
    assert sent == []
