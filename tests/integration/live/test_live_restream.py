"""Restreaming to two destinations (ffmpeg RTMP listeners): both receive; killing one leaves
the other running and the killed one reconnects when it comes back. Destination keys are
encrypted at rest and never returned."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from reelhouse.live.models import destinations

from .conftest import FFMPEG, create_stream, free_port, publish, publish_url, wait_until

PUBLISH_SECONDS = 30


async def listener(port: int, key: str, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-listen", "1", "-timeout", "60",
        "-i", f"rtmp://127.0.0.1:{port}/app/{key}", "-c", "copy", "-f", "mpegts", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def grows(path: Path, timeout: float) -> bool:
    start = size(path)

    async def bigger():
        return size(path) > start + 20_000

    await wait_until(bigger, timeout, f"{path.name} to receive the stream", interval=0.2)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_two_destinations_one_killed_other_keeps_going_and_it_reconnects(
    client, domain, runtime, worker, tmp_path
):
    stream = await create_stream(client, record=False)
    ports = [free_port(), free_port()]
    added = []
    for i, port in enumerate(ports):
        response = await client.post(
            f"/v1/streams/{stream['id']}/destinations",
            json={"name": f"dest {i}", "url": f"rtmp://127.0.0.1:{port}/app", "key": f"secret-key-{i}"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["has_key"] and "secret-key" not in response.text
        added.append(body)
    async with runtime.engine.connect() as conn:
        stored = (await conn.execute(select(destinations.c.key_ciphertext))).scalars().all()
    assert all(value and "secret-key" not in value for value in stored)
    bad = await client.post(f"/v1/streams/{stream['id']}/destinations", json={"name": "x", "url": "http://a/b"})
    assert bad.status_code == 400

    outs = [tmp_path / "a.ts", tmp_path / "b.ts"]
    listeners = [await listener(ports[i], f"secret-key-{i}", outs[i]) for i in range(2)]
    publisher = await publish(publish_url(domain, stream["publish_key"]), PUBLISH_SECONDS)
    try:
        await asyncio.gather(grows(outs[0], 20), grows(outs[1], 20))

        async def states():
            listed = (await client.get(f"/v1/streams/{stream['id']}/destinations")).json()["destinations"]
            assert "secret-key" not in str(listed)
            return {d["name"]: d for d in listed}

        async def both_live():
            found = await states()
            return all(d["state"] == "live" for d in found.values())

        await wait_until(both_live, 10, "both destinations live")

        listeners[0].send_signal(signal.SIGKILL)
        await listeners[0].wait()

        async def first_retrying():
            return (await states())["dest 0"]["state"] == "retrying"

        await wait_until(first_retrying, 10, "the killed destination to be retrying")
        assert (await states())["dest 1"]["state"] == "live"
        await grows(outs[1], 5)  # the other one keeps receiving

        outs.append(tmp_path / "a2.ts")
        listeners.append(await listener(ports[0], "secret-key-0", outs[2]))
        await grows(outs[2], 15)  # it reconnected

        async def first_live_again():
            found = (await states())["dest 0"]
            return found if found["state"] == "live" else None

        back = await wait_until(first_live_again, 10, "the destination to be live again")
        assert back["reconnects"] >= 1 and back["last_error"] is None

        # Stopping a destination ends its restream; the other goes on.
        stopped = await client.patch(
            f"/v1/streams/{stream['id']}/destinations/{added[1]['id']}", json={"enabled": False}
        )
        assert stopped.status_code == 200

        async def second_stopped():
            return (await states())["dest 1"]["state"] == "stopped"

        await wait_until(second_stopped, 10, "the stopped destination")
        await grows(outs[2], 5)
    finally:
        await publisher.stop()
        for proc in listeners:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
