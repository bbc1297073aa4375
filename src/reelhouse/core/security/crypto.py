"""Envelope encryption of small secrets at rest (OAuth tokens, vault keys), AES-256-GCM.

Each record gets its own random data key (DEK); the DEK is encrypted ("wrapped") under the
master key (KEK) from `MASTER_ENCRYPTION_KEY`. A ciphertext is one ASCII string:

    rh1.<key id>.<b64url(nonce || wrapped DEK || tag)>.<b64url(nonce || ciphertext || tag)>

- The key id names the KEK that wrapped the DEK, so a key that is no longer primary can still
  decrypt, `rewrap` moves a record to the primary key without touching the data part, and a
  record whose key is not configured fails with a message naming the missing key id.
- The caller's `context` (e.g. `oauth_tokens|youtube|mychannel|access_token`) is bound as
  associated data: a ciphertext copied to another row or column does not decrypt (vod-tender
  used no AAD, so encrypted values could be swapped between rows).
- Key ids are derived from the key (HMAC), never from its bytes directly, and carry no secret.

`MASTER_ENCRYPTION_KEY` is base64 of 32 random bytes (`openssl rand -base64 32`), or else any
passphrase, stretched with HKDF-SHA256. HKDF does not slow down guessing, so a passphrase must
be long and random to be as strong as a generated key. Previous keys, kept for decryption while
records are re-wrapped, go in `MASTER_ENCRYPTION_KEY_PREVIOUS` (comma-separated).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "rh1"
KEY_BYTES = 32
NONCE_BYTES = 12
_HKDF_SALT = b"reelhouse/master-key/v1"
_WRAP_AAD = b"rh1|dek|"
_DATA_AAD = b"rh1|data|"


class CryptoError(Exception):
    """Base class: the message never contains key material or plaintext."""


class KeyNotConfigured(CryptoError):
    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"this value was encrypted with master key id {key_id!r}, which is not configured: "
            "set it as MASTER_ENCRYPTION_KEY or list it in MASTER_ENCRYPTION_KEY_PREVIOUS"
        )
        self.key_id = key_id


class DecryptionFailed(CryptoError):
    """Tampered ciphertext, or the right key with the wrong context (value moved to another row)."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(secret: str) -> bytes:
    """32 key bytes from the configured text: decoded when it is base64 of exactly 32 bytes,
    else derived from the passphrase with HKDF-SHA256."""
    text = secret.strip()
    if not text:
        raise CryptoError("empty master key")
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            # validate=True: a passphrase must not be read as base64 after dropping its spaces.
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == KEY_BYTES:
            return raw
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_HKDF_SALT, info=b"reelhouse envelope kek").derive(
        text.encode("utf-8")
    )


def key_id_for(key: bytes) -> str:
    return hmac.new(key, b"reelhouse key id", hashlib.sha256).hexdigest()[:12]


def _context_bytes(context: bytes | str) -> bytes:
    return context.encode("utf-8") if isinstance(context, str) else context


@dataclass(frozen=True)
class _Parsed:
    key_id: str
    wrapped: bytes
    sealed: bytes


def _parse(token: str) -> _Parsed:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise CryptoError("not a reelhouse ciphertext (expected rh1.<key id>.<dek>.<data>)")
    try:
        wrapped, sealed = _b64decode(parts[2]), _b64decode(parts[3])
    except (binascii.Error, ValueError):
        raise DecryptionFailed("ciphertext is not valid base64") from None
    if len(wrapped) != NONCE_BYTES + KEY_BYTES + 16 or len(sealed) < NONCE_BYTES + 16:
        raise DecryptionFailed("ciphertext is truncated")
    return _Parsed(parts[1], wrapped, sealed)


def is_ciphertext(value: str | None) -> bool:
    return bool(value) and value.startswith(VERSION + ".")  # type: ignore[union-attr]


