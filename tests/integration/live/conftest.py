"""Fixtures for the live domain: a runtime with the live (and encode) domains, the app under
uvicorn as `reelhouse serve` runs it (so the ingest nginx starts on free ports in its own
prefix, never the system nginx), in-loop workers, and an ffmpeg publisher."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelhouse.app import create_app
from reelhouse.config import Settings
from reelhouse.core.jobs.worker import Worker
from reelhouse.core.runtime import Runtime
from reelhouse.encode.pipeline import ENCODE_KINDS
from reelhouse.encode.plugin import setup as encode_setup
from reelhouse.live.kinds import LIVE_KINDS
from reelhouse.live.plugin import LiveDomain
from reelhouse.live.plugin import setup as live_setup
from tests.app_support import ffprobe_json as shared_ffprobe_json
from tests.app_support import free_port, migrated_runtime, running_worker, serve_app, settings_from

ADMIN_TOKEN = "live-tests-admin-token-0123456789"
MASTER_KEY = "live-tests-master-key-0123456789abcdef"
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe") or "ffprobe"


@pytest.fixture(scope="session", autouse=True)
def _require_tools() -> None:
    for tool in ("ffmpeg", "ffprobe", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is required for the live tests (make system-deps)")


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def nginx_dir() -> Iterator[Path]:
    """nginx's prefix directly under /tmp: started as root, its workers run as nobody and must
    reach the recording folder, which pytest's private tmp_path does not allow."""
    path = Path(tempfile.mkdtemp(prefix="rh-live-nginx-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_port: int, nginx_dir: Path) -> Settings:
    env = {
        "DATABASE_URL": db_url,
        "DATA_DIR": str(tmp_path / "data"),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "MASTER_ENCRYPTION_KEY": MASTER_KEY,
        "HW_ACCEL": "none",
        "STORAGE_BACKEND": "fs",
        "JOB_POLL_INTERVAL": "0.1",
        "JOB_LEASE_SECONDS": "4",
        "EMBEDDED_WORKER": "false",
        "RATE_LIMIT_ENABLED": "false",
        "OUTBOUND_ALLOW_PRIVATE": "true",
        "LIVE_ENABLED": "true",
        "LIVE_NGINX_DIR": str(nginx_dir),
        "LIVE_NGINX_PATH": shutil.which("nginx") or "/usr/sbin/nginx",
        "LIVE_RTMP_BIND": "127.0.0.1",
        "LIVE_RTMP_PORT": str(free_port()),
        "LIVE_STAT_PORT": str(free_port()),
        "LIVE_CALLBACK_URL": f"http://127.0.0.1:{api_port}",
        "LIVE_MONITOR_INTERVAL": "0.5",
        "LIVE_INPUT_TIMEOUT": "3",
        "LIVE_RESTREAM_BACKOFF_CAP": "2",
        "LIVE_PROFILE": "hls-default",
    }
    return settings_from(monkeypatch, env)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with migrated_runtime(settings, live=live_setup, encode=encode_setup) as runtime:
        yield runtime
        await runtime.live.services.aclose()  # type: ignore[attr-defined]
        await runtime.encode.service.close_storage()  # type: ignore[attr-defined]


@pytest.fixture
def domain(runtime: Runtime) -> LiveDomain:
    return runtime.live  # type: ignore[attr-defined]


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def api(runtime: Runtime, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (no background tasks), signed in as admin."""
    app = create_app(settings, runtime=runtime, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=admin_headers()) as c:
        yield c


@pytest.fixture
async def server(runtime: Runtime, settings: Settings, api_port: int) -> AsyncIterator[str]:
    """The app as `reelhouse serve` runs it (API, scheduler, the ingest nginx and the monitor),
    without its embedded worker (tests start workers themselves)."""
    async with serve_app(create_app(settings, runtime=runtime, background=True), api_port) as url:
        live = runtime.live.services.settings  # type: ignore[attr-defined]
        for _ in range(200):  # the ingest starts in the background
            with contextlib.suppress(OSError):
                _r, writer = await asyncio.open_connection("127.0.0.1", live.rtmp_port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, headers=admin_headers(), timeout=30) as client:
        yield client


@contextlib.asynccontextmanager
async def run_worker(runtime: Runtime, name: str, kinds: tuple[str, ...] = LIVE_KINDS) -> AsyncIterator[Worker]:
    async with running_worker(
        runtime, name, kinds, concurrency=8, progress_interval=0.5, capabilities=["cpu", "libx264"]
    ) as worker:
        yield worker


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    async with run_worker(runtime, "live-test-worker", (*LIVE_KINDS, *ENCODE_KINDS)) as worker:
        yield worker


@dataclass
class Publisher:
    process: asyncio.subprocess.Process
    stderr: bytearray
    reader: asyncio.Task[None]
    seconds: float

    async def wait(self, timeout: float = 60) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    def stderr_text(self) -> str:
        return self.stderr.decode(errors="replace")

    def sent_bitrates(self) -> dict[str, int]:
        """What the publisher's muxer wrote of each stream, in bits/s of media, from ffmpeg's
        closing summary (`video:1788kB audio:188kB ...`, kB of 1024 bytes): the source's real
        bitrate, which x264's rate control puts near, not at, its target."""
        match = re.search(r"video:(\d+)kB audio:(\d+)kB", self.stderr_text())
        assert match, self.stderr_text()[-500:]
        return {
            name: round(int(size) * 1024 * 8 / self.seconds)
            for name, size in zip(("video", "audio"), match.groups(), strict=True)
        }

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 5)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self.reader


SOURCE = {"width": 320, "height": 240, "fps": 25, "video_bitrate": 600_000, "audio_bitrate": 64_000}


async def publish(url: str, seconds: float, *, extra_filters: str = "") -> Publisher:
    """A test pattern with a tone, real time (-re), CBR so the bitrate is steady. Its stderr
    is read as it comes (a full pipe would stall the publisher) and ends with ffmpeg's summary."""
    src = SOURCE
    vf = ["-vf", extra_filters] if extra_filters else []
    argv = [
        FFMPEG, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={src['width']}x{src['height']}:rate={src['fps']}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds), *vf,
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-b:v", str(src["video_bitrate"]), "-minrate", str(src["video_bitrate"]),
        "-maxrate", str(src["video_bitrate"]), "-bufsize", str(src["video_bitrate"]),
        "-x264-params", "nal-hrd=cbr:force-cfr=1", "-g", str(src["fps"]),
        "-c:a", "aac", "-b:a", str(src["audio_bitrate"]), "-f", "flv", url,
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    stderr = bytearray()

    async def drain() -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.read(65536):
            stderr.extend(chunk)

    return Publisher(process, stderr, asyncio.create_task(drain()), float(seconds))


async def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def ffprobe_json(*args: str, timeout: float = 30) -> dict[str, Any]:
    return await shared_ffprobe_json(FFPROBE, *args, timeout=timeout)


async def create_stream(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/streams", json={"title": "test stream", **body})
    assert response.status_code == 201, response.text
    return response.json()


def publish_url(domain: LiveDomain, key: str) -> str:
    return f"rtmp://127.0.0.1:{domain.services.settings.rtmp_port}/live/{key}"
