"""docs/OPERATIONS.md's fenced blocks, run as written; nothing in the document is skipped.

- `sql` blocks run on the running server's SQLite database and on a migrated PostgreSQL scratch
  database; `sql postgresql` / `sql sqlite` on that one only; `sql postgresql server-config`
  (ALTER SYSTEM, pg_reload_conf) on a private PostgreSQL cluster, never on the shared server.
- `bash` blocks run in document order, with `set -euo pipefail`, as one shell session: what a
  block exports is there for the next ones (the document's variables block sets defaults that
  this test's values override). They run against a running `reelhouse serve` on SQLite; a block
  tagged `postgresql` runs in a second pass against a PostgreSQL database instead (both tags:
  both passes). `restart` restarts the server after the block, `stop-server` stops it before and
  starts it after (a restart takes the shell's MASTER_ENCRYPTION_KEY* to the server, as the
  document says to deploy them), `daemons` starts every line as a long-running process (all at
  once, each `serve` on its own address, as on its own host), waits until each serves (or
  registers, for a worker), checks that only the nodes with a worker registered one, and stops
  them with SIGTERM (a clean exit expected).
- Configuration blocks (`bash env`: the OIDC variables; the plugin manifest's `toml`) are checked
  against the settings and the loader's fields; fences indented in a list item count too.
- What the data of a block names is real: `$JOB_ID`/`$TASK_ID` are an encode job this test
  submitted (its source first answers 404, then holds the connection, so the retried task is
  running when the block cancels it), the Twitch token refreshed was connected through the fake
  id.twitch.tv of tests/fakes, the profiling endpoint is the server's (`ENABLE_PPROF`).

`reelhouse` inside the blocks is a small shell shim that hands its arguments, stdin and
environment to this test process, which runs the real Typer app (settings read afresh from that
environment): a fresh Python per command would cost seconds each on a loaded machine. The
commands still reach the same database as the server; `reelhouse serve` and `reelhouse worker`
(long-running) are exec'd for real, and `tests/integration/backup` runs the CLI as processes.

`docker` and `kubectl` appear only in the prose (no Docker engine, no cluster here):
`test_container_commands_name_what_deploy_has` checks them offline. The `reelhouse` commands of
the prose carry placeholders (ID, NAME): `test_reelhouse_commands_in_the_prose_exist` resolves
each against the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import shutil
import signal
import socketserver
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
import httpx
import pytest
import yaml

from tests.conftest import _postgres_dsn, create_postgres_database, drop_postgres_database
from tests.e2e.harness import Server, _wait_ready, free_port, run_server

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "OPERATIONS.md"
REELHOUSE = str(Path(sys.executable).with_name("reelhouse"))
ADMIN_TOKEN = "runbook-admin-token-0123456789abcdef"
VOD_ID = "1234567890"
TAGS = {"sqlite", "postgresql", "server-config", "restart", "stop-server", "daemons", "env"}
KEY_VARIABLES = ("MASTER_ENCRYPTION_KEY", "MASTER_ENCRYPTION_KEY_PREVIOUS")
# The shell's own variables, not carried from one block to the next.
SHELL_OWN = {"PWD", "OLDPWD", "SHLVL", "_", "RUNBOOK_ENV_OUT"}
SHIM = """#!/usr/bin/env bash
case "${{1:-}}" in serve|worker) exec {real} "$@";; esac
exec 3<>/dev/tcp/127.0.0.1/{port}
{{
  echo "$#"
  for a in "$@"; do printf '%s' "$a" | base64 -w0; echo; done
  env -0 | base64 -w0; echo
  base64 -w0; echo
}} >&3
IFS= read -r code <&3
IFS= read -r out <&3
IFS= read -r err <&3
printf '%s' "$out" | base64 -d
printf '%s' "$err" | base64 -d >&2
exit "$code"
"""


@dataclass
class Block:
    line: int
    lang: str
    tags: dict[str, str]
    text: str


def blocks(markdown: str) -> list[Block]:
    """Fenced blocks, also those indented inside a list item (their indent removed)."""
    found: list[Block] = []
    current: tuple[str, dict[str, str], str] | None = None
    start, lines = 0, []
    for number, raw in enumerate(markdown.splitlines(), 1):
        if current is None:
            opening = re.match(r"^(\s*)```(\S+)(.*)$", raw)
            if opening:
                words = opening.group(3).split()
                tags = dict(w.split("=", 1) if "=" in w else (w, "") for w in words)
                current, start, lines = (opening.group(2), tags, opening.group(1)), number, []
        elif raw.strip() == "```":
            found.append(Block(start, current[0], current[1], "\n".join(lines)))
            current = None
        else:
            indent = current[2]
            assert raw.startswith(indent) or not raw.strip(), f"line {number}: less indented than its fence"
            lines.append(raw[len(indent) :])
    assert current is None, "an unclosed fence"
    return found


def statements(sql: str) -> list[str]:
    out, pending = [], ""
    for line in sql.splitlines():
        if line.strip().startswith("--") and not pending:
            continue
        pending += line + "\n"
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    assert not pending.strip(), f"unterminated statement: {pending}"
    return out


def engines(block: Block) -> set[str]:
    """Where a block runs: its engine tags; untagged SQL on both, untagged shell on the server (SQLite)."""
    named = {"sqlite", "postgresql"} & set(block.tags)
    if named:
        return named
    return {"sqlite", "postgresql"} if block.lang == "sql" else {"sqlite"}


class CliServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve_cli() -> tuple[CliServer, list[list[str]]]:
    from typer.testing import CliRunner

    from reelhouse.cli import app
    from reelhouse.config import reset_settings_cache

    ran: list[list[str]] = []
    lock = threading.Lock()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            count = int(self.rfile.readline())
            args = [base64.b64decode(self.rfile.readline().strip()).decode() for _ in range(count)]
            env_raw = base64.b64decode(self.rfile.readline().strip())
            stdin = base64.b64decode(self.rfile.readline().strip())
            env: dict[str, str | None] = dict(
                item.split("=", 1) for item in env_raw.decode().split("\0") if "=" in item
            )
            env["COLUMNS"] = "200"
            # CliRunner adds to os.environ: a key variable the shell unset must be gone here too.
            env.update({name: None for name in KEY_VARIABLES if name not in env})
            with lock:
                ran.append(args)
                reset_settings_cache()
                try:
                    result = CliRunner().invoke(app, args, env=env, input=stdin)
                finally:
                    reset_settings_cache()
            stderr = result.stderr
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                stderr += f"\nexception: {type(result.exception).__name__}: {result.exception}"
                code = 99
            else:
                code = result.exit_code
            for part in (
                str(code).encode(),
                base64.b64encode(result.stdout.encode()),
                base64.b64encode(stderr.encode()),
            ):
                self.wfile.write(part + b"\n")

    server = CliServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, ran


class Source(socketserver.ThreadingTCPServer):
    """An encode job's source URL: 404 (a permanent failure) until `hold()`, then it keeps each
    request open without answering, so a retried fetch is still running when it is cancelled."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        self.held = threading.Event()
        source = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline()
                while line.strip():  # the request head, read up to its blank line
                    line = self.rfile.readline()
                if not source.holding.is_set():
                    self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                source.held.set()
                source.release.wait(300)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server_address[1]}/clip.mp4"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


