"""OAuth tokens in `oauth_tokens`, encrypted at rest with envelope encryption.

`encryption_version` says how a row's secrets are stored: 0 plaintext (written by an older
release without a master key), 1 vod-tender's AES-GCM (read so an existing vod-tender
database keeps working), 2 reelhouse envelope (`core.security.crypto`, key id in
`encryption_key_id`). There is always a master key (`core.security.keys` generates one in
DATA_DIR when none is configured), so every write stores version 2; rows of versions 0 and 1 are
encrypted when a process starts (`seal_plaintext`, through the `reelhouse.secrets` entry point)
and `rotate()` moves every row to the primary key (`reelhouse admin rotate-keys`).
Each secret is bound to its row and column (crypto context), so a ciphertext pasted into
another row does not decrypt. Secrets never appear in logs, exceptions or `repr()`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import and_, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from reelhouse.archive.models import oauth_tokens
from reelhouse.core.db.types import utcnow
from reelhouse.core.providers.youtube import YouTubeTokens
from reelhouse.core.security.audit import master_keys_of
from reelhouse.core.security.crypto import CryptoError, Keyring, derive_key
from reelhouse.core.security.keys import MasterKeys
from reelhouse.core.telemetry.logging import register_secret

log = logging.getLogger("reelhouse.archive.tokens")

PLAINTEXT, VODTENDER_AESGCM, ENVELOPE = 0, 1, 2
_SECRET_COLUMNS = ("access_token", "refresh_token")


@dataclass(frozen=True)
class StoredToken:
    provider: str
    channel: str
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime | None
    scope: str = ""


@dataclass
class RotationReport:
    encrypted: int = 0  # plaintext or vod-tender rows now under the envelope
    rewrapped: int = 0  # envelope rows moved to the primary key
    unchanged: int = 0


def _context(provider: str, channel: str, column: str) -> str:
    return f"oauth_tokens|{provider}|{channel}|{column}"


def _vodtender_decrypt(secret: str, value: str) -> str:
    """vod-tender v1: base64(nonce || ciphertext || tag) under ENCRYPTION_KEY, no AAD."""
    try:
        raw = base64.b64decode(value, validate=True)
        return AESGCM(derive_key(secret)).decrypt(raw[:12], raw[12:], None).decode("utf-8")
    except (binascii.Error, ValueError, InvalidTag):
        raise CryptoError("vod-tender token does not decrypt with MASTER_ENCRYPTION_KEY/ENCRYPTION_KEY") from None


class TokenStore:
    name = "oauth tokens"

    def __init__(self, engine: AsyncEngine, keyring: Keyring | MasterKeys, *, legacy_secret: str = "") -> None:
        if keyring is None:
            raise CryptoError("TokenStore needs a keyring: OAuth tokens are never stored in plaintext")
        self.engine = engine
        self._keyring = keyring  # MasterKeys: loaded (the key file created) on first use
        self._legacy_secret = legacy_secret  # the raw ENCRYPTION_KEY, for vod-tender rows only

    @property
    def keyring(self) -> Keyring:
        return self._keyring.keyring() if isinstance(self._keyring, MasterKeys) else self._keyring

    @classmethod
    def from_settings(cls, engine: AsyncEngine, settings: object) -> TokenStore:
        """The store under the process's master keys: those bound to the engine (see
        `core.security.audit.bind_master_keys`), else the settings' key or DATA_DIR's key file."""
        keys = master_keys_of(engine) or MasterKeys.from_settings(settings)
        return cls.with_keys(engine, keys)

    @classmethod
    def with_keys(cls, engine: AsyncEngine, keys: MasterKeys) -> TokenStore:
        return cls(engine, keys, legacy_secret=keys.environment_secret)

    # -- reading -----------------------------------------------------------------------------
    async def load(self, provider: str, channel: str = "") -> StoredToken | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(oauth_tokens).where(oauth_tokens.c.provider == provider, oauth_tokens.c.channel == channel)
                )
            ).first()
        if row is None:
            return None
        token = StoredToken(
            provider,
            channel,
            access_token=self._reveal(row, "access_token") or "",
            refresh_token=self._reveal(row, "refresh_token"),
            expires_at=row.expires_at,
            scope=row.scope or "",
        )
        register_secret(token.access_token, token.refresh_token)
        return token

    async def load_for_channel(self, provider: str, channel: str) -> StoredToken | None:
        """The channel's own token, else the deployment-wide one (channel '')."""
        token = await self.load(provider, channel) if channel else None
        return token or await self.load(provider, "")

    def _reveal(self, row: object, column: str) -> str | None:
        value = getattr(row, column)
        if value is None or value == "":
            return value
        version = row.encryption_version  # type: ignore[attr-defined]
        if version == PLAINTEXT:
            return value
        if version == VODTENDER_AESGCM:
            if not self._legacy_secret:
                raise CryptoError(
                    "token is encrypted (vod-tender format) but no MASTER_ENCRYPTION_KEY / ENCRYPTION_KEY is configured"
                )
            return _vodtender_decrypt(self._legacy_secret, value)
        provider, channel = row.provider, row.channel  # type: ignore[attr-defined]
        return self.keyring.decrypt_text(value, _context(provider, channel, column))

    # -- writing -----------------------------------------------------------------------------
    async def save(
        self,
        provider: str,
        *,
        access_token: str,
        refresh_token: str | None,
        expires_at: datetime | None,
        scope: str = "",
        channel: str = "",
    ) -> None:
        register_secret(access_token, refresh_token)
        values = {
            "expires_at": expires_at,
            "scope": scope,
            "updated_at": utcnow(),
            **self._seal(provider, channel, access_token, refresh_token),
        }
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(oauth_tokens).values(provider=provider, channel=channel, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[oauth_tokens.c.provider, oauth_tokens.c.channel], set_=values)
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def delete(self, provider: str, channel: str = "") -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(oauth_tokens).where(oauth_tokens.c.provider == provider, oauth_tokens.c.channel == channel)
            )

    def _seal(self, provider: str, channel: str, access: str, refresh: str | None) -> dict[str, object]:
        sealed = {
            column: (self.keyring.encrypt(value, _context(provider, channel, column)) if value else value)
            for column, value in zip(_SECRET_COLUMNS, (access, refresh), strict=True)
        }
        return {**sealed, "encryption_version": ENVELOPE, "encryption_key_id": self.keyring.primary_id}

    async def rotate(self, *, only_unsealed: bool = False) -> RotationReport:
        """Move every row to the envelope under the primary key (with `only_unsealed`, only the
        plaintext and vod-tender rows). Rows are updated with a compare-and-set on their old
        values, so a refresh racing the rotation wins cleanly."""
        report = RotationReport()
        query = select(oauth_tokens)
        if only_unsealed:
            query = query.where(oauth_tokens.c.encryption_version != ENVELOPE)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        for row in rows:
            if row.encryption_version == ENVELOPE and row.encryption_key_id == self.keyring.primary_id:
                report.unchanged += 1
                continue
            if row.encryption_version == ENVELOPE:
                new = {
                    c: (self.keyring.rewrap(getattr(row, c)) if getattr(row, c) else getattr(row, c))
                    for c in _SECRET_COLUMNS
                }
                report.rewrapped += 1
            else:
                new = {}
                for column in _SECRET_COLUMNS:
                    value = self._reveal(row, column)
                    new[column] = (
                        self.keyring.encrypt(value, _context(row.provider, row.channel, column)) if value else value
                    )
                report.encrypted += 1
            guard = and_(
                oauth_tokens.c.provider == row.provider,
                oauth_tokens.c.channel == row.channel,
                oauth_tokens.c.encryption_version == row.encryption_version,
                oauth_tokens.c.access_token == row.access_token,
            )
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(oauth_tokens)
                    .where(guard)
                    .values(
                        **new,
                        encryption_version=ENVELOPE,
                        encryption_key_id=self.keyring.primary_id,
                        updated_at=utcnow(),
                    )
                )
        return report

    # -- the `reelhouse.secrets` protocol (core.security.secret_stores) ------------------------
    async def seal_plaintext(self) -> int:
        return (await self.rotate(only_unsealed=True)).encrypted

    async def rewrap(self) -> tuple[int, int]:
        report = await self.rotate()
        return report.encrypted + report.rewrapped, report.unchanged

    async def key_ids_in_use(self) -> set[str]:
        async with self.engine.connect() as conn:
            ids = await conn.execute(
                select(oauth_tokens.c.encryption_key_id).where(oauth_tokens.c.encryption_version == ENVELOPE).distinct()
            )
            return {key_id for key_id in ids.scalars() if key_id}

    # -- adapters ------------------------------------------------------------------------------
    def youtube_callbacks(self, channel: str = ""):
        """(load, save) for `YouTubeClient`: a channel's own token, else the deployment-wide
        one; a refreshed token is saved back to the row it came from."""
        source = {"channel": channel}

        async def load() -> YouTubeTokens | None:
            token = await self.load("youtube", channel) if channel else None
            if token is None:
                token = await self.load("youtube", "")
                source["channel"] = ""
            if token is None or token.expires_at is None:
                return None
            return YouTubeTokens(token.access_token, token.refresh_token, token.expires_at, tuple(token.scope.split()))

        async def save(tokens: YouTubeTokens) -> None:
            await self.save(
                "youtube",
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_at=tokens.expires_at,
                scope=" ".join(tokens.scopes),
                channel=source["channel"],
            )

        return load, save


def secret_store(engine: AsyncEngine, keys: MasterKeys) -> TokenStore:
    """Entry point `reelhouse.secrets:archive-oauth-tokens`."""
    return TokenStore.with_keys(engine, keys)
