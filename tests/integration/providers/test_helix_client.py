"""HelixClient against the fake Twitch over real sockets: token reuse and refresh, pagination,
rate limits, retries, error classification and the helix_api_calls_total counter."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from reelhouse.archive.twitch.helix import HelixClient
from reelhouse.core.providers.errors import RateLimited, Rejected, Unavailable


def make_client(twitch, server, **kwargs) -> HelixClient:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_cap", 0.05)
    return HelixClient(
        twitch.client_id,
        twitch.client_secret,
        api_base=f"{server.base_url}/helix",
        auth_base=f"{server.base_url}/oauth2",
        **kwargs,
    )


def helix_count(endpoint: str, status: str) -> float:
    return REGISTRY.get_sample_value("helix_api_calls_total", {"endpoint": endpoint, "status": status}) or 0.0


async def test_app_token_fetched_once_and_reused_for_many_calls(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    twitch.add_archives("streamer", 3)
    async with make_client(twitch, twitch_server) as client:
        user = await client.get_user("Streamer")
        assert user.id == user_id
        for _ in range(3):
            await client.list_videos(user.id, first=5)
        await client.get_streams(["streamer"])
        await client.get_user("streamer")  # cached: no second /users call

    assert twitch.token_requests == ["client_credentials"]
    calls = twitch.helix_calls()
    assert len(calls) == 5
    assert len(twitch.helix_calls("users")) == 1
    assert {c.bearer for c in calls} == {calls[0].bearer}
    assert all(c.client_id == twitch.client_id and c.status == 200 for c in calls)


async def test_concurrent_cold_calls_share_one_token_request(twitch, twitch_server):
    twitch.add_channel("streamer")
    async with make_client(twitch, twitch_server) as client:
        await asyncio.gather(*(client.get_streams(["streamer"]) for _ in range(10)))
    assert twitch.token_requests == ["client_credentials"]


async def test_pagination_yields_all_30_archives_in_order_over_3_pages(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    archives = twitch.add_archives("streamer", 30)
    twitch.add_video("streamer", title="a highlight", type="highlight")
    async with make_client(twitch, twitch_server) as client:
        videos = [v async for v in client.iter_videos(user_id, page_size=10)]

    assert [v.id for v in videos] == [a["id"] for a in archives]
    assert all(v.type == "archive" and v.duration == 3723 for v in videos)
    assert videos[0].created_at == datetime(2024, 6, 1, 18, 0, tzinfo=UTC)
    pages = twitch.helix_calls("videos")
    assert len(pages) == 3
    assert [c.query.get("first") for c in pages] == [["10"]] * 3
    assert "after" not in pages[0].query
    cursors = [c.query["after"][0] for c in pages[1:]]
    assert len(set(cursors)) == 2


async def test_iter_video_pages_exposes_cursor_and_limit_stops_early(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    twitch.add_archives("streamer", 25)
    async with make_client(twitch, twitch_server) as client:
        pages = [p async for p in client.iter_video_pages(user_id, page_size=10)]
        assert [len(p.videos) for p in pages] == [10, 10, 5]
        assert pages[-1].cursor is None and all(p.cursor for p in pages[:-1])
        # Resuming from a persisted cursor continues where the first page ended.
        resumed = await client.list_videos(user_id, first=10, after=pages[0].cursor)
        assert [v.id for v in resumed.videos] == [v.id for v in pages[1].videos]
        limited = [v async for v in client.iter_videos(user_id, page_size=10, limit=4)]
        assert len(limited) == 4
        with pytest.raises(ValueError):
            await client.list_videos(user_id, first=101)
    assert twitch.helix_calls("videos")[-1].query["first"] == ["4"]


async def test_expired_app_token_is_refreshed_once_after_401(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    async with make_client(twitch, twitch_server) as client:
        await client.list_videos(user_id)
        twitch.expire_app_tokens()
        page = await client.list_videos(user_id)
    assert page.videos == []
    assert twitch.token_requests == ["client_credentials", "client_credentials"]
    statuses = [c.status for c in twitch.helix_calls("videos")]
    assert statuses == [200, 401, 200]
    bearers = [c.bearer for c in twitch.helix_calls("videos")]
    assert bearers[0] == bearers[1] != bearers[2]


async def test_token_refreshed_before_expiry_without_a_401(twitch, twitch_server):
    twitch.token_lifetime = 3  # the client refreshes at half-life for short-lived tokens
    user_id = twitch.add_channel("streamer")
    async with make_client(twitch, twitch_server) as client:
        await client.list_videos(user_id)
        await client.list_videos(user_id)
        await asyncio.sleep(1.6)
        await client.list_videos(user_id)
    assert twitch.token_requests == ["client_credentials", "client_credentials"]
    assert all(c.status == 200 for c in twitch.helix_calls())


async def test_persistent_401_is_permanent(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    async with make_client(twitch, twitch_server) as client:
        client.client_id = "someone-else"  # every Helix call now mismatches the token's client
        with pytest.raises(Rejected, match="HTTP 401"):
            await client.list_videos(user_id)
    assert [c.status for c in twitch.helix_calls()] == [401, 401]


async def test_429_with_distant_reset_raises_rate_limited_at_reset(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    twitch.rate_limit_next(1, reset_in=60)
    async with make_client(twitch, twitch_server) as client:
        with pytest.raises(RateLimited) as caught:
            await client.list_videos(user_id)
    assert caught.value.retry_at == datetime.fromtimestamp(twitch.rate_limit_resets[0], UTC)
    assert len(twitch.helix_calls("videos")) == 1  # no in-call wait for a minute-long reset


async def test_429_with_imminent_reset_waits_and_retries_once(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    twitch.add_archives("streamer", 2)
    twitch.rate_limit_next(1, reset_in=0.5)
    async with make_client(twitch, twitch_server) as client:
        page = await client.list_videos(user_id)
    assert len(page.videos) == 2
    calls = twitch.helix_calls("videos")
    assert [c.status for c in calls] == [429, 200]
    # The retry was not sent before the advertised reset second.
    assert time.time() >= twitch.rate_limit_resets[0] - 0.05


async def test_second_429_after_inline_wait_raises(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    twitch.rate_limit_next(2, reset_in=0.2)
    async with make_client(twitch, twitch_server) as client:
        with pytest.raises(RateLimited):
            await client.list_videos(user_id)
    assert [c.status for c in twitch.helix_calls("videos")] == [429, 429]


async def test_5xx_retried_with_backoff_then_success_and_metrics_counted(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    twitch.add_archives("streamer", 1)
    ok_before, err_before = helix_count("videos", "200"), helix_count("videos", "500")
    twitch.fail_next(2, status=500)
    async with make_client(twitch, twitch_server) as client:
        page = await client.list_videos(user_id)
    assert len(page.videos) == 1
    assert [c.status for c in twitch.helix_calls("videos")] == [500, 500, 200]
    assert helix_count("videos", "500") - err_before == 2
    assert helix_count("videos", "200") - ok_before == 1


async def test_5xx_exhausts_bounded_attempts_then_transient(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    twitch.fail_next(10, status=503)
    async with make_client(twitch, twitch_server, max_attempts=3) as client:
        with pytest.raises(Unavailable, match="HTTP 503 after 3 attempts"):
            await client.list_videos(user_id)
    assert len(twitch.helix_calls("videos")) == 3


async def test_other_4xx_is_permanent_with_twitch_message(twitch, twitch_server):
    user_id = twitch.add_channel("streamer")
    async with make_client(twitch, twitch_server) as client:
        with pytest.raises(Rejected, match="HTTP 400: invalid cursor"):
            await client.list_videos(user_id, after="not-a-cursor")
        with pytest.raises(Rejected, match="does not exist"):
            await client.get_user("nobody")
    assert len(twitch.helix_calls("videos")) == 1  # a 400 is not retried


async def test_bad_client_secret_is_permanent_and_never_echoed(twitch, twitch_server):
    client = HelixClient(
        twitch.client_id,
        "wrong-secret-value",
        api_base=f"{twitch_server.base_url}/helix",
        auth_base=f"{twitch_server.base_url}/oauth2",
    )
    async with client:
        with pytest.raises(Rejected) as caught:
            await client.get_user("streamer")
    assert "invalid client secret" in str(caught.value)
    assert "wrong-secret-value" not in str(caught.value)
    assert twitch.helix_calls() == []


async def test_get_streams_reports_live_channels_only(twitch, twitch_server):
    twitch.add_channel("alive")
    twitch.add_channel("asleep")
    started = datetime(2024, 6, 2, 20, 0, tzinfo=UTC)
    twitch.set_live("alive", title="Speedrun", started_at=started)
    async with make_client(twitch, twitch_server) as client:
        streams = await client.get_streams(["Alive", "asleep"])
        assert [(s.user_login, s.title, s.started_at, s.type) for s in streams] == [
            ("alive", "Speedrun", started, "live")
        ]
        twitch.set_offline("alive")
        assert await client.get_streams(["alive", "asleep"]) == []
    assert twitch.helix_calls("streams")[0].query["user_login"] == ["alive", "asleep"]


async def test_unreachable_helix_is_transient_and_counted(twitch, twitch_server):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    before = helix_count("users", "network_error")
    client = HelixClient(
        twitch.client_id,
        twitch.client_secret,
        api_base=f"http://127.0.0.1:{dead_port}/helix",
        auth_base=f"{twitch_server.base_url}/oauth2",
        max_attempts=3,
        backoff_base=0.01,
    )
    async with client:
        with pytest.raises(Unavailable, match="ConnectError after 3 attempts"):
            await client.get_user("streamer")
    assert helix_count("users", "network_error") - before == 3
