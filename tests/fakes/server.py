"""Serve an ASGI app with uvicorn on 127.0.0.1 (ephemeral port) in a background thread.

A thread with its own event loop, rather than a task on the test's loop, so the fake keeps
answering while the code under test blocks its loop, and sync tests can use it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


class ServedApp:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        sock = server.servers[0].sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        self.base_url = f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Connections left open by a client: don't let a stuck fake hang the test run.
            self._server.force_exit = True
            self._thread.join(timeout)


def start_app(
    app: Any, *, startup_timeout: float = 10.0, log_level: str = "warning", host: str = "127.0.0.1"
) -> ServedApp:
    config = uvicorn.Config(
        app,
        host=host,
        port=0,
        log_level=log_level,
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("fake server thread died during startup")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("fake server did not start in time")
        time.sleep(0.01)
    return ServedApp(server, thread)


@contextmanager
def serve(app: Any, **kwargs: Any) -> Iterator[ServedApp]:
    served = start_app(app, **kwargs)
    try:
        yield served
    finally:
        served.stop()
