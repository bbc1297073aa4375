"""Authentication under load: argon2 off the event loop, limits per address and per account,
Basic credentials verified once (successes never count as login attempts), and an admin token
comparison that takes any bytes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from reelhouse.core.security.passwords import PasswordHasherBusy, PasswordWorker, hash_password

from .conftest import PASSWORD, admin, basic, login, make_user


def client_from(app, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_a_storm_of_wrong_logins_from_one_address_is_limited_after_ten(client, runtime):
    await make_user(runtime, "target")
    statuses = [(await login(client, f"user{i}", "wrong password")).status_code for i in range(200)]
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    limited = await login(client, "target")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


async def test_one_account_is_limited_whatever_the_addresses(app, runtime):
    await make_user(runtime, "victim")
    statuses = []
    for i in range(12):
        async with client_from(app, f"203.0.113.{i + 1}") as other:
            statuses.append((await login(other, "victim", f"guess number {i}")).status_code)
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]


async def test_successful_basic_requests_are_verified_once_and_never_limited(app, client, runtime):
    await make_user(runtime, "player")
    checks = []
    auth = app.state.auth
    original = auth.passwords.verify

    async def counting(stored, password):
        checks.append(password)
        return await original(stored, password)

    auth.passwords.verify = counting
    statuses = [(await client.get("/v1/me", headers=basic("player", PASSWORD))).status_code for _ in range(30)]
    assert statuses == [200] * 30, "a player sending Basic on every segment is never limited"
    assert len(checks) == 1, "the credential was verified once and then trusted from the cache"
    # Wrong Basic passwords do count: the 11th is refused without checking the password.
    wrong = [(await client.get("/v1/me", headers=basic("player", "wrong pass"))).status_code for _ in range(11)]
    assert wrong[:10] == [401] * 10 and wrong[10] == 429
    assert len(checks) == 11


async def test_a_cached_basic_credential_stops_working_when_the_user_is_locked_or_repassworded(client, runtime):
    user_id = await make_user(runtime, "cached")
    assert (await client.get("/v1/me", headers=basic("cached", PASSWORD))).status_code == 200
    await client.post(f"/v1/users/{user_id}/lock", headers=admin())
    assert (await client.get("/v1/me", headers=basic("cached", PASSWORD))).status_code == 401
    await client.post(f"/v1/users/{user_id}/unlock", headers=admin())
    assert (await client.get("/v1/me", headers=basic("cached", PASSWORD))).status_code == 200
    await client.put(f"/v1/users/{user_id}/password", headers=admin(), json={"password": "a brand new password"})
    assert (await client.get("/v1/me", headers=basic("cached", PASSWORD))).status_code == 401


async def test_admin_token_comparison_accepts_any_bytes(app):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw:
        for headers in (
            [(b"x-admin-token", b"\xff\xfe\xc3\xa9t\xc3\xa9")],
            [(b"authorization", b"Bearer \xe2\x98\x83 snowman")],
            [(b"authorization", b"Basic \xff\xff")],
            [(b"authorization", b"Basic " + b"A" * 5000)],
        ):
            response = await raw.get("/v1/jobs", headers=headers)
            assert response.status_code == 401, (headers, response.text)


async def test_password_checks_run_off_the_event_loop():
    worker = PasswordWorker(threads=1, queue=0)
    stored = hash_password(PASSWORD)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    assert await worker.verify(stored, PASSWORD)
    during = ticks - before
    # Busy: one thread, no queue; a second concurrent check is refused instead of queueing.
    first = asyncio.create_task(worker.verify(stored, "wrong password"))
    await asyncio.sleep(0)
    with pytest.raises(PasswordHasherBusy):
        await worker.verify(stored, PASSWORD)
    assert await first is False
    running.cancel()
    worker.close()
    assert during > 10, f"the loop ran only {during} times during an argon2 check: it was blocked"
