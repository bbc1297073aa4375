"""S3-compatible backend (AWS, SeaweedFS, MinIO, R2...) on aioboto3.

Memory stays bounded whatever the object size: uploads are cut into parts of
S3_MULTIPART_CHUNK_MB with at most `max_concurrent_parts` in flight, and downloads are read
from the response stream a chunk at a time. A failed or cancelled multipart upload is aborted,
so the bucket never accumulates invisible, billed orphan parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from reelhouse.core.storage.base import (
    CHUNK_SIZE,
    ByteRange,
    ByteSource,
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_range,
    content_disposition,
    guess_content_type,
    ttl_seconds,
    validate_key,
    validate_prefix,
)
from reelhouse.core.storage.s3_parts import PartBody, file_parts, memory_parts, prepend, stream_parts

if TYPE_CHECKING:
    from reelhouse.config import Settings

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
MIN_PART_SIZE = 5 << 20
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 refuses longer-lived presigned URLs


def _response_date(response: dict[str, Any]) -> datetime:
    """The server's clock at completion, which is what S3 records as LastModified."""
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return datetime.now(UTC)


def _raise_first_failure(done: set[asyncio.Task[None]]) -> None:
    failures = [error for task in done if (error := task.exception()) is not None]  # all retrieved
    if failures:
        raise failures[0]


