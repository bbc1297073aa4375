"""Signed playback links: an expiring HMAC over a storage prefix, carried in the URL path so
the relative URIs inside HLS playlists resolve under the same token (one link plays a whole
ladder). Used by encode's `/media/signed/...` and live's `/live/signed/...`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def _mac(secret: bytes, scope: str, expires: int) -> str:
    digest = hmac.new(secret, f"{scope}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).rstrip(b"=").decode("ascii")


def make_token(secret: bytes, scope: str, expires: int) -> str:
    """`<scope depth>.<expiry>.<mac>`: the scope is the first `depth` segments of every key it opens."""
    return f"{len(scope.split('/'))}.{expires}.{_mac(secret, scope, expires)}"


def check_token(secret: bytes, token: str, key: str, now: float | None = None) -> str | None:
    """None if `token` opens `key`, else the reason it does not."""
    try:
        depth_text, expires_text, mac = token.split(".")
        depth, expires = int(depth_text), int(expires_text)
    except ValueError:
        return "malformed link token"
    parts = key.split("/")
    if depth < 1 or depth >= len(parts):
        return "link does not cover this object"
    if not hmac.compare_digest(_mac(secret, "/".join(parts[:depth]), expires), mac):
        return "link signature does not match"
    if expires < (time.time() if now is None else now):
        return "link expired"
    return None
