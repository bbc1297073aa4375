"""Receive a multipart upload straight to a scratch file, enforcing MAX_UPLOAD_BYTES as it streams.

Starlette's form parsing would spool the whole body to the system temp directory before the
handler could look at its size; this reads the request stream itself, writes the file part into
our scratch directory (where the disk is sized for media) and stops at the first byte over the
limit, so an oversized upload costs at most the limit in disk and is answered with 413.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_FIELD_BYTES = 64 << 10
MAX_FIELDS = 32


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"upload exceeds MAX_UPLOAD_BYTES ({limit} bytes)")


class UploadInvalid(Exception):
    """A malformed multipart body; the message says what is wrong."""


@dataclass
class ReceivedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    filename: str | None = None
    size: int = 0


class _Receiver:
    def __init__(self, target: Path, file_field: str, max_bytes: int) -> None:
        self.target = target
        self.file_field = file_field
        self.max_bytes = max_bytes
        self.result = ReceivedUpload()
        self.pending: list[bytes] = []  # file bytes parsed but not yet written (written off-loop)
        self.problem: Exception | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()

    # python-multipart callbacks --------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers, self._name, self._is_file, self._value = {}, None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            self.problem = UploadInvalid("multipart part without a form-data name")
            return
        self._name = options[b"name"].decode("utf-8", errors="replace")
        if b"filename" in options:
            if self._name != self.file_field:
                self.problem = UploadInvalid(
                    f"unexpected file field {self._name!r}; send the media as {self.file_field!r}"
                )
            elif self.result.filename is not None:
                self.problem = UploadInvalid(f"more than one {self.file_field!r} part")
            else:
                self._is_file = True
                self.result.filename = options[b"filename"].decode("utf-8", errors="replace")
                self.result.path = self.target

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.result.size += len(chunk)
            if self.result.size > self.max_bytes:
                self.problem = UploadTooLarge(self.max_bytes)
                return
            self.pending.append(chunk)
        else:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                self.problem = UploadInvalid(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._name is not None and not self._is_file:
            if len(self.result.fields) >= MAX_FIELDS:
                self.problem = UploadInvalid(f"more than {MAX_FIELDS} form fields")
                return
            self.result.fields[self._name] = self._value.decode("utf-8", errors="replace")

    def callbacks(self) -> dict:
        names = (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
        return {name: getattr(self, name) for name in names}


async def receive_upload(request: Request, target: Path, *, max_bytes: int, file_field: str = "file") -> ReceivedUpload:
    """Parse a multipart/form-data request, writing the `file_field` part to `target`.

    Raises `UploadTooLarge` as soon as the file passes `max_bytes`, `UploadInvalid` for a body
    that is not usable multipart. The caller removes `target` on error.
    """
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadInvalid("multipart body without a boundary in Content-Type")
    receiver = _Receiver(target, file_field, max_bytes)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    with target.open("wb") as sink:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except Exception as exc:  # python-multipart raises its own errors on malformed input
                raise UploadInvalid(f"malformed multipart body: {exc}") from None
            if receiver.problem is not None:
                raise receiver.problem
            await _flush(sink, receiver.pending)
        parser.finalize()
        if receiver.problem is not None:
            raise receiver.problem
        await _flush(sink, receiver.pending)
    if receiver.result.filename is None:
        raise UploadInvalid(f"no {file_field!r} file part in the upload")
    return receiver.result


async def _flush(sink: BinaryIO, pending: list[bytes]) -> None:
    if pending:
        data = b"".join(pending)
        pending.clear()
        await asyncio.to_thread(sink.write, data)
