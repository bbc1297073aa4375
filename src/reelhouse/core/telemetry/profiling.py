"""On-demand profiling (vod-tender's `ENABLE_PPROF` / `PPROF_ADDR`), off by default.

With `ENABLE_PPROF=1`, `reelhouse serve` and `reelhouse worker` listen on `PPROF_ADDR`
(default `localhost:6060`) with a small HTTP server of their own, in a thread, so a profile can
be taken while the event loop is busy:

    /debug/pprof/                    index
    /debug/pprof/profile?seconds=N   CPU profile of the event loop's thread for N seconds
                                     (pyinstrument; `format=text` (default), `html`, `speedscope`)
    /debug/pprof/stacks              every thread's stack and every asyncio task's stack
    /debug/pprof/heap                live objects by type (count), after a full collection

The address must be a loopback one: anything else (`0.0.0.0:6060`, a hostname that resolves
elsewhere) stops start-up, unless `PPROF_ALLOW_REMOTE=true` says it is meant (a container whose
port is only published to the host, for instance). There is no authentication: whoever reaches
the port can read stacks and object counts.
"""

from __future__ import annotations

import asyncio
import gc
import io
import ipaddress
import logging
import socket
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from pydantic import Field

from reelhouse.config import ConfigError, SettingsSection, from_env

log = logging.getLogger("reelhouse.pprof")

MAX_PROFILE_SECONDS = 300.0
FORMATS = ("text", "html", "speedscope")


class ProfilingSettings(SettingsSection):
    enable_pprof: bool = Field(False, validation_alias=from_env("ENABLE_PPROF"))
    """Start the profiling endpoint (`/debug/pprof/...` on PPROF_ADDR)."""
    pprof_addr: str = Field("localhost:6060", validation_alias=from_env("PPROF_ADDR"))
    """host:port of the profiling endpoint; loopback only unless PPROF_ALLOW_REMOTE."""
    pprof_allow_remote: bool = Field(False, validation_alias=from_env("PPROF_ALLOW_REMOTE"))
    """Allow a non-loopback PPROF_ADDR (the endpoint has no authentication)."""


