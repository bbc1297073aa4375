"""The SSRF guard: source_url pointing at loopback, private, link-local or metadata addresses (or
a name resolving to them) is refused with a clear 400, and a redirect to one is refused too."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

from reelhouse.core.jobs.errors import PermanentError
from reelhouse.core.net.outbound import BlockedDestination, GuardedProxy, OutboundPolicy, address_problem
from reelhouse.encode.fetch import fetch_url
from tests.fakes.server import serve

from .conftest import admin


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.mp4",
        "http://10.0.0.1/x.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://localhost:9/x.mp4",
        "http://0.0.0.0/x",
        "http://100.64.0.1/x",
    ],
)
async def test_source_urls_to_internal_addresses_are_refused(client, url):
    response = await client.post("/v1/jobs", headers=admin(), json={"source_url": url})
    assert response.status_code == 400, response.text
    assert "refusing to fetch" in response.json()["error"]


async def test_names_are_checked_after_resolution():
    table = {
        "metadata.internal": ["169.254.169.254"],
        "intranet.example": ["10.0.0.1"],
        "split.example": ["93.184.216.34", "127.0.0.1"],
        "public.example": ["93.184.216.34"],
    }

    async def resolver(host: str, port: int) -> list[str]:
        return table[host]

    policy = OutboundPolicy(resolver=resolver)
    for host in ("metadata.internal", "intranet.example", "split.example"):
        with pytest.raises(BlockedDestination) as refused:
            await policy.check_url(f"https://{host}/video.mp4")
        assert host in str(refused.value)
    await policy.check_url("https://public.example/video.mp4")
    allowed = OutboundPolicy(resolver=resolver, allowed_networks=[ipaddress.ip_network("10.0.0.0/24")])
    await allowed.check_url("http://intranet.example/x")
    assert address_problem(ipaddress.ip_address("8.8.8.8")) is None
    assert address_problem(ipaddress.ip_address("fd00::1")) is not None


def origin_app(target: str) -> FastAPI:
    app = FastAPI()

    @app.get("/redirect")
    async def redirect() -> Response:
        return RedirectResponse(target, status_code=302)

    @app.get("/secret.mp4")
    async def secret() -> Response:
        return Response(b"internal data", media_type="video/mp4")

    return app


async def test_the_proxy_refuses_a_redirect_to_an_internal_address(tmp_path):
    # The origin (127.0.0.2, admitted by OUTBOUND_ALLOWED_NETWORKS) redirects to 127.0.0.1, which
    # stands for any internal address: the proxy must refuse the second connection.
    with (
        serve(origin_app("http://127.0.0.1:1/secret.mp4")) as internal,
        serve(origin_app(f"{internal.base_url}/secret.mp4"), host="127.0.0.2") as origin,
    ):
        policy = OutboundPolicy(allowed_networks=[ipaddress.ip_network("127.0.0.2/32")])
        proxy = GuardedProxy(policy)
        await proxy.start()
        try:
            async with httpx.AsyncClient(proxy=proxy.url) as via_proxy:
                direct = await via_proxy.get(f"{origin.base_url}/secret.mp4")
                assert direct.status_code == 200 and direct.content == b"internal data"
                bounced = await via_proxy.get(f"{origin.base_url}/redirect", follow_redirects=True)
                assert bounced.status_code == 403 and "loopback" in bounced.text
            with pytest.raises(PermanentError) as failed:
                await fetch_url(f"{origin.base_url}/redirect", tmp_path, max_bytes=1 << 20, proxy=proxy.url)
            assert "403" in str(failed.value)
            assert not [p for p in tmp_path.iterdir() if p.name.startswith("source.")]
        finally:
            await proxy.close()
        assert proxy.refused == ["127.0.0.1", "127.0.0.1"]


async def test_the_proxy_tunnels_https_only_to_allowed_hosts():
    policy = OutboundPolicy()
    proxy = GuardedProxy(policy)
    await proxy.start()
    try:
        host, port = proxy.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        writer.close()
        assert b" 403 " in status
    finally:
        await proxy.close()
