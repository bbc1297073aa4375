"""YouTubeClient against the fake YouTube/Google OAuth over real sockets: resumable upload,
resume by a new client after an interruption, faults, quota and token refresh."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY

from reelhouse.core.providers.errors import RateLimited, Rejected, Unavailable
from reelhouse.core.providers.youtube import (
    QUOTA_TIMEZONE,
    UPLOAD_GRANULARITY,
    UploadSessionExpired,
    VideoMetadata,
    YouTubeClient,
    YouTubeTokens,
    next_quota_reset,
)

MEDIA_SIZE = 3 * 1024 * 1024 + 12_345  # ~3 MB, not a chunk multiple: the last chunk is short


class MemoryTokenStore:
    """Stands in for the database row the pipeline keeps (encrypted) for the YouTube token."""

    def __init__(self, tokens: YouTubeTokens | None) -> None:
        self.tokens = tokens
        self.saved: list[YouTubeTokens] = []

    async def load(self) -> YouTubeTokens | None:
        return self.tokens

    async def save(self, tokens: YouTubeTokens) -> None:
        self.tokens = tokens
        self.saved.append(tokens)


def refresh_count(status: str) -> float:
    return REGISTRY.get_sample_value("oauth_token_refresh_total", {"provider": "youtube", "status": status}) or 0.0


@pytest.fixture
def store(youtube) -> MemoryTokenStore:
    # An access token that is already stale: the first API call must refresh it.
    stale = YouTubeTokens("stale-access", youtube.add_refresh_token(), datetime.now(UTC) - timedelta(minutes=1))
    return MemoryTokenStore(stale)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    path = tmp_path / "vod.mp4"
    path.write_bytes(os.urandom(MEDIA_SIZE))
    return path


def make_client(youtube, server, store: MemoryTokenStore, **kwargs) -> YouTubeClient:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_cap", 0.05)
    return YouTubeClient(
        youtube.client_id,
        youtube.client_secret,
        load_tokens=store.load,
        save_tokens=store.save,
        redirect_uri=youtube.redirect_uri,
        api_base=server.base_url,
        oauth_base=server.base_url,
        **kwargs,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


METADATA = VideoMetadata(
    title="2024-06-01 Big stream", description="Original Twitch VOD ID: 1001", tags=("twitch-vod-1001",)
)


async def test_full_resumable_upload_in_aligned_chunks(youtube, youtube_server, store, media):
    progress: list[tuple[int, int]] = []
    async with make_client(youtube, youtube_server, store) as client:
        uri = await client.start_session(METADATA, size=MEDIA_SIZE)
        video_id = await client.upload(
            uri,
            media,
            chunk_size=2 * UPLOAD_GRANULARITY,
            on_progress=lambda done, total: progress.append((done, total)),
        )

    session = youtube.session_for_uri(uri)
    assert video_id == session.video_id
    assert youtube.content_sha256(session.upload_id) == sha256(media)
    assert session.bytes_received == MEDIA_SIZE  # nothing sent twice
    assert youtube.videos[video_id]["snippet"]["tags"] == ["twitch-vod-1001"]
    assert youtube.videos[video_id]["status"]["privacyStatus"] == "private"
    assert [done for done, _ in progress] == sorted({done for done, _ in progress})
    assert progress[-1] == (MEDIA_SIZE, MEDIA_SIZE) and len(progress) == 7
    assert len(youtube.sessions_for_title(METADATA.title)) == 1


async def test_new_client_resumes_interrupted_session(youtube, youtube_server, store, media):
    class Crash(Exception):
        pass

    def crash_after_five_chunks(done: int, total: int) -> None:
        if done >= 5 * UPLOAD_GRANULARITY:
            raise Crash

    async with make_client(youtube, youtube_server, store) as first:
        uri = await first.start_session(METADATA, size=MEDIA_SIZE)
        with pytest.raises(Crash):
            await first.upload(uri, media, chunk_size=UPLOAD_GRANULARITY, on_progress=crash_after_five_chunks)
    assert youtube.session_for_uri(uri).committed == 5 * UPLOAD_GRANULARITY

    # A fresh process: only the persisted session URI and the stored tokens survive.
    requests_before = len(youtube.session_requests)
    async with make_client(youtube, youtube_server, MemoryTokenStore(store.tokens)) as second:
        video_id = await second.upload(uri, media, chunk_size=UPLOAD_GRANULARITY)

    session = youtube.session_for_uri(uri)
    assert len(youtube.sessions) == 1 and session.video_id == video_id
    assert youtube.content_sha256(session.upload_id) == sha256(media)
    # The new client asked where to continue, then started exactly there.
    resumed = youtube.session_requests[requests_before:]
    assert resumed[0][1:] == (f"bytes */{MEDIA_SIZE}", 308)
    assert resumed[1][1].startswith(f"bytes {5 * UPLOAD_GRANULARITY}-")
    resent = session.bytes_received - MEDIA_SIZE
    assert resent == 0  # interrupted on a chunk boundary: nothing to send twice
    # Asking again for a finished session returns the same video without sending bytes.
    async with make_client(youtube, youtube_server, MemoryTokenStore(store.tokens)) as third:
        assert await third.upload(uri, media) == video_id
    assert session.bytes_received == MEDIA_SIZE


async def test_connection_dropped_mid_chunk_resumes_from_server_offset(youtube, youtube_server, store, media):
    youtube.drop_next_chunk(2)
    async with make_client(youtube, youtube_server, store) as client:
        uri = await client.start_session(METADATA, size=MEDIA_SIZE)
        video_id = await client.upload(uri, media, chunk_size=4 * UPLOAD_GRANULARITY)
    session = youtube.session_for_uri(uri)
    assert session.video_id == video_id
    assert youtube.content_sha256(session.upload_id) == sha256(media)
    assert youtube.faults.chunk_drops == 0
    # Only the unaligned tail of each dropped chunk was lost and sent again.
    assert MEDIA_SIZE < session.bytes_received < 1.3 * MEDIA_SIZE


async def test_5xx_on_chunks_is_retried_then_completes(youtube, youtube_server, store, media):
    youtube.fail_next_chunks(2, status=503)
    async with make_client(youtube, youtube_server, store) as client:
        uri = await client.start_session(METADATA, size=MEDIA_SIZE)
        video_id = await client.upload(uri, media, chunk_size=4 * UPLOAD_GRANULARITY)
    session = youtube.session_for_uri(uri)
    assert session.video_id == video_id and youtube.faults.chunk_errors == 0
    assert youtube.content_sha256(session.upload_id) == sha256(media)


async def test_persistent_5xx_gives_transient_error(youtube, youtube_server, store, media):
    youtube.fail_next_chunks(50, status=500)
    async with make_client(youtube, youtube_server, store, max_attempts=3) as client:
        uri = await client.start_session(METADATA, size=MEDIA_SIZE)
        with pytest.raises(Unavailable, match="HTTP 500 after 3 attempts"):
            await client.upload(uri, media)
    assert youtube.session_for_uri(uri).committed == 0


@pytest.mark.parametrize(("on", "reason"), [("session", "quotaExceeded"), ("chunk", "uploadLimitExceeded")])
async def test_quota_errors_wait_until_pacific_midnight(youtube, youtube_server, store, media, on, reason):
    youtube.quota_exceeded_next(1, on=on, reason=reason)
    before = next_quota_reset()
    async with make_client(youtube, youtube_server, store) as client:
        with pytest.raises(RateLimited) as caught:
            uri = await client.start_session(METADATA, size=MEDIA_SIZE)
            await client.upload(uri, media)
    retry_at = caught.value.retry_at
    assert retry_at in {before, next_quota_reset()}
    local = retry_at.astimezone(QUOTA_TIMEZONE)
    assert (local.hour, local.minute, local.second) == (0, 0, 0)
    assert timedelta(0) < retry_at - datetime.now(UTC) <= timedelta(hours=25)
    assert reason in caught.value.reason


async def test_expired_session_raises_upload_session_expired(youtube, youtube_server, store, media):
    async with make_client(youtube, youtube_server, store) as client:
        uri = await client.start_session(METADATA, size=MEDIA_SIZE)
        youtube.expire_session()
        with pytest.raises(UploadSessionExpired) as caught:
            await client.upload(uri, media)
    assert isinstance(caught.value, Unavailable)
    assert "upload_id" not in str(caught.value)  # the session URI is a bearer capability


async def test_stale_token_refreshed_and_401_refreshes_once(youtube, youtube_server, store, media):
    success_before = refresh_count("success")
    refresh_token = store.tokens.refresh_token
    async with make_client(youtube, youtube_server, store) as client:
        uri = await client.start_session(METADATA, size=MEDIA_SIZE)
        assert youtube.refresh_count == 1
        youtube.expire_access_tokens()  # the next chunk PUT gets 401
        video_id = await client.upload(uri, media, chunk_size=8 * UPLOAD_GRANULARITY)
    assert youtube.refresh_count == 2
    assert refresh_count("success") - success_before == 2
    assert [t.refresh_token for t in store.saved] == [refresh_token, refresh_token]
    assert youtube.session_for_uri(uri).video_id == video_id


async def test_revoked_refresh_token_is_permanent_and_counted(youtube, youtube_server, store):
    youtube.revoke_refresh_tokens()
    failures_before = refresh_count("failure")
    async with make_client(youtube, youtube_server, store) as client:
        with pytest.raises(Rejected, match="Token has been expired or revoked") as caught:
            await client.start_session(METADATA, size=MEDIA_SIZE)
    assert store.tokens.refresh_token not in str(caught.value)
    assert refresh_count("failure") - failures_before == 1
    assert youtube.sessions == {}


async def test_not_authorized_and_invalid_title_are_permanent(youtube, youtube_server, store):
    async with make_client(youtube, youtube_server, MemoryTokenStore(None)) as client:
        with pytest.raises(Rejected, match="not authorized"):
            await client.start_session(METADATA, size=MEDIA_SIZE)
    async with make_client(youtube, youtube_server, store) as client:
        with pytest.raises(Rejected, match="invalid or empty video title"):
            await client.start_session(VideoMetadata(title="   "), size=MEDIA_SIZE)


async def test_consent_url_and_code_exchange_store_tokens(youtube, youtube_server):
    store = MemoryTokenStore(None)
    async with make_client(youtube, youtube_server, store) as client:
        query = parse_qs(urlsplit(client.authorize_url("st4te")).query)
        assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
        assert query["state"] == ["st4te"] and query["redirect_uri"] == [youtube.redirect_uri]
        assert query["scope"] == ["https://www.googleapis.com/auth/youtube.upload"]
        tokens = await client.exchange_code(youtube.issue_authorization_code())
        assert store.saved == [tokens] and tokens.refresh_token
        # The fresh token is used as is: no refresh before the first API call.
        await client.start_session(METADATA, size=MEDIA_SIZE)
    assert youtube.refresh_count == 0 and len(youtube.sessions) == 1
