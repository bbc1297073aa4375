"""core/security/crypto.py: envelope encryption, key rotation, key text."""

from __future__ import annotations

import base64
import os

import pytest

from reelhouse.core.security.crypto import CryptoError, DecryptionFailed, KeyNotConfigured, Keyring, derive_key


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
