"""`reelhouse backup create|restore|verify` round trips, run as the CLI an operator runs.

SQLite: a real `reelhouse serve` runs and a writer inserts rows all through the backup; the
database is deleted, restored, and compared with the manifest. PostgreSQL: a scratch database
(not `test`) with writes during the dump, the archive uploaded to SeaweedFS, the database dropped
and recreated empty, restored, and the uploaded backup verified. Bad input exits non-zero with
one clear line and no traceback."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import POSTGRES_ADMIN_DSN, _postgres_dsn, create_postgres_database, drop_postgres_database
from tests.e2e.harness import run_server

REELHOUSE = str(Path(sys.executable).parent / "reelhouse")


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REELHOUSE, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def manifest_of(archive: Path) -> dict:
    with tarfile.open(archive, "r:gz") as tar:
        handle = tar.extractfile("manifest.json")
        assert handle is not None
        return json.loads(handle.read())


def sqlite_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        ]
        return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        conn.close()


class Writer(threading.Thread):
    """Inserts kv rows into the live SQLite file as fast as it can until stopped."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.written = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=60000")
        while not self.stop.is_set():
            conn.execute(
                "INSERT INTO kv (channel, key, value, updated_at) VALUES ('backup-test', ?, ?, CURRENT_TIMESTAMP)",
                (f"k{self.written}", "x" * 200),
            )
            self.written += 1
        conn.close()


