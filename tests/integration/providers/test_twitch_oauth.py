"""Twitch authorization-code flow against the fake id.twitch.tv token endpoint."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY

from reelhouse.archive.twitch.oauth import TwitchOAuth
from reelhouse.core.providers.errors import Rejected


def refresh_count(status: str) -> float:
    labels = {"provider": "twitch", "status": status}
    return REGISTRY.get_sample_value("oauth_token_refresh_total", labels) or 0.0


def make_oauth(twitch, server) -> TwitchOAuth:
    return TwitchOAuth(
        twitch.client_id,
        twitch.client_secret,
        redirect_uri=twitch.redirect_uri,
        auth_base=f"{server.base_url}/oauth2",
        backoff_base=0.01,
    )


async def test_authorize_url_then_code_exchange_then_refresh(twitch, twitch_server):
    async with make_oauth(twitch, twitch_server) as oauth:
        state = oauth.new_state()
        url = urlsplit(oauth.authorize_url(state))
        query = parse_qs(url.query)
        assert url.path == "/oauth2/authorize"
        assert query == {
            "response_type": ["code"],
            "client_id": [twitch.client_id],
            "redirect_uri": [twitch.redirect_uri],
            "scope": ["chat:read chat:edit"],
            "state": [state],
        }

        tokens = await oauth.exchange_code(twitch.issue_authorization_code(("chat:read",)))
        assert tokens.scopes == ("chat:read",) and tokens.refresh_token
        assert tokens.access_token not in repr(tokens) and tokens.refresh_token not in repr(tokens)

        before = refresh_count("success")
        refreshed = await oauth.refresh(tokens.refresh_token)
        assert refresh_count("success") - before == 1
        assert refreshed.access_token != tokens.access_token
        # Twitch rotates refresh tokens: the old one is spent.
        assert refreshed.refresh_token != tokens.refresh_token
    assert twitch.token_requests == ["authorization_code", "refresh_token"]


async def test_spent_refresh_token_and_reused_code_are_permanent(twitch, twitch_server):
    async with make_oauth(twitch, twitch_server) as oauth:
        code = twitch.issue_authorization_code()
        tokens = await oauth.exchange_code(code)
        with pytest.raises(Rejected, match="Invalid authorization code"):
            await oauth.exchange_code(code)
        await oauth.refresh(tokens.refresh_token)
        before = refresh_count("failure")
        with pytest.raises(Rejected, match="Invalid refresh token") as caught:
            await oauth.refresh(tokens.refresh_token)
        assert tokens.refresh_token not in str(caught.value)
        assert refresh_count("failure") - before == 1
