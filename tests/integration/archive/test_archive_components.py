"""Archive components against SQLite and PostgreSQL: the encrypted token store and key rotation,
the catalog cursor, retention and the temp sweeper, channel management, VOD job generations."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import insert, select, update

from reelhouse.archive.catalog import Catalog
from reelhouse.archive.models import oauth_tokens, vods
from reelhouse.archive.retention import apply_retention, sweep_temp_files
from reelhouse.archive.settings import ArchiveSettings
from reelhouse.archive.store import ChannelStore, VodStore
from reelhouse.archive.tokens import ENVELOPE, PLAINTEXT, TokenStore
from reelhouse.archive.twitch.helix import HelixClient
from reelhouse.config import Settings
from reelhouse.core.db.models import jobs, kv, tasks
from reelhouse.core.db.types import utcnow
from reelhouse.core.jobs import states
from reelhouse.core.jobs.kv import KV
from reelhouse.core.jobs.queue import TaskQueue
from reelhouse.core.runtime import build_runtime
from reelhouse.core.security.crypto import DecryptionFailed, KeyNotConfigured, Keyring
from tests.archive_support import vod_jobs
from tests.fakes.helix import FakeTwitch
from tests.fakes.server import serve

from .test_archive_failures import add_vod, vod_row

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def runtime(engine):
    return build_runtime(Settings(), engine=engine, load_domains=False)


async def raw_token_row(engine, provider: str, channel: str = ""):
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(oauth_tokens).where(oauth_tokens.c.provider == provider, oauth_tokens.c.channel == channel)
            )
        ).one()


async def test_tokens_encrypted_at_rest_bound_to_their_row_and_rotated(engine):
    store = TokenStore(engine, Keyring.from_secrets(KEY_A))
    await store.save(
        "youtube",
        access_token="ya29.access",
        refresh_token="1//refresh",
        expires_at=EXPIRES,
        scope="youtube.upload",
        channel="chan",
    )
    raw = await raw_token_row(engine, "youtube", "chan")
    assert raw.encryption_version == ENVELOPE and raw.encryption_key_id == store.keyring.primary_id
    assert "ya29" not in raw.access_token and "refresh" not in raw.refresh_token
    loaded = await store.load("youtube", "chan")
    assert (loaded.access_token, loaded.refresh_token, loaded.scope) == ("ya29.access", "1//refresh", "youtube.upload")
    assert "ya29" not in repr(loaded)

    # A ciphertext pasted into another row does not decrypt there.
    async with engine.begin() as conn:
        await conn.execute(
            insert(oauth_tokens).values(
                provider="twitch",
                channel="chan",
                access_token=raw.access_token,
                refresh_token=None,
                encryption_version=ENVELOPE,
                encryption_key_id=raw.encryption_key_id,
                updated_at=utcnow(),
            )
        )
    with pytest.raises(DecryptionFailed):
        await store.load("twitch", "chan")

    # A plaintext row (written by an older release without a key), and a vod-tender v1 row, are
    # both migrated by rotate.
    async with engine.begin() as conn:
        await conn.execute(
            update(oauth_tokens)
            .where(oauth_tokens.c.provider == "twitch", oauth_tokens.c.channel == "chan")
            .values(access_token="plain", refresh_token="r", encryption_version=PLAINTEXT, encryption_key_id=None)
        )
    nonce = os.urandom(12)
    legacy = base64.b64encode(nonce + AESGCM(b"a" * 32).encrypt(nonce, b"legacy-access", None)).decode()
    async with engine.begin() as conn:
        await conn.execute(
            insert(oauth_tokens).values(
                provider="legacy",
                channel="",
                access_token=legacy,
                encryption_version=1,
                encryption_key_id="default",
                updated_at=utcnow(),
            )
        )
    rotated = TokenStore(engine, Keyring.from_secrets(KEY_B, [KEY_A]), legacy_secret=KEY_A)
    report = await rotated.rotate()
    assert (report.encrypted, report.rewrapped, report.unchanged) == (2, 1, 0)
    only_b = TokenStore(engine, Keyring.from_secrets(KEY_B))
    assert (await only_b.load("youtube", "chan")).refresh_token == "1//refresh"
    assert (await only_b.load("twitch", "chan")).access_token == "plain"
    assert (await only_b.load("legacy")).access_token == "legacy-access"
    with pytest.raises(KeyNotConfigured):
        await TokenStore(engine, Keyring.from_secrets(KEY_A)).load("youtube", "chan")
    assert (await rotated.rotate()).unchanged == 3


async def test_catalog_walk_persists_its_cursor_resumes_and_resets(engine):
    twitch = FakeTwitch()
    twitch.add_channel("walker")
    videos = twitch.add_archives("walker", 25)
    with serve(twitch.app) as served:
        async with HelixClient(
            twitch.client_id,
            twitch.client_secret,
            api_base=f"{served.base_url}/helix",
            auth_base=f"{served.base_url}/oauth2",
        ) as helix:
            channels = ChannelStore(engine)
            catalog = Catalog(VodStore(engine), channels, KV(engine), helix)
            await channels.add_channel("walker")
            first = await catalog.backfill("walker", max_count=10, page_size=10, page_delay=0)
            assert (first.pages, len(first.inserted), first.complete) == (1, 10, False)
            cursor = await _kv(engine, "walker", "catalog_after")
            assert cursor, "an unfinished walk keeps its cursor"
            rest = await catalog.backfill("walker", page_size=10, page_delay=0)
            assert (len(rest.inserted), rest.complete) == (15, True)
            assert await _kv(engine, "walker", "catalog_after") is None, "a finished walk resets its cursor"
            # Helix rejects a stale cursor: the walk restarts from the top instead of failing forever.
            async with engine.begin() as conn:
                await conn.execute(
                    insert(kv).values(channel="walker", key="catalog_after", value="expired", updated_at=utcnow())
                )
            again = await catalog.backfill("walker", page_size=10, page_delay=0)
            assert again.complete and again.inserted == [] and again.seen == 25
            # The age limit stops the walk at the first older VOD.
            newest = datetime.fromisoformat(videos[0]["created_at"].replace("Z", "+00:00"))
            aged = await catalog.backfill(
                "walker", max_age_days=5, page_size=10, page_delay=0, now=newest + timedelta(hours=1)
            )
            assert aged.complete and aged.seen == 5
            new_ids = await catalog.discover_latest("walker", limit=5)
            assert new_ids == []
    async with engine.connect() as conn:
        rows = (await conn.execute(select(vods.c.twitch_vod_id, vods.c.channel, vods.c.duration_seconds))).all()
    assert sorted(r.twitch_vod_id for r in rows) == sorted(v["id"] for v in videos)
    assert {r.channel for r in rows} == {"walker"} and {r.duration_seconds for r in rows} == {3723}
    assert (await ChannelStore(engine).list_channels())[0].twitch_user_id is not None


async def _kv(engine, channel: str, key: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(kv.c.value).where(kv.c.channel == channel, kv.c.key == key))).scalar()


async def test_retention_keeps_policy_active_and_other_channels_files(engine, tmp_path, monkeypatch):
    data = tmp_path / "data"
    now = utcnow()
    paths = {}
    for channel, vod_id, age_days, processed in [
        ("a", "1", 1, True),
        ("a", "2", 10, True),
        ("a", "3", 20, True),
        ("a", "4", 30, False),
        ("a", "5", 40, True),
        ("b", "6", 50, True),
    ]:
        path = data / channel / f"twitch_{vod_id}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"v" * 1000)
        paths[vod_id] = path
        await add_vod(
            engine,
            vod_id,
            channel=channel,
            date=now - timedelta(days=age_days),
            processed=processed,
            downloaded_path=str(path),
        )
    # VOD 3 has a queued task (in use); VOD 5's row points into channel b's directory.
    await TaskQueue(engine).enqueue("vod.upload", {"vod_id": "3", "channel": "a"})
    async with engine.begin() as conn:
        await conn.execute(update(vods).where(vods.c.twitch_vod_id == "5").values(downloaded_path=str(paths["6"])))
    monkeypatch.setenv("RETENTION_KEEP_DAYS", "7")
    monkeypatch.setenv("RETENTION_KEEP_COUNT", "1")  # per channel: b's only VOD is its newest
    monkeypatch.setenv("RETENTION_DRY_RUN", "1")
    dry = await apply_retention(VodStore(engine), data, ArchiveSettings())
    assert dry.deleted == ["2"] and all(p.exists() for p in paths.values())
    monkeypatch.setenv("RETENTION_DRY_RUN", "0")
    monkeypatch.setenv("RETENTION_KEEP_COUNT", "0")
    report = await apply_retention(VodStore(engine), data, ArchiveSettings())
    # 1: newer than 7 days; 2: old and processed -> deleted; 3: in use; 4: not processed yet;
    # 5: its path is in another channel's directory -> refused; 6: channel b, old -> deleted.
    assert sorted(report.deleted) == ["2", "6"] and report.bytes_freed == 2000
    assert len(report.errors) == 1 and "outside" in report.errors[0]
    assert [vod_id for vod_id, p in paths.items() if not p.exists()] == ["2", "6"]
    assert (await vod_row(engine, "2")).downloaded_path is None
    assert (await vod_row(engine, "5")).downloaded_path == str(paths["6"]), "refused deletion leaves the row"

    # Temp sweeper: old leftovers go unless their VOD is being worked on; fresh ones stay.
    old = time.time() - 3 * 3600
    leftovers = {
        name: data / "a" / name
        for name in (
            "twitch_9.mp4.part",
            "twitch_9.mp4.part-Frag2.part",
            "twitch_9.mp4.ytdl",
            "twitch_3.mp4.part",
            "twitch_8.mp4.part",
            "notes.txt",
        )
    }
    for name, path in leftovers.items():
        path.write_bytes(b"x")
        if name != "twitch_8.mp4.part":
            os.utime(path, (old, old))
    removed = await sweep_temp_files(VodStore(engine), data, timedelta(hours=1))
    assert sorted(os.path.basename(p) for p in removed) == [
        "twitch_9.mp4.part",
        "twitch_9.mp4.part-Frag2.part",
        "twitch_9.mp4.ytdl",
    ]
    assert leftovers["twitch_3.mp4.part"].exists() and leftovers["twitch_8.mp4.part"].exists()
    assert leftovers["notes.txt"].exists()


async def test_channels_from_env_and_api(engine):
    store = ChannelStore(engine)
    assert await store.watched_channels(["envchan"]) == ["envchan"]
    assert await store.add_channel("ApiChan") is True
    assert await store.add_channel("apichan") is False
    assert await store.watched_channels(["envchan"]) == ["apichan", "envchan"]
    assert await store.remove_channel("envchan") is True
    assert await store.watched_channels(["envchan"]) == ["apichan"], "a removed env channel stays removed"
    assert await store.remove_channel("apichan") is True
    assert [c.name for c in await store.list_channels(include_disabled=True)] == ["envchan"]
    with pytest.raises(ValueError):
        await store.add_channel("../../etc")


async def test_vod_jobs_are_idempotent_per_generation_and_follow_runbook_resets(runtime, engine):
    await add_vod(engine, "100", channel="c")
    await add_vod(engine, "101", channel="c", is_placeholder=True)
    first = await vod_jobs(runtime).enqueue("100")
    assert await vod_jobs(runtime).enqueue("100") == first
    assert await vod_jobs(runtime).enqueue_pending("c") == [], "open work and placeholders are left alone"
    with pytest.raises(ValueError):
        await vod_jobs(runtime).enqueue("101")
    # The runbook's "force reprocess" after a finished job: the next sweep creates generation 1.
    async with engine.begin() as conn:
        await conn.execute(update(tasks).where(tasks.c.job_id == first).values(status=states.SUCCEEDED))
        await conn.execute(update(jobs).where(jobs.c.id == first).values(status=states.JOB_COMPLETED))
        await conn.execute(
            update(vods)
            .where(vods.c.twitch_vod_id == "100")
            .values(processed=False, processing_error=None, youtube_url=None)
        )
    [second] = await vod_jobs(runtime).enqueue_pending("c")
    assert second != first and (await vod_row(engine, "100")).job_id == second
    assert await vod_jobs(runtime).enqueue_pending("c") == [] and await vod_jobs(runtime).enqueue("100") == second
    async with engine.connect() as conn:
        keys = (await conn.execute(select(jobs.c.idempotency_key).order_by(jobs.c.id))).scalars().all()
    assert keys == ["vod:100:g0", "vod:100:g1"]
    # A job cancelled while queued never ran a handler: the sweep records the cancel, no new job.
    from reelhouse.core.jobs.control import cancel_job

    await cancel_job(engine, second)
    assert await vod_jobs(runtime).enqueue_pending("c") == []
    row = await vod_row(engine, "100")
    assert row.processing_error == "cancelled by operator" and row.download_state == "canceled"
