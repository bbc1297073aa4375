"""The streams API and nginx's callbacks, in-process on SQLite and PostgreSQL: keys shown once
and hashed at rest, rotation, refusals (wrong/revoked key, second publisher, bad callback
token), live state flips, validation, ownership."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from reelhouse.core.media.ffmpeg import run_ffmpeg
from reelhouse.core.security.users import create_api_token, create_user
from reelhouse.live.models import streams


async def callback(api: httpx.AsyncClient, domain, call: str, **form: str) -> httpx.Response:
    token = domain.services.callback_token
    return await api.post(f"/v1/live/ingest/{call}?token={token}", data={"app": "live", **form})


async def test_keys_rotation_and_publish_callbacks(api, domain, runtime):
    created = await api.post("/v1/streams", json={"title": "Show", "profile": "hls-default"})
    assert created.status_code == 201, created.text
    stream = created.json()
    key = stream["publish_key"]
    assert key.startswith("live_") and key != stream["playback_id"] and stream["key_hint"] != key
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(select(streams))).mappings().one()
    assert key not in str(dict(row)), "the key is stored only as its hash"
    listed = (await api.get("/v1/streams")).json()["streams"]
    assert [s["id"] for s in listed] == [stream["id"]] and "publish_key" not in listed[0]

    assert (await callback(api, domain, "publish", name="live_wrong", clientid="1")).status_code == 403
    bad_token = await api.post("/v1/live/ingest/publish?token=nope", data={"app": "live", "name": key})
    assert bad_token.status_code == 403

    rotated = (await api.post(f"/v1/streams/{stream['id']}/key")).json()
    new_key = rotated["publish_key"]
    assert new_key != key
    assert (await callback(api, domain, "publish", name=key, clientid="2")).status_code == 403  # revoked

    accepted = await callback(api, domain, "publish", name=new_key, clientid="3")
    assert accepted.status_code == 302 and accepted.headers["location"] == stream["playback_id"]
    live = (await api.get(f"/v1/streams/{stream['id']}")).json()
    assert live["is_live"] and live["session"] == 1 and live["job_id"]
    job = (await api.get(f"/v1/jobs/{live['job_id']}")).json()
    assert [t["kind"] for t in job["tasks"]] == ["live.transcode"]

    assert (await callback(api, domain, "publish", name=new_key, clientid="4")).status_code == 409  # twice
    assert (await api.delete(f"/v1/streams/{stream['id']}")).status_code == 409  # live
    await callback(api, domain, "publish-done", name=new_key, clientid="4")  # the refused one: no effect
    assert (await api.get(f"/v1/streams/{stream['id']}")).json()["is_live"]
    await callback(api, domain, "publish-done", name=new_key, clientid="3")
    assert not (await api.get(f"/v1/streams/{stream['id']}")).json()["is_live"]
    recordings = (await api.get(f"/v1/streams/{stream['id']}/recordings")).json()["recordings"]
    assert [r["session"] for r in recordings] == [1]
    assert (await api.delete(f"/v1/streams/{stream['id']}")).status_code == 204
    assert (await api.get(f"/v1/streams/{stream['id']}")).status_code == 404


async def test_recorded_chunks_without_a_picture_are_left_out(api, domain, runtime, tmp_path):
    """nginx closes a chunk when the publisher stops; one begun just before holds the stream
    headers and no picture, and would fail the concatenation of the whole recording."""
    stream = (await api.post("/v1/streams", json={"title": "Rec", "profile": "hls-default"})).json()
    key = stream["publish_key"]
    assert (await callback(api, domain, "publish", name=key, clientid="1")).status_code == 302
    services = domain.services
    rec_dir = services.settings.nginx_prefix(services.runtime_settings.server.data_dir) / "rec"
    rec_dir.mkdir(parents=True, exist_ok=True)
    whole = rec_dir / "whole.flv"
    await run_ffmpeg(
        ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine", "-t", "1",
         "-c:v", "libx264", "-c:a", "aac", "-f", "flv", str(whole)]
    )  # fmt: skip
    headers_only = rec_dir / "headers.flv"
    headers_only.write_bytes(whole.read_bytes()[:600])  # FLV header, metadata, codec configs

    for chunk in (whole, headers_only):
        answer = await callback(api, domain, "record-done", name=key, path=str(chunk))
        assert answer.status_code == 200
        assert not chunk.exists(), "the chunk is removed from nginx's folder either way"
    recordings = (await api.get(f"/v1/streams/{stream['id']}/recordings")).json()["recordings"]
    assert recordings[0]["segments"] == 1
    outside = tmp_path / "elsewhere.flv"
    outside.write_bytes(b"x")
    refused = await callback(api, domain, "record-done", name=key, path=str(outside))
    assert refused.status_code == 400 and outside.exists()


async def test_validation_and_ownership(api, domain, runtime):
    assert (await api.post("/v1/streams", json={"title": ""})).status_code == 422
    assert (await api.post("/v1/streams", json={"title": "x", "profile": "mp4-720p"})).status_code == 400
    assert (await api.post("/v1/streams", json={"title": "x", "profile": "nope"})).status_code == 400
    stream = (await api.post("/v1/streams", json={"title": "Mine"})).json()
    assert (await api.patch(f"/v1/streams/{stream['id']}", json={})).status_code == 400
    changed = await api.patch(f"/v1/streams/{stream['id']}", json={"title": "Renamed", "record": False})
    assert changed.json()["title"] == "Renamed" and changed.json()["record"] is False
    for url in ("ftp://x/y", "rtmp://", "not a url"):
        response = await api.post(f"/v1/streams/{stream['id']}/destinations", json={"name": "d", "url": url})
        assert response.status_code == 400, url
    assert (await api.get("/v1/streams/999999")).status_code == 404

    user_id = await create_user(runtime.engine, "other", "correct horse battery staple", "operator")
    other = {"Authorization": f"Bearer {await create_api_token(runtime.engine, user_id, 'tests')}"}
    assert (await api.get(f"/v1/streams/{stream['id']}", headers=other)).status_code == 404
    assert (await api.get("/v1/streams", headers=other)).json()["streams"] == []
    anonymous = {"Authorization": ""}
    assert (await api.get("/v1/streams", headers=anonymous)).status_code == 401
    assert (await api.get(f"/v1/streams/{stream['id']}/live/master.m3u8", headers=anonymous)).status_code == 401
    link = (await api.get(f"/v1/streams/{stream['id']}/link")).json()["url"]
    forged = link.replace("/live/signed/", "/live/signed/x")
    assert (await api.get(forged, headers=anonymous)).status_code == 403
    assert (await api.get(link, headers=anonymous)).status_code == 404  # valid link, nothing live yet
    page = await api.get("/live/streams")
    assert page.status_code in (200, 303, 307)


async def test_pages_render_streams_and_a_stream(api):
    stream = (await api.post("/v1/streams", json={"title": "Paged"})).json()
    await api.post(f"/v1/streams/{stream['id']}/destinations", json={"name": "yt", "url": "rtmp://127.0.0.1:1/app"})
    listing = await api.get("/live/streams")
    assert listing.status_code == 200 and "Paged" in listing.text and stream["publish_key"] not in listing.text
    detail = await api.get(f"/live/streams/{stream['id']}")
    assert detail.status_code == 200 and "yt" in detail.text and "Recordings" in detail.text
    assert (await api.get("/live/streams/999999")).status_code == 404


async def test_destination_keys_are_rewrapped_by_key_rotation(api, domain, runtime, monkeypatch):
    from reelhouse.config import Settings
    from reelhouse.core.security.keys import MasterKeys
    from reelhouse.core.security.secret_stores import secret_stores

    from .conftest import MASTER_KEY

    stream = (await api.post("/v1/streams", json={"title": "Keys"})).json()
    added = await api.post(
        f"/v1/streams/{stream['id']}/destinations",
        json={"name": "tw", "url": "rtmp://127.0.0.1:1/app", "key": "live_secret_tw"},
    )
    destination_id = added.json()["id"]
    monkeypatch.setenv("MASTER_ENCRYPTION_KEY", "a-new-master-key-for-rotation-0123456789")
    monkeypatch.setenv("MASTER_ENCRYPTION_KEY_PREVIOUS", MASTER_KEY)
    keys = MasterKeys.from_settings(Settings())
    (store,) = [s for s in secret_stores(runtime.engine, keys) if s.name == "live-destination-keys"]
    assert await store.rewrap() == (1, 0)
    assert await store.key_ids_in_use() == {keys.keyring().primary_id}
    row = await domain.services.store.get_destination(destination_id)
    context = domain.services.destination_key_context(destination_id)
    assert keys.keyring().decrypt_text(row["key_ciphertext"], context) == "live_secret_tw"
