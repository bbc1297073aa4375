"""The SSRF guard for server-side fetches of user-given URLs (encode `source_url`, ...).

A URL is refused when its host is, or resolves to, an address that is not globally routable:
loopback, private (RFC 1918, ULA), link-local (169.254/16, where cloud metadata lives), CGNAT,
multicast, reserved, unspecified, or an IPv4 address hidden in IPv6. Every address a name
resolves to must pass, so a name with one public and one private address is refused.

Checking the URL before handing it to a fetcher is not enough: the fetcher follows redirects
and resolves the name again (DNS rebinding). So fetchers that run as subprocesses (yt-dlp) go
through `GuardedProxy`, a small HTTP proxy on loopback that resolves and checks every host it
is asked for (CONNECT for https, absolute-form requests for http) and connects to the checked
address itself. A redirect to a private address becomes a refused proxy connection.

Hand-written rather than a proxy library: it is ~100 lines, needs no configuration file and
runs inside the task that uses it; the libraries (proxy.py, mitmproxy) are whole servers.
`OUTBOUND_ALLOW_PRIVATE` turns the guard off; `OUTBOUND_ALLOWED_NETWORKS` admits named ranges.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from reelhouse.core.net.settings import OutboundSettings

log = logging.getLogger("reelhouse.net.outbound")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_HEAD_BYTES = 16 << 10
CONNECT_TIMEOUT = 15.0


class BlockedDestination(ValueError):
    """The URL would reach an address the server must not fetch from; the message says why."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def address_problem(address: IPAddress) -> str | None:
    """Why `address` is not a place to fetch from, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return address_problem(embedded)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_reserved or address.is_unspecified or not address.is_global:
        return "not a public address"
    return None


@dataclass
class OutboundPolicy:
    allow_private: bool = False
    allowed_networks: list[IPNetwork] = field(default_factory=list)
    resolver: Resolver = system_resolver

    @classmethod
    def from_settings(cls, settings: object) -> OutboundPolicy:
        section = settings.section(OutboundSettings)  # type: ignore[attr-defined]
        return cls(section.outbound_allow_private, section.networks())

    def _problem(self, address: IPAddress) -> str | None:
        if self.allow_private or any(address in network for network in self.allowed_networks):
            return None
        return address_problem(address)

    async def resolve(self, host: str, port: int) -> str:
        """A checked address for `host` (the first of its addresses; all must pass)."""
        host = host.strip("[]")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            candidates = [str(literal)]
        else:
            try:
                candidates = await asyncio.wait_for(self.resolver(host, port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise BlockedDestination(f"cannot resolve {host[:100]!r}: {exc.__class__.__name__}") from None
            if not candidates:
                raise BlockedDestination(f"{host[:100]!r} has no address")
        for candidate in candidates:
            problem = self._problem(ipaddress.ip_address(candidate))
            if problem is not None:
                named = candidate if literal is not None else f"{host[:100]} ({candidate})"
                raise BlockedDestination(
                    f"refusing to fetch from {named}: {problem}; set OUTBOUND_ALLOW_PRIVATE or "
                    "OUTBOUND_ALLOWED_NETWORKS to allow it"
                )
        return candidates[0]

    async def check_url(self, url: str) -> None:
        """Raise `BlockedDestination` for a URL whose host is or resolves to a refused address."""
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise BlockedDestination("the URL's port is not a number from 1 to 65535") from None
        if not parts.hostname:
            raise BlockedDestination("the URL has no host")
        if self.allow_private:
            return
        await self.resolve(parts.hostname, port)


class GuardedProxy:
    """An HTTP proxy on 127.0.0.1 that only connects where `policy` allows."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._server: asyncio.Server | None = None
        self.refused: list[str] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > MAX_HEAD_BYTES:
                return await _refuse(writer, 431, "request head too large")
            request_line, _, rest = head.partition(b"\r\n")
            try:
                method, target, version = request_line.decode("latin-1").split(" ")
            except ValueError:
                return await _refuse(writer, 400, "malformed request line")
            tunnel = method.upper() == "CONNECT"
            host, port, path = _target(target, tunnel)
            if host is None:
                return await _refuse(writer, 400, "the proxy needs an absolute URL or CONNECT host:port")
            try:
                address = await self.policy.resolve(host, port)
            except BlockedDestination as exc:
                self.refused.append(host)
                log.warning("outbound fetch refused: %s", exc, extra={"component": "outbound"})
                return await _refuse(writer, 403, str(exc))
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                return await _refuse(writer, 502, f"cannot connect to {host[:100]}:{port}")
            upstream = up_writer
            if tunnel:
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                up_writer.write(_origin_form(method, path, version, rest))
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            for stream in (upstream, writer):
                if stream is not None:
                    stream.close()


def _target(target: str, tunnel: bool) -> tuple[str | None, int, str]:
    if tunnel:
        host, _, port_text = target.rpartition(":")
        return (host or None), int(port_text) if port_text.isdigit() else 443, ""
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        return None, 0, ""
    try:
        port = parts.port or 80
    except ValueError:
        return None, 0, ""
    path = parts.path or "/"
    return parts.hostname, port, path + (f"?{parts.query}" if parts.query else "")


def _origin_form(method: str, path: str, version: str, rest: bytes) -> bytes:
    """The request as the origin expects it: path-only request line, no proxy headers, and
    `Connection: close` so the next request (maybe to another host) comes on a new connection
    that is checked again."""
    lines = [
        line
        for line in rest.split(b"\r\n")
        if line and not line.lower().startswith((b"proxy-", b"connection:", b"keep-alive:"))
    ]
    return b"\r\n".join([f"{method} {path} {version}".encode("latin-1"), *lines, b"Connection: close", b"", b""])


async def _refuse(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = reason.encode("utf-8", "replace")[:1000]
    writer.write(
        f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(Exception):
        await writer.drain()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while chunk := await source.read(64 << 10):
            sink.write(chunk)
            await sink.drain()
    with contextlib.suppress(Exception):
        if sink.can_write_eof():
            sink.write_eof()


async def _pipe_both(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_pipe(client_reader, up_writer), _pipe(up_reader, client_writer))


@contextlib.asynccontextmanager
async def guarded_proxy(policy: OutboundPolicy) -> AsyncIterator[str | None]:
    """The proxy URL to give a subprocess fetcher, or None when the policy allows everything."""
    if policy.allow_private:
        yield None
        return
    proxy = GuardedProxy(policy)
    await proxy.start()
    try:
        yield proxy.url
    finally:
        await proxy.close()