class Keyring:
    """The primary master key (encrypts) and previous ones (decrypt only)."""

    def __init__(self, primary: bytes, previous: Iterable[bytes] = ()) -> None:
        if len(primary) != KEY_BYTES:
            raise CryptoError("master key must be 32 bytes")
        self._primary_id = key_id_for(primary)
        self._keys = {self._primary_id: primary}
        for key in previous:
            if len(key) != KEY_BYTES:
                raise CryptoError("master key must be 32 bytes")
            self._keys.setdefault(key_id_for(key), key)

    @classmethod
    def from_secrets(cls, primary: str, previous: Iterable[str] = ()) -> Keyring:
        return cls(derive_key(primary), [derive_key(p) for p in previous if p.strip()])

    @classmethod
    def from_settings(cls, settings: object) -> Keyring | None:
        """From `Settings` (security section); None when no master key is configured."""
        security = getattr(settings, "security", settings)
        primary = getattr(security, "master_encryption_key", "") or ""
        previous = getattr(security, "master_encryption_key_previous", None) or []
        if not primary.strip():
            return None
        items = previous.split(",") if isinstance(previous, str) else list(previous)
        return cls.from_secrets(primary, items)

    @property
    def primary_id(self) -> str:
        return self._primary_id

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def encrypt(self, plaintext: bytes | str, context: bytes | str = b"") -> str:
        data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
        dek = AESGCM.generate_key(bit_length=256)
        data_nonce, wrap_nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
        sealed = data_nonce + AESGCM(dek).encrypt(data_nonce, data, _DATA_AAD + _context_bytes(context))
        wrapped = self._wrap(dek, self._primary_id, wrap_nonce)
        return ".".join((VERSION, self._primary_id, _b64encode(wrapped), _b64encode(sealed)))

    def decrypt(self, token: str, context: bytes | str = b"") -> bytes:
        parsed = _parse(token)
        dek = self._unwrap(parsed)
        nonce, body = parsed.sealed[:NONCE_BYTES], parsed.sealed[NONCE_BYTES:]
        try:
            return AESGCM(dek).decrypt(nonce, body, _DATA_AAD + _context_bytes(context))
        except InvalidTag:
            raise DecryptionFailed(
                "ciphertext does not authenticate (tampered, or stored under another record)"
            ) from None

    def decrypt_text(self, token: str, context: bytes | str = b"") -> str:
        return self.decrypt(token, context).decode("utf-8")

    @staticmethod
    def key_id_of(token: str) -> str:
        return _parse(token).key_id

    def needs_rewrap(self, token: str) -> bool:
        return _parse(token).key_id != self._primary_id

    def rewrap(self, token: str) -> str:
        """The same record with its data key wrapped under the primary key. The data part is
        unchanged, so rotation needs no context and never sees the plaintext."""
        parsed = _parse(token)
        if parsed.key_id == self._primary_id:
            return token
        dek = self._unwrap(parsed)
        wrapped = self._wrap(dek, self._primary_id, os.urandom(NONCE_BYTES))
        return ".".join((VERSION, self._primary_id, _b64encode(wrapped), _b64encode(parsed.sealed)))

    def _wrap(self, dek: bytes, key_id: str, nonce: bytes) -> bytes:
        return nonce + AESGCM(self._keys[key_id]).encrypt(nonce, dek, _WRAP_AAD + key_id.encode())

    def _unwrap(self, parsed: _Parsed) -> bytes:
        kek = self._keys.get(parsed.key_id)
        if kek is None:
            raise KeyNotConfigured(parsed.key_id)
        nonce, body = parsed.wrapped[:NONCE_BYTES], parsed.wrapped[NONCE_BYTES:]
        try:
            return AESGCM(kek).decrypt(nonce, body, _WRAP_AAD + parsed.key_id.encode())
        except InvalidTag:
            raise DecryptionFailed("wrapped data key does not authenticate (tampered)") from None