@pytest.mark.slow
def test_sqlite_backup_while_serving_drop_restore_verify(tmp_path):
    key = "sqlite-backup-test-master-key-0123456789"
    with run_server(tmp_path, {"BACKUP_VERIFY_INTERVAL": "0", "MASTER_ENCRYPTION_KEY": key}) as server:
        env = {**server.env, "BACKUP_DIR": str(tmp_path / "backups")}
        db = server.data_dir / "reelhouse.db"
        objects = server.data_dir / "objects" / "vods" / "v1"
        objects.mkdir(parents=True)
        (objects / "source.mp4").write_bytes(os.urandom(300_000))
        (objects / "thumb.jpg").write_bytes(os.urandom(5_000))
        writer = Writer(db)
        writer.start()
        while writer.written < 200:  # writes are going on before, during and after the backup
            time.sleep(0.01)
        before = writer.written
        created = cli(env, "backup", "create", "--json")
        during = writer.written
        writer.stop.set()
        writer.join()
        assert created.returncode == 0, created.stderr
        assert during > before, "the writer should have kept writing during the backup"
        assert "does not contain the master key" in created.stderr
        summary = json.loads(created.stdout)
        archive = Path(summary["path"])
    manifest = manifest_of(archive)
    kv_rows = manifest["tables"]["kv"]["rows"]
    assert kv_rows >= before  # every row committed before the backup started is in it
    assert manifest["master_key"]["included"] is False and manifest["master_key"]["key_id"]
    assert key not in archive.read_bytes().decode("latin-1")
    keys = {o["key"]: o for o in manifest["storage"]["objects"]}
    assert set(keys) == {"vods/v1/source.mp4", "vods/v1/thumb.jpg"} and keys["vods/v1/source.mp4"]["size"] == 300_000
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["database.sqlite3", "manifest.json"]

    # drop: the database is gone
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    restored = cli(env, "backup", "restore", "--yes", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert "restore OK" in restored.stdout and "2 storage objects match" in restored.stdout
    counts = sqlite_counts(db)
    assert counts == {name: table["rows"] for name, table in manifest["tables"].items()}
    assert counts["kv"] == kv_rows  # nothing lost, and nothing after the snapshot half-included

    verified = cli(env, "backup", "verify", str(archive), "--json")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["tables"] == len(manifest["tables"]) and report["objects_checked"] == 2

    # the checks can fail: a lost storage object, and a changed row, are reported
    (objects / "thumb.jpg").unlink()
    lost = cli(env, "backup", "verify", str(archive))
    assert lost.returncode == 1 and "storage object missing: vods/v1/thumb.jpg" in lost.stderr
    conn = sqlite3.connect(db)
    conn.execute("UPDATE kv SET value = 'changed' WHERE key = 'k1' AND channel = 'backup-test'")
    conn.commit()
    conn.close()
    # (restore compares the restored database itself, so corrupt the snapshot inside the archive instead)
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                doc = json.loads(data)
                doc["tables"]["kv"]["rows"] += 1
                data = json.dumps(doc).encode()
                member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data))
    mismatch = cli(env, "backup", "verify", "--no-objects", str(tampered))
    assert mismatch.returncode == 1 and f"table kv: {kv_rows} rows, the backup has {kv_rows + 1}" in mismatch.stderr


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    """`reelhouse <args>` in this process (Typer's runner; settings read from `env` afresh)."""
    from typer.testing import CliRunner

    from reelhouse.cli import app
    from reelhouse.config import reset_settings_cache

    reset_settings_cache()
    try:
        result = CliRunner().invoke(app, list(args), env={**env, "COLUMNS": "400"})
    finally:
        reset_settings_cache()
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_bad_input_fails_clearly(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    env = {"DATA_DIR": str(data), "DATABASE_URL": f"sqlite:///{data}/reelhouse.db", "LOG_LEVEL": "warning"}
    assert invoke(env, "migrate")[0] == 0
    good = tmp_path / "good.tar.gz"
    code, out = invoke(env, "backup", "create", "--output", str(good), "--no-storage")
    assert code == 0, out

    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[:2000])
    foreign = tmp_path / "foreign.tar.gz"
    with tarfile.open(foreign, "w:gz") as tar:
        tar.add(__file__, arcname="something.py")
    notgz = tmp_path / "plain.json.gz"
    notgz.write_bytes(gzip.compress(b"{}"))
    cases = {
        str(tmp_path / "missing.tar.gz"): "no backup file at",
        str(corrupt): "not a readable backup archive",
        str(truncated): "not a readable backup archive",
        str(foreign): "is not a reelhouse backup",
        str(notgz): "not a readable backup archive",
    }
    for path, message in cases.items():
        for command in (["verify", path], ["restore", "--yes", path]):
            code, out = invoke(env, "backup", *command)
            assert code == 1 and message in out, (command, out)

    # wrong database kind: a SQLite backup restored where DATABASE_URL names PostgreSQL
    pg_env = {**env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres"}
    code, out = invoke(pg_env, "backup", "restore", "--yes", str(good))
    assert code == 1 and "is of a SQLite database but DATABASE_URL names PostgreSQL" in " ".join(out.split())
    # a PostgreSQL server that is not there
    code, out = invoke({**env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}, "backup", "create")
    assert code == 1 and "cannot connect to PostgreSQL" in out
    # no backups at all
    code, out = invoke({**env, "BACKUP_DIR": str(tmp_path / "none")}, "backup", "verify")
    assert code == 1 and "no backup found" in out
    # and as a real process: one line on stderr, exit 1, no traceback
    real = cli({**os.environ, **env}, "backup", "verify", str(corrupt))
    assert real.returncode == 1 and "not a readable backup archive" in real.stderr
    assert "Traceback" not in real.stderr + real.stdout


async def _pg_writes(dsn: str, stop: asyncio.Event, counter: list[int]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            await conn.execute(
                "INSERT INTO kv (channel, key, value, updated_at) VALUES ('backup-test', $1, 'v', now())",
                f"k{counter[0]}",
            )
            counter[0] += 1
    finally:
        await conn.close()


async def _scratch_databases() -> set[str]:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'reelhouse_restore_test_%'")
        return {r["datname"] for r in rows}
    finally:
        await conn.close()


@pytest.mark.slow
async def test_postgres_backup_upload_drop_restore_verify(tmp_path, seaweedfs):
    name = await create_postgres_database()  # a scratch database of our own, never `test`
    bucket = seaweedfs.new_bucket()
    dsn = _postgres_dsn(name)
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": dsn,
        "BACKUP_DIR": str(tmp_path / "backups"),
        "BACKUP_UPLOAD": "true",
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT": seaweedfs.endpoint,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY_ID": seaweedfs.access_key,
        "S3_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "MASTER_ENCRYPTION_KEY": "backup-test-master-key-0123456789abcdef",
    }
    try:
        migrated = await asyncio.to_thread(cli, env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        client = seaweedfs.admin_client()
        client.put_object(Bucket=bucket, Key="vods/7/source.mp4", Body=os.urandom(64_000))
        client.put_object(Bucket=bucket, Key="chat/7.jsonl", Body=b'{"m":"hi"}\n')
        stop, written = asyncio.Event(), [0]
        writes = asyncio.create_task(_pg_writes(dsn, stop, written))
        while written[0] < 100:
            await asyncio.sleep(0.01)
        before = written[0]
        created = await asyncio.to_thread(cli, env, "backup", "create", "--json")
        during = written[0]
        stop.set()
        await writes
        assert created.returncode == 0, created.stderr
        assert during > before
        summary = json.loads(created.stdout)
        assert summary["uploaded"].startswith("backups/reelhouse-postgresql-")
        manifest = manifest_of(Path(summary["path"]))
        assert manifest["database"]["kind"] == "postgresql" and manifest["database"]["member"] == "database.pgdump"
        assert manifest["database"]["server_version"].startswith("15")
        assert manifest["tables"]["kv"]["rows"] >= before
        assert {o["key"] for o in manifest["storage"]["objects"]} == {"vods/7/source.mp4", "chat/7.jsonl"}
        listed = client.list_objects_v2(Bucket=bucket, Prefix="backups/")["Contents"]
        assert [o["Key"] for o in listed] == [summary["uploaded"]]
        assert "backup-test-master-key" not in Path(summary["path"]).read_bytes().decode("latin-1")

        # drop the database and start over with an empty one of the same name
        await drop_postgres_database(name)
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        restored = await asyncio.to_thread(cli, env, "backup", "restore", "--yes", summary["path"])
        assert restored.returncode == 0, restored.stderr
        assert "restore OK" in restored.stdout and "2 storage objects match" in restored.stdout
        conn = await asyncpg.connect(dsn)
        try:
            for table, expected in manifest["tables"].items():
                assert await conn.fetchval(f'SELECT COUNT(*) FROM "{table}"') == expected["rows"], table
        finally:
            await conn.close()

        # the restore test of the uploaded copy: newest backup fetched from storage
        Path(summary["path"]).unlink()
        verified = await asyncio.to_thread(cli, env, "backup", "verify", "--json", "--record")
        assert verified.returncode == 0, verified.stderr
        report = json.loads(verified.stdout)
        assert report["ok"] and report["objects_checked"] == 2 and report["rows"] == manifest["totals"]["rows"]
        assert not await _scratch_databases(), "the scratch database must be dropped"
        conn = await asyncpg.connect(dsn)
        try:
            last = await conn.fetchval("SELECT value FROM kv WHERE key = 'backup.last_good_restore'")
        finally:
            await conn.close()
        assert last and abs(float(last) - time.time()) < 600

        # the wrong key configured: restore still works and warns
        other = await asyncio.to_thread(
            cli, {**env, "MASTER_ENCRYPTION_KEY": "another-key-0123456789abcdef0123"}, "backup", "verify"
        )
        assert other.returncode == 0 and "master key id" in other.stderr
    finally:
        await drop_postgres_database(name)
        seaweedfs.drop_bucket(bucket)


@pytest.mark.parametrize("flavour", ["sqlite"])
async def test_periodic_restore_test_sets_the_metric(tmp_path, flavour):
    from prometheus_client import REGISTRY

    from reelhouse.config import Settings
    from reelhouse.core.backup import jobs as backup_jobs
    from reelhouse.core.backup.service import create_backup
    from reelhouse.core.db.migrate import run_migrations
    from reelhouse.core.jobs.queue import TaskQueue
    from reelhouse.core.jobs.worker import Worker, WorkerOptions
    from reelhouse.core.runtime import build_runtime

    os.environ["BACKUP_DIR"] = str(tmp_path / "backups")
    try:
        settings = Settings(
            server={"data_dir": tmp_path}, database={"database_url": f"sqlite:///{tmp_path}/reelhouse.db"}
        )
        runtime = build_runtime(settings, load_domains=False)
        assert any(p.kind == backup_jobs.VERIFY_KIND for p in runtime.periodic)
        await run_migrations(runtime.engine)
        await backup_jobs.refresh_metrics(runtime)
        assert REGISTRY.get_sample_value("reelhouse_backup_last_good_restore_timestamp_seconds") == 0
        await create_backup(settings, include_storage=False)
        queue = TaskQueue(runtime.engine)
        task_id = (await queue.enqueue(backup_jobs.VERIFY_KIND, {})).task_id
        worker = Worker(runtime.engine, runtime.registry, WorkerOptions(poll_interval=0.05))
        run = asyncio.create_task(worker.run())
        try:
            for _ in range(600):
                async with runtime.engine.connect() as conn:
                    found = await conn.exec_driver_sql(f"SELECT status FROM tasks WHERE id = {int(task_id)}")
                    status = found.scalar()
                if status in ("succeeded", "completed", "dead", "failed"):
                    break
                await asyncio.sleep(0.1)
        finally:
            worker.request_stop()
            await run
        await backup_jobs.refresh_metrics(runtime)
        stamp = REGISTRY.get_sample_value("reelhouse_backup_last_good_restore_timestamp_seconds")
        assert stamp and abs(stamp - time.time()) < 600, status
        assert REGISTRY.get_sample_value("reelhouse_backup_last_verify_failed") == 0
        await runtime.aclose()
    finally:
        os.environ.pop("BACKUP_DIR", None)
