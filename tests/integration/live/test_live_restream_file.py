"""`/v1/restreams`: a file from storage sent `-re` to an RTMP listener, once; a stop of a looped
one cancels it; bad requests are 400s."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from .conftest import FFMPEG, free_port, wait_until


def make_clip(path: Path, seconds: float) -> Path:
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_restream_a_stored_file_once_and_stop_a_looped_one(api, domain, worker, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", 3)
    await domain.services.storage().put("uploads/live/clip.mp4", clip)
    port = free_port()
    out = tmp_path / "got.flv"
    listener = await asyncio.create_subprocess_exec(
        FFMPEG, "-v", "error", "-listen", "1", "-timeout", "30", "-i", f"rtmp://127.0.0.1:{port}/app/k",
        "-c", "copy", "-y", str(out),
    )  # fmt: skip
    try:
        created = await api.post(
            "/v1/restreams",
            json={"source_key": "uploads/live/clip.mp4", "url": f"rtmp://127.0.0.1:{port}/app", "key": "k"},
        )
        assert created.status_code == 201, created.text
        restream = created.json()
        assert restream["has_key"] and '"k"' not in created.text

        async def finished():
            found = (await api.get(f"/v1/restreams/{restream['id']}")).json()
            assert found["state"] != "failed", found
            return found if found["state"] == "finished" else None

        await wait_until(finished, 30, "the restream to finish", interval=0.3)
        await asyncio.wait_for(listener.wait(), 15)
        assert out.stat().st_size > 10_000
    finally:
        if listener.returncode is None:
            listener.kill()
            await listener.wait()

    looped = await api.post(
        "/v1/restreams",
        json={"source_key": "uploads/live/clip.mp4", "url": f"rtmp://127.0.0.1:{free_port()}/app", "mode": "loop"},
    )
    stopped = await api.post(f"/v1/restreams/{looped.json()['id']}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"

    for body in (
        {"url": "rtmp://127.0.0.1:1/app"},
        {"source_key": "uploads/missing.mp4", "url": "rtmp://127.0.0.1:1/app"},
        {"source_url": "file:///etc/passwd", "url": "rtmp://127.0.0.1:1/app"},
        {"source_key": "uploads/live/clip.mp4", "url": "http://127.0.0.1:1/app"},
    ):
        assert (await api.post("/v1/restreams", json=body)).status_code == 400, body
