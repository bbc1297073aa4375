"""`reelhouse admin ...`: users, tokens, master keys and the audit log.

Passwords are prompted for (twice) or read from stdin (a password line and, if given, a
confirmation line that must match), never taken from the command line, so they stay out of shell
history and `ps`. USER is a user id or a username.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

import typer

from reelhouse.config import parse_duration
from reelhouse.core.cli.common import console, fail, print_json, render_rows, with_runtime
from reelhouse.core.runtime import Runtime

admin_app = typer.Typer(help="Administration.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit log.", no_args_is_help=True)
users_app = typer.Typer(help="Users: list, lock, unlock, set-password, delete.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens and login sessions: list, create, revoke.", no_args_is_help=True)
admin_app.add_typer(audit_app, name="audit")
admin_app.add_typer(users_app, name="users")
admin_app.add_typer(tokens_app, name="tokens")


def read_new_password() -> str:
    """From the terminal (asked twice), or from stdin: one line, and a confirmation line that
    must match when it is there."""
    if sys.stdin.isatty():
        return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))
    password = sys.stdin.readline().rstrip("\r\n")
    confirmation = sys.stdin.readline()
    if confirmation and confirmation.rstrip("\r\n") != password:
        raise fail("the confirmation line does not match the password")
    if not password:
        raise fail("no password given on stdin")
    return password


async def _user_id(runtime: Runtime, ref: str) -> int:
    from reelhouse.core.security.users import find_user

    found = await find_user(runtime.engine, ref)
    if found is None:
        raise fail(f"no user {ref[:120]!r}")
    return int(found["id"])


def _run(action: Any) -> Any:
    from reelhouse.core.security.users import UserError

    try:
        return with_runtime(action)
    except UserError as exc:
        raise fail(str(exc)) from None


@admin_app.command("create-user")
def create_user(
    username: str,
    role: str = typer.Option("viewer", help="viewer | operator | admin"),
    password: str | None = typer.Option(None, help="Read from stdin/prompt when omitted (recommended)"),
) -> None:
    """Create a user."""
    from reelhouse.core.security.audit import append
    from reelhouse.core.security.users import create_user as create

    secret = password if password is not None else read_new_password()

    async def run(runtime: Runtime) -> int:
        user_id = await create(runtime.engine, username, secret, role)
        await append(runtime.engine, "cli", "user.create", f"user:{user_id}", {"role": role})
        return user_id

    user_id = _run(run)
    console.print(f"created user {username} (id {user_id}, role {role})")


# ---- users -------------------------------------------------------------------------------------


@users_app.command("list")
def users_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Users with their role, lock state and number of active tokens."""
    from reelhouse.core.security.users import list_users

    rows = _run(lambda rt: list_users(rt.engine, limit=10_000))
    if as_json:
        print_json(rows)
        return
    render_rows(rows, ["id", "username", "role", "locked", "active_tokens", "created_at"], "users")


def _lock(ref: str, locked: bool) -> None:
    from reelhouse.core.security.audit import append
    from reelhouse.core.security.users import set_locked

    async def run(runtime: Runtime) -> tuple[int, int]:
        user_id = await _user_id(runtime, ref)
        revoked = await set_locked(runtime.engine, user_id, locked) or 0
        action = "user.lock" if locked else "user.unlock"
        await append(runtime.engine, "cli", action, f"user:{user_id}", {"tokens_revoked": revoked})
        return user_id, revoked

    user_id, revoked = _run(run)
    if locked:
        console.print(f"locked user {user_id}; revoked {revoked} token(s)")
    else:
        console.print(f"unlocked user {user_id}")


@users_app.command("lock")
def users_lock(user: str) -> None:
    """Lock a user: passwords stop working, every token is revoked at once."""
    _lock(user, True)


@users_app.command("unlock")
def users_unlock(user: str) -> None:
    """Unlock a user (revoked tokens stay revoked)."""
    _lock(user, False)


