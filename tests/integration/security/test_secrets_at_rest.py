"""Secrets at rest with nothing configured: a generated master key (0600), no plaintext token in
the database, plaintext rows sealed on start, and key rotation after which the old key can go."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import insert, select

from reelhouse.archive.models import oauth_tokens
from reelhouse.archive.tokens import ENVELOPE, PLAINTEXT, TokenStore
from reelhouse.core.db.models import metadata
from reelhouse.core.db.types import utcnow
from reelhouse.core.security import audit
from reelhouse.core.security.crypto import KeyNotConfigured, Keyring
from reelhouse.core.security.keys import MasterKeys, key_file_path, read_key_file

ACCESS = "oauth-access-token-bytes-0123456789"
REFRESH = "oauth-refresh-token-bytes-9876543210"
EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)


async def dump_database(engine, db_url: str, data_dir) -> bytes:
    """Every row of every table as text, plus (SQLite) the raw database and WAL files or
    (PostgreSQL) pg_dump's output: what someone who copies the database would hold."""
    parts = []
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            try:
                rows = (await conn.execute(select(table))).all()
            except Exception:
                continue  # a table of a domain whose migrations this database does not have
            parts.append(repr(rows).encode())
    if db_url.startswith("sqlite"):
        path = db_url.split("///", 1)[1]
        for suffix in ("", "-wal"):
            if os.path.exists(path + suffix):
                parts.append(open(path + suffix, "rb").read())  # noqa: SIM115
    else:
        dsn = db_url.replace("postgresql+asyncpg://", "postgresql://")
        parts.append(subprocess.run(["pg_dump", dsn], capture_output=True, check=True).stdout)
    return b"\n".join(parts)


async def test_first_start_generates_a_private_key_and_tokens_are_never_stored_in_plaintext(
    app, runtime, settings, db_url
):
    key_file = key_file_path(settings.server.data_dir)
    assert not key_file.exists(), "building the app must not create the key yet"
    async with app.router.lifespan_context(app):
        store = TokenStore.from_settings(runtime.engine, settings)
        await store.save("youtube", access_token=ACCESS, refresh_token=REFRESH, expires_at=EXPIRES)
        loaded = await store.load("youtube")
        assert (loaded.access_token, loaded.refresh_token) == (ACCESS, REFRESH)
    assert key_file.exists() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    dump = await dump_database(runtime.engine, db_url, settings.server.data_dir)
    for secret in (ACCESS, REFRESH):
        assert secret.encode() not in dump and base64.b64encode(secret.encode()) not in dump
    key_text = read_key_file(key_file)[0]
    assert key_text.encode() not in dump


async def test_plaintext_rows_left_by_older_releases_are_encrypted_on_start(app, runtime, settings):
    async with runtime.engine.begin() as conn:
        await conn.execute(
            insert(oauth_tokens).values(
                provider="twitch",
                channel="",
                access_token=ACCESS,
                refresh_token=REFRESH,
                expires_at=EXPIRES,
                encryption_version=PLAINTEXT,
                updated_at=utcnow(),
            )
        )
    async with app.router.lifespan_context(app):
        pass
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(select(oauth_tokens))).one()
    assert row.encryption_version == ENVELOPE and ACCESS not in row.access_token and REFRESH not in row.refresh_token
    loaded = await TokenStore.from_settings(runtime.engine, settings).load("twitch")
    assert (loaded.access_token, loaded.refresh_token) == (ACCESS, REFRESH)


def cli(db_url: str, data_dir, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """`reelhouse admin ARGS` against the database, with DATA_DIR's key file as master key."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MASTER_ENCRYPTION_KEY")}
    environ.update(DATABASE_URL=db_url, DATA_DIR=str(data_dir), LOG_LEVEL="warning", **env)
    return subprocess.run(
        [sys.executable, "-m", "reelhouse.cli", "admin", *args],
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_rotate_keys_with_the_key_file_then_drop_the_old_key(runtime, settings, db_url):
    data_dir = settings.server.data_dir
    store = TokenStore.from_settings(runtime.engine, settings)
    await store.save("youtube", access_token=ACCESS, refresh_token=REFRESH, expires_at=EXPIRES, channel="c")
    await audit.append(runtime.engine, "test", "before.rotation")
    old_id = store.keyring.primary_id

    rotated = cli(db_url, data_dir, "rotate-keys", "--new-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped" in rotated.stdout and old_id in rotated.stdout
    dropped = cli(db_url, data_dir, "rotate-keys", "--drop-old")
    assert dropped.returncode == 0, dropped.stderr
    keys = read_key_file(key_file_path(data_dir))
    assert len(keys) == 1, "only the new key is left"
    only_new = MasterKeys.from_settings(settings)
    assert old_id not in only_new.keyring().key_ids
    fresh = TokenStore.with_keys(runtime.engine, only_new)
    assert (await fresh.load("youtube", "c")).refresh_token == REFRESH
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(select(oauth_tokens))).one()
    assert row.encryption_key_id == only_new.keyring().primary_id
    verified = cli(db_url, data_dir, "audit", "verify")
    assert verified.returncode == 0, verified.stderr + verified.stdout


async def test_rotate_keys_with_keys_in_the_environment(runtime, settings, db_url):
    key_a = base64.b64encode(b"A" * 32).decode()
    key_b = base64.b64encode(b"B" * 32).decode()
    data_dir = settings.server.data_dir
    store = TokenStore(runtime.engine, Keyring.from_secrets(key_a))
    await store.save("twitch", access_token=ACCESS, refresh_token=REFRESH, expires_at=EXPIRES)
    refused = cli(
        db_url, data_dir, "rotate-keys", "--drop-old", MASTER_ENCRYPTION_KEY=key_b, MASTER_ENCRYPTION_KEY_PREVIOUS=key_a
    )
    assert refused.returncode == 0, refused.stderr  # rotation happens first, so nothing is left on A
    rotated = cli(db_url, data_dir, "rotate-keys", MASTER_ENCRYPTION_KEY=key_b, MASTER_ENCRYPTION_KEY_PREVIOUS=key_a)
    assert rotated.returncode == 0 and "no old keys" not in rotated.stdout
    only_b = TokenStore(runtime.engine, Keyring.from_secrets(key_b))
    assert (await only_b.load("twitch")).access_token == ACCESS
    try:
        await TokenStore(runtime.engine, Keyring.from_secrets(key_a)).load("twitch")
    except KeyNotConfigured:
        pass
    else:
        raise AssertionError("the old key must no longer be needed, nor able, to read the token")
