"""Encode API without encoding: request validation, roles, upload limits, profiles, media access."""

from __future__ import annotations

from sqlalchemy import select

from reelhouse.core.db.models import jobs, tasks
from reelhouse.encode.models import assets
from tests.integration.encode.conftest import user_headers


async def test_submit_rejects_bad_requests_with_a_message(client, domain):
    await domain.service.storage().put("inputs/clip.mp4", b"not really media, but present")
    cases = [
        ({"source_key": "inputs/clip.mp4", "profile": "nope"}, 400, "unknown profile 'nope'"),
        ({"source_key": "inputs/clip.mp4", "source_url": "https://example.com/a.mp4"}, 400, "exactly one of"),
        ({}, 400, "exactly one of"),
        ({"source_url": "file:///etc/passwd"}, 400, "must be an http(s) URL"),
        ({"source_key": "inputs/missing.mp4"}, 400, "does not exist in storage"),
        ({"source_key": "../etc/passwd"}, 400, "source_key"),
        ({"source_key": "inputs/clip.mp4", "preset": "warp9"}, 400, "unknown preset 'warp9'"),
        ({"source_key": "inputs/clip.mp4", "output_prefix": "a/../b"}, 400, "output_prefix"),
        ({"source_key": "inputs/clip.mp4", "output_prefix": "job-7"}, 400, "reserved"),
        ({"source_key": "inputs/clip.mp4", "profiles": ["hls-default", "hls-default"]}, 400, "each profile once"),
        ({"source_key": "inputs/clip.mp4", "profile": "hls-default", "profiles": ["mp4-720p"]}, 400, "not both"),
        ({"source_key": "inputs/clip.mp4", "profiles": []}, 400, "non-empty"),
        ({"source_key": "inputs/clip.mp4", "colour": "blue"}, 422, "colour"),
    ]
    for body, status, message in cases:
        response = await client.post("/v1/jobs", json=body)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"], (body, response.json())
    not_json = await client.post("/v1/jobs", content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    wrong_type = await client.post("/v1/jobs", content=b"x", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    # Nothing was created by any of them.
    async with domain.service.engine.connect() as conn:
        assert (await conn.execute(select(jobs.c.id))).all() == []


async def test_submit_requires_operator_and_creates_job_with_first_task(client, runtime, domain):
    await domain.service.storage().put("inputs/clip.mp4", b"bytes")
    body = {"source_key": "inputs/clip.mp4", "output_prefix": "shows/ep1"}
    anonymous = await client.post("/v1/jobs", json=body, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    viewer = await client.post("/v1/jobs", json=body, headers=await user_headers(runtime, "viewer"))
    assert viewer.status_code == 403

    created = await client.post("/v1/jobs", json=body, headers=await user_headers(runtime, "operator"))
    assert created.status_code == 201, created.text
    result = created.json()
    assert created.headers["location"] == f"/v1/jobs/{result['job_id']}"
    assert result["output_prefix"] == "encodes/shows/ep1" and result["first_task"] == "encode.probe"
    job = (await client.get(f"/v1/jobs/{result['job_id']}")).json()
    assert job["kind"] == "encode" and job["status"] == "queued"
    assert job["payload"]["profile_name"] == "hls-default" and job["payload"]["requested_by"] == "operator-user"
    assert [t["kind"] for t in job["tasks"]] == ["encode.probe"]
    # A second job aiming at the same prefix, or a parent of it, is refused while the first owns it.
    await domain.service.storage().put("encodes/shows/ep1/master.m3u8", b"#EXTM3U\n")
    for prefix in ("shows/ep1", "shows"):
        again = await client.post("/v1/jobs", json={**body, "output_prefix": prefix})
        assert again.status_code == 409, again.text
    assert "already holds objects" in again.json()["error"]


async def test_uploads_over_max_upload_bytes_get_413_and_leave_nothing(client, domain, settings, monkeypatch):
    limit = domain.service.settings.max_upload_bytes = 64 << 10
    big = b"\0" * (limit + 1)
    declared = await client.post("/v1/jobs", files={"file": ("big.mp4", b"\0" * (limit + (512 << 10)))})
    assert declared.status_code == 413 and "MAX_UPLOAD_BYTES" in declared.json()["error"]

    # Without a usable Content-Length the limit is enforced while the body streams.
    boundary = "rhboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
            f"Content-Type: video/mp4\r\n\r\n"
        ).encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def chunked():
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = await client.post(
        "/v1/jobs", content=chunked(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert streamed.status_code == 413, streamed.text
    assert [key async for key in _keys(domain, "")] == []
    root = domain.service.settings.scratch_dir(settings.server.data_dir)
    assert not root.exists() or list(root.iterdir()) == []

    no_file = await client.post("/v1/jobs", data={"profile": "hls-default"}, files={"other": ("x", b"1")})
    assert no_file.status_code == 400 and "'file'" in no_file.json()["error"]
    empty = await client.post("/v1/jobs", files={"file": ("empty.mp4", b"")})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    bad_profile = await client.post("/v1/jobs", data={"profile": "nope"}, files={"file": ("a.mp4", b"123")})
    assert bad_profile.status_code == 400 and "unknown profile" in bad_profile.json()["error"]
    assert [key async for key in _keys(domain, "")] == []


async def _keys(domain, prefix):
    async for info in domain.service.storage().list(prefix):
        yield info.key


async def test_profiles_api_validates_and_guards_builtins(client, runtime):
    listed = (await client.get("/v1/profiles")).json()
    assert {"hls-default", "mp4-720p", "mp4-1080p"} <= {p["name"] for p in listed}
    assert all(p["builtin"] for p in listed)

    profile = {
        "name": "tiny",
        "kind": "hls",
        "segment_seconds": 2,
        "renditions": [{"name": "240p", "width": 426, "height": 240, "video_bitrate": "400k", "preset": "ultrafast"}],
    }
    operator = await user_headers(runtime, "operator")
    assert (await client.post("/v1/profiles", json=profile, headers=operator)).status_code == 403
    created = await client.post("/v1/profiles", json=profile)
    assert created.status_code == 201, created.text
    assert created.json()["definition"]["renditions"][0]["width"] == 426
    assert (await client.post("/v1/profiles", json=profile)).status_code == 409

    odd = {**profile, "name": "odd", "renditions": [{**profile["renditions"][0], "width": 425}]}
    response = await client.post("/v1/profiles", json=odd)
    assert response.status_code == 400 and "renditions.0.width" in response.json()["error"]
    assert "even" in response.json()["error"]
    builtin = await client.post("/v1/profiles", json={**profile, "name": "hls-default"})
    assert builtin.status_code == 409 and "built-in" in builtin.json()["error"]
    assert (await client.post("/v1/profiles", json=[1, 2])).status_code == 400

    replaced = await client.put("/v1/profiles/tiny", json={**profile, "segment_seconds": 4})
    assert replaced.status_code == 200 and replaced.json()["definition"]["segment_seconds"] == 4
    assert (await client.put("/v1/profiles/hls-default", json=profile)).status_code == 409
    assert (await client.get("/v1/profiles/tiny")).json()["builtin"] is False
    assert (await client.delete("/v1/profiles/hls-default")).status_code == 409
    assert (await client.delete("/v1/profiles/tiny")).status_code == 204
    missing = await client.get("/v1/profiles/tiny")
    assert missing.status_code == 404 and "known profiles" in missing.json()["error"]


async def test_media_route_serves_only_encode_outputs_with_types_and_ranges(client, runtime, domain):
    storage = domain.service.storage()
    await storage.put("encodes/job-1/master.m3u8", b"#EXTM3U\n")
    await storage.put("encodes/job-1/720p/seg_00000.ts", bytes(range(256)) * 4)
    await storage.put("encodes/job-1/720p.mp4", b"\0\0\0\x18ftypmp42")
    await storage.put("uploads/encode/x/source.mp4", b"private")

    viewer = await user_headers(runtime, "viewer")
    master = await client.get("/media/encodes/job-1/master.m3u8", headers=viewer)
    assert master.status_code == 200 and master.headers["content-type"] == "application/vnd.apple.mpegurl"
    segment = await client.get("/media/encodes/job-1/720p/seg_00000.ts", headers={**viewer, "Range": "bytes=10-19"})
    assert segment.status_code == 206 and segment.content == bytes(range(10, 20))
    assert segment.headers["content-type"] == "video/mp2t"
    assert segment.headers["content-range"] == "bytes 10-19/1024"
    tail = await client.get("/media/encodes/job-1/720p/seg_00000.ts", headers={**viewer, "Range": "bytes=-4"})
    assert tail.status_code == 206 and tail.content == bytes(range(252, 256))
    beyond = await client.get("/media/encodes/job-1/720p/seg_00000.ts", headers={**viewer, "Range": "bytes=5000-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == "bytes */1024"
    mp4 = await client.head("/media/encodes/job-1/720p.mp4", headers=viewer)
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    assert mp4.headers["content-length"] == "12"

    assert (await client.get("/media/encodes/job-1/master.m3u8", headers={"Authorization": ""})).status_code == 401
    assert (await client.get("/media/uploads/encode/x/source.mp4", headers=viewer)).status_code == 404
    assert (await client.get("/media/encodes/job-1/nothing.ts", headers=viewer)).status_code == 404


async def test_signed_links_open_one_prefix_until_they_expire(client, runtime, domain):
    from reelhouse.core.security.audit import master_keys_of
    from reelhouse.encode.media import link_secret, make_token

    storage = domain.service.storage()
    await storage.put("encodes/job-1/720p/index.m3u8", b"#EXTM3U\n")
    await storage.put("encodes/job-2/720p/index.m3u8", b"#EXTM3U\n")
    secret = link_secret(master_keys_of(runtime.engine))
    token = make_token(secret, "encodes/job-1", 4_000_000_000)
    key = "encodes/job-1/720p/index.m3u8"
    anonymous = {"Authorization": ""}

    response = await client.get(f"/media/signed/{token}/{key}", headers=anonymous)
    assert response.status_code == 200 and response.text == "#EXTM3U\n"
    head = await client.head(f"/media/signed/{token}/{key}", headers=anonymous)
    assert head.status_code == 200 and head.headers["content-length"] == "8" and head.content == b""

    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    expired = make_token(secret, "encodes/job-1", 1_000)
    for bad_token, bad_key, reason in (
        (tampered, key, "signature"),
        (token, "encodes/job-2/720p/index.m3u8", "signature"),
        (expired, key, "expired"),
        (token, "encodes/job-1", "does not cover"),
    ):
        refused = await client.get(f"/media/signed/{bad_token}/{bad_key}", headers=anonymous)
        assert refused.status_code == 403 and reason in refused.json()["error"], (bad_key, refused.text)


async def test_outputs_view_explains_a_job_without_outputs(client, domain):
    await domain.service.storage().put("inputs/clip.mp4", b"bytes")
    job_id = (await client.post("/v1/jobs", json={"source_key": "inputs/clip.mp4"})).json()["job_id"]
    response = await client.get(f"/v1/jobs/{job_id}/outputs")
    assert response.status_code == 404 and "no outputs (status queued)" in response.json()["error"]
    assert (await client.get("/v1/jobs/999999/outputs")).status_code == 404
    assert (await client.get("/v1/assets/999999")).status_code == 404
    async with domain.service.engine.connect() as conn:
        assert (await conn.execute(select(assets.c.id))).all() == []
        assert (await conn.execute(select(tasks.c.kind))).scalars().all() == ["encode.probe"]


async def test_every_encode_route_needs_credentials_except_signed_media(client, runtime):
    # The route table (OpenAPI) is the list: a route added later is covered without editing this.
    mine = {
        path: ops
        for path, ops in client._transport.app.openapi()["paths"].items()
        if path.startswith(("/v1/jobs", "/v1/assets", "/v1/profiles", "/media"))
    }
    assert {"/v1/assets/{asset_id}", "/v1/profiles/{name}", "/media/{key}"} <= set(mine)
    viewer = await user_headers(runtime, "viewer")
    for path, ops in mine.items():
        url = path.replace("{token}", "1.1.x").replace("{key}", "encodes/x").replace("{name}", "p")
        url = url.replace("{asset_id}", "1").replace("{job_id}", "1")
        for method in ops:
            response = await client.request(method.upper(), url, json={}, headers={"Authorization": ""})
            expected = (403,) if path.startswith("/media/signed") else (401,)
            assert response.status_code in expected, f"{method} {path} -> {response.status_code}"
            if method.upper() in ("POST", "PUT", "DELETE"):
                as_viewer = await client.request(method.upper(), url, json={}, headers=viewer)
                assert as_viewer.status_code == 403, f"viewer {method} {path} -> {as_viewer.status_code}"


async def test_signed_playback_links_are_absolute_under_public_base_url(runtime, domain, monkeypatch):
    from reelhouse.encode.media import playback_link

    path, _ = playback_link(domain.service, "encodes/job-9", "encodes/job-9/master.m3u8")
    assert path.startswith("/media/signed/"), "without PUBLIC_BASE_URL: a path on this server"
    monkeypatch.setattr(runtime.settings.server, "public_base_url", "https://media.example.org/")
    url, _ = playback_link(domain.service, "encodes/job-9", "encodes/job-9/master.m3u8")
    assert url.startswith("https://media.example.org/media/signed/") and url.endswith("/master.m3u8")
