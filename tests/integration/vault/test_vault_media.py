"""Vault uploads beyond the happy path: an audio message, a file that is not media (a permanent
failure with a reason, nothing left in storage), an upload over the limit (413, nothing left)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from .conftest import User, make_user, wait_until


async def new_message(client: httpx.AsyncClient, owner: User) -> int:
    body = {"title": "Media", "approvalThreshold": 1, "totalVerifiers": 1, "ownerEmail": "m@example.org"}
    plan = (await client.post("/api/plans", json=body, headers=owner.headers)).json()
    created = await client.post("/api/messages", json={"planId": plan["id"], "title": "voice"}, headers=owner.headers)
    return int(created.json()["id"])


async def settled(client: httpx.AsyncClient, owner: User, message_id: int) -> dict:
    async def done():
        got = (await client.get(f"/api/messages/{message_id}", headers=owner.headers)).json()
        return got if got["status"] in ("ready", "failed") else None

    return await wait_until(done, 60, "the transcode to settle")


def stored(settings) -> list[Path]:
    return sorted(p for p in settings.server.data_dir.rglob("*.rhs") if p.is_file())


async def test_audio_message_plays_as_aac(client, runtime, domain, worker, settings, tmp_path: Path) -> None:
    owner = await make_user(runtime, "singer")
    message_id = await new_message(client, owner)
    voice = tmp_path / "voice.webm"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:duration=3",
            "-c:a",
            "libopus",
            str(voice),
        ],
        check=True,
    )
    headers = {**owner.headers, "Content-Type": "audio/webm"}
    assert (
        await client.post(f"/api/uploads/{message_id}", content=voice.read_bytes(), headers=headers)
    ).status_code == 202
    message = await settled(client, owner, message_id)
    assert message["status"] == "ready" and message["kind"] == "audio" and message["content_type"] == "audio/mp4"
    played = await client.get(f"/api/messages/{message_id}/media", headers=owner.headers)
    out = tmp_path / "played.m4a"
    out.write_bytes(played.content)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["aac"]
    assert len(stored(settings)) == 1  # the encrypted source is gone once the rendition exists


async def test_not_media_fails_for_good_with_a_reason_and_leaves_nothing(
    client, runtime, domain, worker, settings
) -> None:
    owner = await make_user(runtime, "prankster")
    message_id = await new_message(client, owner)
    headers = {**owner.headers, "Content-Type": "video/mp4"}
    body = b"this is a text file pretending to be a video\n" * 1000
    assert (await client.post(f"/api/uploads/{message_id}", content=body, headers=headers)).status_code == 202
    message = await settled(client, owner, message_id)
    assert message["status"] == "failed" and message["error"]
    assert stored(settings) == []
    again = await client.post(f"/api/uploads/{message_id}", content=body, headers=headers)
    assert again.status_code == 202  # a failed message takes a new upload


@pytest.mark.parametrize("declared", [True, False])
async def test_upload_over_the_limit_is_413_and_leaves_nothing(client, runtime, domain, settings, declared) -> None:
    domain.services.settings.max_upload_bytes = 100_000
    owner = await make_user(runtime, f"big{declared}")
    message_id = await new_message(client, owner)
    headers = {**owner.headers, "Content-Type": "video/mp4"}

    async def chunks():
        for _ in range(30):
            yield b"\0" * 10_000

    content = b"\0" * 300_000 if declared else chunks()
    response = await client.post(f"/api/uploads/{message_id}", content=content, headers=headers)
    assert response.status_code == 413 and response.json()["code"] == "FILE_TOO_LARGE"
    assert stored(settings) == []
    assert (await client.get(f"/api/messages/{message_id}", headers=owner.headers)).json()["status"] == "draft"
    wrong_type = await client.post(
        f"/api/uploads/{message_id}", content=b"x", headers={**owner.headers, "Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