def seed_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO vods (channel, twitch_vod_id, title, date, processed, download_state, created_at, updated_at)"
        " VALUES ('', ?, 'Runbook VOD', CURRENT_TIMESTAMP, 0, 'failed', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        (VOD_ID,),
    )
    conn.commit()
    conn.close()


async def prepare_postgres(dsn: str) -> None:
    from reelhouse.core.db.engine import create_engine
    from reelhouse.core.db.migrate import run_migrations

    engine = create_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"))
    await run_migrations(engine)
    await engine.dispose()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO vods (channel, twitch_vod_id, title, date, processed, download_state, created_at)"
            " VALUES ('', $1, 'Runbook VOD', now(), false, 'failed', now())",
            VOD_ID,
        )
    finally:
        await conn.close()


async def run_sql_postgres(dsn: str, sql_blocks: list[Block], where: str) -> int:
    ran = 0
    conn = await asyncpg.connect(dsn)
    try:
        for block in sql_blocks:
            for statement in statements(block.text):
                try:
                    await conn.execute(statement)
                except asyncpg.PostgresError as exc:
                    raise AssertionError(f"OPERATIONS.md line {block.line} on {where}: {statement}\n{exc}") from None
                ran += 1
    finally:
        await conn.close()
    return ran


async def settings_applied(dsn: str) -> dict[str, Any]:
    """After pg_reload_conf (asynchronous: the postmaster reads the file when it gets the
    signal), a new session sees work_mem and a pending restart for shared_buffers."""
    deadline = time.monotonic() + 60
    while True:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT name, setting, unit, pending_restart FROM pg_settings"
                " WHERE name IN ('work_mem', 'shared_buffers', 'effective_cache_size')"
            )
        finally:
            await conn.close()
        found = {row["name"]: dict(row) for row in rows}
        done = found["work_mem"]["setting"] == str(256 * 1024) and found["shared_buffers"]["pending_restart"]
        if done or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def registered_pids(dsn: str, worker_id: str | None = None) -> set[int]:
    """The processes with a row in `workers` (one of them, by id)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, pid FROM workers")
    finally:
        await conn.close()
    return {row["pid"] for row in rows if worker_id is None or row["id"] == worker_id}


@dataclass
class Shell:
    """One operator's shell across blocks: exported variables carry over."""

    env: dict[str, str]
    cwd: Path
    outputs: list[tuple[Block, str, str]] = field(default_factory=list)

    def run(self, block: Block, text: str | None = None) -> subprocess.CompletedProcess[str]:
        dump = self.cwd / ".runbook-env"
        dump.unlink(missing_ok=True)
        script = "set -euo pipefail\ntrap 'env -0 > \"$RUNBOOK_ENV_OUT\"' EXIT\n" + (text or block.text)
        result = subprocess.run(
            ["bash", "-c", script],
            env={**self.env, "RUNBOOK_ENV_OUT": str(dump)},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode == 0:
            pairs = (item.split("=", 1) for item in dump.read_text().split("\0") if "=" in item)
            self.env = {k: v for k, v in pairs if k not in SHELL_OWN}
            self.outputs.append((block, result.stdout, result.stderr))
        return result


def start_server(server: Server, env: dict[str, str]) -> None:
    assert server.log_path is not None
    with open(server.log_path, "ab") as log:
        server.process = subprocess.Popen(
            [REELHOUSE, "serve"], env=env, cwd=server.data_dir.parent, stdout=log, stderr=subprocess.STDOUT
        )
    _wait_ready(server)


# How a process that stopped cleanly on SIGTERM ends: 0, or uvicorn's re-raised SIGTERM after
# its shutdown (what systemd counts as a clean stop too).
STOPPED = (0, -signal.SIGTERM)


def stop_server(server: Server) -> None:
    assert server.process is not None
    server.process.terminate()
    assert server.process.wait(timeout=60) in STOPPED, server.log_tail(30)


def server_env(base: dict[str, str], shell: Shell) -> dict[str, str]:
    """The server's environment after the operator deployed the shell's master key variables."""
    env = {k: v for k, v in base.items() if k not in KEY_VARIABLES}
    env.update({k: shell.env[k] for k in KEY_VARIABLES if k in shell.env})
    return env


def run_daemons(block: Block, shell: Shell, pg_dsn: str) -> int:
    """Every line of the block as its own node, all at once (as a deployment runs them): each
    `serve` on an address of its own (another host, in a deployment), until it serves; the
    worker until it registered. Then SIGTERM to each."""
    nodes: list[tuple[str, list[str], dict[str, str], subprocess.Popen[bytes], Path]] = []
    try:
        for line in block.text.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            assert "$" not in line, f"line {block.line}: a daemon line is run without a shell: {line}"
            assignments = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_][A-Z0-9_]*=", w))
            argv = words[len(assignments) :]
            assert argv[:1] == ["reelhouse"] and argv[1] in ("serve", "worker"), line
            host = {}
            if argv[1] == "serve" and any(node[1][1] == "serve" for node in nodes):
                port = free_port()
                host = {"HTTP_ADDR": f"127.0.0.1:{port}", "API": f"http://127.0.0.1:{port}"}
            env = {**shell.env, **host, **assignments}
            log_path = shell.cwd / f"node-{len(nodes)}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(argv, env=env, cwd=shell.cwd, stdout=log, stderr=subprocess.STDOUT)
            nodes.append((line.split("#")[0].strip(), argv, env, process, log_path))
        deadline = time.monotonic() + 180
        waiting = list(nodes)
        while waiting:
            for node in list(waiting):
                line, argv, env, process, log_path = node
                assert process.poll() is None, f"{line!r} exited {process.returncode}:\n{log_path.read_text()[-3000:]}"
                if argv[1] == "serve":
                    try:
                        up = httpx.get(env["API"] + "/readyz", timeout=2).status_code == 200
                    except httpx.HTTPError:
                        up = False
                else:
                    up = asyncio.run(registered_pids(pg_dsn, env["WORKER_ID"])) == {process.pid}
                if up:
                    waiting.remove(node)
            assert time.monotonic() < deadline, f"never ready: {[n[0] for n in waiting]}"
            time.sleep(0.3)
        # the API node runs no worker: only the kernel's embedded worker and worker-01 registered
        workers = asyncio.run(registered_pids(pg_dsn))
        pids = {node[0]: node[3].pid for node in nodes}
        assert pids["EMBEDDED_WORKER=false reelhouse serve"] not in workers, (pids, workers)
        assert pids["reelhouse serve"] in workers, (pids, workers)
        for node in nodes:
            node[3].send_signal(signal.SIGTERM)
        for line, _, _, process, log_path in nodes:
            assert process.wait(timeout=90) in STOPPED, f"{line!r} after SIGTERM:\n{log_path.read_text()[-3000:]}"
    finally:
        for node in nodes:
            if node[3].poll() is None:
                node[3].kill()
                node[3].wait()
    return len(nodes)


