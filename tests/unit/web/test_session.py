"""The session cookie becomes a Bearer credential only where CSRF cannot reach it."""

from __future__ import annotations

import pytest

from reelhouse.web.routes import safe_next
from reelhouse.web.session import SessionCookieAuth


async def passed_headers(method: str, headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    seen: dict[str, object] = {}

    async def app(scope, receive, send):
        seen["headers"] = dict(scope["headers"])

    await SessionCookieAuth(app)({"type": "http", "method": method, "headers": headers}, None, None)
    return seen["headers"]  # type: ignore[return-value]


COOKIES = (b"cookie", b"rh_session=rh_secret; rh_csrf=abc123")


async def test_safe_methods_get_the_session_as_bearer():
    headers = await passed_headers("GET", [COOKIES])
    assert headers[b"authorization"] == b"Bearer rh_secret"


async def test_unsafe_methods_need_the_csrf_header_matching_the_cookie():
    assert b"authorization" not in await passed_headers("POST", [COOKIES])
    assert b"authorization" not in await passed_headers("POST", [COOKIES, (b"x-csrf-token", b"wrong")])
    headers = await passed_headers("DELETE", [COOKIES, (b"x-csrf-token", b"abc123")])
    assert headers[b"authorization"] == b"Bearer rh_secret"


async def test_explicit_credentials_win_over_the_cookie():
    headers = await passed_headers("GET", [COOKIES, (b"authorization", b"Bearer rh_other")])
    assert headers[b"authorization"] == b"Bearer rh_other"
    assert b"authorization" not in await passed_headers("GET", [COOKIES, (b"x-admin-token", b"t")])


async def test_no_csrf_cookie_means_no_credential_for_changes():
    headers = await passed_headers("POST", [(b"cookie", b"rh_session=rh_secret"), (b"x-csrf-token", b"")])
    assert b"authorization" not in headers


async def test_a_malformed_cookie_header_is_ignored():
    assert b"authorization" not in await passed_headers("GET", [(b"cookie", b'rh_session="unterminated')])


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/encode/jobs?status=failed", "/encode/jobs?status=failed"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_login_redirects_only_to_local_paths(target, expected):
    assert safe_next(target) == expected
