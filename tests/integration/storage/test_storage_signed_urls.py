"""Signed URLs: the FS router over ASGI, and S3 presigned URLs fetched from SeaweedFS over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from reelhouse.core.storage.fs import FsStorage
from reelhouse.core.storage.s3 import S3Storage
from reelhouse.core.storage.signed_routes import signed_object_router

BODY = b"0123456789" * 100


@pytest.fixture
async def fs_client(fs_storage: FsStorage) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(signed_object_router(fs_storage))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reelhouse.test") as client:
        yield client


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return f"{parts.path}?{urlencode(query)}"


async def test_fs_signed_url_serves_object_with_type_and_validators(
    fs_storage: FsStorage, fs_client: httpx.AsyncClient
) -> None:
    info = await fs_storage.put("vods/42/master playlist.m3u8", b"#EXTM3U\n")
    url = await fs_storage.signed_url("vods/42/master playlist.m3u8", 60)
    assert url.startswith("/files/vods/42/master%20playlist.m3u8?exp=")

    response = await fs_client.get(url)
    assert response.status_code == 200
    assert response.content == b"#EXTM3U\n"
    assert response.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert response.headers["content-length"] == "8"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == f'"{info.etag}"'

    head = await fs_client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "8"


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("s/seg1.ts", "video/mp2t"),
        ("s/init.m4s", "video/iso.segment"),
        ("s/en.vtt", "text/vtt"),
        ("s/v.mp4", "video/mp4"),
    ],
)
async def test_fs_router_content_types(
    fs_storage: FsStorage, fs_client: httpx.AsyncClient, key: str, content_type: str
) -> None:
    await fs_storage.put(key, b"data")
    response = await fs_client.get(await fs_storage.signed_url(key, 60))
    assert response.headers["content-type"] == content_type


@pytest.mark.parametrize(
    ("range_header", "expected_range", "content"),
    [
        ("bytes=0-9", "bytes 0-9/1000", BODY[:10]),
        ("bytes=990-", "bytes 990-999/1000", BODY[990:]),
        ("bytes=-5", "bytes 995-999/1000", BODY[995:]),
        ("bytes=995-5000", "bytes 995-999/1000", BODY[995:]),
    ],
)
async def test_fs_router_ranges(
    fs_storage: FsStorage, fs_client: httpx.AsyncClient, range_header: str, expected_range: str, content: bytes
) -> None:
    await fs_storage.put("video.mp4", BODY)
    response = await fs_client.get(await fs_storage.signed_url("video.mp4", 60), headers={"Range": range_header})
    assert response.status_code == 206
    assert response.headers["content-range"] == expected_range
    assert response.headers["content-length"] == str(len(content))
    assert response.content == content


async def test_fs_router_unsatisfiable_and_ignored_ranges(fs_storage: FsStorage, fs_client: httpx.AsyncClient) -> None:
    await fs_storage.put("video.mp4", BODY)
    url = await fs_storage.signed_url("video.mp4", 60)
    response = await fs_client.get(url, headers={"Range": "bytes=1000-1010"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */1000"
    # Multiple ranges are not supported: the whole object is a valid answer.
    response = await fs_client.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert response.status_code == 200 and response.content == BODY


async def test_fs_router_rejects_tampered_and_expired_links(
    fs_storage: FsStorage, fs_client: httpx.AsyncClient
) -> None:
    await fs_storage.put("private/a.mp4", b"secret video")
    await fs_storage.put("private/b.mp4", b"other video")
    url = await fs_storage.signed_url("private/a.mp4", 60)

    other_key = url.replace("/private/a.mp4", "/private/b.mp4")
    later = with_query(url, exp=str(int(parse_qs(urlsplit(url).query)["exp"][0]) + 3600))
    bad_sig = with_query(url, sig="A" * 43)
    for forged in (other_key, later, bad_sig, url.split("?")[0]):
        response = await fs_client.get(forged)
        assert response.status_code == 403, forged
        assert response.json()["detail"].startswith("signed URL rejected")
        assert b"secret video" not in response.content

    short = await fs_storage.signed_url("private/a.mp4", 1)
    assert (await fs_client.get(short)).status_code == 200
    await asyncio.sleep(2.1)
    expired = await fs_client.get(short)
    assert expired.status_code == 403
    assert expired.json() == {"detail": "signed URL rejected: link expired"}


async def test_fs_router_missing_object_is_404(fs_storage: FsStorage, fs_client: httpx.AsyncClient) -> None:
    url = await fs_storage.signed_url("gone.mp4", 60)
    response = await fs_client.get(url)
    assert response.status_code == 404
    assert response.json() == {"detail": "object not found"}


async def test_fs_download_name_is_signed_and_sent(fs_storage: FsStorage, fs_client: httpx.AsyncClient) -> None:
    await fs_storage.put("vods/9.mp4", b"vod")
    url = await fs_storage.signed_url("vods/9.mp4", 60, download_name="Stream été.mp4")
    response = await fs_client.get(url)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"Stream _t_.mp4\"; filename*=UTF-8''Stream%20%C3%A9t%C3%A9.mp4"
    )
    renamed = with_query(url, dl="evil.exe")
    assert (await fs_client.get(renamed)).status_code == 403


async def test_s3_presigned_url_fetch_range_and_rejections(s3_storage: S3Storage) -> None:
    await s3_storage.put("vods/7/index.m3u8", BODY)
    url = await s3_storage.signed_url("vods/7/index.m3u8", 60, download_name="index.m3u8")
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        assert response.status_code == 200
        assert response.content == BODY
        assert response.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert response.headers["content-disposition"].startswith("attachment;")

        partial = await client.get(url, headers={"Range": "bytes=10-19"})
        assert partial.status_code == 206 and partial.content == BODY[10:20]

        query = parse_qs(urlsplit(url).query)
        signature = query["X-Amz-Signature"][0]
        tampered = url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
        assert (await client.get(tampered)).status_code == 403
        other_key = url.replace("/vods/7/index.m3u8", "/vods/7/other.m3u8")
        assert (await client.get(other_key)).status_code == 403

        # 3 s: enough for the first fetch on a loaded machine, short enough to wait out.
        signed_at = time.monotonic()
        short = await s3_storage.signed_url("vods/7/index.m3u8", 3)
        assert (await client.get(short)).status_code == 200
        await asyncio.sleep(max(0.0, signed_at + 4.1 - time.monotonic()))
        expired = await client.get(short)
        assert expired.status_code == 403
        assert b"expired" in expired.content.lower()