def parse_addr(addr: str, *, allow_remote: bool) -> tuple[str, int]:
    """(host, port) of `addr`, refusing a host that is not loopback unless `allow_remote`."""
    host, sep, port_text = addr.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"PPROF_ADDR: expected host:port, got {addr!r}")
    host = host.strip("[]")
    if not host:
        host = "0.0.0.0"  # Go's ":6060" means every interface
    if not allow_remote:
        try:
            resolved = {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
        except OSError as exc:
            raise ConfigError(f"PPROF_ADDR: cannot resolve {host!r}: {exc}") from None
        outside = sorted(a for a in resolved if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
        if outside or not resolved:
            raise ConfigError(
                f"PPROF_ADDR: {host!r} is not a loopback address ({', '.join(outside)}); the profiling "
                "endpoint has no authentication: use localhost, or set PPROF_ALLOW_REMOTE=true"
            )
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self.loop = loop
        self.profiling = threading.Lock()  # one CPU profile at a time


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    routes: ClassVar[dict[str, str]] = {
        "/debug/pprof/": "index",
        "/debug/pprof": "index",
        "/debug/pprof/profile": "profile",
        "/debug/pprof/stacks": "stacks",
        "/debug/pprof/goroutine": "stacks",  # vod-tender's name for the same question
        "/debug/pprof/heap": "heap",
    }

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        route = self.routes.get(url.path)
        if route is None:
            self._send(404, f"no such profile: {url.path} (see /debug/pprof/)\n")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            getattr(self, f"_{route}")(query)
        except Exception as exc:  # a failed profile answers 500 with its reason; the server stays up
            log.warning("profiling request failed", exc_info=True, extra={"component": "pprof"})
            self._send(500, f"{type(exc).__name__}: {exc}\n")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("pprof " + format, *args, extra={"component": "pprof"})

    def _send(self, status: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _index(self, _query: dict[str, str]) -> None:
        self._send(
            200,
            "reelhouse profiling\n"
            "  /debug/pprof/profile?seconds=30&format=text|html|speedscope  CPU profile of the event loop\n"
            "  /debug/pprof/stacks                                          threads and asyncio tasks\n"
            "  /debug/pprof/heap                                            live objects by type\n",
        )

    def _profile(self, query: dict[str, str]) -> None:
        try:
            seconds = float(query.get("seconds", "30"))
        except ValueError:
            seconds = -1.0
        if not 0 < seconds <= MAX_PROFILE_SECONDS:
            self._send(400, f"seconds: a number in (0, {MAX_PROFILE_SECONDS:g}]\n")
            return
        fmt = query.get("format", "text")
        if fmt not in FORMATS:
            self._send(400, f"format: one of {', '.join(FORMATS)}\n")
            return
        if self.server.loop is None or self.server.loop.is_closed():
            self._send(503, "no event loop to profile\n")
            return
        if not self.server.profiling.acquire(blocking=False):
            self._send(409, "a profile is already being taken; try again when it ends\n")
            return
        try:
            profiler = self._in_loop(_profile_loop(seconds), timeout=seconds + 30)
        finally:
            self.server.profiling.release()
        if fmt == "html":
            self._send(200, profiler.output_html(), "text/html; charset=utf-8")
        elif fmt == "speedscope":
            from pyinstrument.renderers import SpeedscopeRenderer

            self._send(200, profiler.output(SpeedscopeRenderer()), "application/json")
        else:
            self._send(200, profiler.output_text(unicode=True, color=False, show_all=False))

    def _stacks(self, _query: dict[str, str]) -> None:
        out = io.StringIO()
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            out.write(f"thread {names.get(ident, '?')} ({ident})\n")
            out.write("".join(traceback.format_stack(frame)))
            out.write("\n")
        if self.server.loop is not None and not self.server.loop.is_closed():
            out.write(self._in_loop(_task_stacks(), timeout=10))
        self._send(200, out.getvalue())

    def _heap(self, query: dict[str, str]) -> None:
        gc.collect()
        counts = Counter(type(obj).__qualname__ for obj in gc.get_objects())
        limit = max(1, min(int(query.get("limit", "50")) if query.get("limit", "").isdigit() else 50, 1000))
        lines = [f"{count:>10}  {name}" for name, count in counts.most_common(limit)]
        self._send(200, f"{sum(counts.values())} objects tracked by the garbage collector\n" + "\n".join(lines) + "\n")

    def _in_loop(self, coro: Coroutine[Any, Any, Any], *, timeout: float) -> Any:
        assert self.server.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.server.loop).result(timeout)


async def _profile_loop(seconds: float) -> Any:
    """Runs on the event loop: pyinstrument samples this thread (every task, not only this one)."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        profiler.stop()
    return profiler


async def _task_stacks() -> str:
    out = io.StringIO()
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is current:
            continue
        out.write(f"task {task.get_name()} ({task.get_coro()!r})\n")
        task.print_stack(limit=30, file=out)
        out.write("\n")
    return out.getvalue()


class ProfilingServer:
    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="pprof", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def check_profiling(settings: ProfilingSettings) -> None:
    """Refuse a bad or non-loopback PPROF_ADDR at start-up (before anything listens)."""
    if settings.enable_pprof:
        parse_addr(settings.pprof_addr, allow_remote=settings.pprof_allow_remote)


def start_profiling(settings: ProfilingSettings, loop: asyncio.AbstractEventLoop | None) -> ProfilingServer | None:
    """The profiling endpoint when ENABLE_PPROF is set, profiling `loop`; None otherwise."""
    if not settings.enable_pprof:
        return None
    host, port = parse_addr(settings.pprof_addr, allow_remote=settings.pprof_allow_remote)
    try:
        server = ProfilingServer(_Server(host, port, loop))
    except OSError as exc:
        raise ConfigError(f"PPROF_ADDR: cannot listen on {settings.pprof_addr}: {exc}") from None
    log.warning(
        "profiling endpoint on http://%s:%d/debug/pprof/ (ENABLE_PPROF; no authentication)",
        *server.address,
        extra={"component": "pprof"},
    )
    return server