class S3Storage:
    """Objects in one bucket. Use it from one event loop: the connection pool opens on first
    use and belongs to that loop; `aclose()` releases it."""

    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size_mb: int = 16,
        max_concurrent_parts: int = 2,
        default_ttl: timedelta = timedelta(hours=1),
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if not bucket:
            raise StorageError("S3 storage needs a bucket: set S3_BUCKET")
        if part_size_mb << 20 < MIN_PART_SIZE:
            raise StorageError(f"S3 multipart part size must be at least 5 MB, got {part_size_mb} MB")
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.part_size = part_size_mb << 20
        self.max_concurrent_parts = max(1, max_concurrent_parts)
        self.default_ttl = default_ttl
        self.chunk_size = chunk_size
        # Empty credentials fall through to botocore's chain (env, profile, instance role).
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region,
        )
        self._config = AioConfig(
            signature_version="s3v4",
            # Path style works on every S3-compatible server; virtual hosts need DNS set up.
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            # Flexible checksums (botocore >= 1.36) are not implemented by many S3-compatible
            # servers; SigV4 already covers payload integrity.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack = contextlib.AsyncExitStack()
        self._s3: Any = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    async def _client(self) -> Any:
        if self._s3 is None:
            async with self._lock:
                if self._s3 is None:
                    client = self._session.client("s3", endpoint_url=self.endpoint_url, config=self._config)
                    self._s3 = await self._stack.enter_async_context(client)
        return self._s3

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str, byte_range: ByteRange | None = None) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("NoSuchKey", "NotFound", "404"):
                raise ObjectNotFound(key) from None
            if code == "InvalidRange" and byte_range is not None:
                raise InvalidRange(key, byte_range, None) from None
            if code == "NoSuchBucket":
                raise StorageError(f"S3 bucket {self.bucket!r} does not exist") from None
            message = error.get("Message") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
            raise StorageError(f"S3 {operation} {key!r} failed: {code} {message}".rstrip()) from exc
        except (BotoCoreError, aiohttp.ClientError) as exc:
            raise StorageError(f"S3 {operation} {key!r} failed: {exc}") from exc

    # -- put -------------------------------------------------------------------------------

    def _parts(self, source: ByteSource) -> tuple[int, AsyncGenerator[bytes | bytearray, None]]:
        """The part size for this source and its parts; every part but the last is full."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return self.part_size, memory_parts(source, self.part_size)
        if isinstance(source, (str, os.PathLike)):
            # Known size: grow parts so that even huge files fit in S3's 10,000-part limit.
            needed_mb = math.ceil(os.path.getsize(source) / MAX_PARTS / (1 << 20))
            part_size = max(self.part_size, needed_mb << 20)
            return part_size, file_parts(source, part_size)
        if isinstance(source, AsyncIterable):
            return self.part_size, stream_parts(source, self.part_size)
        raise TypeError(f"put() source must be a path, bytes or an async iterable, not {type(source).__name__}")

    async def put(self, key: str, source: ByteSource) -> ObjectInfo:
        validate_key(key)
        s3 = await self._client()
        part_size, parts = self._parts(source)
        async with contextlib.aclosing(parts):
            first = await anext(parts, b"")
            if len(first) < part_size:  # the whole object fits in one request
                size = len(first)
                with self._errors("put", key):
                    response = await s3.put_object(
                        Bucket=self.bucket, Key=key, Body=PartBody(first), ContentType=guess_content_type(key)
                    )
            else:
                head = [first]
                del first
                response, size = await self._multipart(s3, key, prepend(head, parts))
        # Built from the response rather than a HEAD: an HLS ladder writes thousands of small
        # segments, and a second round trip each would double the request count.
        return ObjectInfo(
            key=key,
            size=size,
            etag=response["ETag"].strip('"'),
            content_type=guess_content_type(key),
            modified=_response_date(response),
        )

    async def _multipart(
        self, s3: Any, key: str, parts: AsyncGenerator[bytes | bytearray, None]
    ) -> tuple[dict[str, Any], int]:
        with self._errors("multipart upload of", key):
            created = await s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=guess_content_type(key))
        upload_id = created["UploadId"]
        etags: dict[int, str] = {}
        in_flight: set[asyncio.Task[None]] = set()
        size = number = 0
        try:
            while True:
                # Wait for a free slot *before* reading the next part, so memory holds at most
                # max_concurrent_parts parts in flight plus the one being filled.
                while len(in_flight) >= self.max_concurrent_parts:
                    done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    _raise_first_failure(done)
                body = await anext(parts, None)
                if body is None:
                    break
                number += 1
                size += len(body)
                if number > MAX_PARTS:
                    raise StorageError(
                        f"cannot store {key!r}: more than {MAX_PARTS} parts of {self.part_size >> 20} MB; "
                        "raise S3_MULTIPART_CHUNK_MB"
                    )
                in_flight.add(asyncio.create_task(self._upload_part(s3, key, upload_id, number, body, etags)))
                del body  # the task holds the part now
            if in_flight:
                done, in_flight = await asyncio.wait(in_flight)
                _raise_first_failure(done)
            with self._errors("multipart upload of", key):
                response = await s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
                )
            return response, size
        except BaseException:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            # Shielded: a second cancellation must not leave the parts behind.
            await asyncio.shield(self._abort(s3, key, upload_id))
            raise

    async def _upload_part(
        self, s3: Any, key: str, upload_id: str, number: int, body: bytes | bytearray, etags: dict[int, str]
    ) -> None:
        with self._errors(f"upload of part {number} of", key):
            response = await s3.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=PartBody(body)
            )
        etags[number] = response["ETag"]

    async def _abort(self, s3: Any, key: str, upload_id: str) -> None:
        try:
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not abort multipart upload of %r (upload id %s): %s", key, upload_id, exc)

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str, byte_range: ByteRange | None = None) -> AsyncGenerator[bytes, None]:
        validate_key(key)
        if byte_range is not None:
            byte_range = check_range(key, byte_range)
        return self._read(key, byte_range)

    async def _read(self, key: str, byte_range: ByteRange | None) -> AsyncGenerator[bytes, None]:
        s3 = await self._client()
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range is not None:
            params["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        with self._errors("get", key, byte_range):
            response = await s3.get_object(**params)
        body = response["Body"]
        try:
            if byte_range is not None and not response.get("ContentRange"):
                raise StorageError(f"S3 endpoint ignored the byte range requested for {key!r}")
            # The HTTP stream hands out whatever the socket had (often 64 KiB); regroup into
            # chunk_size pieces so consumers do fewer, larger writes.
            pending = bytearray()
            while True:
                with self._errors("get", key):
                    data = await body.read(self.chunk_size)
                if not data:
                    break
                pending += data
                if len(pending) >= self.chunk_size:
                    yield bytes(pending)
                    pending.clear()
            if pending:
                yield bytes(pending)
        finally:
            body.close()

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        s3 = await self._client()
        with self._errors("stat", key):
            head = await s3.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=head["ContentLength"],
            etag=head["ETag"].strip('"'),
            content_type=head.get("ContentType") or guess_content_type(key),
            modified=head["LastModified"],
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        s3 = await self._client()
        with self._errors("delete", key):
            await s3.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str = "") -> AsyncGenerator[ObjectInfo, None]:
        validate_prefix(prefix)
        return self._list(prefix)

    async def _list(self, prefix: str) -> AsyncGenerator[ObjectInfo, None]:
        s3 = await self._client()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        with self._errors("list", prefix):
            async for page in pages:
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    try:
                        validate_key(key)
                    except InvalidKey:
                        continue  # written by another tool; no key reelhouse accepts can name it
                    yield ObjectInfo(
                        key=key,
                        size=obj["Size"],
                        etag=obj["ETag"].strip('"'),
                        # Listings carry no Content-Type; put derives it from the key the same way.
                        content_type=guess_content_type(key),
                        modified=obj["LastModified"],
                    )

    async def signed_url(
        self, key: str, ttl: timedelta | float | None = None, *, download_name: str | None = None
    ) -> str:
        validate_key(key)
        seconds = ttl_seconds(self.default_ttl if ttl is None else ttl)
        if seconds > MAX_PRESIGN_SECONDS:
            raise StorageError(f"S3 presigned URLs live at most 7 days, {seconds}s requested")
        params = {"Bucket": self.bucket, "Key": key}
        if download_name is not None:
            params["ResponseContentDisposition"] = content_disposition(download_name)
        s3 = await self._client()
        with self._errors("presign", key):
            return await s3.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._s3 = None


def from_settings(settings: Settings, *, signing_secret: bytes | None = None) -> S3Storage:
    """Entry point `reelhouse.storage:s3`. S3 signs its own URLs; `signing_secret` is unused."""
    conf = settings.storage
    return S3Storage(
        bucket=conf.s3_bucket,
        endpoint_url=conf.s3_endpoint or None,
        region=conf.s3_region,
        access_key_id=conf.s3_access_key_id or None,
        secret_access_key=conf.s3_secret_access_key or None,
        part_size_mb=conf.s3_multipart_chunk_mb,
        default_ttl=conf.signed_url_ttl,
    )
