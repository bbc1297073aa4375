"""Publisher plugins (WebEncode's `POST /v1/jobs/{id}/publish`): YouTube (core's resumable
uploader), S3 copy (any S3-compatible bucket) and a generic webhook. Each publish is its own job
with one task (`encode.publish`), retried by the engine with backoff like any task; the
caller's access token travels in the task payload encrypted under the master key.

A publisher is an object with `async def publish(request: PublishRequest) -> dict` returning
`platform_id` and `platform_url`; its configuration (PUT /v1/plugins/<id>) arrives in
`request.config`. Operators add their own as `reelhouse.publisher` entry points or PLUGIN_DIR
packages (encode/plugins.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx

from reelhouse.core.jobs.errors import PermanentError, TransientError
from reelhouse.core.providers.errors import ProviderError, Rejected
from reelhouse.core.providers.youtube import DEFAULT_API_BASE, VideoMetadata, YouTubeClient, YouTubeTokens

API = 1


@dataclass
class PublishRequest:
    job_id: int
    file: Path
    file_url: str | None  # a signed link to the output, when the publisher fetches it itself
    title: str
    description: str
    access_token: str
    config: dict[str, Any] = field(default_factory=dict)
    content_type: str = "video/mp4"


class YouTubePublisher:
    MANIFEST: ClassVar[dict[str, Any]] = {
        "id": "publisher-youtube",
        "type": "publisher",
        "version": "1",
        "api_version": API,
    }

    async def publish(self, request: PublishRequest) -> dict[str, Any]:
        if not request.access_token:
            raise PermanentError("publisher-youtube needs the caller's access_token")
        token = request.access_token

        async def load() -> YouTubeTokens:
            return YouTubeTokens(token, None, datetime.now(UTC) + timedelta(hours=1))

        async def save(_tokens: YouTubeTokens) -> None:
            return None

        client = YouTubeClient(
            "", "", load_tokens=load, save_tokens=save, api_base=str(request.config.get("api_base") or DEFAULT_API_BASE)
        )
        try:
            metadata = VideoMetadata(
                title=request.title[:100] or f"reelhouse job {request.job_id}",
                description=request.description[:4900],
                category_id=str(request.config.get("category_id", "22")),
                privacy_status=str(request.config.get("privacy_status", "private")),
            )
            size = request.file.stat().st_size
            session = await client.start_session(metadata, size=size, content_type=request.content_type)
            video_id = await client.upload(session, request.file, content_type=request.content_type)
        except Rejected as exc:
            raise PermanentError(f"YouTube refused the upload: {exc}") from exc
        except ProviderError as exc:
            raise TransientError(f"YouTube: {exc}") from exc
        finally:
            await client.aclose()
        return {"platform_id": video_id, "platform_url": f"https://www.youtube.com/watch?v={video_id}"}


class S3CopyPublisher:
    """Copies the output into another bucket. Config: bucket, endpoint_url, region, prefix,
    access_key_id; the secret key is the request's access_token (never stored)."""

    MANIFEST: ClassVar[dict[str, Any]] = {"id": "publisher-s3", "type": "publisher", "version": "1", "api_version": API}

    async def publish(self, request: PublishRequest) -> dict[str, Any]:
        conf = request.config
        if not conf.get("bucket"):
            raise PermanentError("publisher-s3 needs config.bucket (PUT /v1/plugins/publisher-s3)")
        key = f"{str(conf.get('prefix', 'reelhouse')).strip('/')}/job-{request.job_id}/{request.file.name}"
        from reelhouse.core.storage.s3 import S3Storage  # aioboto3 costs ~0.25 s to import: only here

        storage = S3Storage(
            bucket=str(conf["bucket"]),
            endpoint_url=conf.get("endpoint_url") or None,
            region=str(conf.get("region", "us-east-1")),
            access_key_id=conf.get("access_key_id") or None,
            secret_access_key=request.access_token or None,
        )
        try:
            await storage.put(key, request.file)
        except Exception as exc:
            raise TransientError(f"S3 copy to {conf['bucket']}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        finally:
            await storage.aclose()
        base = str(conf.get("endpoint_url") or "s3:/").rstrip("/")
        return {"platform_id": key, "platform_url": f"{base}/{conf['bucket']}/{key}"}


class WebhookPublisher:
    """POSTs {job_id, title, description, file_url, sha256, size} to config.url with the
    access_token as a Bearer token; the receiver fetches the file from the signed file_url."""

    MANIFEST: ClassVar[dict[str, Any]] = {
        "id": "publisher-webhook",
        "type": "publisher",
        "version": "1",
        "api_version": API,
    }

    async def publish(self, request: PublishRequest) -> dict[str, Any]:
        url = str(request.config.get("url", ""))
        if not url.startswith(("http://", "https://")):
            raise PermanentError("publisher-webhook needs config.url (PUT /v1/plugins/publisher-webhook)")
        digest = hashlib.sha256()
        with request.file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        body = {
            "job_id": str(request.job_id),
            "title": request.title,
            "description": request.description,
            "file_url": request.file_url,
            "size": request.file.stat().st_size,
            "sha256": digest.hexdigest(),
        }
        headers = {"Content-Type": "application/json"}
        if request.access_token:
            headers["Authorization"] = f"Bearer {request.access_token}"
        try:
            async with httpx.AsyncClient(timeout=30, follow_redirects=False, trust_env=False) as client:
                response = await client.post(url, content=json.dumps(body), headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"publisher-webhook: {type(exc).__name__}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"publisher-webhook: HTTP {response.status_code}")
        if response.status_code >= 300:
            raise PermanentError(f"publisher-webhook: HTTP {response.status_code}: {response.text[:200]}")
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        return {"platform_id": str(answer.get("id", "")), "platform_url": str(answer.get("url", ""))}


BUILTIN_PUBLISHERS: list[Any] = [YouTubePublisher(), S3CopyPublisher(), WebhookPublisher()]
