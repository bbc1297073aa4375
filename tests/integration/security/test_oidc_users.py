"""OIDC accounts provisioned as local users on SQLite and PostgreSQL: linked by (issuer, subject),
never by name; roles follow the provider; locked users stay locked; concurrent first logins
make one user."""

from __future__ import annotations

import asyncio

from reelhouse.core.security import users
from reelhouse.core.security.passwords import verify_password

ISSUER = "https://id.example.test"


async def test_first_login_provisions_and_later_logins_update_the_role(engine) -> None:
    principal, created = await users.provision_oidc_user(engine, ISSUER, "sub-1", "olga", "operator", login=True)
    assert created and principal is not None
    assert (principal.name, principal.role, principal.via) == ("olga", "operator", "oidc")
    again, created = await users.provision_oidc_user(engine, ISSUER, "sub-1", "olga-renamed", "admin", login=True)
    assert not created and again is not None
    assert (again.user_id, again.name, again.role) == (principal.user_id, "olga", "admin")
    assert (await users.find_user(engine, "olga"))["role"] == "admin"  # type: ignore[index]
    assert await users.oidc_user_role(engine, ISSUER, "sub-1") == "admin"
    assert await users.oidc_user_role(engine, ISSUER, "unknown") is None
    # Bearer requests (login=False): read-only when nothing changed, the role updated when it did.
    same, created = await users.provision_oidc_user(engine, ISSUER, "sub-1", None, "admin", login=False)
    assert not created and same == again
    lower, _ = await users.provision_oidc_user(engine, ISSUER, "sub-1", None, "viewer", login=False)
    assert lower is not None and lower.role == "viewer"
    assert await users.oidc_user_role(engine, ISSUER, "sub-1") == "viewer"
    # Such a user has no password: nothing verifies against its stored hash.
    assert not verify_password(users.NO_PASSWORD, "")
    assert await users.authenticate_password(engine, "olga", "!oidc") is None


async def test_names_never_capture_existing_users(engine) -> None:
    local = await users.create_user(engine, "admin", "correct horse battery", "admin")
    principal, created = await users.provision_oidc_user(engine, ISSUER, "evil", "admin", "viewer", login=True)
    assert created and principal is not None
    assert principal.user_id != local and principal.name.startswith("admin-") and principal.role == "viewer"
    assert (await users.find_user(engine, local))["role"] == "admin"  # type: ignore[index]
    # The same name at another issuer is another account too; unusable names are cleaned up.
    other, _ = await users.provision_oidc_user(engine, "https://other.test", "evil", "admin", "viewer", login=False)
    assert other is not None and other.user_id not in (local, principal.user_id)
    odd, _ = await users.provision_oidc_user(engine, ISSUER, "x", "  Jane Doe/ops ", "viewer", login=False)
    assert odd is not None and odd.name == "Jane-Doe-ops"
    nameless, _ = await users.provision_oidc_user(engine, ISSUER, "y", None, "viewer", login=False)
    assert nameless is not None and nameless.name.startswith("oidc-")


async def test_locked_and_deleted_users(engine) -> None:
    principal, _ = await users.provision_oidc_user(engine, ISSUER, "sub-2", "lee", "viewer", login=True)
    assert principal is not None and principal.user_id is not None
    await users.set_locked(engine, principal.user_id, True)
    assert await users.provision_oidc_user(engine, ISSUER, "sub-2", "lee", "admin", login=True) == (None, False)
    assert (await users.find_user(engine, "lee"))["role"] == "viewer"  # type: ignore[index]
    assert await users.delete_user(engine, principal.user_id)
    fresh, created = await users.provision_oidc_user(engine, ISSUER, "sub-2", "lee", "viewer", login=True)
    assert created and fresh is not None  # a new user: the old one and its link are gone


async def test_concurrent_first_logins_make_one_user(engine) -> None:
    results = await asyncio.gather(
        *(users.provision_oidc_user(engine, ISSUER, "sub-3", "sam", "viewer", login=True) for _ in range(5))
    )
    ids = {p.user_id for p, _created in results if p is not None}
    assert len(ids) == 1
    assert sum(created for _p, created in results) == 1
    assert len([u for u in await users.list_users(engine) if u["username"].startswith("sam")]) == 1


async def test_migration_matches_the_table_definition(engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from reelhouse.core.db.models import metadata

    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn)
        return [d for d in compare_metadata(context, metadata) if "oidc_identities" in repr(d)]

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []
