"""The web UI's settings section (`WEB_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from reelhouse.config import SettingsSection, from_env


class WebSettings(SettingsSection):
    # A browser session is an API token held in an HttpOnly cookie; it expires after this.
    # Send the session cookie over HTTPS only; set behind a TLS-terminating proxy.
    cookie_secure: bool = Field(False, validation_alias=from_env("WEB_COOKIE_SECURE"))
    # Where `npm ci` put the front-end packages; empty: ./node_modules, then the source tree's.
    node_modules: Path | None = Field(None, validation_alias=from_env("WEB_NODE_MODULES"))
    # Twitch emote images in chat replay, `{id}` replaced by the emote id; empty: emotes as text.
    emote_url: str = Field(
        "https://static-cdn.jtvnw.net/emoticons/v2/{id}/default/dark/1.0", validation_alias=from_env("WEB_EMOTE_URL")
    )