@users_app.command("set-password")
def users_set_password(user: str) -> None:
    """Set a user's password (prompted, or stdin); the user's login sessions end."""
    from reelhouse.core.security.audit import append
    from reelhouse.core.security.users import set_password

    secret = read_new_password()

    async def run(runtime: Runtime) -> tuple[int, int]:
        user_id = await _user_id(runtime, user)
        ended = await set_password(runtime.engine, user_id, secret) or 0
        await append(runtime.engine, "cli", "user.password", f"user:{user_id}")
        return user_id, ended

    user_id, ended = _run(run)
    console.print(f"password of user {user_id} changed; {ended} session(s) ended")


@users_app.command("delete")
def users_delete(user: str, yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation")) -> None:
    """Delete a user and their tokens (their jobs stay, without an owner)."""
    from reelhouse.core.security.audit import append
    from reelhouse.core.security.users import delete_user

    if not yes and not typer.confirm(f"delete user {user}?"):
        raise typer.Exit(1)

    async def run(runtime: Runtime) -> int:
        user_id = await _user_id(runtime, user)
        await delete_user(runtime.engine, user_id)
        await append(runtime.engine, "cli", "user.delete", f"user:{user_id}")
        return user_id

    console.print(f"deleted user {_run(run)}")


# ---- tokens ------------------------------------------------------------------------------------


@tokens_app.command("list")
def tokens_list(
    user: str | None = typer.Option(None, help="Only this user's tokens"),
    include_inactive: bool = typer.Option(False, "--all", help="Include revoked and expired tokens"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Tokens (never their values): id, owner, name, kind, prefix, last use, expiry."""
    from reelhouse.core.security.users import list_tokens

    async def run(runtime: Runtime) -> list[dict[str, Any]]:
        user_id = await _user_id(runtime, user) if user else None
        return await list_tokens(runtime.engine, user_id=user_id, include_inactive=include_inactive, limit=10_000)

    rows = _run(run)
    if as_json:
        print_json(rows)
        return
    columns = ["id", "username", "name", "kind", "prefix", "last_used_at", "expires_at", "revoked"]
    render_rows(rows, columns, "tokens")


@tokens_app.command("create")
def tokens_create(
    user: str,
    name: str = typer.Option("api", help="What the token is for"),
    expires_in: str | None = typer.Option(None, help="Lifetime, e.g. 30d, 12h, 90m (default: no expiry)"),
) -> None:
    """Create an API token for USER; the token is printed once."""
    from reelhouse.core.db.types import utcnow
    from reelhouse.core.security.audit import append
    from reelhouse.core.security.users import issue_token

    lifetime = _lifetime(expires_in) if expires_in else None

    async def run(runtime: Runtime) -> Any:
        user_id = await _user_id(runtime, user)
        issued = await issue_token(
            runtime.engine, user_id, name[:120], expires_at=utcnow() + lifetime if lifetime else None
        )
        await append(runtime.engine, "cli", "token.create", f"token:{issued.id}")
        return issued

    issued = _run(run)
    console.print(f"token {issued.id} for {user} (expires {issued.expires_at or 'never'}):")
    print(issued.token)


def _lifetime(text: str) -> timedelta:
    text = text.strip().lower()
    try:
        if text.endswith("d") and text[:-1].isdigit():
            return timedelta(days=int(text[:-1]))
        return parse_duration(text)
    except ValueError:
        raise fail(f"invalid lifetime {text[:20]!r} (examples: 30d, 12h, 90m)") from None


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: int | None = typer.Argument(None, help="Token id (see tokens list)"),
    user: str | None = typer.Option(None, help="Revoke every token of this user instead"),
) -> None:
    """Revoke a token (or all of a user's); it stops working at once on every node."""
    from reelhouse.core.security.audit import append
    from reelhouse.core.security.users import revoke_api_token, revoke_user_tokens

    if (token_id is None) == (user is None):
        raise fail("give a token id or --user")

    async def run(runtime: Runtime) -> int:
        if user is not None:
            user_id = await _user_id(runtime, user)
            count = await revoke_user_tokens(runtime.engine, user_id)
            await append(runtime.engine, "cli", "token.revoke_all", f"user:{user_id}", {"revoked": count})
            return count
        assert token_id is not None
        if not 0 < token_id < 2**63 or not await revoke_api_token(runtime.engine, token_id):
            raise fail(f"no token {token_id}")
        await append(runtime.engine, "cli", "token.revoke", f"token:{token_id}")
        return 1

    console.print(f"revoked {_run(run)} token(s)")


# ---- master keys -------------------------------------------------------------------------------


@admin_app.command("rotate-keys")
def rotate_keys(
    new_key: bool = typer.Option(False, "--new-key", help="Generate a new primary key in DATA_DIR/master.key first"),
    drop_old: bool = typer.Option(False, "--drop-old", help="Then remove the old keys from the key file if unused"),
) -> None:
    """Re-wrap every secret at rest (OAuth tokens, the audit chain key, ...) under the primary
    master key, then say whether the old keys are still needed."""
    from reelhouse.core.security.audit import master_keys_of
    from reelhouse.core.security.keys import generate_key_text, read_key_file, write_key_file
    from reelhouse.core.security.secret_stores import rotate_all

    async def run(runtime: Runtime) -> tuple[Any, str, list[str]]:
        keys = master_keys_of(runtime.engine)
        assert keys is not None
        if new_key:
            if not keys.uses_key_file:
                raise fail(
                    "MASTER_ENCRYPTION_KEY is set: put the new key there and the old one in "
                    "MASTER_ENCRYPTION_KEY_PREVIOUS, then run rotate-keys"
                )
            keyring = keys.keyring()  # creates the file if this is the first key
            write_key_file(keys.key_file, [generate_key_text(), *read_key_file(keys.key_file)])
            keys.reload()
            console.print(f"new primary key {keys.keyring().primary_id} (was {keyring.primary_id})")
        summary = await rotate_all(runtime.engine, keys)
        primary = keys.keyring().primary_id
        old = sorted(set(keys.keyring().key_ids) - {primary})
        if drop_old:
            still = sorted(summary.still_in_use - {primary})
            if still:
                raise fail(f"records still use key(s) {', '.join(still)}; run rotate-keys again after restarting")
            if keys.uses_key_file:
                write_key_file(keys.key_file, read_key_file(keys.key_file)[:1])
                keys.reload()
                old = []
        return summary, primary, old

    summary, primary, old = with_runtime(run)
    for store, changed in summary.changed.items():
        console.print(f"{store}: {changed} re-wrapped, {summary.unchanged[store]} already under {primary}")
    in_use = sorted(summary.still_in_use - {primary})
    if in_use:
        console.print(f"still under old key(s): {', '.join(in_use)} (written meanwhile; run rotate-keys again)")
    elif old:
        console.print(
            f"every record is under {primary}; the old key(s) {', '.join(old)} can be removed "
            "(MASTER_ENCRYPTION_KEY_PREVIOUS, or `rotate-keys --drop-old` for the key file)"
        )
    else:
        console.print(f"every record is under {primary}; no old keys are configured")


# ---- audit -------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    expect_head: str | None = typer.Option(None, help="A head hash kept from an earlier verify or export"),
    expect_count: int | None = typer.Option(None, help="The row count that went with --expect-head"),
) -> None:
    """Check the audit log's keyed hash chain and its sealed head; prints the head hash and row
    count (keep them elsewhere). Exits 1 and names the first bad row if anything is wrong."""
    from reelhouse.core.security.audit import verify

    if expect_head is not None and (len(expect_head) != 64 or any(c not in "0123456789abcdef" for c in expect_head)):
        raise fail("--expect-head must be a 64-character hex hash")
    result = with_runtime(lambda rt: verify(rt.engine, expect_head=expect_head, expect_count=expect_count))
    if result.ok:
        console.print(f"audit log intact: {result.rows_checked} rows verified")
        console.print(f"head {result.head} count {result.rows_checked}")
        return
    where = f"at row id {result.bad_row_id}" if result.bad_row_id is not None else "at its end"
    raise fail(
        f"audit log BROKEN {where}: {result.problem} ({result.rows_checked} rows before it verified; "
        f"head {result.head})"
    )
