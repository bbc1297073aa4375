"""The issue's acceptance flow, on SQLite and PostgreSQL with a real SMTP server: upload a 30 s
clip, 2 recipients, 3 verifiers (k=2) accept; a request is approved, the owner is mailed and
vetoes: nothing is released. Again without veto: after the waiting period each recipient gets
exactly one mail, opens the link and plays the video, seeking to the middle. Storage and the
data directory hold only ciphertext throughout."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx

from reelhouse.vault.watch import tick
from tests.fakes.mailbox import Mailbox

from .conftest import MARKER, User, link_token, make_user, token_header, wait_until

OWNER_EMAIL = "owner@example.org"
RECIPIENTS = ["rita@example.org", "sam@example.org"]
VERIFIERS = ["vera@example.org", "victor@example.org", "wendy@example.org"]


def files_containing(root: Path, marker: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and marker in p.read_bytes()]


async def upload_clip(client: httpx.AsyncClient, owner: User, message_id: int, clip: Path) -> dict:
    response = await client.post(
        f"/api/uploads/{message_id}", content=clip.read_bytes(), headers={**owner.headers, "Content-Type": "video/mp4"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "processing"

    async def ready():
        message = (await client.get(f"/api/messages/{message_id}", headers=owner.headers)).json()
        assert message["status"] != "failed", message
        return message if message["status"] == "ready" else None

    return await wait_until(ready, 120, "the transcode")


async def accept_all(client: httpx.AsyncClient, mailbox: Mailbox, accounts: dict[str, User | None]) -> dict[str, str]:
    """Each verifier accepts its invitation (with its account if it has one); their verifier tokens."""
    tokens = {}
    for email, account in accounts.items():
        (invite,) = await mailbox.wait_for(email, subject="trusted verifier")
        headers = {**token_header(link_token(invite)), **(account.headers if account else {})}
        accepted = await client.post("/api/verifiers/accept", headers=headers)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["bound_to_account"] is (account is not None)
        tokens[email] = accepted.json()["verifier_token"]
    return tokens


async def test_owner_veto_then_release_to_each_recipient_once(
    client: httpx.AsyncClient, runtime, domain, worker, mailbox: Mailbox, clip_30s: Path, settings, tmp_path: Path
):
    services = domain.services
    owner = await make_user(runtime, "olivia")
    vera, wendy = await make_user(runtime, "vera"), await make_user(runtime, "wendy")
    plan = (
        await client.post(
            "/api/plans",
            json={"title": "For my family <3", "approvalThreshold": 2, "totalVerifiers": 3, "ownerEmail": OWNER_EMAIL},
            headers=owner.headers,
        )
    ).json()
    message = await client.post(
        "/api/messages",
        json={"planId": plan["id"], "title": "Happy birthday", "recipients": [{"email": e} for e in RECIPIENTS]},
        headers=owner.headers,
    )
    assert message.status_code == 201, message.text
    message_id = message.json()["id"]
    assert marker_in(clip_30s)
    ready = await upload_clip(client, owner, message_id, clip_30s)
    assert 29 <= ready["duration_seconds"] <= 31 and ready["key_id"] == services.keyring.primary_id
    assert files_containing(settings.server.data_dir, MARKER.encode()) == []

    for email in VERIFIERS:
        invited = await client.post(
            "/api/verifiers", json={"planId": plan["id"], "email": email}, headers=owner.headers
        )
        assert invited.status_code == 201, invited.text
    tokens = await accept_all(
        client, mailbox, {"vera@example.org": vera, "victor@example.org": None, "wendy@example.org": wendy}
    )

    # 1. Vera (account) asks, Victor (verifier link) approves: the waiting period starts; the owner vetoes.
    asked = await client.post(
        "/api/releases", json={"planId": plan["id"], "note": "<b>she asked us</b>"}, headers=vera.headers
    )
    assert asked.status_code == 201 and asked.json()["status"] == "pending", asked.text
    request_id = asked.json()["id"]
    (vote_mail,) = await mailbox.wait_for("victor@example.org", subject="Action needed")
    assert "&lt;b&gt;she asked us&lt;/b&gt;" in vote_mail.html and "<b>she asked us</b>" in vote_mail.text
    approved = await client.post(
        "/api/releases/approve",
        json={"requestId": request_id, "approved": True},
        headers=token_header(tokens["victor@example.org"]),
    )
    assert approved.status_code == 200 and approved.json()["status"] == "waiting", approved.text
    (waiting_mail,) = await mailbox.wait_for(OWNER_EMAIL, subject="will be released")
    vetoed = await client.post("/api/releases/veto", headers=token_header(link_token(waiting_mail)))
    assert vetoed.status_code == 200 and vetoed.json()["status"] == "vetoed", vetoed.text
    await asyncio.sleep(2.2)  # longer than the waiting period
    assert (await tick(services))["released"] == []
    assert all(mailbox.to(r) == [] for r in RECIPIENTS)

    # 2. Again, without a veto: released after the waiting period.
    asked = await client.post("/api/releases", json={"planId": plan["id"]}, headers=wendy.headers)
    assert asked.status_code == 201, asked.text
    second = asked.json()["id"]
    approved = await client.post(
        "/api/releases/approve", json={"requestId": second, "approved": True}, headers=vera.headers
    )
    assert approved.json()["status"] == "waiting"
    assert (await tick(services))["released"] == []  # not before release_at

    async def released():
        return (await tick(services))["released"]

    assert await wait_until(released, 10, "the waiting period to pass") == [second]
    for recipient in RECIPIENTS:
        (mail,) = await mailbox.wait_for(recipient, subject="message")
        assert "Happy birthday" in mail.text

    # 3. A recipient opens the link and plays the video, seeking to the middle.
    (rita_mail,) = mailbox.to(RECIPIENTS[0])
    viewer = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    opened = await viewer.post("/api/view/open", headers=token_header(link_token(rita_mail)))
    assert opened.status_code == 200, opened.text
    (listed,) = opened.json()["messages"]
    whole = await viewer.get(listed["media_url"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert MARKER.encode() in whole.content  # decrypted, the marker is there: the scans above mean something
    played = tmp_path / "played.mp4"
    played.write_bytes(whole.content)
    assert 29 <= probe_duration(played) <= 31
    middle = len(whole.content) // 2
    seek = await viewer.get(listed["media_url"], headers={"Range": f"bytes={middle}-{middle + 99_999}"})
    assert (
        seek.status_code == 206
        and seek.headers["content-range"] == f"bytes {middle}-{middle + 99_999}/{len(whole.content)}"
    )
    assert seek.content == whole.content[middle : middle + 100_000]
    frame_at_15s = subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", "15", "-i", str(played), "-frames:v", "1", "-f", "null", "-"],
        capture_output=True,
    )
    assert frame_at_15s.returncode == 0
    await viewer.aclose()

    # Exactly one release mail each, and still only ciphertext at rest.
    await asyncio.sleep(1.0)
    assert [len([m for m in mailbox.to(r) if "message" in m.subject]) for r in RECIPIENTS] == [1, 1]
    assert files_containing(settings.server.data_dir, MARKER.encode()) == []
    mails = (await client.get(f"/api/plans/{plan['id']}/mails", headers=owner.headers)).json()
    assert {m["state"] for m in mails} == {"sent"}
    assert (await client.get(f"/api/plans/{plan['id']}", headers=owner.headers)).json()["status"] == "released"


def marker_in(path: Path) -> bool:
    return MARKER.encode() in path.read_bytes()


def probe_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", str(path)], capture_output=True, check=True
    )
    return float(json.loads(out.stdout)["format"]["duration"])
