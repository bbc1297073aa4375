"""`reelhouse admin users|tokens ...` and `create-user` reading stdin."""

from __future__ import annotations

import pytest

from reelhouse.core.db.engine import create_engine
from reelhouse.core.security import users

from .test_secrets_at_rest import cli

PASSWORD = "a long enough password"


@pytest.mark.slow
async def test_users_and_tokens_commands(db_url, tmp_path):
    data = tmp_path / "data"
    mismatch = cli(db_url, data, "create-user", "ops", "--role", "operator", stdin=f"{PASSWORD}\nsomething else\n")
    assert mismatch.returncode == 1 and "does not match" in mismatch.stderr
    created = cli(db_url, data, "create-user", "ops", "--role", "operator", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert created.returncode == 0, created.stderr
    engine = create_engine(db_url)
    try:
        user_id = (await users.find_user(engine, "ops"))["id"]
        session = await users.create_session(engine, user_id, users.SessionPolicy())

        made = cli(db_url, data, "tokens", "create", "ops", "--name", "ci", "--expires-in", "30d")
        assert made.returncode == 0, made.stderr
        api_token = made.stdout.strip().splitlines()[-1]
        assert api_token.startswith("rh_") and await users.authenticate_token(engine, api_token)
        listed = cli(db_url, data, "tokens", "list", "--json")
        assert '"ci"' in listed.stdout and api_token not in listed.stdout and "token_hash" not in listed.stdout

        assert "ops" in cli(db_url, data, "users", "list").stdout
        locked = cli(db_url, data, "users", "lock", "ops")
        assert locked.returncode == 0 and "revoked 2 token(s)" in locked.stdout
        assert await users.authenticate_token(engine, api_token) is None
        assert await users.authenticate_token(engine, session.token) is None
        assert await users.authenticate_password(engine, "ops", PASSWORD) is None
        assert cli(db_url, data, "users", "unlock", str(user_id)).returncode == 0
        assert await users.authenticate_password(engine, "ops", PASSWORD) is not None

        changed = cli(db_url, data, "users", "set-password", "ops", stdin="the new password\nthe new password\n")
        assert changed.returncode == 0, changed.stderr
        assert await users.authenticate_password(engine, "ops", "the new password") is not None

        another = cli(db_url, data, "tokens", "create", "ops").stdout.strip().splitlines()[-1]
        token_id = (await users.list_tokens(engine, user_id=user_id))[0]["id"]
        assert cli(db_url, data, "tokens", "revoke", str(token_id)).returncode == 0
        assert await users.authenticate_token(engine, another) is None
        assert cli(db_url, data, "tokens", "revoke", "99999999999999999999").returncode != 0

        assert cli(db_url, data, "users", "delete", "ops", "--yes").returncode == 0
        assert await users.find_user(engine, "ops") is None
        missing = cli(db_url, data, "users", "lock", "ops")
        assert missing.returncode == 1 and "no user" in missing.stderr
    finally:
        await engine.dispose()


def test_job_commands_refuse_ids_past_the_64_bit_columns(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATA_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    for args in (["jobs", "show"], ["tasks", "cancel"], ["jobs", "retry"]):
        result = subprocess.run(
            [sys.executable, "-m", "reelhouse.cli", *args, "99999999999999999999"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
