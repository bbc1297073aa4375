"""A one-task HTTP server on 127.0.0.1 through which ffmpeg reads and writes vault media, so
plaintext never touches a disk or the object store.

- `GET <secret>/source` serves the encrypted upload decrypted, with byte ranges: ffmpeg seeks
  in it as in a local file (an MP4 whose index is at the end needs that; a pipe could not).
- `PUT/POST <secret>/output` takes ffmpeg's output (chunked) and streams it, encrypted segment
  by segment, into storage; a bounded queue pushes back on ffmpeg when storage is slower.

The path carries a random secret, and the socket listens on loopback only for the duration of
one transcode. Hand-written on h11 (the HTTP/1.1 state machine uvicorn uses) rather than a
second uvicorn: uvicorn's `serve()` installs process signal handlers, which would take
SIGTERM away from the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import h11

from reelhouse.core.storage import ObjectInfo
from reelhouse.core.storage.signed_routes import parse_range_header

READ_SIZE = 1 << 16
QUEUE_CHUNKS = 16


@dataclass
class Source:
    size: int
    read: Callable[[int, int], AsyncGenerator[bytes, None]]
    """`read(start, end_inclusive)` yields plaintext bytes of that range."""


class LoopbackMedia:
    def __init__(self, source: Source, store_output: Callable[[AsyncIterator[bytes]], Awaitable[ObjectInfo]]):
        self.source = source
        self._store_output = store_output
        self._secret = secrets.token_urlsafe(24)
        self._server: asyncio.AbstractServer | None = None
        self.output: asyncio.Future[ObjectInfo] | None = None
        self.port = 0

    @property
    def source_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self._secret}/source"

    @property
    def output_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self._secret}/output"

    async def __aenter__(self) -> LoopbackMedia:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        if self.output is not None and not self.output.done():
            self.output.cancel()
            with contextlib.suppress(BaseException):
                await self.output

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next(conn, reader)
                if isinstance(event, h11.ConnectionClosed) or event is None:
                    break
                if not isinstance(event, h11.Request):
                    break
                await self._answer(conn, event, reader, writer)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_SIZE))
                continue
            if event is h11.PAUSED:
                return None
            return event  # type: ignore[return-value]

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, event: h11.Event) -> None:
        data = conn.send(event)
        if data:
            writer.write(data)
            await writer.drain()

    async def _answer(
        self, conn: h11.Connection, request: h11.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        target = request.target.decode("latin-1")
        method = request.method.decode("ascii").upper()
        if target == f"/{self._secret}/source" and method in ("GET", "HEAD"):
            await self._drain_body(conn, reader)
            await self._serve_source(conn, writer, request, head=method == "HEAD")
        elif target == f"/{self._secret}/output" and method in ("PUT", "POST"):
            await self._receive_output(conn, reader)
            await self._send(conn, writer, h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            await self._send(conn, writer, h11.EndOfMessage())
        else:
            await self._drain_body(conn, reader)
            await self._send(conn, writer, h11.Response(status_code=404, headers=[("Content-Length", "0")]))
            await self._send(conn, writer, h11.EndOfMessage())

    async def _drain_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        while conn.their_state is h11.SEND_BODY:
            event = await self._next(conn, reader)
            if event is None or isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def _serve_source(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, *, head: bool
    ) -> None:
        size = self.source.size
        range_header = dict(request.headers).get(b"range", b"").decode("latin-1") or None
        try:
            span = parse_range_header(range_header, size) if size else None
        except Exception:
            await self._send(conn, writer, h11.Response(status_code=416, headers=[("Content-Length", "0")]))
            await self._send(conn, writer, h11.EndOfMessage())
            return
        start, end = span or (0, size - 1)
        headers = [("Accept-Ranges", "bytes"), ("Content-Length", str(max(end - start + 1, 0)))]
        if span is not None:
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        await self._send(conn, writer, h11.Response(status_code=206 if span else 200, headers=headers))
        if not head and size:
            async with contextlib.aclosing(self.source.read(start, end)) as chunks:
                async for chunk in chunks:
                    await self._send(conn, writer, h11.Data(data=chunk))
        await self._send(conn, writer, h11.EndOfMessage())

    async def _receive_output(self, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        if self.output is not None:
            raise h11.ProtocolError("output already written")
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_CHUNKS)

        async def body() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not None:
                yield chunk

        output = self.output = asyncio.ensure_future(self._store_output(body()))
        while True:
            event = await self._next(conn, reader)
            if isinstance(event, h11.Data):
                await _put_or_fail(queue, bytes(event.data), output)
            else:
                break
        await _put_or_fail(queue, None, output)
        await asyncio.wait([output])


async def _put_or_fail(
    queue: asyncio.Queue[bytes | None], item: bytes | None, consumer: asyncio.Future[ObjectInfo]
) -> None:
    """Queue `item`, unless the consumer died (then waiting for room would hang forever)."""
    putting: asyncio.Future[None] = asyncio.ensure_future(queue.put(item))
    await asyncio.wait([putting, consumer], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    if not putting.done():
        putting.cancel()
        consumer.result()  # raises the consumer's error
