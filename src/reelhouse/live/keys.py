"""Publish keys and playback ids: independent random values. The key is shown once, stored as
its SHA-256 (a 160-bit random key needs no slow hash) and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "live_"


def new_publish_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def new_playback_id() -> str:
    return secrets.token_hex(12)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_hint(key: str) -> str:
    return key[: len(KEY_PREFIX) + 4] + "…"


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(key_hash(key), stored_hash)


def callback_token(secret: bytes) -> str:
    """The token nginx's callbacks carry (the config holds it; every API replica derives it)."""
    return hmac.new(secret, b"live/ingest-callback/v1", hashlib.sha256).hexdigest()[:40]
