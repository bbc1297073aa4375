"""`reelhouse serve` in a subprocess on a free loopback port, for tests that need a real server
(its own memory to measure, its own log output to read)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class ServerProcess:
    base_url: str
    pid: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def reelhouse_server(env: dict[str, str], log_path: Path, startup_timeout: float = 60.0) -> Iterator[ServerProcess]:
    port = free_port()
    environ = {**os.environ, "HTTP_ADDR": f"127.0.0.1:{port}", "EMBEDDED_WORKER": "false", **env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelhouse.cli", "serve"], env=environ, stdout=log, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield ServerProcess(base_url, process.pid, log_path)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