def connect_twitch(server: Server, twitch: Any) -> None:
    """What the admin's browser does once (start, consent at Twitch, callback)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = client.post("/auth/twitch/start", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert started.status_code == 303, started.text
        state = parse_qs(urlparse(started.headers["location"]).query)["state"][0]
        cookie = started.cookies["rh_oauth_twitch"]
        client.cookies.clear()
        done = client.get(
            "/auth/twitch/callback",
            params={"state": state, "code": twitch.issue_authorization_code()},
            headers={"Cookie": f"rh_oauth_twitch={cookie}"},
        )
        assert done.status_code == 200, done.text


def failed_encode_job(server: Server, source: Source) -> tuple[str, str]:
    headers = {"X-Admin-Token": ADMIN_TOKEN}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        created = client.post("/v1/jobs", json={"source_url": source.url, "profile": "hls-default"})
        assert created.status_code == 201, created.text
        job_id, task_id = str(created.json()["job_id"]), str(created.json()["task_id"])
        wait_for_job(client, job_id, "failed")
    return job_id, task_id


def wait_for_job(client: httpx.Client, job_id: str, status: str) -> None:
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] != status:
        assert time.monotonic() < deadline, f"job {job_id} never became {status}: {job}"
        time.sleep(0.3)


@dataclass
class Check:
    """What a block must have done, beyond exiting 0, found by a piece of its text."""

    marker: str
    check: Callable[[subprocess.CompletedProcess[str]], None]
    before: Callable[[], None] | None = None
    used: int = 0


def runnable() -> list[Block]:
    return [b for b in blocks(DOC.read_text()) if b.lang in ("sql", "bash", "sh")]


def private_sql_blocks() -> list[Block]:
    return [b for b in runnable() if b.lang == "sql" and "server-config" in b.tags]


def test_every_block_is_one_this_file_runs():
    doc = blocks(DOC.read_text())
    tagged = [(b.line, b.tags) for b in doc if set(b.tags) - TAGS]
    assert not tagged, f"blocks with tags this test does not know (nothing is skipped): {tagged}"
    others = {b.lang for b in doc} - {"sql", "bash", "sh"}
    assert others <= {"yaml", "promql", "text", "json", "ini", "toml"}, f"blocks of an unknown kind: {others}"
    assert all(engines(b) == {"postgresql"} for b in private_sql_blocks()), "server configuration is PostgreSQL's"
    daemons = [b for b in runnable() if "daemons" in b.tags]
    assert daemons and all(engines(b) == {"postgresql"} for b in daemons)


def test_configuration_blocks_are_accepted(monkeypatch):
    """The blocks that are configuration, not commands: the OIDC variables (`bash env`: run in
    the shell pass too, where they only assign) are accepted by the settings and the OIDC client
    as they stand, and the plugin manifest is TOML with the fields the loader reads."""
    from reelhouse.config import reset_settings_cache
    from reelhouse.core.security.oidc import OidcClient
    from reelhouse.core.security.settings import OidcSettings

    doc = blocks(DOC.read_text())
    env_blocks = [b for b in doc if "env" in b.tags]
    assert len(env_blocks) == 1 and env_blocks[0].lang == "bash"
    dumped = subprocess.run(
        ["bash", "-c", "set -euo pipefail -a\n" + env_blocks[0].text + "\nenv -0"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assigned = dict(item.split("=", 1) for item in dumped.split("\0") if item.startswith("OIDC_"))
    assert len(assigned) == 7, assigned
    for name, value in assigned.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    try:
        oidc = OidcSettings()
        client = OidcClient(oidc)  # checks the issuer and the role map, as start-up does
    finally:
        reset_settings_cache()
    assert oidc.enabled and oidc.default_role == "viewer" and oidc.display_name == "Company SSO"
    assert client.role_map == {"video-admins": "admin", "video-ops": "operator"}

    import tomllib

    manifests = [tomllib.loads(b.text) for b in doc if b.lang == "toml"]
    assert len(manifests) == 1
    plugin = manifests[0]["plugin"]
    assert {"id", "type", "version", "api_version", "entry"} <= set(plugin) and ":" in plugin["entry"]
    assert plugin["type"] in ("storage", "encoder", "publisher", "auth")


@pytest.fixture
def cli_shim(tmp_path: Path) -> Iterator[tuple[Path, list[list[str]]]]:
    server_cli, calls = serve_cli()
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    (shim_dir / "reelhouse").write_text(SHIM.format(port=server_cli.server_address[1], real=shlex.quote(REELHOUSE)))
    (shim_dir / "reelhouse").chmod(0o755)
    (tmp_path / "deploy").symlink_to(REPO / "deploy")  # blocks name deploy/... as from a checkout
    try:
        yield shim_dir, calls
    finally:
        server_cli.shutdown()
        server_cli.server_close()


@pytest.mark.slow
def test_sql_blocks_run_on_postgresql(private_postgres):
    private = private_sql_blocks()
    # ALTER SYSTEM and pg_reload_conf: on a cluster of this test's own.
    ran = asyncio.run(run_sql_postgres(private_postgres.dsn(), private, "the private cluster"))
    assert ran == 5
    applied = asyncio.run(settings_applied(private_postgres.dsn()))
    assert applied["work_mem"]["setting"] == str(256 * 1024) and applied["work_mem"]["unit"] == "kB", applied
    assert applied["effective_cache_size"]["setting"] == str(4 * 1024 * 1024 // 8), applied  # 8 kB pages
    assert applied["shared_buffers"]["pending_restart"], applied  # takes effect at the next restart only

    pg_sql = [b for b in runnable() if b.lang == "sql" and "postgresql" in engines(b) and b not in private]

    async def scratch() -> int:
        name = await create_postgres_database()
        try:
            await prepare_postgres(_postgres_dsn(name))
            return await run_sql_postgres(_postgres_dsn(name), pg_sql, "PostgreSQL")
        finally:
            await drop_postgres_database(name)

    assert asyncio.run(scratch()) >= 25


@pytest.mark.slow
@pytest.mark.timeout(900)  # eight starts of `reelhouse serve` (five restarts the document asks for)
def test_shell_blocks_run_against_a_running_server(tmp_path, cli_shim, twitch, twitch_server):
    shim_dir, cli_calls = cli_shim
    source = Source()
    key_backups = tmp_path / "keys"
    key_backups.mkdir(mode=0o700)
    pprof_port = free_port()
    extra = {
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "BACKUP_VERIFY_INTERVAL": "0",
        "BACKUP_DIR": str(tmp_path / "backups"),
        "LOG_FORMAT": "json",
        "ACCESS_LOG": "true",
        "ENABLE_PPROF": "true",
        "PPROF_ADDR": f"127.0.0.1:{pprof_port}",
        "OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32",  # the encode job's source
        "TWITCH_CLIENT_ID": twitch.client_id,
        "TWITCH_CLIENT_SECRET": twitch.client_secret,
        "TWITCH_AUTH_BASE": f"{twitch_server.base_url}/oauth2",
        "TWITCH_API_BASE": f"{twitch_server.base_url}/helix",
        "TWITCH_REDIRECT_URI": twitch.redirect_uri,
        "TWITCH_SCOPES": "chat:read,chat:edit",
    }
    timings: list[tuple[float, str]] = []
    mark = time.monotonic()
    statements_run = shell_blocks = 0
    try:
        with run_server(tmp_path / "srv", extra) as server:
            timings.append((time.monotonic() - mark, "the server started"))
            base_env = dict(server.env)
            db = server.data_dir / "reelhouse.db"
            seed_sqlite(db)
            connect_twitch(server, twitch)
            job_id, task_id = failed_encode_job(server, source)
            source.holding.set()
            shell = Shell(
                env={
                    **{k: v for k, v in server.env.items() if not k.startswith(("PYTEST", "COV_"))},
                    "PATH": f"{shim_dir}:/usr/local/bin:/usr/bin:/bin",
                    "API": server.url,
                    "VOD_ID": VOD_ID,
                    "HOME": str(tmp_path),
                    "LOG_FILE": str(server.log_path),
                    "KEY_BACKUP_DIR": str(key_backups),
                    "JOB_ID": job_id,
                    "TASK_ID": task_id,
                    "USER_NAME": "runbook-alice",
                    "PW": "runbook alice's pass 7",
                    "PPROF": f"http://127.0.0.1:{pprof_port}",
                    "PROFILE_SECONDS": "1",
                },
                cwd=tmp_path,
            )
            checks = sqlite_checks(server, shell, twitch, job_id, task_id, key_backups)
            for block in runnable():
                if "sqlite" not in engines(block):
                    continue
                if block.lang == "sql":
                    statements_run += run_sql_sqlite(db, block)
                    continue
                if "stop-server" in block.tags:
                    stop_server(server)
                matching = [c for c in checks if c.marker in block.text]
                for check in matching:
                    if check.before:
                        check.before()
                began = time.monotonic()
                result = shell.run(block)
                timings.append((time.monotonic() - began, f"line {block.line}"))
                assert result.returncode == 0, failure(block, result, server.log_tail(20))
                for check in matching:
                    check.check(result)
                    check.used += 1
                if {"restart", "stop-server"} & set(block.tags):
                    began = time.monotonic()
                    if "restart" in block.tags:
                        stop_server(server)
                    start_server(server, server_env(base_env, shell))
                    timings.append((time.monotonic() - began, f"restart after line {block.line}"))
                shell_blocks += 1
            assert [c.marker for c in checks if c.used != 1] == [], "each check matches exactly one block"
            assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200  # after every restart
    finally:
        source.close()

    shell_text = [b.text for b in runnable() if b.lang != "sql" and "sqlite" in engines(b)]
    curl_calls = sum(text.count("curl ") for text in shell_text)
    print(f"runbook: {shell_blocks} shell blocks, {statements_run} SQLite statements, {len(cli_calls)} CLI calls")
    print(f"runbook: {time.monotonic() - mark:.0f} s; slowest:", sorted(timings, reverse=True)[:10])
    assert shell_blocks >= 30 and curl_calls >= 30 and statements_run >= 25
    commands = {" ".join(call[:2]) for call in cli_calls}
    assert {
        "backup create",
        "backup verify",
        "backup restore",
        "backup latest",
        "status",
        "migrate",
        "tasks list",
        "tasks retry",
        "jobs cancel",
        "jobs show",
        "admin rotate-keys",
        "admin tokens",
        "admin users",
        "admin create-user",
    } <= commands, commands


@pytest.mark.slow
def test_postgresql_shell_blocks_run(tmp_path, cli_shim):
    """A backup of PostgreSQL restored and checked with psql, and the nodes of a deployment
    started on it: each `reelhouse serve` / `reelhouse worker` line until it serves, then SIGTERM."""
    shim_dir, cli_calls = cli_shim
    name = asyncio.run(create_postgres_database())
    dsn = _postgres_dsn(name)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))},
        "PATH": f"{shim_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_URL": dsn,
        "DATA_DIR": str(tmp_path / "data"),
        "BACKUP_DIR": str(tmp_path / "backups"),
        "HTTP_ADDR": f"127.0.0.1:{port}",
        "API": f"http://127.0.0.1:{port}",
        "RATE_LIMIT_ENABLED": "false",
        "WEB_NODE_MODULES": str(REPO / "node_modules"),
    }
    shell = Shell(env=env, cwd=tmp_path)
    ran = []
    try:
        asyncio.run(prepare_postgres(dsn))
        setup = Block(0, "bash", {}, "reelhouse backup create")
        began = time.monotonic()
        made = shell.run(setup)
        assert made.returncode == 0, failure(setup, made, "")
        print(f"runbook (PostgreSQL): migrations and a backup took {time.monotonic() - began:.1f} s")
        for block in runnable():
            if block.lang == "sql" or "postgresql" not in engines(block):
                continue
            began = time.monotonic()
            if "daemons" in block.tags:
                assert run_daemons(block, shell, dsn) == 3
            else:
                result = shell.run(block)
                assert result.returncode == 0, failure(block, result, "")
                if "psql" in block.text:
                    assert re.search(r"^\s*1\s*$", result.stdout, re.M), result.stdout  # the seeded VOD, restored
                if "backup restore" in block.text:
                    assert "restore OK" in result.stdout, result.stdout
            ran.append(block.line)
            print(f"runbook (PostgreSQL): line {block.line} took {time.monotonic() - began:.1f} s")
    finally:
        asyncio.run(drop_postgres_database(name))
    assert len(ran) == 3, ran
    commands = {" ".join(call[:2]) for call in cli_calls}
    assert {"backup create", "backup restore", "backup latest", "migrate"} <= commands, commands


def run_sql_sqlite(db: Path, block: Block) -> int:
    ran = 0
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        for statement in statements(block.text):
            try:
                conn.execute(statement).fetchall()
            except sqlite3.Error as exc:
                raise AssertionError(f"OPERATIONS.md line {block.line} on SQLite: {statement}\n{exc}") from None
            ran += 1
    finally:
        conn.close()
    return ran


def failure(block: Block, result: subprocess.CompletedProcess[str], log: str) -> str:
    return (
        f"OPERATIONS.md line {block.line} failed ({result.returncode}):\n{block.text}\n"
        f"--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-3000:]}\n{log}"
    )


def sqlite_checks(
    server: Server, shell: Shell, twitch: Any, job_id: str, task_id: str, key_backups: Path
) -> list[Check]:
    key_file = server.data_dir / "master.key"

    def keys_in_file() -> int:
        return len([line for line in key_file.read_text().splitlines() if line.strip() and not line.startswith("#")])

    def jobs(result: subprocess.CompletedProcess[str]) -> None:
        assert f'"id": "{job_id}"' in result.stdout or f'"id": {job_id}' in result.stdout, result.stdout
        assert f"task {task_id} requeued" in result.stdout, result.stdout
        assert re.search(rf"task {task_id}: (cancelled|cancelling)", result.stdout), result.stdout
        with httpx.Client(base_url=server.url, headers={"X-Admin-Token": ADMIN_TOKEN}, timeout=30) as client:
            wait_for_job(client, job_id, "cancelled")

    def new_key(result: subprocess.CompletedProcess[str]) -> None:
        assert "new primary key" in result.stdout and keys_in_file() == 2, result.stdout

    def drop_old(result: subprocess.CompletedProcess[str]) -> None:
        assert "every record is under" in result.stdout and keys_in_file() == 1, result.stdout

    def to_environment(result: subprocess.CompletedProcess[str]) -> None:
        assert "MASTER_ENCRYPTION_KEY" in shell.env and "re-wrapped" in result.stdout, result.stdout

    def retire_file(result: subprocess.CompletedProcess[str]) -> None:
        assert "every record is under" in result.stdout, result.stdout
        assert not key_file.exists() and len(list(key_backups.glob("master.key.retired-*"))) == 1

    def env_rotation(result: subprocess.CompletedProcess[str]) -> None:
        assert shell.env["MASTER_ENCRYPTION_KEY_PREVIOUS"] != shell.env["MASTER_ENCRYPTION_KEY"]

    def previous_gone(result: subprocess.CompletedProcess[str]) -> None:
        assert "every record is under" in result.stdout and "MASTER_ENCRYPTION_KEY_PREVIOUS" not in shell.env

    def users(result: subprocess.CompletedProcess[str]) -> None:
        for said in ("created user runbook-alice", "locked user", "unlocked user", "password of user", "deleted user"):
            assert said in result.stdout, (said, result.stdout)
        assert result.stdout.count("revoked 1 token(s)") == 1, result.stdout  # the ci token, by its id

    def refresh(result: subprocess.CompletedProcess[str]) -> None:
        # the stored token was encrypted before the key rotations above: it still decrypts
        assert twitch.token_requests[-1] == "refresh_token" and '"expires_in"' in result.stdout, result.stdout

    def profiles(result: subprocess.CompletedProcess[str]) -> None:
        cwd = shell.cwd
        assert (cwd / "cpu.txt").stat().st_size > 0
        assert "<html" in (cwd / "cpu.html").read_text().lower()
        assert "profiles" in json.loads((cwd / "cpu.speedscope.json").read_text())
        assert "thread " in result.stdout.lower(), result.stdout[:500]  # the stack dump

    def logged() -> None:
        # the access log line is written as the response goes out; wait for it, then grep
        deadline = time.monotonic() + 30
        while "abc-123-def" not in Path(shell.env["LOG_FILE"]).read_text(errors="replace"):
            assert time.monotonic() < deadline, "the request with X-Correlation-ID abc-123-def was never logged"
            time.sleep(0.1)

    def logs(result: subprocess.CompletedProcess[str]) -> None:
        lines = result.stdout.splitlines()
        assert len(lines) >= 2 and all("abc-123-def" in line for line in lines), result.stdout
        assert json.loads(lines[-1])["corr"] == "abc-123-def"

    def audit_rows(result: subprocess.CompletedProcess[str]) -> None:
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert rows and all(row["action"] and row["created_at"] for row in rows), result.stdout

    def restored(result: subprocess.CompletedProcess[str]) -> None:
        assert "restore OK" in result.stdout, result.stdout

    def counted(result: subprocess.CompletedProcess[str]) -> None:
        assert result.stdout.strip() == "1", result.stdout  # the seeded VOD, back from the backup

    return [
        Check('reelhouse jobs cancel "$JOB_ID"', jobs),
        Check("rotate-keys --new-key", new_key),
        Check("rotate-keys --drop-old", drop_old),
        Check('export MASTER_ENCRYPTION_KEY="$(openssl', to_environment),
        Check('mv "$DATA_DIR/master.key"', retire_file),
        Check("export MASTER_ENCRYPTION_KEY_PREVIOUS=", env_rotation),
        Check("unset MASTER_ENCRYPTION_KEY_PREVIOUS", previous_gone),
        Check('admin create-user "$USER_NAME"', users),
        Check("/auth/twitch/refresh", refresh),
        Check("/debug/pprof/profile", profiles),
        Check("grep -F 'abc-123-def'", logs, before=logged),
        Check("reelhouse backup restore --yes", restored),
        Check('"$API/v1/audit?limit=100"', audit_rows),
        Check('sqlite3 "$DATA_DIR/reelhouse.db"', counted),
    ]


# ---- docker and kubectl: named in the prose, checked offline -----------------------------------


def container_commands(markdown: str) -> list[str]:
    """Every `docker ...` / `kubectl ...` the document shows: inline code (which may wrap over a
    line break) and lines of fenced blocks."""
    prose, fenced = [], []
    inside = False
    for raw in markdown.splitlines():
        if raw.lstrip().startswith("```"):
            inside = not inside
            continue
        (fenced if inside else prose).append(raw)
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", "\n".join(prose))]
    lines = [line.split("#", 1)[0].strip() for line in fenced]
    return [c for c in spans + lines if re.match(r"(docker|kubectl)\s+\S", c)]  # not the bare tool name


def deploy_names() -> tuple[set[str], set[str]]:
    deployments = set()
    for path in (REPO / "deploy" / "kubernetes").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment":
                deployments.add(doc["metadata"]["name"])
    services = set(yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["services"])
    return deployments, services


def test_container_commands_name_what_deploy_has(tmp_path):
    commands = container_commands(DOC.read_text())
    assert len(commands) >= 10, commands
    deployments, services = deploy_names()
    kubectl = shutil.which("kubectl")
    if kubectl is None and os.environ.get("CI"):
        pytest.fail("kubectl (client only) is needed to check the document's kubectl commands")
    checked = 0
    for command in commands:
        words = shlex.split(command)
        for ref in words if words[0] == "kubectl" else []:
            kind, _, name = ref.partition("/")
            if kind in ("deploy", "deployment", "deployments") and name and not (REPO / ref).exists():
                assert name in deployments, f"{command}: no Deployment {name} in deploy/kubernetes"
        if words[0] == "docker":
            if words[1] == "build":
                context = REPO / words[-1]
                assert (context / "Dockerfile").is_file(), command
                tag = words[words.index("-t") + 1]
                assert re.fullmatch(r"[a-z0-9][a-z0-9._/-]*:[\w][\w.-]{0,127}", tag), command
            else:
                assert words[1] == "compose", command
                if "-f" in words:
                    assert (REPO / words[words.index("-f") + 1]).is_file(), command
                sub = [w for w in words[2:] if not w.startswith("-") and w not in ("deploy/compose.yaml",)]
                assert sub and sub[0] in ("up", "exec", "logs", "ps", "down", "pull", "restart"), command
                for scale in re.findall(r"--scale (\S+)=", command):
                    assert scale in services, command
            checked += 1
            continue
        if kubectl is None:
            continue
        if words[1:3] == ["apply", "-k"]:
            rendered = subprocess.run([kubectl, "kustomize", str(REPO / words[3])], capture_output=True, text=True)
            assert rendered.returncode == 0, rendered.stderr
            kinds = {d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d}
            assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds, kinds
        # Parsed by kubectl itself against a server that is not there: a bad flag or command is
        # refused before any connection; a good full command gets as far as connecting.
        probe = subprocess.run(
            [kubectl, *words[1:], "--server=http://127.0.0.1:1", "--request-timeout=1s"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "KUBECONFIG": str(tmp_path / "none")},
            timeout=60,
        )
        said = probe.stdout + probe.stderr
        assert not re.search(r"unknown (flag|command|shorthand)", said), f"{command}: {said[-500:]}"
        if not re.search(r"connection to the server|dial tcp|connection refused", said):
            # a command named in passing (`kubectl rollout`, `kubectl logs`): it must exist
            assert len(words) <= 3, f"{command}: {said[-500:]}"
            helped = subprocess.run([kubectl, *words[1:], "--help"], capture_output=True, text=True, timeout=60)
            assert helped.returncode == 0, f"{command}: {helped.stderr[-500:]}"
        checked += 1
    assert checked == len(commands) or kubectl is None


# ---- reelhouse commands named in the prose -----------------------------------------------------


def prose_spans(markdown: str) -> list[str]:
    """Inline code outside the fenced blocks, whitespace folded (a span may wrap a line)."""
    prose, inside = [], False
    for raw in markdown.splitlines():
        if raw.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            prose.append(raw)
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", "\n".join(prose))]


def test_reelhouse_commands_in_the_prose_exist():
    """The `reelhouse ...` commands the prose names (with placeholders like ID or NAME, so they are
    not run) resolve to a command of the real CLI, with options it has."""
    import typer.main

    from reelhouse.cli import app

    root = typer.main.get_command(app)  # Typer's own click: groups are told by their `commands`
    spans = [s for s in prose_spans(DOC.read_text()) if re.search(r"(^|\s)reelhouse [a-z]", s)]
    assert len(spans) >= 60, spans
    for span in spans:
        words = shlex.split(span)
        words = words[words.index("reelhouse") + 1 :]
        words = words[: next((i for i, w in enumerate(words) if w in ("|", "2>&1")), len(words))]
        command: Any = root
        path: list[str] = []
        while hasattr(command, "commands") and words:
            # the group's own parsing picks the subcommand (`encode SOURCE` is `encode run SOURCE`)
            ctx = command.make_context(" ".join(["reelhouse", *path]), list(words), resilient_parsing=True)
            name, words = ctx._protected_args[0], list(ctx.args)
            found = command.get_command(ctx, name)  # the root imports a domain's group on demand
            assert found is not None, f"`{span}`: no command {name!r} in {' '.join(path) or 'reelhouse'}"
            path.append(name)
            command = found
        assert not hasattr(command, "commands"), f"`{span}`: {' '.join(path) or 'reelhouse'} needs a subcommand"
        known = {opt for param in command.params for opt in (*param.opts, *getattr(param, "secondary_opts", []))}
        for word in words:
            if word.startswith("-"):
                assert word.split("=", 1)[0] in known, f"`{span}`: {word} is not an option of {' '.join(path)}"
